"""Points <-> money for redemption. Pure functions of the program's settings."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal

from app.money import MINOR_UNITS
from app.programs.schemas import ProgramSettings


def points_value(points: int, settings: ProgramSettings, currency: str) -> Decimal:
    """Money value of ``points``, rounded down to the currency's minor unit (never over-credit)."""
    quantum = Decimal(1).scaleb(-MINOR_UNITS[currency])
    return (Decimal(points) / settings.points_per_currency_unit_redeemed).quantize(quantum, rounding=ROUND_DOWN)


def share_cap(order_total: Decimal, settings: ProgramSettings) -> int:
    """Most points payable on an order of ``order_total`` under ``max_redeem_share_of_order``."""
    cap = order_total * settings.max_redeem_share_of_order * settings.points_per_currency_unit_redeemed
    return int(cap.to_integral_value(rounding=ROUND_DOWN))


def max_redeemable(available: int, order_total: Decimal, settings: ProgramSettings) -> tuple[int, str]:
    """The most points usable on an order and what limited it."""
    best, limited_by = max(available, 0), "available"
    cap = share_cap(order_total, settings)
    if cap < best:
        best, limited_by = cap, "share_of_order"
    rounded = best - best % settings.redeem_increment
    if rounded != best:
        best, limited_by = rounded, "increment"
    if best < max(settings.min_redeem_points, 1):
        return 0, "min_redeem_points" if settings.min_redeem_points > 0 and available > 0 else limited_by
    return best, limited_by


def check_amount(points: int, settings: ProgramSettings, order_total: Decimal | None) -> str | None:
    """Why ``points`` cannot be redeemed under the program's rules, or None."""
    if points < settings.min_redeem_points:
        return f"At least {settings.min_redeem_points} points must be redeemed."
    if points % settings.redeem_increment:
        return f"Points must be a multiple of {settings.redeem_increment}."
    if order_total is not None and points > share_cap(order_total, settings):
        return (f"At most {share_cap(order_total, settings)} points may pay for an order of {order_total} "
                f"(max share {settings.max_redeem_share_of_order}).")
    return None


def money_args(settings: ProgramSettings, currency: str) -> dict[str, object]:
    """The program's conversion, as the SQL renderers of holds and redemptions take it (ledger.money)."""
    return {"p_points_per_unit": settings.points_per_currency_unit_redeemed,
            "p_minor_units": MINOR_UNITS[currency], "p_currency": currency}
