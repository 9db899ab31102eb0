"""The multipart reader behind /v1/audio/transcriptions: fields found however the body is cut into chunks,
a file's bytes never held for scanning, the spool replayed whole with the model rewritten."""

from __future__ import annotations

import asyncio
import os
from typing import AsyncIterator

import httpx
import pytest

from oneapi.errors import GatewayError
from oneapi.forms import FormScanner, Upload, UploadFailed, form_boundary


def encode_form(fields: dict[str, str], files: dict[str, tuple[str, bytes]], fields_first: bool = True) -> tuple[bytes, str]:
    """A body exactly as httpx (which the openai SDK uses) encodes it, in a chosen part order."""
    request = httpx.Request("POST", "http://x/", data=fields, files=files)
    body = request.read()
    content_type = request.headers["content-type"]
    if fields_first:
        return body, content_type
    # the same parts, file first: what `curl -F file=@a.mp3 -F model=...` sends
    boundary = form_boundary(content_type)
    parts = body.split(b"--" + boundary)[1:-1]
    files_first = [p for p in parts if b"filename=" in p] + [p for p in parts if b"filename=" not in p]
    return b"".join(b"--" + boundary + p for p in files_first) + b"--" + boundary + b"--\r\n", content_type


def scan(body: bytes, content_type: str, step: int) -> FormScanner:
    scanner = FormScanner(form_boundary(content_type))
    for i in range(0, len(body), step):
        scanner.feed(body[i:i + step])
    return scanner


@pytest.mark.parametrize("step", [1, 7, 64, 100_000])
@pytest.mark.parametrize("fields_first", [True, False])
def test_model_and_fields_are_found_however_the_body_is_cut(step: int, fields_first: bool) -> None:
    audio = os.urandom(5000) + b"\r\n--not-the-boundary\r\n"
    body, content_type = encode_form({"model": "whisper-1", "response_format": "verbose_json", "language": "en"},
                                     {"file": ("a.mp3", audio)}, fields_first)
    scanner = scan(body, content_type, step)
    assert scanner.done and scanner.value == "whisper-1"
    start, end = scanner.span  # type: ignore[misc]
    assert body[start:end] == b"whisper-1"
    if fields_first:
        assert scanner.fields == {}  # model is httpx's first field: nothing before it is read
    assert "file" not in scanner.fields


def test_fields_before_the_model_are_kept() -> None:
    body, content_type = encode_form({"stream": "true", "response_format": "text", "model": "gpt-4o-transcribe"}, {"file": ("a.wav", b"RIFF")})
    scanner = scan(body, content_type, 3)
    assert scanner.value == "gpt-4o-transcribe"
    assert scanner.fields == {"stream": "true", "response_format": "text"}


def test_a_large_file_before_the_model_is_not_kept_in_memory() -> None:
    body, content_type = encode_form({"model": "whisper-1"}, {"file": ("a.mp3", os.urandom(3_000_000))}, fields_first=False)
    scanner = FormScanner(form_boundary(content_type))
    peak = 0
    for i in range(0, len(body), 65536):
        scanner.feed(body[i:i + 65536])
        peak = max(peak, len(scanner._buffer))
    assert scanner.value == "whisper-1"
    assert peak < 200_000


def test_a_form_without_model_ends_without_one() -> None:
    body, content_type = encode_form({"language": "en"}, {"file": ("a.mp3", b"ID3")})
    scanner = scan(body, content_type, 10)
    assert scanner.done and scanner.value is None


def test_a_model_sent_as_a_file_is_not_the_model_field() -> None:
    body, content_type = encode_form({}, {"model": ("model.txt", b"gpt-4o"), "file": ("a.mp3", b"ID3")})
    assert scan(body, content_type, 5).value is None


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data", "text/plain; boundary=x", None])
def test_not_a_multipart_form_is_a_400(content_type: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        form_boundary(content_type)
    assert caught.value.status == 400


def test_quoted_boundary() -> None:
    assert form_boundary('multipart/form-data; boundary="a b:c"') == b"a b:c"


async def chunks_of(body: bytes, size: int, pause: float = 0.0) -> AsyncIterator[bytes]:
    for i in range(0, len(body), size):
        if pause:
            await asyncio.sleep(pause)
        yield body[i:i + size]


async def collect(iterator: AsyncIterator[bytes]) -> bytes:
    return b"".join([piece async for piece in iterator])


def test_upload_replays_the_whole_body_with_the_model_rewritten_each_time() -> None:
    audio = os.urandom(1_500_000)  # past the in-memory part of the spool
    body, content_type = encode_form({"model": "whisper-alias", "language": "en"}, {"file": ("a.mp3", audio)})

    async def run() -> None:
        upload = Upload(chunks_of(body, 65536, pause=0.001), form_boundary(content_type), limit=10_000_000, declared=len(body))
        assert await upload.read_fields() == "whisper-alias"
        first = await collect(upload.body("whisper-1"))  # follows the client while it is still sending
        second = await collect(upload.body("whisper-large-v3"))
        upload.close()
        assert first == body.replace(b"whisper-alias", b"whisper-1", 1)
        assert second == body.replace(b"whisper-alias", b"whisper-large-v3", 1)
        assert upload.length("whisper-1") == len(first)

    asyncio.run(run())


def test_a_try_abandoned_halfway_does_not_disturb_the_next() -> None:
    body, content_type = encode_form({"model": "m"}, {"file": ("a.mp3", os.urandom(300_000))})

    async def run() -> None:
        upload = Upload(chunks_of(body, 4096, pause=0.0005), form_boundary(content_type), limit=10_000_000, declared=None)
        await upload.read_fields()
        abandoned = upload.body("m")
        await abandoned.__anext__()
        await abandoned.__anext__()
        await abandoned.aclose()
        assert await collect(upload.body("m")) == body
        assert upload.length("m") is None  # chunked client: chunked upstream
        upload.close()

    asyncio.run(run())


def test_too_large_fails_the_upload_and_the_try_reading_it() -> None:
    body, content_type = encode_form({"model": "m"}, {"file": ("a.mp3", os.urandom(200_000))})

    async def run() -> None:
        upload = Upload(chunks_of(body, 8192), form_boundary(content_type), limit=100_000, declared=None)
        assert await upload.read_fields() == "m"
        with pytest.raises(UploadFailed):
            await collect(upload.body("m"))
        assert upload.failure is not None and upload.failure.status == 413
        upload.close()

    asyncio.run(run())


def test_a_missing_model_field_is_a_400_with_param() -> None:
    body, content_type = encode_form({"language": "en"}, {"file": ("a.mp3", b"ID3")})

    async def run() -> None:
        upload = Upload(chunks_of(body, 100), form_boundary(content_type), limit=10_000, declared=None)
        with pytest.raises(GatewayError) as caught:
            await upload.read_fields()
        upload.close()
        assert caught.value.status == 400 and caught.value.param == "model"

    asyncio.run(run())


def test_a_client_that_goes_away_mid_upload_fails_the_upload() -> None:
    body, content_type = encode_form({"model": "m"}, {"file": ("a.mp3", os.urandom(50_000))})

    async def cut() -> AsyncIterator[bytes]:
        yield body[:30_000]
        raise OSError("client disconnected")

    async def run() -> None:
        upload = Upload(cut(), form_boundary(content_type), limit=1_000_000, declared=len(body))
        assert await upload.read_fields() == "m"
        with pytest.raises(UploadFailed):
            await collect(upload.body("m"))
        assert upload.failure is not None and upload.failure.status == 400
        upload.close()

    asyncio.run(run())


def two_models(first: bytes, second: bytes, file: bytes, second_as_file: bool = False) -> tuple[bytes, str]:
    """model, a file, then model again: a body no SDK sends but curl -F or a hand-made client can."""
    boundary = "b0undary"
    second_head = b'; filename="m.txt"' if second_as_file else b""
    body = (b"--b0undary\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" + first + b"\r\n"
            b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n\r\n" + file + b"\r\n"
            b"--b0undary\r\nContent-Disposition: form-data; name=\"model\"" + second_head + b"\r\n\r\n" + second + b"\r\n"
            b"--b0undary--\r\n")
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("step", [1, 13, 4096, 1_000_000])
@pytest.mark.parametrize("second_as_file", [False, True])
def test_a_second_model_field_anywhere_is_a_400(step: int, second_as_file: bool) -> None:
    body, content_type = two_models(b"whisper-1", b"gpt-4o-transcribe", os.urandom(20_000), second_as_file)
    with pytest.raises(GatewayError) as caught:
        scan(body, content_type, step)
    assert caught.value.status == 400 and caught.value.code == "duplicate_field" and caught.value.param == "model"


def test_fields_after_the_model_are_scanned_but_not_kept() -> None:
    body, content_type = encode_form({"model": "whisper-1", "language": "en"}, {"file": ("a.mp3", b"ID3" * 1000)})
    scanner = scan(body, content_type, 50)
    assert scanner.value == "whisper-1" and scanner.ended and scanner.fields == {}


def test_an_upload_with_a_second_model_never_replays_it() -> None:
    body, content_type = two_models(b"whisper-1", b"gpt-4o-transcribe", os.urandom(300_000))

    async def run() -> None:
        upload = Upload(chunks_of(body, 4096, pause=0.0005), form_boundary(content_type), limit=10_000_000, declared=len(body))
        assert await upload.read_fields() == "whisper-1"
        sent = []
        with pytest.raises(UploadFailed):
            async for piece in upload.body("whisper-1"):
                sent.append(piece)
        assert upload.failure is not None and upload.failure.code == "duplicate_field"
        assert b"gpt-4o-transcribe" not in b"".join(sent) and not b"".join(sent).endswith(b"--b0undary--\r\n")
        upload.close()

    asyncio.run(run())
