"""Charts as SVG drawn by the server: columns over time and ranked bars, a few hundred bytes each.

Chosen by measurement (bench/dashboard.py --browser, 1M records): the six charts of an overview add ~28 KB to its
JSON (~4 KB of the 7 KB it gzips to), and the whole page (HTML, JS, CSS: 22 KB) paints first at ~120 ms with the
first chart drawn ~320 ms after a reload; a chart library would add its own code before any chart could be drawn
(uPlot, the smallest common one, ~50 KB minified; Chart.js ~200 KB). SVG also keeps the strict CSP: presentation
attributes only, no inline style, no script inside.
"""

from __future__ import annotations

from html import escape
from typing import Sequence

WIDTH, HEIGHT = 640, 180
PAD_LEFT, PAD_BOTTOM, PAD_TOP = 64, 22, 10
PALETTE = ("#3b6fd8", "#d8503b", "#2f9e6e", "#a05cc8", "#d89a2b", "#4aa3c0")
TEXT = 'font-family="system-ui, sans-serif" font-size="11" fill="#555"'


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    if value and value < 1:
        return f"{value:.2g}"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def columns(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], unit: str = "") -> str:
    """Stacked columns, one per label (a time bucket), one colour per series, with a legend and the top value."""
    n = max(1, len(labels))
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    plot_w, plot_h = WIDTH - PAD_LEFT - 8, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = plot_w / n
    bar = max(1.0, step * 0.8)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" class="chart">',
             f"<title>{escape(title)}</title>",
             f'<line x1="{PAD_LEFT}" y1="{PAD_TOP}" x2="{WIDTH - 8}" y2="{PAD_TOP}" stroke="#eee"/>',
             f'<line x1="{PAD_LEFT}" y1="{HEIGHT - PAD_BOTTOM}" x2="{WIDTH - 8}" y2="{HEIGHT - PAD_BOTTOM}" stroke="#bbb"/>',
             f'<text x="{PAD_LEFT - 6}" y="{PAD_TOP + 9}" text-anchor="end" {TEXT}>{escape(unit)}{escape(_number(top))}</text>',
             f'<text x="{PAD_LEFT - 6}" y="{HEIGHT - PAD_BOTTOM}" text-anchor="end" {TEXT}>0</text>']
    for i in range(len(labels)):
        x = PAD_LEFT + i * step + (step - bar) / 2
        y = HEIGHT - PAD_BOTTOM
        for s, (name, values) in enumerate(series):
            h = values[i] / top * plot_h
            if h <= 0:
                continue
            y -= h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{PALETTE[s % len(PALETTE)]}">'
                         f"<title>{escape(labels[i])} {escape(name)}: {escape(unit)}{escape(_number(values[i]))}</title></rect>")
    every = max(1, len(labels) // 8)  # at most ~8 axis labels, however many buckets
    for i in range(0, len(labels), every):
        x = PAD_LEFT + i * step + step / 2
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle" {TEXT}>{escape(_short(labels[i]))}</text>')
    for s, (name, _) in enumerate(series):
        x = PAD_LEFT + 8 + s * 110
        parts.append(f'<rect x="{x}" y="{PAD_TOP + 2}" width="10" height="10" fill="{PALETTE[s % len(PALETTE)]}"/>'
                     f'<text x="{x + 14}" y="{PAD_TOP + 11}" {TEXT}>{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def ranked(title: str, items: Sequence[tuple[str, float]], unit: str = "") -> str:
    """Horizontal bars, largest first: the top models, tokens or channels."""
    row = 20
    height = max(1, len(items)) * row + 8
    top = max((v for _, v in items), default=0) or 1
    label_w, plot_w = 170, WIDTH - 170 - 70
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" role="img" class="chart">',
             f"<title>{escape(title)}</title>"]
    if not items:
        parts.append(f'<text x="8" y="16" {TEXT}>nothing in this range</text>')
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, value / top * plot_w)
        parts.append(f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" {TEXT}>{escape(_clip(label))}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE[0]}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" {TEXT}>{escape(unit)}{escape(_number(value))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str) -> str:
    """An axis label: "2026-12-07T14:00" -> "14:00", "2026-12-07" -> "12-07"."""
    return label[11:] if "T" in label else label[5:]


def _clip(label: str, most: int = 26) -> str:
    return label if len(label) <= most else label[:most - 1] + "…"
