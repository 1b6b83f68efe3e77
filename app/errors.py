"""Domain errors with stable, machine-readable codes. No HTTP here beyond the status each code maps to.

Every code a client can see is listed in ``CATALOG``; the API layer renders them as RFC 9457
problem+json and declares them in each route's OpenAPI ``responses``.
"""

from __future__ import annotations

from typing import Any

# code -> (HTTP status, title)
CATALOG: dict[str, tuple[int, str]] = {
    "validation_error": (422, "The request is not valid"),
    "invalid_cursor": (422, "The pagination cursor is not valid"),
    "points_out_of_range": (422, "Points out of range"),
    "insufficient_points": (422, "Not enough points"),
    "entry_not_reversible": (422, "This entry cannot be reversed"),
    "invalid_redeem_amount": (422, "The points break the program's redemption rules"),
    "capture_exceeds_hold": (422, "Cannot capture more points than are held"),
    "refund_exceeds_redemption": (422, "Cannot refund more points than remain on the redemption"),
    "currency_mismatch": (422, "The currency is not the program's currency"),
    "occurred_at_too_old": (422, "occurred_at is older than the program accepts"),
    "webhook_url_invalid": (422, "The webhook URL is not a valid http(s) URL of a host that resolves"),
    "webhook_url_not_allowed": (422, "The webhook URL's host is not a public address"),
    "not_eligible": (422, "The member is not eligible for this reward"),
    "limit_reached": (422, "The member has reached this reward's limit"),
    "voucher_not_applicable": (422, "The voucher does not apply to this order"),
    "hold_too_long": (422, "The hold would outlive the program's hold_max_seconds"),
    # issue-15: transfers and merges
    "same_member": (422, "Both member ids name the same member"),
    "transfer_amount_invalid": (422, "The points are outside the program's transfer minimum and maximum"),
    "transfer_limit_reached": (422, "The transfer would exceed the sender's daily transfer limit"),
    "idempotency_key_reused": (422, "Idempotency-Key already used for a different request"),
    "idempotency_key_missing": (400, "Idempotency-Key header required"),
    "idempotency_key_invalid": (400, "Idempotency-Key header sent twice or malformed"),
    "malformed_request": (400, "The request body could not be parsed"),
    "unauthorized": (401, "Missing, invalid or revoked API key"),
    "insufficient_scope": (403, "The API key lacks the scope this operation needs"),
    "not_found": (404, "Not found"),
    "member_not_found": (404, "Member not found"),
    "entry_not_found": (404, "Entry not found"),
    "api_key_not_found": (404, "API key not found"),
    "hold_not_found": (404, "Hold not found"),
    "redemption_not_found": (404, "Redemption not found"),
    "purchase_not_found": (404, "Purchase not found"),
    "webhook_endpoint_not_found": (404, "Webhook endpoint not found"),
    "webhook_delivery_not_found": (404, "Webhook delivery not found"),
    "reward_not_found": (404, "Reward not found"),
    "voucher_not_found": (404, "Voucher not found"),
    "method_not_allowed": (405, "Method not allowed"),
    "request_in_progress": (409, "A request with this Idempotency-Key is still being processed"),
    "entry_already_reversed": (409, "The entry has already been reversed"),
    "external_ref_conflict": (409, "external_ref already used by another entry of this kind"),
    "hold_not_open": (409, "The hold was already captured, voided or released"),
    "hold_expired": (409, "The hold has expired"),
    "order_already_posted": (409, "This order_id was already posted with different content"),
    "return_already_posted": (409, "This return_id was already posted with different content"),
    "member_busy": (409, "The member is busy with other requests; retry"),
    "member_suspended": (409, "The member is suspended: points cannot be spent"),
    "member_closed": (409, "The member's account is closed"),
    "webhook_endpoint_limit": (409, "The program has as many webhook endpoints as it may have"),
    "reward_unavailable": (409, "The reward is archived or outside its availability window"),
    "out_of_stock": (409, "The reward is out of stock"),
    "voucher_not_issued": (409, "The voucher was already redeemed, cancelled or expired"),
    "voucher_expired": (409, "The voucher has expired"),
    "transfers_disabled": (409, "Transfers between members are not enabled for this program"),
    "member_has_open_holds": (409, "The member has open holds: capture or void them first"),
    "member_exists": (409, "A member with this member_id exists already and was not imported"),
    "import_conflict": (409, "This member was imported before from a different row"),
    "last_admin_key": (409, "This is the program's last active admin key; create another admin key first"),
    "request_timeout": (408, "The request was not received in time"),
    "payload_too_large": (413, "Request body too large"),
    "rate_limited": (429, "Too many requests for this API key; retry after the given seconds"),
    "authentication_rate_limited": (429, "Too many failed authentications from this client or for this key; "
                                         "retry after the given seconds"),
    "unsupported_media_type": (415, "Request body must be application/json"),
    "internal_error": (500, "Internal error"),
    "database_unavailable": (503, "The database is unavailable; retry"),
    "database_timeout": (503, "The database did not answer in time; retry"),
    "revocation_unconfirmed": (503, "The change is committed, but not every process confirmed it in time; repeat "
                                    "the request"),
}


# The fields of every problem body; the extra fields of a refusal are added beside them.
RESERVED = frozenset({"type", "title", "status", "code", "request_id", "instance"})


class DomainError(Exception):
    """An expected failure with a stable ``code``; ``extra`` fields are added to the problem body."""

    def __init__(self, code: str, detail: str | None = None, **extra: Any) -> None:
        if code not in CATALOG:
            raise ValueError(f"unknown error code {code!r}")
        if RESERVED & extra.keys():  # an extra field must never overwrite the problem's own (RFC 9457) fields
            raise ValueError(f"problem fields {sorted(RESERVED & extra.keys())} cannot be extra fields of {code!r}")
        self.code = code
        self.status, self.title = CATALOG[code]
        self.detail = detail or self.title
        self.extra = extra
        super().__init__(f"{code}: {self.detail}")
