"""The programme dashboard: read-only HTML pages at /dashboard, rendered on the server (Jinja2, autoescaped),
charts as inline SVG (app/dashboard/charts.py), one stylesheet served from the package. No JavaScript, nothing
from another origin: every answer carries a Content-Security-Policy that allows only this origin's stylesheet
and images, no script at all, and no framing.

Sign-in with an admin key (app/dashboard/sessions.py). Every page reads through the same services as the API,
scoped to the session's program: another program's member is not found. The routes are not part of the API
and not in its OpenAPI document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from importlib.resources import files
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from app.api.auth import authenticate
from app.dashboard import charts, sessions
from app.dashboard import queries as q
from app.errors import DomainError
from app.insight import health as insight_health
from app.insight import service as insight_service
from app.insight.rfm import Segment
from app.ledger import service as ledger_service
from app.members import service as members_service

CSP = ("default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; font-src 'self'; "
       "connect-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes form posts say Origin: null
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MEMBER_REF = re.compile(r"^[A-Za-z0-9._:@+\-]{1,128}$")
MAX_FORM_BYTES = 4096

env = Environment(loader=PackageLoader("app.dashboard", "templates"), autoescape=select_autoescape(default=True),
                  trim_blocks=True, lstrip_blocks=True)


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _percent(value: Any) -> str:
    return "–" if value is None else f"{float(value) * 100:.1f} %"


env.filters["number"] = _number
env.filters["percent"] = _percent


class DashboardRoute(APIRoute):
    """Every dashboard answer, page or redirect, carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def secured(request: Request) -> Response:
            response = await handler(request)
            for name, value in HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return secured


router = APIRouter(prefix="/dashboard", include_in_schema=False, route_class=DashboardRoute)

PAGES = [("health", "/dashboard", "Programme health"), ("segments", "/dashboard/segments", "Segments"),
         ("liability", "/dashboard/liability", "Liability"), ("rewards", "/dashboard/rewards", "Top rewards"),
         ("member", "/dashboard/members", "Member lookup")]


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(env.get_template(name).render(pages=PAGES, **context), status_code=status_code)


def to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (no multipart), first value of each field; a body too large or not urlencoded is {}."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=10)
    except ValueError:  # more fields than any dashboard form has
        return {}
    return {k: v[0] for k, v in fields.items()}


# --- sign-in, sign-out ---------------------------------------------------------------------------------------


def _login_page(request: Request, status_code: int = 200, error: str | None = None,
                notice: str | None = None) -> HTMLResponse:
    # One double-submit token per browser: kept while its cookie lives, so two open sign-in tabs both work.
    token = request.cookies.get(sessions.SIGNIN_COOKIE, "")
    if not sessions.TOKEN.match(token):
        token = sessions.new_token()
    response = render("login.html", status_code, csrf=token, error=error, notice=notice, session=None)
    sessions.set_cookie(request, response, sessions.SIGNIN_COOKIE, token, max_age=3600)
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    if await sessions.load_session(request) is not None:
        return RedirectResponse("/dashboard", status_code=303)
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _login_page(request, notice=notice)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    if not sessions.same_origin(request) or not sessions.same(form.get("csrf"),
                                                              request.cookies.get(sessions.SIGNIN_COOKIE)):
        return _login_page(request, 403, error="The sign-in form expired or did not come from this page. "
                                               "Please try again.")
    key = form.get("api_key", "").strip()
    if not key:
        return _login_page(request, 401, error="Enter an admin API key.")
    try:
        # The API's own key check: the failed-auth limiter (per address and key prefix) and the key cache.
        principal = await authenticate(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=key))
    except DomainError as refusal:
        if refusal.code == "authentication_rate_limited":
            refused = _login_page(request, 429, error="Too many failed sign-ins. Wait a moment and try again.")
            refused.headers["Retry-After"] = str(refusal.extra.get("retry_after", 1))
            return refused
        return _login_page(request, 401, error="This key is not valid (unknown, mistyped or revoked).")
    if "admin" not in principal.scopes:
        scopes = ", ".join(sorted(principal.scopes))
        return _login_page(request, 403, error=f"This key has the scope {scopes}. Only an admin key can sign in "
                                               "to the dashboard.")
    token, expires_at = await sessions.open_session(request.app.state.pool, principal,
                                                    request.app.state.settings.dashboard_session_hours)
    response = RedirectResponse("/dashboard", status_code=303)
    max_age = max(1, math.floor((expires_at - datetime.now(UTC)).total_seconds()))
    sessions.set_cookie(request, response, sessions.COOKIE, token, max_age=max_age)
    sessions.clear_cookie(request, response, sessions.SIGNIN_COOKIE)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await _form(request)
    session = await sessions.load_session(request)
    if session is None:
        return to_login()
    if not sessions.same_origin(request) or not sessions.same(form.get("csrf"), session.csrf):
        return render("error.html", 403, session=session, active=None, title="Refused",
                      message="This form did not come from your dashboard session (CSRF check failed).")
    await sessions.close_session(request.app.state.pool, request.cookies[sessions.COOKIE])
    response = RedirectResponse("/dashboard/login?signed_out=1", status_code=303)
    sessions.clear_cookie(request, response, sessions.COOKIE)
    return response


@router.get("/static/dashboard.css")
async def stylesheet() -> Response:
    css = (files("app.dashboard") / "static" / "dashboard.css").read_bytes()
    return Response(css, media_type="text/css", headers={"Cache-Control": "private, max-age=300"})


# --- pages ---------------------------------------------------------------------------------------------------


async def _session_or_login(request: Request) -> sessions.Session | Response:
    session = await sessions.load_session(request)
    if session is None:
        redirect = to_login()
        if sessions.COOKIE in request.cookies:  # expired, revoked or signed out elsewhere
            sessions.clear_cookie(request, redirect, sessions.COOKIE)
        return redirect
    wait = request.app.state.rate_limiter.check(session.principal.key_id)
    if wait is not None:
        response = render("error.html", 429, session=session, active=None, title="Slow down",
                          message="Too many requests for this key. Wait a moment.")
        response.headers["Retry-After"] = str(max(1, math.ceil(wait)))
        return response
    return session


def _period(request: Request, tz: ZoneInfo, default_days: int = 30) -> tuple[date, date]:
    """``from`` and ``to`` (dates, inclusive) from the query; default: the last ``default_days`` days."""
    today = datetime.now(tz).date()
    try:
        start = date.fromisoformat(request.query_params.get("from", ""))
    except ValueError:
        start = today - timedelta(days=default_days - 1)
    try:
        end = date.fromisoformat(request.query_params.get("to", ""))
    except ValueError:
        end = today
    if end < start:
        start, end = end, start
    # within a range the dates can express (and a query can cover): 1970 to a year from now, ten years at most
    earliest, latest = date(1970, 1, 1), today + timedelta(days=366)
    start, end = min(max(start, earliest), latest), min(max(end, earliest), latest)
    start = max(start, end - timedelta(days=3660))
    return start, end


def _instant(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tz)


@router.get("/rewards")
async def top_rewards(request: Request) -> Response:
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    tz = ZoneInfo(session.principal.timezone)
    start, end = _period(request, tz)
    rows = await request.app.state.pool.fetch(q.TOP_REWARDS, session.principal.program_id, _instant(start, tz),
                                              _instant(end + timedelta(days=1), tz), 20)
    chart = charts.bar_chart([(r["name"], r["exchanges"]) for r in rows], title="Exchanges by reward")
    return render("rewards.html", session=session, active="rewards", rows=rows, start=start, end=end,
                  chart=Markup(chart) if rows else None)


@router.get("/members")
async def member_lookup(request: Request) -> Response:
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    ref = request.query_params.get("member_id", "").strip()
    context: dict[str, Any] = {"session": session, "active": "member", "member_id": ref}
    if not ref:
        return render("member.html", **context)
    if not MEMBER_REF.match(ref):
        return render("member.html", 422, error="A member id is 1 to 128 letters, digits or ._:@+-", **context)
    pool = request.app.state.pool
    program_id = session.principal.program_id
    try:
        member = await members_service.get(pool, program_id, ref)
        balance = await ledger_service.get_balance(pool, program_id, ref)
        activity = await ledger_service.activity_json(pool, program_id, ref, 10, None)
    except DomainError as e:
        if e.code != "member_not_found":
            raise
        return render("member.html", 404, error=f"No member {ref} in this programme.", **context)
    entries = json.loads(activity)["data"]
    for entry in entries:
        entry["delta"] = sum(p["points"] for p in entry["postings"] if p["account"] == "available")
        entry["pending_delta"] = sum(p["points"] for p in entry["postings"] if p["account"] == "pending")
    insight = await insight_service.member_insight(pool, session.principal, ref)
    return render("member.html", member=member, balance=balance, entries=entries, insight=insight, **context)


GRANULARITIES = ("day", "week", "month")


def _summary_query(request: Request, today: date) -> tuple[date, date, str]:
    """``from`` (included), ``to`` (excluded) and ``granularity`` as GET /v1/analytics/summary takes them; default:
    the last twelve calendar months (this one included) by month."""
    granularity = request.query_params.get("granularity", "month")
    if granularity not in GRANULARITIES:
        granularity = "month"
    try:
        end = date.fromisoformat(request.query_params.get("to", ""))
    except ValueError:
        end = today + timedelta(days=1)
    try:
        start = date.fromisoformat(request.query_params.get("from", ""))
    except ValueError:
        start = _twelve_months(today)[0]
    # dates a query can cover: 1970 to a year from now (the API refuses the rest of its own accord, or slowly)
    earliest, latest = date(1970, 1, 1), today + timedelta(days=366)
    start, end = min(max(start, earliest), latest), min(max(end, earliest), latest)
    return start, end, granularity


def _period_label(start: date, granularity: str) -> str:
    return start.strftime("%Y-%m") if granularity == "month" else start.isoformat()


@router.get("")
async def health(request: Request) -> Response:
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    start, end, granularity = _summary_query(request, datetime.now(UTC).date())
    context: dict[str, Any] = {"session": session, "active": "health", "start": start, "end": end,
                               "granularity": granularity, "granularities": GRANULARITIES}
    try:
        summary = await insight_health.summary(request.app.state.pool, session.principal, start, end,
                                               granularity)  # type: ignore[arg-type]
    except DomainError as refusal:
        return render("health.html", refusal.status, summary=None, error=refusal.detail, **context)
    labels = [_period_label(p.start, granularity) for p in summary.periods]
    periods = summary.periods
    figures = {
        "members": charts.line_chart(labels, [
            charts.Series("new", [p.members.new for p in periods]),
            charts.Series("active", [p.members.active for p in periods]),
            charts.Series("lapsed", [p.members.lapsed for p in periods])], title="Members per period"),
        "points": charts.line_chart(labels, [
            charts.Series("issued", [p.points.issued for p in periods]),
            charts.Series("redeemed", [p.points.redeemed for p in periods]),
            charts.Series("expired", [p.points.expired for p in periods])], title="Points per period"),
        "spend": charts.line_chart(labels, [
            charts.Series("purchases", [p.purchases for p in periods])], title="Purchases per period"),
        "rates": charts.line_chart(labels, [
            charts.Series("redemption", [p.redemption_rate * 100 for p in periods]),
            charts.Series("breakage", [p.breakage_rate * 100 for p in periods]),
            charts.Series("repeat purchase", [p.repeat_purchase_rate * 100 for p in periods])],
            title="Rates per period, in %"),
    }
    last = periods[-1] if periods else None
    totals = {
        "new": sum(p.members.new for p in periods), "purchases": sum(p.purchases for p in periods),
        "spend": sum((p.spend for p in periods), Decimal(0)), "issued": sum(p.points.issued for p in periods),
        "redeemed": sum(p.points.redeemed for p in periods), "expired": sum(p.points.expired for p in periods),
    }
    return render("health.html", summary=summary, labels=labels, last=last, totals=totals,
                  charts={k: Markup(v) for k, v in figures.items()}, **context)


def _group_name(value: Any) -> str:
    return "unscored" if value is None else str(getattr(value, "value", value)).replace("_", " ")


@router.get("/segments")
async def segments(request: Request) -> Response:
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    overview = await insight_service.segments_overview(request.app.state.pool, session.principal)
    size_chart = move_chart = None
    if overview.as_of is not None:
        size_chart = Markup(charts.bar_chart([(_group_name(g.segment), g.members) for g in overview.segments],
                                             title="Members per RFM segment"))
        move_chart = Markup(charts.bar_chart(
            [(_group_name(g.segment), g.moved_in - g.moved_out) for g in overview.segments],
            title="Net movement per RFM segment since the previous refresh"))
    return render("segments.html", session=session, active="segments", overview=overview, size_chart=size_chart,
                  move_chart=move_chart)


def _segment(name: str) -> Segment | None:
    try:
        return Segment(name)
    except ValueError:
        return None


@router.get("/segments/{name}")
async def segment_members(request: Request, name: str) -> Response:
    """The members of one segment as of the last refresh, 100 a page (the API's keyset pages)."""
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    segment = _segment(name)
    if segment is None:
        return render("error.html", 404, session=session, active="segments", title="Not found",
                      message="There is no such segment.")
    cursor = request.query_params.get("cursor") or None
    try:
        page = await insight_service.segment_page(request.app.state.pool, session.principal, segment,
                                                  cursor[:64] if cursor else None, 100)
    except DomainError as refusal:
        return render("error.html", refusal.status, session=session, active="segments", title="Refused",
                      message=refusal.detail)
    return render("segment_members.html", session=session, active="segments", segment=segment, page=page,
                  first=cursor is None)


@router.get("/segments/{name}/export.csv")
async def segment_export(request: Request, name: str) -> Response:
    """The segment for a CRM campaign: the API's CSV export, streamed (personal data: admin sessions only)."""
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    segment = _segment(name)
    if segment is None:
        return render("error.html", 404, session=session, active="segments", title="Not found",
                      message="There is no such segment.")
    p = session.principal
    return StreamingResponse(
        insight_service.export_rows(request.app.state.pool, p.program_id, p.currency, segment, "csv"),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{segment.value}.csv"'})


def _twelve_months(today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    start = first.replace(year=first.year - 1, month=first.month + 1) if first.month < 12 else first.replace(month=1)
    return start, today + timedelta(days=1)


@router.get("/liability")
async def liability(request: Request) -> Response:
    session = await _session_or_login(request)
    if isinstance(session, Response):
        return session
    pool = request.app.state.pool
    start, end = _twelve_months(datetime.now(UTC).date())
    summary = await insight_health.summary(pool, session.principal, start, end, "month")
    balances = await pool.fetchrow(q.BALANCES, session.principal.program_id)
    labels = [_period_label(p.start, "month") for p in summary.periods]
    trend = charts.line_chart(labels, [charts.Series("outstanding", [p.points.outstanding for p in summary.periods])],
                              title="Outstanding points at the end of each month")
    value = charts.line_chart(labels, [charts.Series(f"value ({summary.currency})",
                                                     [p.points.outstanding_value for p in summary.periods])],
                              title=f"Outstanding liability in {summary.currency} at the end of each month")
    forecast = await insight_health.liability_forecast(pool, session.principal, 12)
    forecast_chart = charts.line_chart(
        [m.month for m in forecast.months],
        [charts.Series("redeemed", [m.redeemed for m in forecast.months]),
         charts.Series("breakage", [m.breakage for m in forecast.months])],
        title="Expected redemptions and breakage per month")
    return render("liability.html", session=session, active="liability", summary=summary, balances=balances,
                  last=summary.periods[-1] if summary.periods else None, forecast=forecast,
                  forecast_chart=Markup(forecast_chart), trend=Markup(trend), value=Markup(value))
