"""The parts of webhooks that need no database: Standard Webhooks signatures (checked against the reference
implementation), the retry schedule, and which addresses a delivery may go to."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.errors import DomainError
from app.events.webhooks import (
    RETRY_DELAYS,
    address_allowed,
    new_secret,
    parse_url,
    retry_delay,
    retry_schedule_total,
    signature,
    signed_headers,
)


@given(body=st.binary(max_size=300).map(lambda b: b.decode("latin-1").encode()), ts=st.integers(0, 2**33))
def test_signatures_are_those_of_the_reference_implementation(body, ts):
    secret = new_secret()
    expected = Webhook(secret).sign("evt_1", datetime.fromtimestamp(ts, UTC), body.decode())
    assert signature(secret, "evt_1", ts, body) == expected


def test_the_reference_implementation_verifies_both_secrets_during_a_rotation():
    old, new = new_secret(), new_secret()
    body = b'{"id": "evt_1"}'
    import time

    headers = signed_headers([new, old], "evt_1", int(time.time()), body)
    assert headers["webhook-signature"].count("v1,") == 2
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == {"id": "evt_1"}
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_secrets_are_whsec_and_random():
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(s.startswith("whsec_") and len(s) == 6 + 32 for s in secrets)


def test_the_retry_schedule_spans_about_three_days_with_bounded_jitter():
    assert 2.9 * 86400 < retry_schedule_total() < 3.3 * 86400
    assert list(RETRY_DELAYS) == sorted(RETRY_DELAYS)
    rng = random.Random(1)
    for attempt, base in enumerate(RETRY_DELAYS, start=1):
        for _ in range(50):
            delay = retry_delay(attempt, rng)
            assert delay is not None and 0.8 * base <= delay <= 1.2 * base
    assert retry_delay(len(RETRY_DELAYS) + 1) is None and retry_delay(0) is None


@pytest.mark.parametrize("address, allowed", [
    ("93.184.216.34", True), ("2606:4700::1111", True),
    ("127.0.0.1", False), ("::1", False), ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fc00::1", False), ("0.0.0.0", False),
    ("::", False), ("224.0.0.1", False), ("100.64.0.1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:93.184.216.34", True), ("192.0.2.1", False), ("255.255.255.255", False),
])
def test_only_public_unicast_addresses_are_allowed(address, allowed):
    assert address_allowed(address) is allowed


@pytest.mark.parametrize("url", ["ftp://x.example/", "https://", "https://u:p@x.example/", "https://x.example/#f",
                                 "https://x.example:99999/", "javascript:alert(1)", "x.example/hook"])
def test_urls_must_be_plain_http_or_https(url):
    with pytest.raises(DomainError) as info:
        parse_url(url)
    assert info.value.code == "webhook_url_invalid"


def test_url_parts():
    assert parse_url("https://crm.example/hook?x=1") == ("https", "crm.example", 443)
    assert parse_url("http://[2606:4700::1111]:8080/h") == ("http", "2606:4700::1111", 8080)
