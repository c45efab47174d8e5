"""A reply's body, decoded with a running limit: memory stays bounded whatever the encoding.

httpx would inflate each compressed chunk whole (a 64 kB chunk of a gzip bomb is 64 MB)
and stacks decoders for `Content-Encoding: gzip, gzip` (each layer multiplies). Here the
raw bytes are inflated by one zlib decoder whose output per step is capped at what is
left of `max_response_size`, and only the encodings we ask for are accepted: identity,
gzip and deflate, one of them. Anything else is refused with its name.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from .errors import MalformedResponse, ResponseTooLarge

ACCEPT_ENCODING = "gzip, deflate"
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS}


def read_body(endpoint: str, content_encoding: str | None, raw_chunks: Iterable[bytes], limit: int) -> bytes:
    """The decoded body, or ResponseTooLarge as soon as it would pass `limit` bytes."""
    encodings = [e.strip().lower() for e in (content_encoding or "").split(",") if e.strip()]
    encodings = [e for e in encodings if e != "identity"]
    if len(encodings) > 1:
        raise MalformedResponse(f"{endpoint}: stacked Content-Encoding {_shown(content_encoding)} is not accepted")
    if encodings and encodings[0] not in _WBITS:
        raise MalformedResponse(f"{endpoint}: Content-Encoding {_shown(content_encoding)} is not accepted")
    decoder = zlib.decompressobj(_WBITS[encodings[0]]) if encodings else None
    body = bytearray()
    received = 0
    for chunk in raw_chunks:
        received += len(chunk)  # compressed bytes count too: trailing junk is not free
        if received > limit:
            raise ResponseTooLarge(f"{endpoint}: the reply is larger than max_response_size={limit} bytes")
        if decoder is None:
            _append(body, chunk, endpoint, limit)
            continue
        data = chunk
        while data and not decoder.eof:
            # At most one byte past the limit per step: enough to know the limit is passed.
            try:
                out = decoder.decompress(data, limit - len(body) + 1)
            except zlib.error:
                raise MalformedResponse(f"{endpoint}: the compressed body is corrupt") from None
            _append(body, out, endpoint, limit)
            data = decoder.unconsumed_tail
        if decoder.eof and (data or decoder.unused_data):
            raise MalformedResponse(f"{endpoint}: data after the end of the compressed body")
    if decoder is not None and received and not decoder.eof:
        raise MalformedResponse(f"{endpoint}: the compressed body is truncated")
    return bytes(body)


def _append(body: bytearray, data: bytes, endpoint: str, limit: int) -> None:
    if len(body) + len(data) > limit:
        raise ResponseTooLarge(f"{endpoint}: the reply is larger than max_response_size={limit} bytes")
    body += data


def _shown(value: str | None) -> str:
    return repr((value or "")[:40])
