"""API keys: generation and hashing. Pure functions, no I/O.

A key looks like ``plk_<prefix>_<secret>``. The prefix is public (it finds the row and is shown in
listings); the whole key is stored only as its SHA-256. Keys carry 256 bits of randomness, so a fast
hash is the right tool here (a slow password hash protects low-entropy secrets, which these are not).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "plk_"


def generate_key() -> tuple[str, str, bytes]:
    """Return (full key, public prefix, hash of the full key)."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_prefix(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    rest = key[len(KEY_PREFIX):]
    prefix, sep, secret = rest.partition("_")
    if not sep or len(prefix) != 12 or not secret:
        return None
    return prefix


def matches(key: str, stored_hash: bytes) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)
