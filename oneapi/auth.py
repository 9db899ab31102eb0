"""Upstream auth styles, named in provider files: how a channel key reaches the vendor."""

from __future__ import annotations

from .providers import AuthSpec


def credentials(auth: AuthSpec, key: str) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """Headers and query parameters that carry `key` in the given style (computed once per key)."""
    if not key or auth.style == "none" or auth.signer:  # a signer works per request (signers.py)
        return {}, ()
    if auth.style == "bearer":
        return {"Authorization": f"Bearer {key}"}, ()
    if auth.style == "header":
        assert auth.header is not None
        return {auth.header: f"{auth.prefix}{key}"}, ()
    if auth.style == "query":
        assert auth.param is not None
        return {}, ((auth.param, key),)
    raise ValueError(f"unknown auth style {auth.style!r}")
