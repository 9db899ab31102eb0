"""The dashboard's JSON at 10,000 tokens and 1,000,000 request records (issue 14): measured, not asserted.

    python bench/dashboard.py [--records N] [--tokens N] [--rounds N] [--keep DIR] [--browser]

Builds a SQLite ledger of N records spread over 30 days (20 channels, 30 models, 5% errors) and a config of
N tokens, serves it with `oneapi serve`, and times every view's JSON as the pages ask for it, next to
`GET /health` measured in the same run (the baseline: what any answer from this process costs). With --browser it
also loads /ui/ in headless Chromium and reports page weight, first paint and the time until the first chart is
drawn: the numbers the choice of server-drawn SVG charts rests on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from oneapi import rollup  # noqa: E402
from oneapi.ledger import RECORD_FIELDS, connect, spend_windows  # noqa: E402

ADMIN_KEY = "bench-admin-key"
CLIENT_KEY = "sk-bench-client-1"  # t1: among the busiest tokens
DAYS = 30


def build_ledger(path: Path, records: int, tokens: int) -> None:
    db = connect(path)
    rng = random.Random(14)
    now = time.time()
    start = now - DAYS * 86400
    step = DAYS * 86400 / records
    models = [f"model-{i}" for i in range(30)]
    spend: dict[tuple[str, str], int] = {}
    batch = []
    db.execute("BEGIN")
    for i in range(records):
        ts = start + i * step
        token = f"t{int(rng.paretovariate(1.2)) % tokens}"  # a few heavy tokens, a long tail
        failed = rng.random() < 0.05
        prompt, completion = (0, 0) if failed else (rng.randint(10, 3000), rng.randint(1, 800))
        cost = (prompt * 150 + completion * 600) // 1000 * 1000
        duration = rng.randint(80, 9000)
        model = models[rng.randrange(30)]
        batch.append((ts, f"req_{i:012x}", token, f"c{rng.randrange(20)}", model, model, "chat", int(rng.random() < 0.6),
                      prompt, completion, 0, 0, 0, cost, duration, 502 if failed else 200, duration // 4,
                      "upstream_error" if failed else ""))
        if cost:
            for window in spend_windows(ts):
                spend[(token, window)] = spend.get((token, window), 0) + cost
        if len(batch) == 50_000:
            db.executemany(f"INSERT INTO usage ({', '.join(RECORD_FIELDS)}) VALUES ({', '.join('?' * len(RECORD_FIELDS))})", batch)
            batch.clear()
    if batch:
        db.executemany(f"INSERT INTO usage ({', '.join(RECORD_FIELDS)}) VALUES ({', '.join('?' * len(RECORD_FIELDS))})", batch)
    db.executemany("INSERT INTO spend (token, window, cost_nano) VALUES (?, ?, ?)", [(t, w, c) for (t, w), c in spend.items()])
    rollup.backfill(db)  # the hourly totals the gateway's own writes keep, summed once for the records inserted here
    db.execute("COMMIT")
    db.close()


def build_config(folder: Path, tokens: int) -> Path:
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(ROOT / "providers.d"),
        "store": "sqlite:///ledger.db",
        "admin_key": ADMIN_KEY,
        "channels": [{"name": f"c{i}", "provider": "openai", "base_url": "http://127.0.0.1:9", "keys": [f"sk-upstream-{i}"],
                      "models": [f"model-{j}" for j in range(30)]} for i in range(20)],
        "tokens": [{"name": f"t{i}", "key_sha256": hashlib.sha256(f"sk-bench-client-{i}".encode()).hexdigest(),
                    "budget": 100.0, "budget_period": "monthly", "rpm": 600} for i in range(tokens)],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def timed(http: httpx.Client, url: str, key: str, rounds: int) -> tuple[float, float, int]:
    """Median and p95 milliseconds of `rounds` GETs (after one warm-up), and the answer's size."""
    response = http.get(url, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        response = http.get(url, headers={"Authorization": f"Bearer {key}"})
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.95))], len(response.content)


def browser_numbers(base_url: str) -> dict[str, float]:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")), options=options)
    try:
        driver.get(base_url + "/ui/")
        driver.execute_script("sessionStorage.setItem('oneapi.key', arguments[0])", ADMIN_KEY)
        began = time.perf_counter()
        driver.refresh()  # signed in from the start, as a returning operator is
        WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-requests svg rect"))
        chart_ms = (time.perf_counter() - began) * 1000
        paint = driver.execute_script("const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
        weights = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => [e.name, e.transferSize, e.decodedBodySize])"
            ".concat([[location.href, performance.getEntriesByType('navigation')[0].transferSize, "
            "performance.getEntriesByType('navigation')[0].decodedBodySize]])")
    finally:
        driver.quit()
    static = sum(size for name, _, size in weights if "/ui/api/" not in name)
    data = sum(size for name, _, size in weights if "/ui/api/" in name)
    return {"first_contentful_paint_ms": paint or 0.0, "first_chart_ms": chart_ms, "static_bytes": static, "json_bytes": data}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--keep", help="build in this folder and keep it (a second run reuses its ledger)")
    parser.add_argument("--browser", action="store_true", help="also measure the page in headless Chromium")
    args = parser.parse_args()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="oneapi-dashboard-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    config_path = build_config(folder, args.tokens)
    ledger = folder / "ledger.db"
    if not ledger.exists():
        began = time.perf_counter()
        build_ledger(ledger, args.records, args.tokens)
        print(f"built {args.records:,} records in {time.perf_counter() - began:.1f} s", file=sys.stderr)

    from conftest import GatewayProcess  # the tests' own launcher: `oneapi serve` on a free loopback port

    gateway = GatewayProcess(config_path).start(timeout=120)
    try:
        with httpx.Client(base_url=gateway.base_url, timeout=120) as http:
            cursor = http.get("/ui/api/logs?limit=50", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["next_cursor"]
            for _ in range(20):  # twenty pages in
                cursor = http.get(f"/ui/api/logs?limit=50&cursor={cursor}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["next_cursor"]
            views = [
                ("baseline: GET /health", "/health", ADMIN_KEY),
                ("overview 24h (admin)", "/ui/api/overview?range=24h", ADMIN_KEY),
                ("overview 7d (admin)", "/ui/api/overview?range=7d", ADMIN_KEY),
                ("overview 30d (admin)", "/ui/api/overview?range=30d", ADMIN_KEY),
                ("overview 30d (one token)", "/ui/api/overview?range=30d", CLIENT_KEY),
                ("tokens, first page of 50", "/ui/api/tokens", ADMIN_KEY),
                ("tokens, name search", "/ui/api/tokens?q=t99", ADMIN_KEY),
                ("channels (20)", "/ui/api/channels", ADMIN_KEY),
                ("log, first page", "/ui/api/logs?limit=50", ADMIN_KEY),
                ("log, 21st page (cursor)", f"/ui/api/logs?limit=50&cursor={cursor}", ADMIN_KEY),
                ("log, one token", "/ui/api/logs?limit=50&token=t3", ADMIN_KEY),
                ("log, errors only", "/ui/api/logs?limit=50&status=error", ADMIN_KEY),
                ("log, one model, last day", f"/ui/api/logs?limit=50&model=model-7&since={time.time() - 86400:.0f}", ADMIN_KEY),
                ("log, a client key's own", "/dashboard/logs?limit=50", CLIENT_KEY),
                ("billing usage, this month", "/dashboard/billing/usage", CLIENT_KEY),
                ("config", "/ui/api/config", ADMIN_KEY),
            ]
            results = []
            for name, url, key in views:
                median, p95, size = timed(http, url, key, args.rounds)
                results.append((name, median, p95, size))
        baseline = results[0][1]
        print(f"\n{args.records:,} records, {args.tokens:,} tokens, {args.rounds} rounds each (SQLite, 1 worker)\n")
        print(f"| view | median ms | p95 ms | × /health | bytes |\n|---|---|---|---|---|")
        for name, median, p95, size in results:
            print(f"| {name} | {median:.1f} | {p95:.1f} | {median / baseline:.1f} | {size:,} |")
        if args.browser:
            numbers = browser_numbers(gateway.base_url)
            print("\npage (headless Chromium, admin overview 24h):")
            print(json.dumps(numbers, indent=2))
    finally:
        gateway.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
