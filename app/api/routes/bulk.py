"""The programme's books in bulk (issue 15): outstanding liability as of an instant, imports of a legacy system's
members, and exports of balances, the ledger and members, streamed."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import Admin, Pool
from app.api.idempotency import JSONText
from app.api.problems import responses
from app.api.routes.base import UNSUPPORTED_MEDIA_TYPE_RESPONSE, ApiRoute
from app.errors import DomainError
from app.exports import service as export_service
from app.imports import service as import_service
from app.imports.schemas import MAX_ROWS_PER_REQUEST, ImportReport, ImportRow
from app.ledger import service as ledger_service
from app.ledger.schemas import Instant, Liability

router = APIRouter(prefix="/v1", tags=["bulk"], route_class=ApiRoute)

AsOfNow = Annotated[Instant | None, Query(
    description="An instant with its offset (default: now): as the ledger recorded it by then")]


@router.get("/liability", response_model=Liability, responses=responses("insufficient_scope"))
async def get_liability(principal: Admin, pool: Pool, as_of: AsOfNow = None) -> Response:
    """The programme's outstanding points as recorded by `as_of`: its members' available, pending and held points
    (what it still owes), from the ledger."""
    at = as_of or datetime.now(UTC)
    return JSONText(await ledger_service.liability_json(pool, principal.program_id, at))


# --- imports -------------------------------------------------------------------------------------------------

def _inlined(schema: Any, defs: dict[str, Any]) -> Any:
    """A JSON schema with its local ``$defs`` references replaced by the definitions (the request body's schema is
    written into the document as is, outside ``components``)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref", "")
        if ref.startswith("#/$defs/"):
            return _inlined(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inlined(v, defs) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inlined(v, defs) for v in schema]
    return schema


MAX_ERRORS_LISTED = 1000
_ROW_SCHEMA = ImportRow.model_json_schema()
_IMPORT_BODY = {"type": "array", "maxItems": MAX_ROWS_PER_REQUEST,
                "items": _inlined(_ROW_SCHEMA, _ROW_SCHEMA.get("$defs", {}))}


@router.post(
    "/imports", response_model=ImportReport,
    responses={**responses("insufficient_scope", "payload_too_large", "malformed_request", "validation_error"),
               415: UNSUPPORTED_MEDIA_TYPE_RESPONSE},
    # The JSON form only: NDJSON (`application/x-ndjson`) and CSV (`text/csv`) bodies are accepted too (see the
    # description), which typed clients generated from the document cannot express.
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _IMPORT_BODY}}}},
)
async def import_members(principal: Admin, pool: Pool, request: Request) -> ImportReport:
    """Import up to 10,000 members of a legacy system: a JSON array of rows, or the rows as NDJSON
    (`Content-Type: application/x-ndjson`, one row per line) or CSV (`text/csv`, the columns of README "Migrating
    from a legacy system"). Each row is a member with its profile, its opening balance as lots (with their earn
    dates and expiry) and its tier. An upload with any row that is not valid is refused whole (422
    `validation_error`, its `errors` located by row number, then field; the first 1,000): nothing is imported.
    Idempotent per row: a row imported before is counted as `replayed` and changes nothing, so a failed upload is
    simply sent again. A valid row for a member that exists already without having been imported (`member_exists`),
    or that was imported before from another row (`import_conflict`), is listed in `rejections` and writes nothing;
    the others are imported. No Idempotency-Key is needed."""
    rows = _import_rows(request.headers.get("content-type"), await request.body())
    valid, refused = await import_service.validate_all(pool, principal.program_id, rows)
    malformed = [r for r in refused if r.code == "malformed_request"]
    if malformed:
        raise DomainError("malformed_request", f"Row {malformed[0].line}: {malformed[0].detail}. Nothing was "
                          "imported.")
    if refused:
        raise DomainError(
            "validation_error", f"{len(refused)} of {len(rows)} rows are not valid (the first: row {refused[0].line}, "
            f"{refused[0].detail}). Nothing was imported: correct them and send the upload again.",
            errors=[{"loc": [r.line, *e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for r in refused[:MAX_ERRORS_LISTED] for e in (r.errors or [])])
    tally = await import_service.import_rows(pool, principal.program_id, valid)
    return ImportReport(rows=tally.rows, created=tally.created, replayed=tally.replayed, rejected=tally.rejected,
                        points=tally.points, rejections=tally.rejections)


def _import_rows(content_type: str | None, raw: bytes) -> list[import_service.Parsed]:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DomainError("malformed_request", "The body is not UTF-8.") from None
    if media == "application/json":
        try:
            items = json.loads(text)
        except ValueError:
            raise DomainError("malformed_request", "The body is not valid JSON.") from None
        if not isinstance(items, list):
            raise DomainError("validation_error", "The body must be a JSON array of rows.")
        rows: list[import_service.Parsed] = [
            (i, item if isinstance(item, dict) else import_service.rejection(i, None, "malformed_request",
                                                                              "not a JSON object"))
            for i, item in enumerate(items, start=1)]
    elif media in ("application/x-ndjson", "application/jsonl", "application/json-lines"):
        rows = list(import_service.read_jsonl(text.splitlines()))
    elif media in ("text/csv", "text/plain"):
        rows = list(import_service.read_csv(io.StringIO(text, newline="")))
    else:
        raise DomainError("unsupported_media_type",
                          "Send application/json, application/x-ndjson or text/csv.")
    if len(rows) > MAX_ROWS_PER_REQUEST:
        raise DomainError("validation_error", f"At most {MAX_ROWS_PER_REQUEST} rows per request; send the rest "
                          "in another request, or use `points-ledger import` for a whole file.")
    return rows


# --- exports -------------------------------------------------------------------------------------------------


def _streamed(media: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {media: {"schema": {"type": "string"}}}},
            **responses("insufficient_scope")}


@router.get("/exports/balances", response_class=StreamingResponse,
            responses=_streamed("text/csv", "A header line, then one member per line"))
async def export_balances(principal: Admin, pool: Pool, as_of: AsOfNow = None) -> StreamingResponse:
    """Every member's balances as recorded by `as_of` (default now), as CSV: member_id, available, pending, held,
    expired, lifetime_earned, lifetime_redeemed, tier. Members enrolled after `as_of` are left out. Streamed from
    one consistent snapshot."""
    at = as_of or datetime.now(UTC)
    return StreamingResponse(export_service.balances_csv(pool, principal.program_id, at), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="balances.csv"'})


_ENTRIES_200 = _streamed("application/x-ndjson", "One entry per line, as `GET /v1/entries/{entry_id}` shows it (with "
                         "its postings), oldest first; as `text/plain` when the request accepts that and not "
                         "`application/x-ndjson`")
_ENTRIES_200[200]["content"]["text/plain"] = {"schema": {"type": "string"}}


@router.get("/exports/entries", response_class=StreamingResponse, responses=_ENTRIES_200)
async def export_entries(
    principal: Admin, pool: Pool, request: Request,
    since: Annotated[Instant | None, Query(description="Only entries recorded after this instant")] = None,
    until: AsOfNow = None,
) -> StreamingResponse:
    """The ledger: the program's entries with their postings, in recorded time, as JSON lines. With `since` and
    `until`, the entries recorded in (since, until]: exports of consecutive periods never overlap or miss one."""
    at = until or datetime.now(UTC)
    accept = request.headers.get("accept", "")
    media = "text/plain" if "text/plain" in accept and "application/x-ndjson" not in accept else "application/x-ndjson"
    return StreamingResponse(export_service.entries_jsonl(pool, principal.program_id, since, at), media_type=media,
                             headers={"Content-Disposition": 'attachment; filename="entries.jsonl"'})


@router.get("/exports/members", response_class=StreamingResponse,
            responses=_streamed("text/csv", "A header line, then one member per line"))
async def export_members(principal: Admin, pool: Pool) -> StreamingResponse:
    """The program's members as CSV: member_id, status, name, email, phone, birthday, attributes (JSON), tier,
    created_at, updated_at. A member whose personal data was erased has those cells empty."""
    return StreamingResponse(export_service.members_csv(pool, principal.program_id), media_type="text/csv",
                             headers={"Content-Disposition": 'attachment; filename="members.csv"'})
