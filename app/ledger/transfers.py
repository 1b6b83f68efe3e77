"""Transfers between members (issue 15): gifting and family pooling, off unless the program enables them.

The program's minimum and maximum are checked here; the sender's daily limit (per local day of the program's time
zone) in ``ledger.transfer`` (migrations/functions/87_transfers.sql), under both members' locks, taken in the
service-wide order (``ledger.lock_members``), so A->B and B->A at once never deadlock."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from app.db.access import Db
from app.errors import DomainError
from app.ledger.schemas import TransferCreate
from app.ledger.writes import Answer, Write
from app.programs.context import Principal


def day_start(at: datetime, tz: ZoneInfo) -> datetime:
    """The start of ``at``'s local day in ``tz`` (the daily limit counts from then)."""
    local = at.astimezone(tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz)


async def transfer(db: Db, p: Principal, data: TransferCreate, key: str | None, fingerprint: bytes) -> Answer:
    settings = p.settings
    if not settings.transfers_enabled:
        raise DomainError("transfers_disabled", "Transfers are off for this program (program setting "
                          "transfers_enabled).")
    if data.from_member_id == data.to_member_id:
        raise DomainError("same_member", "A member cannot transfer points to itself.")
    low, high = settings.transfer_min_points, settings.transfer_max_points
    if data.points < low or (high is not None and data.points > high):
        raise DomainError("transfer_amount_invalid", f"A transfer is {low} to {high or 'any number of'} points.",
                          min_points=low, max_points=high)
    return await db.writer.execute(Write("transfer", {
        "p_program": p.program_id, "p_key": key, "p_fingerprint": fingerprint, "p_from_ref": data.from_member_id,
        "p_to_ref": data.to_member_id, "p_points": data.points, "p_reference": data.reference,
        "p_description": data.description, "p_day_start": day_start(datetime.now(UTC), ZoneInfo(p.timezone)),
        "p_daily_limit": settings.transfer_daily_limit_points,
    }))
