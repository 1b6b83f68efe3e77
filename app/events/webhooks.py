"""Webhooks, the parts that need no database: signing (Standard Webhooks), the retry schedule, the URL check.

Signing follows the Standard Webhooks specification (https://www.standardwebhooks.com), so any of its libraries
verifies a delivery: headers ``webhook-id`` (the event's id, the same on every retry, for deduplication),
``webhook-timestamp`` (seconds since the epoch, of this attempt) and ``webhook-signature``: ``v1,<base64
HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"`` keyed with the base64-decoded part of the ``whsec_`` secret. While
a rotated-out secret is still in its grace period, the header carries both signatures, space-separated, and a
receiver holding either secret accepts the delivery.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import random
import secrets
import socket
from urllib.parse import urlsplit

from app.errors import DomainError

SECRET_PREFIX = "whsec_"

# Seconds to wait before the next attempt, after attempt n failed (n = 1, 2, ...), each drawn within +-20%
# (jitter spreads the retries of an outage over time). Fifteen attempts over about three days (75.7 hours):
# at once, then after 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, and every 12 h five times; after the
# last, the delivery has failed for good (the feed, a redelivery and `recover` still have it).
RETRY_DELAYS: tuple[int, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800, *(43200,) * 5)
JITTER = 0.2


def new_secret() -> str:
    """24 random bytes, as Standard Webhooks secrets are written: ``whsec_<base64>``."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def signed_headers(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret given (the current one first)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in secrets_),
    }


def retry_delay(attempts: int, rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones; None: give up."""
    if attempts < 1 or attempts > len(RETRY_DELAYS):
        return None
    base = RETRY_DELAYS[attempts - 1]
    return base * (1 + JITTER * (2 * (rng or random).random() - 1))


def retry_schedule_total() -> int:
    """Seconds from the first attempt to the last (without jitter)."""
    return sum(RETRY_DELAYS)


# --- Where deliveries may go (SSRF) ------------------------------------------------------------------------------

def address_allowed(address: str) -> bool:
    """A public unicast address: not loopback, private, link-local, multicast, reserved or unspecified (IPv4-mapped
    IPv6 addresses are judged as the IPv4 address they carry)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global)


def parse_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, or DomainError webhook_url_invalid."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise DomainError("webhook_url_invalid", f"The URL cannot be parsed: {exc}.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DomainError("webhook_url_invalid", "The URL must be http:// or https:// with a host.")
    if parts.username or parts.password:
        raise DomainError("webhook_url_invalid", "The URL must not carry credentials.")
    if parts.fragment:
        raise DomainError("webhook_url_invalid", "The URL must not have a fragment.")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[str]:
    """Every address the host resolves to (an IP literal: itself)."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or (unless ``allow_private``) whose host resolves to any address that is
    not public: a webhook must not become a way into the service's own network. A host that does not resolve is
    refused too (the endpoint could not be delivered to)."""
    _, host, port = parse_url(url)
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise DomainError("webhook_url_invalid", f"The host {host!r} does not resolve.") from exc
    if not allow_private:
        refused = [a for a in addresses if not address_allowed(a)]
        if refused:
            raise DomainError("webhook_url_not_allowed",
                              f"The host {host!r} resolves to an address that is not public ({refused[0]}).")
