"""The mock upstream: nginx on loopback answering POSTs with recorded vendor bodies.

nginx's static handler refuses POST with 405; `error_page 405 =200 $uri` turns
that into an internal GET redirect to the same URI, which serves the file with
status 200. No proxying, no scripting: nginx stays far faster than any subject.

nginx cannot see the request body, so it cannot tell a streaming chat request
from a plain one. Two listeners share one nginx worker instead:

| port       | POST /v1/chat/completions              | POST /v1/messages                |
|------------|----------------------------------------|----------------------------------|
| json_port  | chat completion JSON                   | Anthropic Messages SSE (~50 deltas) |
| sse_port   | OpenAI SSE, 50 chunks + usage + [DONE] | Anthropic Messages SSE (~50 deltas) |
"""

import json
import subprocess
import time
from dataclasses import dataclass
from itertools import cycle, islice
from pathlib import Path

from procs import free_port, taskset_prefix, wait_for_port

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OPENAI_COMPLETION_FIXTURE = FIXTURES / "openai" / "chat_completion_text.json"
OPENAI_STREAM_FIXTURE = FIXTURES / "openai" / "chat_stream_text_include_usage.sse"
ANTHROPIC_STREAM_FIXTURE = FIXTURES / "anthropic" / "stream_text_raw.sse"

OPENAI_STREAM_EVENTS = 50
ANTHROPIC_TEXT_DELTAS = 50
HARNESS_CPUS = "1"


@dataclass(frozen=True)
class MockUpstream:
    json_port: int
    sse_port: int
    process: subprocess.Popen[bytes]

    def url(self, upstream: str) -> str:
        port = self.sse_port if upstream == "sse" else self.json_port
        return f"http://127.0.0.1:{port}"


def sse_events(raw: str) -> list[str]:
    """Split an SSE body into its events, each without the blank line that ends it."""
    return [event for event in raw.replace("\r\n", "\n").split("\n\n") if event.strip()]


def build_openai_stream(event_count: int = OPENAI_STREAM_EVENTS) -> bytes:
    """Role chunk, content chunks repeated from the recording, finish chunk, usage chunk, [DONE]."""
    events = sse_events(OPENAI_STREAM_FIXTURE.read_text())
    role_chunk, *content_chunks, finish_chunk, usage_chunk, done = events
    assert done == "data: [DONE]", done
    content_count = event_count - 3
    repeated = list(islice(cycle(content_chunks), content_count))
    stream = [role_chunk, *repeated, finish_chunk, usage_chunk, done]
    return ("\n\n".join(stream) + "\n\n").encode()


def build_anthropic_stream(delta_count: int = ANTHROPIC_TEXT_DELTAS) -> bytes:
    """The recorded Messages stream with its one text delta grown into `delta_count` deltas."""
    events = sse_events(ANTHROPIC_STREAM_FIXTURE.read_text())
    delta_index = next(i for i, event in enumerate(events) if event.startswith("event: content_block_delta"))
    delta_data = json.loads(events[delta_index].split("data: ", 1)[1])
    words = cycle(["The", " capital", " of", " the", " UK", " is", " London", "."])
    deltas = []
    for word in islice(words, delta_count):
        delta_data["delta"]["text"] = word
        deltas.append(f"event: content_block_delta\ndata: {json.dumps(delta_data, separators=(',', ':'))}")
    stream = [*events[:delta_index], *deltas, *events[delta_index + 1 :]]
    return ("\n\n".join(stream) + "\n\n").encode()


def write_bodies(root: Path) -> None:
    """Lay out the recorded bodies as files whose paths are the request URIs nginx maps them to."""
    anthropic_stream = build_anthropic_stream()
    bodies = {
        root / "json" / "v1" / "chat" / "completions": OPENAI_COMPLETION_FIXTURE.read_bytes(),
        root / "json" / "v1" / "messages": anthropic_stream,
        root / "sse" / "v1" / "chat" / "completions": build_openai_stream(),
        root / "sse" / "v1" / "messages": anthropic_stream,
    }
    for path, body in bodies.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def nginx_conf(root: Path, json_port: int, sse_port: int) -> str:
    def server(port: int, docroot: Path, chat_type: str) -> str:
        return f"""
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
        location = /v1/chat/completions {{ default_type {chat_type}; error_page 405 =200 $uri; }}
        location = /v1/messages {{ default_type text/event-stream; error_page 405 =200 $uri; }}
        location / {{ return 404; }}
    }}"""

    return f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    types {{}}
    access_log off;
    server_tokens off;
    etag off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    client_body_temp_path {root}/temp/body;
    proxy_temp_path {root}/temp/proxy;
    fastcgi_temp_path {root}/temp/fastcgi;
    uwsgi_temp_path {root}/temp/uwsgi;
    scgi_temp_path {root}/temp/scgi;
{server(json_port, root / "json", "application/json")}
{server(sse_port, root / "sse", "text/event-stream")}
}}
"""


def start_mock_upstream(root: Path, log_path: Path) -> MockUpstream:
    """Start nginx on the harness core; the caller stops it with `stop_mock_upstream`."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # nginx's worker runs unprivileged; every directory above root must be traversable too
    write_bodies(root)
    (root / "temp").mkdir(exist_ok=True)
    json_port, sse_port = free_port(), free_port()
    conf_path = root / "nginx.conf"
    conf_path.write_text(nginx_conf(root, json_port, sse_port))
    nginx_args = ["-p", str(root), "-c", str(conf_path), "-e", str(root / "error.log")]
    command = [*taskset_prefix(HARNESS_CPUS), "nginx", *nginx_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10
    for port in (json_port, sse_port):
        if not wait_for_port(port, deadline, process):
            raise RuntimeError(f"nginx did not start; see {log_path} and {root / 'error.log'}")
    return MockUpstream(json_port=json_port, sse_port=sse_port, process=process)


def stop_mock_upstream(mock: MockUpstream) -> None:
    mock.process.terminate()
    mock.process.wait(timeout=10)
