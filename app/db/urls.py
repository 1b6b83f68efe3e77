"""Database URL plumbing: one URL in, the spelling each driver wants out."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://`` and friends -> ``postgresql://`` for asyncpg."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


def sqlalchemy_url(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql+asyncpg", *parts[1:]))


def with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")
