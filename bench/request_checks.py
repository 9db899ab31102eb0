"""What refusing ambiguous request bodies costs: the nesting bound and the deciding-fields-given-twice check that
read_json_body runs on every JSON request, as a ratio to orjson parsing the same body, measured in the same run.

    python bench/request_checks.py

In-process and CPU-only; the ratio is what to compare across runs and machines (the microseconds move with load).
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path
from typing import Any, Callable

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's oneapi, not an installed one

from oneapi.nesting import MAX_NESTING, nests_deeper  # noqa: E402
from oneapi.relay import _repeated_deciding_field  # noqa: E402


def tool(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": properties}}}


BODIES = {
    "the load generator's body": b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}',
    "10 turns and 2 tools": json.dumps({
        "model": "gpt-4o-mini", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user" if i % 2 else "assistant", "content": "hello there " * 40} for i in range(10)],
        "tools": [tool(f"f{i}", {"q": {"type": "string"}}) for i in range(2)]}).encode(),
    "500 turns of text and image": json.dumps({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"},
                                                  {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}] * 500}).encode(),
    "a tool parameter named model": json.dumps({
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "tools": [tool("f", {"model": {"type": "string"}})]}).encode(),
}


def best(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=7)) / number


def main() -> None:
    print(f"{'body':30} {'bytes':>7} {'parse us':>9} {'checks us':>10} {'checks/parse':>13}")
    for name, raw in BODIES.items():
        body = orjson.loads(raw)
        number = 20_000 if len(raw) < 10_000 else 300
        parse = best(lambda: orjson.loads(raw), number)
        checks = best(lambda: (len(raw) > 2 * MAX_NESTING and nests_deeper(body), _repeated_deciding_field(raw, body)), number)
        print(f"{name:30} {len(raw):7} {parse * 1e6:9.2f} {checks * 1e6:10.2f} {checks / parse:12.2f}x")


if __name__ == "__main__":
    main()
