"""What is measured: the scenarios, and which subjects run each."""

from dataclasses import dataclass
from typing import Literal

from configs import ANTHROPIC_MODEL, OPENAI_MODEL

SubjectKind = Literal["direct", "floor", "oneapi", "litellm"]
Upstream = Literal["json", "sse"]
GatewayConfig = Literal["small", "anthropic", "big", "budget"]

ALL_KINDS: tuple[SubjectKind, ...] = ("direct", "floor", "oneapi", "litellm")
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kinds: tuple[SubjectKind, ...]
    upstream: Upstream  # which mock listener the subject relays to
    connections: int = 50
    stream: bool = False
    model: str = OPENAI_MODEL
    direct_path: str = CHAT_PATH  # what wrk hits on the mock itself for the `direct` row
    gateway_config: GatewayConfig = "small"
    reloads: bool = False
    min_duration_s: int = 0  # a reload of the big config takes seconds: give it room to happen several times
    gateway_path: str = CHAT_PATH  # what the client asks the gateway: chat, or a dialect's route (Anthropic Messages)

    def path_for(self, kind: SubjectKind) -> str:
        return self.direct_path if kind == "direct" else self.gateway_path

    def stream_end_for(self, kind: SubjectKind) -> bytes | None:
        """The bytes a complete stream ends with, to tell a finished stream from a cut one."""
        if not self.stream:
            return None
        return b"message_stop" if self.path_for(kind) == MESSAGES_PATH else b"[DONE]"

    def request_body(self) -> bytes:
        stream = ',"stream":true' if self.stream else ""
        max_tokens = ',"max_tokens":1024' if self.gateway_path == MESSAGES_PATH else ""  # Messages requires it
        return f'{{"model":"{self.model}","messages":[{{"role":"user","content":"hi"}}]{max_tokens}{stream}}}'.encode()


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("relay-c50", "non-stream chat relay, 50 connections: throughput", ALL_KINDS, "json"),
    Scenario("relay-c1", "non-stream chat relay, 1 connection: per-request latency", ALL_KINDS, "json", connections=1),
    Scenario("stream", "50-event OpenAI SSE relay, 50 connections: streams/s and TTFB", ALL_KINDS, "sse", stream=True),
    Scenario(
        "anthropic-stream",
        "OpenAI stream request served by an Anthropic channel: Messages SSE translated to OpenAI chunks",
        ("direct", "oneapi"),
        "json",
        stream=True,
        model=ANTHROPIC_MODEL,
        direct_path=MESSAGES_PATH,
        gateway_config="anthropic",
    ),
    # issue 11: an Anthropic client (POST /v1/messages) against the `stream` scenario's OpenAI pass-through
    Scenario(
        "messages-stream",
        "Anthropic Messages client, OpenAI-format vendor: the 50-event stream translated to Messages events",
        ("oneapi",),
        "sse",
        stream=True,
        gateway_path=MESSAGES_PATH,
    ),
    Scenario(
        "messages-native-stream",
        "Anthropic Messages client, Anthropic channel: the Messages stream relayed as it is",
        ("oneapi",),
        "sse",
        stream=True,
        model=ANTHROPIC_MODEL,
        gateway_path=MESSAGES_PATH,
        gateway_config="anthropic",
    ),
    Scenario(
        "count-tokens",
        "POST /v1/messages/count_tokens on an OpenAI channel: the gateway's estimate, 50 connections",
        ("oneapi",),
        "json",
        gateway_path=COUNT_TOKENS_PATH,
    ),
    Scenario(
        "big-config",
        "relay-c50 with 1,000 channels and 10,000 tokens: lookup cost must not grow",
        ("oneapi",),
        "json",
        gateway_config="big",
    ),
    Scenario(
        "big-config-reload",
        "big-config while the file is rewritten every second: failed requests and reload time",
        ("oneapi",),
        "json",
        gateway_config="big",
        reloads=True,
        min_duration_s=20,
    ),
    Scenario(
        "budget-rpm",
        "relay-c50 with a token carrying budget: 1000 and rpm: 1000000",
        ("oneapi",),
        "json",
        gateway_config="budget",
    ),
)

SCENARIOS_BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


def setup_key(kind: SubjectKind, scenario: Scenario) -> tuple[str, ...]:
    """Scenarios with equal keys run against one start of the subject."""
    if kind == "oneapi":
        return (scenario.upstream, scenario.gateway_config)
    return (scenario.upstream,)
