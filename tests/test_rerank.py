"""End to end: POST /v1/rerank (the {model, query, documents, top_n} shape One API and new-api expose) through the
gateway to a vendor that speaks it (relayed as it is) and to Cohere v2 (mapped by cohere.yaml).

No vendor recording exists for rerank: the vendor bodies below are the examples printed in the vendors' docs
(docs.cohere.com/reference/rerank, jina.ai/reranker).
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from conftest import CLIENT_KEY, PROVIDERS_DIR, UPSTREAM_KEY, GatewayProcess, serve_for_module
from fakevendor import FakeVendor

DOCS = [
    "Carson City is the capital city of the American state of Nevada.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands in the Pacific Ocean. Its capital is Saipan.",
    "Capitalization or capitalisation in English grammar is the use of a capital letter at the start of a word.",
    {"text": "Washington, D.C. (also known as simply Washington or D.C.) is the capital of the United States."},
    "Capital punishment has existed in the United States since before the United States was a country.",
]
COHERE_ANSWER = {  # docs.cohere.com/reference/rerank, the example response
    "results": [{"index": 3, "relevance_score": 0.999071}, {"index": 4, "relevance_score": 0.7867867}, {"index": 0, "relevance_score": 0.32713068}],
    "id": "07734bd2-2473-4f07-94e1-0d9f0e6843cf",
    "meta": {"api_version": {"version": "2", "is_experimental": False}, "billed_units": {"search_units": 1}},
}
JINA_ANSWER = {  # jina.ai/reranker, the example response
    "model": "jina-reranker-v2-base-multilingual",
    "usage": {"total_tokens": 815},
    "results": [{"index": 0, "document": {"text": "Organic skincare for sensitive skin with aloe vera and chamomile..."}, "relevance_score": 0.8783142566680908},
                {"index": 2, "document": {"text": "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille..."}, "relevance_score": 0.7624675869941711}],
}


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    with FakeVendor() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateway(vendor: FakeVendor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {
        "listen": "127.0.0.1:3000",
        "providers_dir": str(PROVIDERS_DIR),
        "channels": [
            {"name": "cohere", "provider": "cohere", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": ["rerank-v3.5", "command-a-03-2025"]},
            {"name": "jina", "provider": "jina", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY],
             "models": ["jina-reranker-v2-base-multilingual"], "model_map": {"reranker": "jina-reranker-v2-base-multilingual"}},
            {"name": "openai", "provider": "openai", "base_url": vendor.base_url, "keys": [UPSTREAM_KEY], "models": ["gpt-4o-mini"]},
        ],
        "tokens": [{"name": "tester", "key": CLIENT_KEY}],
    }
    yield from serve_for_module(tmp_path_factory, "rerank", config)


def rerank(gateway: GatewayProcess, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(gateway.url("/v1/rerank"), json=body, headers={"Authorization": f"Bearer {CLIENT_KEY}"}, timeout=20, **kwargs)


def test_a_vendor_that_speaks_rerank_gets_it_relayed(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/rerank", JINA_ANSWER)
    body = {"model": "jina-reranker-v2-base-multilingual", "query": "Organic skincare products for sensitive skin", "top_n": 2,
            "documents": ["Organic skincare for sensitive skin with aloe vera and chamomile...", "New makeup trends focus on bold colors...",
                          "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille..."]}

    response = rerank(gateway, body)

    assert response.status_code == 200, response.text
    assert response.json() == JINA_ANSWER
    sent = vendor.requests_to("/v1/rerank")[-1]
    assert sent.json() == body
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_mapped_model_name_reaches_the_vendor(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v1/rerank", JINA_ANSWER)
    response = rerank(gateway, {"model": "reranker", "query": "q", "documents": ["a"]})
    assert response.status_code == 200
    assert vendor.requests_to("/v1/rerank")[-1].json()["model"] == "jina-reranker-v2-base-multilingual"


def test_cohere_rerank_is_mapped_both_ways(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v2/rerank", COHERE_ANSWER)

    response = rerank(gateway, {"model": "rerank-v3.5", "query": "What is the capital of the United States?", "documents": DOCS,
                                "top_n": 3, "return_documents": True})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == COHERE_ANSWER["id"] and answer["model"] == "rerank-v3.5"
    assert [(r["index"], r["relevance_score"]) for r in answer["results"]] == [(3, 0.999071), (4, 0.7867867), (0, 0.32713068)]
    assert answer["results"][0]["document"] == DOCS[3]
    assert answer["results"][2]["document"] == {"text": DOCS[0]}
    assert answer["usage"] == {"search_units": 1}
    sent = vendor.requests_to("/v2/rerank")[-1]
    assert sent.json() == {"model": "rerank-v3.5", "query": "What is the capital of the United States?",
                           "documents": [d if isinstance(d, str) else d["text"] for d in DOCS], "top_n": 3}
    assert sent.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_cohere_errors_keep_their_status_and_message(gateway: GatewayProcess, vendor: FakeVendor) -> None:
    vendor.reply_json("/v2/rerank", {"message": "invalid request: query must not be empty"}, status=400)
    response = rerank(gateway, {"model": "rerank-v3.5", "query": " ", "documents": ["a"]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "invalid request: query must not be empty"


@pytest.mark.parametrize("body, status, param", [
    ({"model": "rerank-v3.5", "documents": ["a"]}, 400, "query"),
    ({"model": "rerank-v3.5", "query": "q"}, 400, "documents"),
    ({"model": "rerank-v3.5", "query": "q", "documents": []}, 400, "documents"),
    ({"model": "rerank-v3.5", "query": "q", "documents": "a"}, 400, "documents"),
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": 0}, 400, "top_n"),
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "top_n": True}, 400, "top_n"),
    ({"query": "q", "documents": ["a"]}, 400, "model"),
    ({"model": "no-such", "query": "q", "documents": ["a"]}, 404, "model"),
    ({"model": "gpt-4o-mini", "query": "q", "documents": ["a"]}, 404, "model"),  # a chat model: no rerank operation
    ({"model": "rerank-v3.5", "query": "q", "documents": ["a"], "stream": True}, 400, "stream"),
])
def test_client_mistakes_are_openai_shaped_4xx(gateway: GatewayProcess, vendor: FakeVendor, body: dict[str, Any], status: int, param: str) -> None:
    vendor.received.clear()
    response = rerank(gateway, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["param"] == param
    assert not vendor.received


def test_bad_json_is_a_400(gateway: GatewayProcess) -> None:
    response = httpx.post(gateway.url("/v1/rerank"), content=b"{not json", timeout=20,
                          headers={"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json"})
    assert response.status_code == 400
    assert json.loads(response.text)["error"]["code"] == "invalid_json"
