"""The contract generates a typed Python client that works: `openapi-python-client` on the committed
openapi/openapi.json, with no warning, and the generated client posts a purchase, redeems and reads a
balance against the running service. It guards every future API change: a schema the generator cannot read,
or a response it would drop, fails here."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from app.cli import OPENAPI_PATH

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def client_package(tmp_path_factory: Any) -> Any:
    out = tmp_path_factory.mktemp("client") / "points-ledger-client"
    # ruff (a dev dependency, in the same bin folder) formats the generated code; without it on PATH the
    # generator warns.
    env = {**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([str(GENERATOR), "generate", "--path", str(OPENAPI_PATH), "--output-path", str(out)],
                       env=env, capture_output=True, text=True, timeout=300)
    output = r.stdout + r.stderr
    assert r.returncode == 0, output
    assert "warning" not in output.lower() and "unable" not in output.lower(), output
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module("points_ledger_client")
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m.split(".")[0] == "points_ledger_client"]:
            del sys.modules[name]
        shutil.rmtree(out, ignore_errors=True)


def test_every_schema_operation_and_response_is_generated(client_package):
    """Each schema of the document is a model, each operation a module named by its operationId, and each
    documented JSON response of it is parsed there (the generator omits those it cannot read)."""
    import inspect
    import json

    doc = json.loads(OPENAPI_PATH.read_text())
    models = importlib.import_module("points_ledger_client.models")
    for name in doc["components"]["schemas"]:
        assert hasattr(models, name.replace("_", "")) or hasattr(models, name), name
    for ops in doc["paths"].values():
        for op in ops.values():
            tag = op.get("tags", ["default"])[0]
            module = importlib.import_module(f"points_ledger_client.api.{tag}.{op['operationId']}")
            source = inspect.getsource(module)
            for status, response in op["responses"].items():
                if any("json" in media for media in response.get("content", {})):
                    assert f"response.status_code == {status}" in source, (op["operationId"], status)


async def test_the_generated_client_purchases_redeems_and_reads_a_balance(client_package, live_server, tenant):
    from decimal import Decimal

    api = importlib.import_module("points_ledger_client.api.earning.post_purchase")
    redeem = importlib.import_module("points_ledger_client.api.redemption.redeem")
    balance = importlib.import_module("points_ledger_client.api.ledger.get_balance")
    models = importlib.import_module("points_ledger_client.models")

    client = client_package.AuthenticatedClient(base_url=live_server.url, token=tenant.admin_key,
                                                raise_on_unexpected_status=True)
    async with client:
        purchase = models.PurchaseCreate(
            member_id="gen-1", order_id="gen-order-1", currency="EUR", total="25.50",
            lines=[models.PurchaseLine(sku="BEANS", quantity=1, unit_price="25.50")])
        posted = await api.asyncio_detailed(client=client, body=purchase, idempotency_key=uuid.uuid4().hex)
        assert posted.status_code == 201, posted.content
        assert posted.parsed.purchase.points == 25 and posted.parsed.balance.available == 25

        spent = await redeem.asyncio_detailed(client=client, body=models.RedeemCreate(
            member_id="gen-1", points=10, reference="gen-checkout-1"), idempotency_key=uuid.uuid4().hex)
        assert spent.status_code == 201, spent.content
        assert spent.parsed.redemption.points == 10 and Decimal(spent.parsed.redemption.amount) == Decimal("0.10")

        read = await balance.asyncio(member_id="gen-1", client=client)
        assert isinstance(read, models.Balance)
        assert (read.available, read.lifetime_earned, read.lifetime_redeemed) == (15, 25, 10)

        refused = await redeem.asyncio_detailed(client=client, body=models.RedeemCreate(
            member_id="gen-1", points=1000, reference="gen-checkout-2"), idempotency_key=uuid.uuid4().hex)
        assert refused.status_code == 422 and isinstance(refused.parsed, models.Problem)
        assert refused.parsed.code == "insufficient_points"
