"""Schemathesis hooks of ``reliability.fuzz`` (loaded through ``SCHEMATHESIS_HOOKS=reliability.st_hooks``).

Every ledger write needs an Idempotency-Key, which the OpenAPI document declares as an optional header. Left
to itself schemathesis omits it in most cases, and those stop at 400 ``idempotency_key_missing`` before the
body is looked at. So nine in ten cases of an operation that takes the header get a fresh key here, and their
generated bodies reach the ledger; the tenth goes as generated. Cases that test a missing header are left
alone (schemathesis's own coverage scenarios).
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import schemathesis

_rng = random.Random()


def _takes_idempotency_key(operation: Any) -> bool:
    try:
        return any(p.name.lower() == "idempotency-key" for p in operation.iter_parameters())
    except Exception:
        return False


def _tests_a_missing_header(case: Any) -> bool:
    data = getattr(getattr(getattr(case, "meta", None), "phase", None), "data", None)
    scenario = str(getattr(data, "scenario", "")).lower()
    return "missing" in scenario and "header" in str(getattr(data, "parameter_location", "")).lower()


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not _takes_idempotency_key(case.operation) or _tests_a_missing_header(case):
        return
    if case.headers is None:
        case.headers = {}
    if any(name.lower() == "idempotency-key" for name in case.headers) or _rng.random() >= 0.9:
        return
    case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4().hex}"
