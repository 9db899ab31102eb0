"""The hourly and daily totals the dashboard reads agree with the request records they were written from, whether
written batch by batch or backfilled from an older ledger."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from oneapi import rollup
from oneapi.ledger import Batch, SqliteLedger, UsageQuery, UsageRecord


def records(n: int, now: float) -> list[UsageRecord]:
    rng = random.Random(7)
    out = []
    for i in range(n):
        failed = rng.random() < 0.2
        out.append(UsageRecord(ts=now - rng.random() * 9 * 86400, request_id=f"r{i}", token=f"t{rng.randrange(6)}", channel=f"c{rng.randrange(3)}",
                               model=f"m{rng.randrange(5)}", upstream_model="u", operation="chat", stream=False,
                               prompt_tokens=0 if failed else rng.randrange(1, 500), completion_tokens=0 if failed else rng.randrange(1, 90),
                               cached_tokens=0, reasoning_tokens=0, estimated=False, cost_nano=0 if failed else rng.randrange(1, 10**6),
                               duration_ms=5, status=502 if failed else 200, error_type="upstream_error" if failed else ""))
    return out


@pytest.mark.parametrize("backfilled", [False, True])
def test_totals_match_the_records(backfilled: bool) -> None:
    async def check() -> None:
        ledger = SqliteLedger(None)
        await ledger.open()
        now = time.time()
        written = records(3000, now)
        for start in range(0, len(written), 700):  # several batches, as the flush loop writes them
            await ledger.write(Batch(records=written[start:start + 700]), "owner")
        if backfilled:  # the totals as an older ledger gets them on migration
            await ledger.read(lambda db: db.execute("DELETE FROM usage_hourly"))
            await ledger.read(rollup.backfill)
        day_start = (int(now) // 86400 - 6) * 86400
        for since in (day_start, day_start + 7200):  # a range from a day's start reads the day rows, else the hours
            for dim in rollup.DIMENSIONS:
                expected = await ledger.query(UsageQuery(since=since, group_by=(dim,)))
                got = dict(await ledger.read(rollup.ranking, dim, since))
                assert {k: (v["requests"], v["errors"], v["prompt_tokens"], v["cost_nano"]) for k, v in got.items()} == {
                    key[0]: (t.requests, t.errors, t.prompt_tokens, t.cost_nano) for key, t in expected.groups.items()}
            for token in ("t1", "t4"):
                expected = await ledger.query(UsageQuery(token=token, since=since, group_by=("model",)))
                got = dict(await ledger.read(rollup.token_models, token, since))
                assert {k: (v["requests"], v["errors"], v["completion_tokens"]) for k, v in got.items()} == {
                    key[0]: (t.requests, t.errors, t.completion_tokens) for key, t in expected.groups.items()}
            series = await ledger.read(rollup.series, "t2", since, 86400)
            expected = await ledger.query(UsageQuery(token="t2", since=since, group_by=("day",)))
            assert sum(c["requests"] for c in series.values()) == expected.totals.requests
            assert sum(c["cost_nano"] for c in series.values()) == expected.totals.cost_nano
        await ledger.close()

    asyncio.run(check())
