"""Dashboard sign-in: an admin API key exchanged for a server-side session, carried by a cookie.

* The session token (256 random bits) lives only in the browser's cookie (HttpOnly, SameSite=Strict, Path
  /dashboard, Secure over TLS or when ``PL_DASHBOARD_SECURE_COOKIE`` is set). The database keeps its SHA-256
  (``dashboard_sessions``), the program, the key it was opened with and its expiry.
* A session is valid while it has not expired and its key is neither revoked nor stripped of ``admin``: the
  lookup joins ``api_keys`` on every page, so revoking the key ends its sessions at once, in every process.
* Forms are CSRF-safe. Signed in: a synchronizer token derived from the session token (HMAC), so it is tied to
  the session and changes with it. The sign-in form (no session yet): a double-submit token, the same random
  value in a SameSite=Strict HttpOnly cookie and in the form. Every POST must also come from the dashboard's
  own origin when the browser says where it comes from (``Origin``, ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from app.programs.context import Principal
from app.programs.schemas import ProgramSettings

COOKIE = "pl_dashboard"
SIGNIN_COOKIE = "pl_dashboard_signin"
PATH = "/dashboard"

INSERT = """
INSERT INTO dashboard_sessions (token_hash, program_id, key_id, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at
"""
# Expired sessions are deleted as others sign in (the index on expires_at keeps this cheap).
PURGE = "DELETE FROM dashboard_sessions WHERE expires_at < now()"
LOOKUP = """
SELECT s.id, s.expires_at, k.id AS key_id, k.scopes, p.id AS program_id, p.name AS program_name, p.currency,
       p.timezone, p.settings
FROM dashboard_sessions s
JOIN api_keys k ON k.id = s.key_id AND k.program_id = s.program_id
JOIN programs p ON p.id = s.program_id
WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL AND 'admin' = ANY (k.scopes)
"""
DELETE = "DELETE FROM dashboard_sessions WHERE token_hash = $1"


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    principal: Principal
    program_name: str
    expires_at: datetime
    csrf: str


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_for(token: str) -> str:
    """The synchronizer token of the session whose token is ``token`` (only its holder can compute it)."""
    return hmac.new(token.encode(), b"dashboard-csrf", hashlib.sha256).hexdigest()


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # what new_token makes


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_secure(request: Request) -> bool:
    """TLS as this process sees it (the service does not trust X-Forwarded-Proto: uvicorn runs with
    proxy_headers off), or the operator says TLS ends in front of it."""
    return request.url.scheme == "https" or bool(request.app.state.settings.dashboard_secure_cookie)


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PATH, httponly=True, samesite="strict",
                        secure=is_secure(request))


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(name, path=PATH, httponly=True, samesite="strict", secure=is_secure(request))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (a forged form post)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:  # not a browser's cross-site post (those carry Origin); the CSRF token still applies
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


async def open_session(pool: asyncpg.Pool, principal: Principal, hours: float) -> tuple[str, datetime]:
    token = new_token()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(PURGE)
        expires_at: datetime = await conn.fetchval(INSERT, token_hash(token), principal.program_id,
                                                   principal.key_id, timedelta(hours=hours).total_seconds())
    return token, expires_at


async def load_session(request: Request) -> Session | None:
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    row = await request.app.state.pool.fetchrow(LOOKUP, token_hash(token))
    if row is None:
        return None
    principal = Principal(key_id=row["key_id"], program_id=row["program_id"], scopes=frozenset(row["scopes"]),
                          currency=row["currency"], timezone=row["timezone"],
                          settings=ProgramSettings.model_validate(row["settings"]))
    return Session(id=row["id"], principal=principal, program_name=row["program_name"],
                   expires_at=row["expires_at"], csrf=csrf_for(token))


async def close_session(pool: asyncpg.Pool, token: str) -> None:
    await pool.execute(DELETE, token_hash(token))


async def sessions_of_key(pool: asyncpg.Pool, key_id: UUID) -> int:
    """Live sessions opened with a key (for tests and operators)."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM dashboard_sessions WHERE key_id = $1 AND expires_at > now()", key_id)
    return n
