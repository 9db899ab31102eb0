"""Multipart uploads (POST /v1/audio/transcriptions): routed by the form's `model` field, streamed upstream as
they arrive, and kept replayable so that a failed try can still move to the next channel.

One task reads the client's body into a spool (memory for the first MiB, then a temporary file), and scans
the form only up to the end of its `model` field; every try streams the spool to its vendor from the start,
waiting for more where it catches up with the client. Memory stays bounded whatever the file size, the
first vendor gets the file while the client is still sending it, and `max_body_bytes` is enforced as the
bytes come in.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from typing import AsyncIterator

from .errors import GatewayError, bad_request

SPOOL_IN_MEMORY = 1 << 20  # bytes kept in memory before the spool moves to a temporary file
READ_SIZE = 1 << 16  # bytes per chunk when the spool is replayed
FIELD_LIMIT = 1 << 16  # a text field larger than this is passed on but not read
HEADERS_LIMIT = 1 << 14  # a part's header block larger than this is not a form the gateway accepts

_BOUNDARY = re.compile(r';\s*boundary=(?:"([^"]{1,200})"|([^\s;"]{1,200}))', re.I)
_NAME = re.compile(rb';\s*name=(?:"([^"]*)"|([^\s;]+))', re.I)
_FILENAME = re.compile(rb';\s*filename\*?=', re.I)


class UploadFailed(Exception):
    """The client's body could not be read to the end: too large, cut, or not a form."""


def form_boundary(content_type: str | None) -> bytes:
    """The multipart boundary of a Content-Type header; a 400 when it is not multipart/form-data."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "multipart/form-data":
        raise bad_request("This endpoint takes multipart/form-data (a file upload), with a 'model' field.", code="invalid_content_type")
    match = _BOUNDARY.search(content_type or "")
    if match is None:
        raise bad_request("The multipart/form-data Content-Type has no boundary.", code="invalid_content_type")
    return (match.group(1) or match.group(2)).encode("latin-1")


class FormScanner:
    """Reads a multipart/form-data body as it arrives, up to the end of one wanted field.

    It keeps only what it must: the current part's headers and text, never a file's bytes, so a file
    sent before the wanted field costs no memory here. Offsets are absolute positions in the body.
    """

    def __init__(self, boundary: bytes, wanted: str = "model"):
        self._first = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._wanted = wanted
        self._buffer = bytearray()
        self._base = 0  # body offset of _buffer[0]
        self._state = "preamble"
        self._name: str | None = None
        self._is_file = False
        self._start = 0  # body offset where the current part's content starts
        self._oversized = False
        self._wanted_parts = 0  # parts named as the wanted field: a second one is refused, wherever it comes
        self.fields: dict[str, str] = {}
        self.value: str | None = None
        self.span: tuple[int, int] | None = None  # body offsets of the wanted field's value
        self.done = False  # the wanted field is in, or the form ended without it
        self.ended = False  # the form's closing boundary was seen

    def feed(self, chunk: bytes) -> None:
        """Scan the next bytes of the body; a 400 (GatewayError) when they break the form or repeat the wanted field."""
        if self.ended:
            return
        self._buffer += chunk
        while not self.ended and self._step():
            pass

    def _drop(self, upto: int) -> None:
        """Forget buffered bytes before body offset `upto`."""
        count = upto - self._base
        if count > 0:
            del self._buffer[:count]
            self._base = upto

    def _step(self) -> bool:
        """Advance one state if the buffer allows; False when more bytes are needed."""
        buffer = self._buffer
        if self._state == "preamble":
            at = 0 if self._base == 0 and buffer.startswith(self._first) else buffer.find(self._delimiter)
            if at < 0:
                self._drop(self._base + max(0, len(buffer) - len(self._delimiter)))
                return False
            skip = len(self._first) if at == 0 else len(self._delimiter)
            return self._after_delimiter(at + skip)
        if self._state == "after":
            return self._after_delimiter(0)
        if self._state == "headers":
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > HEADERS_LIMIT:
                    raise bad_request("A multipart part's headers are too long.", code="invalid_multipart")
                return False
            self._begin_part(bytes(buffer[:end]))
            self._start = self._base + end + 4
            self._drop(self._start)
            self._state = "content"
            return True
        # content: look for the delimiter that ends it
        at = buffer.find(self._delimiter)
        if at < 0:
            keep_from = max(0, len(buffer) - len(self._delimiter) + 1)
            if self._is_file or self._oversized or len(buffer) > FIELD_LIMIT:
                if self._name == self._wanted and not self._is_file:
                    raise bad_request(f"The '{self._wanted}' field is too long.", code="invalid_multipart", param=self._wanted)
                self._oversized = True
                self._drop(self._base + keep_from)
            return False
        if not self._is_file and not self._oversized and self._name is not None:
            text = bytes(buffer[:at]).decode("utf-8", "replace")
            if self._name == self._wanted:
                self.value = text.strip()
                self.span = (self._start, self._base + at)
                self.done = True
            elif not self.done:
                self.fields.setdefault(self._name, text)
        self._drop(self._base + at + len(self._delimiter))
        return self._after_delimiter(0)

    def _after_delimiter(self, offset: int) -> bool:
        """After a boundary: `--` ends the form; otherwise a new part's headers follow its line end."""
        buffer = self._buffer
        if len(buffer) < offset + 2:
            self._drop(self._base + offset)
            self._state = "after"
            return False
        if buffer[offset:offset + 2] == b"--":
            self.done = self.ended = True
            return False
        line_end = buffer.find(b"\r\n", offset)
        if line_end < 0:
            if len(buffer) - offset > 256:
                raise bad_request("Malformed multipart boundary line.", code="invalid_multipart")
            self._drop(self._base + offset)
            self._state = "after"
            return False
        self._drop(self._base + line_end + 2)
        self._state = "headers"
        return True

    def _begin_part(self, head: bytes) -> None:
        self._name, self._is_file, self._oversized = None, False, False
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() != b"content-disposition":
                continue
            match = _NAME.search(value)
            if match is not None:
                self._name = (match.group(1) if match.group(1) is not None else match.group(2)).decode("utf-8", "replace")
            self._is_file = _FILENAME.search(value) is not None
        if self._name == self._wanted:
            self._wanted_parts += 1
            if self._wanted_parts > 1:  # the vendor might read either: what is routed and priced must be what is sent
                raise bad_request(f"The form has more than one '{self._wanted}' field: send it once.", code="duplicate_field",
                                  param=self._wanted)


class Upload:
    """A client's multipart body, read by one task into a replayable spool while tries stream it upstream."""

    def __init__(self, chunks: AsyncIterator[bytes], boundary: bytes, limit: int, declared: int | None):
        self.declared = declared
        self.failure: GatewayError | None = None
        self._limit = limit
        self._scanner = FormScanner(boundary)
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self._size = 0
        self._ended = False
        self._signal = asyncio.Event()
        self._reader = asyncio.create_task(self._read(chunks))

    @property
    def fields(self) -> dict[str, str]:
        """The form's text fields seen before `model`, and `model` itself."""
        fields = dict(self._scanner.fields)
        if self._scanner.value is not None:
            fields["model"] = self._scanner.value
        return fields

    async def read_fields(self) -> str:
        """Wait until the `model` field has arrived; its value, or the GatewayError that stops the request."""
        while not (self._scanner.done or self._ended):
            await self._changed()
        if self.failure is not None and not self._scanner.done:
            raise self.failure
        if self._scanner.value is None:
            raise bad_request("'model' is required: send it as a form field.", param="model")
        return self._scanner.value

    def length(self, model: str) -> int | None:
        """The body's length once `model` is written in, if the client declared its own."""
        if self.declared is None or self._scanner.span is None:
            return None
        start, end = self._scanner.span
        return self.declared - (end - start) + len(model.encode())

    async def body(self, model: str) -> AsyncIterator[bytes]:
        """The whole body from its start, with the `model` field's value replaced; follows the client while it
        is still sending. Raises UploadFailed if the client's body turns out too large or is cut."""
        assert self._scanner.span is not None
        start, end = self._scanner.span
        for piece in self._replay(0, start):
            yield piece
        yield model.encode()
        position = end
        while True:
            if position < self._size:
                for piece in self._replay(position, self._size):
                    position += len(piece)
                    yield piece
                continue
            if self.failure is not None:
                raise UploadFailed(self.failure.message)
            if self._ended:
                return
            await self._changed()

    def close(self) -> None:
        self._reader.cancel()
        self._spool.close()

    def _replay(self, start: int, end: int) -> list[bytes]:
        # read synchronously, in one go per call: the reader task appends between our awaits, never during
        pieces = []
        spool = self._spool
        while start < end:
            spool.seek(start)
            piece = spool.read(min(READ_SIZE, end - start))
            if not piece:
                break
            pieces.append(piece)
            start += len(piece)
        return pieces

    async def _changed(self) -> None:
        await self._signal.wait()

    def _notify(self) -> None:
        self._signal.set()
        self._signal = asyncio.Event()

    async def _read(self, chunks: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                if self._size + len(chunk) > self._limit:
                    raise GatewayError(413, f"Request body is larger than {self._limit} bytes.", code="request_too_large")
                self._scanner.feed(chunk)  # first: bytes that break the form are never replayed upstream
                self._spool.seek(0, 2)
                self._spool.write(chunk)
                self._size += len(chunk)
                self._notify()
        except GatewayError as exc:
            self.failure = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-upload (ClientDisconnect) or its stream broke
            self.failure = bad_request(f"The upload was cut before it ended ({type(exc).__name__}).", code="upload_incomplete")
        finally:
            self._ended = True
            self._notify()
