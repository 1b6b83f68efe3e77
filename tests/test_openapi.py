"""The committed OpenAPI document matches the application (regenerate with `points-ledger openapi`)."""

from __future__ import annotations

import json

from app.cli import OPENAPI_PATH, openapi_document


def test_committed_openapi_has_not_drifted():
    assert OPENAPI_PATH.exists(), "run `points-ledger openapi`"
    assert OPENAPI_PATH.read_text() == openapi_document(), "openapi/ is stale: run `points-ledger openapi`"


def test_every_operation_declares_problem_responses():
    doc = json.loads(openapi_document())
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            assert "401" in op["responses"], (method, path)
            assert "application/problem+json" in op["responses"]["401"]["content"], (method, path)
            assert "422" in op["responses"], (method, path)
    assert "Problem" in doc["components"]["schemas"]
