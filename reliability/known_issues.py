"""Service bugs the reliability commands found, reported and not fixed yet (``app/`` is not this suite's to
change). Each has a reproduction, and the anomaly signatures (``check:subject``, fnmatch patterns) by which
each command recognises it.

The commands stay strict: they exit 1 while any anomaly reproduces, known or not, and print which are
known. ``tests/test_reliability.py`` fails on any anomaly whose signature is *not* listed here, so that
everything else still breaks the build; with ``RELIABILITY_STRICT=1`` it accepts none. Remove an entry in
the change that fixes it (the suite then guards the fix).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class Issue:
    title: str
    reproduce: str
    signatures: dict[str, tuple[str, ...]] = field(default_factory=dict)  # mode -> patterns


ISSUES: dict[str, Issue] = {
    "RL-6": Issue(
        "Lax coercions accept requests the contract calls invalid: a number as a date (birthday 0 -> "
        "1970-01-01), a number as a boolean (expiration policy round_to_end_of_month 0), a UTF-16 encoded "
        "body (RFC 8259: JSON between systems is UTF-8). (Booleans as points are refused since points are "
        "strict integers.)",
        "PUT /v1/members/m {\"birthday\": 0} -> 200 with birthday 1970-01-01; POST /v1/adjustments "
        "{\"member_id\": \"m\", \"points\": 5, \"reason\": \"x\"} encoded as UTF-16 -> 201.",
        {"fuzz": ("bad_input_*:adjustment points=True", "bad_input_*:UTF-16 body", "schemathesis_ST201:",
                  "validation_failure_stored_under_key:adjustment points=True",
                  "validation_failure_stored_under_key:UTF-16 body")},
    ),
    "RL-9": Issue(
        "Unauthenticated writes whose body is not JSON are answered 400 malformed_request instead of 401: "
        "FastAPI parses the body before the auth dependency runs.",
        "curl -X POST /v1/adjustments -H 'Content-Type: application/json' -d '{not json' (no key) -> 400.",
        {"security": ("body_parsed_before_authentication:",)},
    ),
    "RL-13": Issue(
        "GET /v1/redemptions/quote (only POST is declared) is answered 422, not 405: the path matches GET "
        "/v1/redemptions/{redemption_id} with redemption_id 'quote'. (GET /v1/purchases/quote likewise reads "
        "the order with id 'quote'.) A literal segment beside a parameter of the same depth.",
        "curl -X GET /v1/redemptions/quote -H 'Authorization: Bearer <admin>' -> 422 path.redemption_id.",
        {"fuzz": ("schemathesis_ST204:",)},
    ),
}


def known(mode: str, signature: str) -> str | None:
    """The id of the known issue an anomaly signature belongs to, if any."""
    for issue_id, issue in ISSUES.items():
        if any(fnmatchcase(signature, pattern) for pattern in issue.signatures.get(mode, ())):
            return issue_id
    return None
