"""Results: the records a run produces, their ratios, and the markdown and JSON written from them."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NON_STREAM_SCENARIOS = ("relay-c50", "relay-c1", "count-tokens")
STREAM_SCENARIOS = ("stream", "anthropic-stream", "messages-stream", "messages-native-stream")
SCALE_SCENARIOS = ("big-config", "big-config-reload", "budget-rpm")


@dataclass
class Measurement:
    subject: str
    kind: str
    workers: int
    scenario: str
    connections: int
    duration_s: int
    requests_per_s: float
    latency_ms: dict[str, float]
    errors: dict[str, int]
    rss_idle_mib: float
    rss_load_mib: float
    worker_rss_idle_mib: float = 0.0  # the largest worker process alone (the tree adds the supervisor)
    worker_rss_load_mib: float = 0.0
    stream_idle: dict[str, Any] | None = None
    stream_load: dict[str, Any] | None = None
    reload: dict[str, Any] | None = None
    others_cpu_pct: float = 0.0  # CPU share taken by processes outside the harness meanwhile: noise
    profile: dict[str, Any] | None = None  # summarize_stacks() of the py-spy run beside wrk (--profile)
    ratios: dict[str, float | None] = field(default_factory=dict)

    @property
    def error_total(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class Skip:
    subject: str
    scenario: str
    reason: str


def find(measurements: list[Measurement], scenario: str, kind: str, workers: int | None = None) -> Measurement | None:
    for m in measurements:
        if m.scenario == scenario and m.kind == kind and (workers is None or m.workers == workers):
            return m
    return None


def ratio(measurement: Measurement, reference: Measurement | None) -> float | None:
    if reference is None or reference is measurement or reference.requests_per_s <= 0:
        return None
    return measurement.requests_per_s / reference.requests_per_s


def add_ratios(measurements: list[Measurement]) -> None:
    """Throughput ratios against the same scenario on direct, and the same worker count on floor and LiteLLM."""
    for m in measurements:
        if m.kind == "direct":
            m.ratios = {"vs_direct": None, "vs_floor": None, "vs_litellm": None}
            continue
        m.ratios = {
            "vs_direct": ratio(m, find(measurements, m.scenario, "direct")),
            "vs_floor": ratio(m, find(measurements, m.scenario, "floor", m.workers)),
            "vs_litellm": ratio(m, find(measurements, m.scenario, "litellm", m.workers)),
        }
        if m.scenario in SCALE_SCENARIOS:
            m.ratios["vs_small_config"] = ratio(m, find(measurements, "relay-c50", m.kind, m.workers))


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}×"
    return f"{value:.2f}×" if value >= 0.1 else f"{value:.2g}×"


def sampled(value: float | None, samples: int) -> str:
    """A percentile from few probe samples says little: show how few."""
    return number(value) if samples >= 20 or value is None else f"{number(value)} (n={samples})"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if index < 2 else "--:" for index in range(len(header))) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def non_stream_rows(measurements: list[Measurement]) -> list[list[str]]:
    return [
        [
            m.scenario,
            m.subject,
            number(m.requests_per_s, 0),
            number(m.latency_ms["p50"], 2),
            number(m.latency_ms["p99"], 2),
            str(m.error_total),
            times(m.ratios["vs_direct"]),
            times(m.ratios["vs_floor"]),
            times(m.ratios["vs_litellm"]),
            number(m.worker_rss_idle_mib, 0),
            number(m.worker_rss_load_mib, 0),
            number(m.rss_idle_mib, 0),
            number(m.rss_load_mib, 0),
            number(m.others_cpu_pct, 0),
        ]
        for m in measurements
        if m.scenario in NON_STREAM_SCENARIOS
    ]


def stream_rows(measurements: list[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        if m.scenario not in STREAM_SCENARIOS:
            continue
        idle, load = m.stream_idle or {}, m.stream_load or {}
        failures = idle.get("failures", 0) + load.get("failures", 0)
        rows.append(
            [
                m.scenario,
                m.subject,
                number(m.requests_per_s, 0),
                number(idle.get("ttfb_p50_ms"), 2),
                sampled(idle.get("ttfb_p99_ms"), idle.get("samples", 0)),
                number(idle.get("total_p50_ms"), 2),
                number(load.get("ttfb_p50_ms"), 1),
                sampled(load.get("ttfb_p99_ms"), load.get("samples", 0)),
                str(m.error_total + failures),
                times(m.ratios["vs_direct"]),
                times(m.ratios["vs_floor"]),
                times(m.ratios["vs_litellm"]),
                number(m.worker_rss_load_mib, 0),
                number(m.rss_load_mib, 0),
                number(m.others_cpu_pct, 0),
            ]
        )
    return rows


def scale_rows(measurements: list[Measurement]) -> list[list[str]]:
    rows = []
    for m in measurements:
        if m.scenario not in SCALE_SCENARIOS:
            continue
        reload = m.reload or {}
        seen = f"{reload['observed']}/{reload['written']}" if reload else "–"
        rows.append(
            [
                m.scenario,
                m.subject,
                number(m.requests_per_s, 0),
                number(m.latency_ms["p50"], 2),
                number(m.latency_ms["p99"], 2),
                str(m.error_total),
                times(m.ratios.get("vs_small_config")),
                seen,
                number(reload.get("p50_ms"), 0),
                number(reload.get("max_ms"), 0),
                number(reload.get("build_p50_ms"), 0),
                number(reload.get("build_max_ms"), 0),
                number(m.worker_rss_idle_mib, 0),
                number(m.worker_rss_load_mib, 0),
                number(m.rss_idle_mib, 0),
                number(m.rss_load_mib, 0),
                number(m.others_cpu_pct, 0),
            ]
        )
    return rows


def render_markdown(meta: dict[str, Any], measurements: list[Measurement], skips: list[Skip]) -> str:
    lines = [
        f"# oneapi bench — {meta['date']}",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. Versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}.",
        "",
        f"Each number: {meta['duration_s']} s of wrk after {meta['warmup_s']} s of warm-up. {meta['pinning']}",
        "",
        f"Run took {meta['elapsed_s']} s; processes outside the harness used {meta['other_processes_cpu_pct']}% of the"
        " machine's CPU meanwhile (above a few percent, the numbers are noisy).",
        "",
        "## Non-stream relay",
        "",
        "req/s from wrk; ratios compare req/s with direct-to-mock, the floor and LiteLLM at the same worker count.",
        "",
        *table(
            [
                "scenario",
                "subject",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "× direct",
                "× floor",
                "× LiteLLM",
                "worker RSS idle MiB",
                "worker RSS load MiB",
                "total RSS idle MiB",
                "total RSS load MiB",
                "others' CPU %",
            ],
            non_stream_rows(measurements),
        ),
        "",
        "## Streams",
        "",
        "streams/s from wrk at 50 connections (a stream counts when it has been read to its end). TTFB is the",
        "time to the first body byte, from a probe that sends one stream at a time, idle and then beside the",
        "wrk load; `stream ms` is a whole idle stream.",
        "",
        *table(
            [
                "scenario",
                "subject",
                "streams/s",
                "TTFB p50 idle ms",
                "TTFB p99 idle ms",
                "stream ms",
                "TTFB p50 load ms",
                "TTFB p99 load ms",
                "errors",
                "× direct",
                "× floor",
                "× LiteLLM",
                "worker RSS load MiB",
                "total RSS load MiB",
                "others' CPU %",
            ],
            stream_rows(measurements),
        ),
        "",
        "## Gateway at scale",
        "",
        "50 connections. `× small` compares with the gateway's own relay-c50 at the same worker count;",
        "reloads `seen/written`: new `config_version`s seen on `GET /health` / file rewrites (one a second);",
        "reload ms runs from the first write after the last version seen to the next new version seen",
        "(writes landing during a reload are coalesced by the gateway), so it includes the wait for the gateway's",
        "next look at the file (`watch_interval`, 1 s by default); build ms is the reload itself, as `GET /health`",
        "reports it (`reload_ms`) for each new version.",
        "",
        *table(
            [
                "scenario",
                "subject",
                "req/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "× small",
                "reloads",
                "reload p50 ms",
                "reload max ms",
                "build p50 ms",
                "build max ms",
                "worker RSS idle MiB",
                "worker RSS load MiB",
                "total RSS idle MiB",
                "total RSS load MiB",
                "others' CPU %",
            ],
            scale_rows(measurements),
        ),
    ]
    profiled = [m for m in measurements if m.profile]
    if profiled:
        lines += ["", "## Where the time goes (py-spy, --profile)", "",
                  "Samples taken while a thread of the subject held the GIL, so shares are of Python CPU time. `self`: the",
                  "function itself; `incl`: with what it calls. Collapsed stacks are in `profiles/` beside this file.", ""]
        for m in profiled:
            profile = m.profile or {}
            lines += [f"**{m.subject} · {m.scenario}** ({profile['samples']} samples)", ""]
            lines += table(["self %", "function", "incl %", "function (inclusive, the gateway's own code)"],
                           [[number(a[1], 1), f"`{a[0]}`", number(b[1], 1), f"`{b[0]}`"]
                            for a, b in zip(profile["self"], profile["inclusive"])])
            lines.append("")
    if skips:
        lines += ["", "## Skipped", ""]
        lines += [f"- {skip.subject} · {skip.scenario}: {skip.reason.splitlines()[0]}" for skip in skips]
    return "\n".join(lines) + "\n"


def summarize_stacks(path: Path, top: int = 15, own_code: str = "oneapi/") -> dict[str, Any]:
    """Top functions of a py-spy raw (collapsed stacks) file: by own samples, and, among the gateway's own
    functions, by samples with their callees; as % of all samples."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        # py-spy --subprocesses roots each stack at a "process PID:..." frame: not a function
        frames = [_frame_name(f) for f in stack.split(";") if not f.startswith("process ")] or ["(native code holding the GIL)"]
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for name in set(frames):
            if own_code in name and "cli.py" not in name:  # the command line is every worker's root frame
                inclusive[name] = inclusive.get(name, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        return [(name, 100 * n / total) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": ranked(own), "inclusive": ranked(inclusive)}


def _frame_name(frame: str) -> str:
    """'relay (oneapi/relay.py:151)' -> 'relay (oneapi/relay.py)': lines apart, one function."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})" if path else name or "(native)"


def write_results(output_dir: Path, meta: dict[str, Any], measurements: list[Measurement], skips: list[Skip]) -> str:
    add_ratios(measurements)
    markdown = render_markdown(meta, measurements, skips)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "latest.md").write_text(markdown)
    document = {
        "meta": meta,
        "measurements": [{**asdict(m), "error_total": m.error_total} for m in measurements],
        "skipped": [asdict(skip) for skip in skips],
    }
    (output_dir / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    return markdown
