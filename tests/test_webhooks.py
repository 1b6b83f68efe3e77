"""Webhooks through HTTP, delivered to a real receiver on 127.0.0.1 that verifies each delivery with the Standard
Webhooks reference implementation: endpoints, signing and rotation, retries of a receiver that is down, failing
or slow, per-member order, the delivery log, redelivery, disabling, SSRF, and other programs."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from app.events import worker as worker_module
from app.events.webhooks import RETRY_DELAYS
from app.events.worker import WebhookWorker, WorkerSettings
from tests.receiver import Receiver, running


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries due at once (the schedule itself is unit-tested), so the tests need not wait minutes."""
    monkeypatch.setattr(worker_module, "retry_delay",
                        lambda attempts, rng=None: 0.0 if attempts <= len(RETRY_DELAYS) else None)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running(Receiver()) as r:
        yield r


_WORKERS: list[WebhookWorker] = []


def _worker(db, **settings) -> WebhookWorker:
    worker = WebhookWorker(db, WorkerSettings(**{"allow_private": True, "timeout_seconds": 2.0, **settings}))
    _WORKERS.append(worker)
    return worker


async def _endpoint(tenant, url, **fields):
    r = await tenant.client.post("/v1/webhook-endpoints", json={"url": url, **fields}, headers=tenant.headers())
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture
async def cleanup(tenant) -> AsyncIterator[None]:
    """Endpoints of a finished test must not keep a later test's worker busy."""
    yield
    while _WORKERS:
        await _WORKERS.pop().stop()
    r = await tenant.client.get("/v1/webhook-endpoints", headers=tenant.headers())
    for e in r.json()["data"]:
        await tenant.client.delete(f"/v1/webhook-endpoints/{e['id']}", headers=tenant.headers())


async def _feed(tenant, **params):
    await tenant.settled()
    r = await tenant.client.get("/v1/changes", params={"limit": 500, **params}, headers=tenant.headers())
    assert r.status_code == 200
    return r.json()["data"]


async def _drain(worker: WebhookWorker, until, seconds: float = 20.0) -> None:
    """Run the worker until ``until()`` holds (bounded)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not until():
        assert asyncio.get_running_loop().time() < deadline, "the deliveries did not arrive in time"
        await worker.run_until_idle()
        await asyncio.sleep(0.05)


async def test_endpoint_lifecycle_and_the_secret_shown_once(tenant, other_tenant, receiver, cleanup):
    created = await _endpoint(tenant, receiver.url, description="CRM", event_types=["points.earned"])
    assert created["secret"].startswith("whsec_") and created["enabled"] is True
    assert created["event_types"] == ["points.earned"] and created["failing_since"] is None
    path = f"/v1/webhook-endpoints/{created['id']}"
    got = (await tenant.client.get(path, headers=tenant.headers())).json()
    assert "secret" not in got and got["url"] == receiver.url
    listed = (await tenant.client.get("/v1/webhook-endpoints", headers=tenant.headers())).json()["data"]
    assert [e["id"] for e in listed] == [created["id"]]
    r = await tenant.client.patch(path, json={"event_types": [], "description": None}, headers=tenant.headers())
    assert r.status_code == 200 and r.json()["event_types"] == [] and r.json()["description"] is None
    # another program: 404, never 403, for every verb
    for method in ("GET", "PATCH", "DELETE"):
        r = await other_tenant.client.request(method, path, json={} if method == "PATCH" else None,
                                              headers=other_tenant.headers())
        assert r.status_code == 404 and r.json()["code"] == "webhook_endpoint_not_found", method
    r = await other_tenant.client.get(f"{path}/deliveries", headers=other_tenant.headers())
    assert r.status_code == 404
    # admin only
    reader = await tenant.key("read")
    assert (await tenant.client.get("/v1/webhook-endpoints", headers=tenant.headers(reader))).status_code == 403
    # bad input changes nothing
    for body in ({"url": "ftp://x.example/"}, {"url": "https://user:pw@x.example/"},
                 {"url": receiver.url, "event_types": ["points.nope"]}, {"url": receiver.url, "secret": "mine"}):
        r = await tenant.client.post("/v1/webhook-endpoints", json=body, headers=tenant.headers())
        assert r.status_code == 422, (body, r.text)
    assert len((await tenant.client.get("/v1/webhook-endpoints", headers=tenant.headers())).json()["data"]) == 1
    assert (await tenant.client.delete(path, headers=tenant.headers())).status_code == 204
    assert (await tenant.client.get(path, headers=tenant.headers())).status_code == 404


async def test_deliveries_are_signed_and_equal_to_the_feed(tenant, other_tenant, db, receiver, cleanup):
    created = await _endpoint(tenant, receiver.url)
    receiver.secrets = [created["secret"]]
    await tenant.member("wh-1")
    assert (await tenant.adjust("wh-1", 120)).status_code == 201
    await other_tenant.member("wh-other")
    assert (await other_tenant.adjust("wh-other", 5)).status_code == 201
    worker = _worker(db)
    feed = await _feed(tenant)
    await _drain(worker, lambda: len(receiver.accepted) >= len(feed))
    assert [d.event for d in receiver.accepted] == feed  # the same events, in the feed's order
    for d in receiver.accepted:
        assert d.verified_by == [0]  # standardwebhooks accepts it
        assert d.id == d.event["id"] and d.headers["content-type"] == "application/json"
        assert d.headers["user-agent"].startswith("points-ledger")
    assert {e["member_id"] for e in receiver.events()} == {"wh-1"}  # never another program's
    await worker.run_until_idle()
    assert len(receiver.received) == len(feed)  # each once
    # the other program's endpoint gets its own events only
    async with running(Receiver()) as theirs:
        other = await _endpoint(other_tenant, theirs.url)
        try:
            assert (await other_tenant.adjust("wh-other", 6)).status_code == 201
            assert (await tenant.adjust("wh-1", 7)).status_code == 201
            await other_tenant.settled()
            await _drain(worker, lambda: len(theirs.accepted) >= 2)
            await worker.run_until_idle()
            assert {e["member_id"] for e in theirs.events()} == {"wh-other"} and len(theirs.accepted) == 2
        finally:
            await other_tenant.client.delete(f"/v1/webhook-endpoints/{other['id']}", headers=other_tenant.headers())
    page = (await tenant.client.get(f"/v1/webhook-endpoints/{created['id']}/deliveries",
                                    headers=tenant.headers())).json()
    assert {d["status"] for d in page["data"]} == {"delivered"}
    log = page["data"][0]["log"]
    assert log[0]["status_code"] == 200 and log[0]["latency_ms"] >= 0 and log[0]["response_snippet"] == "answer 200"


async def test_only_the_chosen_types_and_only_from_creation_on(tenant, db, receiver, cleanup):
    await tenant.member("ty-1")
    assert (await tenant.adjust("ty-1", 10)).status_code == 201  # before the endpoint: not delivered
    await _endpoint(tenant, receiver.url, event_types=["points.redeemed"])
    assert (await tenant.adjust("ty-1", 20)).status_code == 201
    r = await tenant.client.post("/v1/redemptions", json={"member_id": "ty-1", "points": 5},
                                 headers=tenant.headers(idem="r1"))
    assert r.status_code == 201
    worker = _worker(db)
    await _drain(worker, lambda: len(receiver.accepted) >= 1)
    await worker.run_until_idle()
    assert [e["type"] for e in receiver.events()] == ["points.redeemed"]
    assert receiver.events()[0]["data"] == r.json()


async def test_a_receiver_that_is_down_failing_or_slow_gets_the_event_later(tenant, db, fast_retries, cleanup):
    # down: nothing listens on the port yet
    down = Receiver()
    await down.start()
    url = down.url
    port = int(url.split(":")[2].split("/")[0])
    await down.stop()
    await _endpoint(tenant, url)
    await tenant.member("dn-1")
    worker = _worker(db, timeout_seconds=0.5)
    await tenant.settled()
    await worker.run_until_idle(rounds=3)
    rows = await db.fetch("SELECT d.status, d.attempts, d.last_error FROM webhook_deliveries d JOIN "
                          "webhook_endpoints e ON e.id = d.endpoint_id WHERE e.program_id = $1", tenant.program_id)
    assert rows and all(r["status"] == "pending" and r["attempts"] >= 1 and r["last_error"] for r in rows)
    # up again, but the first answer is a 500 and the second is too slow: the third attempt lands
    calls = iter([(500, 0.0), (200, 1.5)])
    back = Receiver(answer=lambda n: next(calls, (200, 0.0)))
    await back.start(port=port)
    try:
        await _drain(worker, lambda: len(back.accepted) >= 1 and back.accepted[-1].event["type"] == "member.created"
                     and len(back.received) >= 3)
        assert [d.id for d in back.received[:3]] == [back.received[0].id] * 3  # the same webhook-id each time
    finally:
        await back.stop()
    page = (await tenant.client.get(f"/v1/webhook-endpoints/{(await _endpoints(tenant))[0]['id']}/deliveries",
                                    headers=tenant.headers())).json()["data"]
    log = page[0]["log"]
    assert page[0]["status"] == "delivered"
    assert [a["status_code"] for a in log[:3]] == [200, None, 500]
    assert "no answer within" in log[1]["error"] and log[2]["response_snippet"] == "answer 500"
    assert log[-1]["status_code"] is None  # the first attempts found nobody listening


async def _endpoints(tenant):
    return (await tenant.client.get("/v1/webhook-endpoints", headers=tenant.headers())).json()["data"]


async def test_one_members_events_arrive_in_order(tenant, db, fast_retries, cleanup):
    """Receivers answering at random speeds, some failing: each member's events still arrive in the feed's
    order (a member's next event waits until the previous one is delivered)."""
    rng = random.Random(7)
    receiver = Receiver(answer=lambda n: (500 if rng.random() < 0.15 else 200, rng.random() * 0.02))
    async with running(receiver):
        await _endpoint(tenant, receiver.url)
        members = [f"or-{i}" for i in range(4)]
        for m in members:
            await tenant.member(m)
        await asyncio.gather(*(tenant.adjust(rng.choice(members), rng.randint(1, 9)) for _ in range(40)))
        feed = await _feed(tenant)
        worker = _worker(db, concurrency=16)
        await _drain(worker, lambda: len({d.id for d in receiver.accepted}) >= len(feed), seconds=60)
    for m in members:
        expected = [e["id"] for e in feed if e["member_id"] == m]
        got = [d.id for d in receiver.accepted if d.event["member_id"] == m]
        assert got == expected


async def test_rotation_signs_with_both_secrets_during_the_grace(tenant, db, receiver, cleanup):
    created = await _endpoint(tenant, receiver.url)
    path = f"/v1/webhook-endpoints/{created['id']}"
    r = await tenant.client.post(f"{path}/rotate-secret", json={"grace_seconds": 3600}, headers=tenant.headers())
    assert r.status_code == 200, r.text
    rotated = r.json()
    assert rotated["secret"] != created["secret"] and rotated["previous_secret_valid_until"]
    receiver.secrets = [created["secret"], rotated["secret"]]
    await tenant.member("ro-1")
    worker = _worker(db)
    await _drain(worker, lambda: len(receiver.accepted) >= 1)
    assert receiver.accepted[0].verified_by == [0, 1]  # old receivers and new ones both accept it
    # rotated again without grace: only the newest secret signs
    r = await tenant.client.post(f"{path}/rotate-secret", json={"grace_seconds": 0}, headers=tenant.headers())
    newest = r.json()["secret"]
    assert r.json()["previous_secret_valid_until"] is None
    receiver.secrets = [created["secret"], rotated["secret"], newest]
    await tenant.member("ro-2")
    await _drain(worker, lambda: len(receiver.accepted) >= 2)
    assert receiver.accepted[1].verified_by == [2]
    assert (await tenant.client.get(path, headers=tenant.headers())).json()["previous_secret_valid_until"] is None


async def test_redelivery_and_recovery(tenant, db, cleanup):
    receiver = Receiver(answer=lambda n: (410, 0.0))
    async with running(receiver):
        created = await _endpoint(tenant, receiver.url)
        await tenant.member("rd-1")
        worker = _worker(db)
        # a receiver answering 4xx is retried like any failure; make its retries run out at once
        await tenant.settled()
        await db.fetchval("SELECT ledger.webhook_fan_out(1000)")
        await db.execute("UPDATE webhook_deliveries SET attempts = $2 WHERE endpoint_id = $1",
                         uuid.UUID(created["id"]), len(RETRY_DELAYS))
        await worker.run_until_idle()
        await worker.run_until_idle()
        path = f"/v1/webhook-endpoints/{created['id']}"
        failed = (await tenant.client.get(f"{path}/deliveries", params={"status": "failed"},
                                          headers=tenant.headers())).json()["data"]
        assert len(failed) == 1 and failed[0]["attempts"] == len(RETRY_DELAYS) + 1
        assert failed[0]["next_attempt_at"] is None
        receiver.answer = lambda n: (204, 0.0)
        r = await tenant.client.post(f"{path}/deliveries/{failed[0]['id']}/retry", headers=tenant.headers())
        assert r.status_code == 202 and r.json()["status"] == "pending"
        await _drain(worker, lambda: len(receiver.accepted) == 1)
        assert receiver.accepted[0].id == failed[0]["event_id"]
        # recover: every delivery that failed for good since a moment, sent again
        await db.execute("UPDATE webhook_deliveries SET status = 'failed' WHERE endpoint_id = $1",
                         uuid.UUID(created["id"]))
        since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        r = await tenant.client.post(f"{path}/recover", json={"since": since}, headers=tenant.headers())
        assert r.status_code == 202 and r.json() == {"requeued": 1}
        await _drain(worker, lambda: len(receiver.accepted) == 2)
        r = await tenant.client.post(f"{path}/deliveries/dlv_0000000000000000/retry", headers=tenant.headers())
        assert r.status_code == 404 and r.json()["code"] == "webhook_delivery_not_found"
        r = await tenant.client.post(f"{path}/deliveries/7/retry", headers=tenant.headers())
        assert r.status_code == 404


async def test_an_endpoint_failing_too_long_is_disabled_and_that_is_announced(tenant, db, fast_retries, cleanup):
    receiver = Receiver(answer=lambda n: (503, 0.0))
    async with running(receiver):
        created = await _endpoint(tenant, receiver.url)
        await tenant.member("ds-1")
        worker = _worker(db, disable_after=timedelta(seconds=0.3))
        await tenant.settled()
        await worker.run_until_idle(rounds=2)
        await asyncio.sleep(0.4)
        await worker.run_until_idle(rounds=2)
        path = f"/v1/webhook-endpoints/{created['id']}"
        got = (await tenant.client.get(path, headers=tenant.headers())).json()
        assert got["enabled"] is False and "no successful delivery since" in got["disabled_reason"]
        assert got["failing_since"] is not None
        disabled = await _feed(tenant, types="webhook_endpoint.disabled")
        assert [e["data"]["endpoint"]["id"] for e in disabled] == [created["id"]]
        assert disabled[0]["member_id"] is None
        # enabled again: a fresh start, and what happened meanwhile is delivered
        receiver.answer = lambda n: (200, 0.0)
        await tenant.member("ds-2")
        r = await tenant.client.patch(path, json={"enabled": True}, headers=tenant.headers())
        assert r.json()["enabled"] is True and r.json()["failing_since"] is None and r.json()["disabled_reason"] is None
        await _drain(worker, lambda: {"ds-1", "ds-2"} <= {e["member_id"] for e in receiver.events()})


@pytest.fixture
def strict_urls(app):
    """The service as deployed: private URLs refused."""
    original = app.state.settings
    app.state.settings = original.model_copy(update={"webhook_allow_private_urls": False})
    yield
    app.state.settings = original


async def test_urls_into_the_services_own_network_are_refused(tenant, strict_urls, cleanup):
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/", "http://[::1]/",
                "http://169.254.169.254/latest/meta-data", "http://192.168.0.10/", "http://[::ffff:127.0.0.1]/"):
        r = await tenant.client.post("/v1/webhook-endpoints", json={"url": url}, headers=tenant.headers())
        assert r.status_code == 422 and r.json()["code"] == "webhook_url_not_allowed", (url, r.text)
    r = await tenant.client.post("/v1/webhook-endpoints", json={"url": "https://no-such-host.invalid/"},
                                 headers=tenant.headers())
    assert r.status_code == 422 and r.json()["code"] == "webhook_url_invalid"
    assert await _endpoints(tenant) == []


async def test_the_worker_refuses_private_addresses_at_delivery_too(tenant, db, receiver, cleanup):
    """An endpoint made while private URLs were allowed (or a name that resolves differently now) is checked
    again when delivering: the attempt fails with a clear error and nothing is sent."""
    await _endpoint(tenant, receiver.url)
    await tenant.member("ss-1")
    worker = _worker(db, allow_private=False)
    await tenant.settled()
    await worker.run_until_idle(rounds=2)
    assert receiver.received == []
    row = await db.fetchrow("SELECT d.last_error FROM webhook_deliveries d JOIN webhook_endpoints e "
                            "ON e.id = d.endpoint_id WHERE e.program_id = $1", tenant.program_id)
    assert "not public" in row["last_error"]


async def test_two_workers_never_send_the_same_attempt(tenant, db, cleanup):
    receiver = Receiver(answer=lambda n: (200, 0.01))
    async with running(receiver):
        await _endpoint(tenant, receiver.url)
        for i in range(30):
            await tenant.member(f"tw-{i}")
        feed = await _feed(tenant)
        a, b = _worker(db, concurrency=8), _worker(db, concurrency=8)
        await asyncio.gather(_drain(a, lambda: len(receiver.accepted) >= len(feed)),
                             _drain(b, lambda: len(receiver.accepted) >= len(feed)))
    ids = [d.id for d in receiver.received]
    assert sorted(ids) == sorted(e["id"] for e in feed)  # every event once: no attempt sent twice
    assert a.sent + b.sent == len(feed)


def _serve(database_url: str, port: int):
    import os
    import subprocess
    import sys

    env = {**os.environ, "DATABASE_URL": database_url, "PL_SCHEDULER_ENABLED": "false", "PL_LOG_LEVEL": "WARNING",
           "PL_PORT": str(port), "PL_WORKERS": "1", "PL_WEBHOOK_WORKER": "true",
           "PL_WEBHOOK_ALLOW_PRIVATE_URLS": "true",
           "PL_WEBHOOK_TIMEOUT_SECONDS": "1", "PL_WEBHOOK_POLL_MS": "50", "PL_WEBHOOK_CONCURRENCY": "8"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-migrate"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_killing_the_service_during_deliveries_loses_nothing(tenant, database_url, cleanup):
    """The service is killed (SIGKILL) in the middle of delivering; once it runs again, every event reaches the
    receiver (at least once: one in flight at the kill may come twice, with the same webhook-id)."""
    import signal

    from tests.conftest import _free_port

    receiver = Receiver(answer=lambda n: (200, 0.02))
    async with running(receiver):
        await _endpoint(tenant, receiver.url)
        members = [f"kl-{i}" for i in range(10)]
        await asyncio.gather(*(tenant.member(m) for m in members))
        await asyncio.gather(*(tenant.adjust(members[i % 10], 1 + i) for i in range(90)))
        expected = {e["id"] for e in await _feed(tenant)}
        assert len(expected) == 10 + 90 * 2
        loop = asyncio.get_running_loop()

        async def until(condition, seconds: float) -> None:
            deadline = loop.time() + seconds
            while not condition():
                assert loop.time() < deadline, "timed out"
                await asyncio.sleep(0.02)

        first = _serve(database_url, _free_port())
        try:
            await until(lambda: len(receiver.accepted) >= 40, 60)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        got_before = {d.id for d in receiver.accepted}
        assert got_before < expected  # killed mid-way
        second = _serve(database_url, _free_port())
        try:
            await until(lambda: {d.id for d in receiver.accepted} >= expected, 90)
        finally:
            second.terminate()
            second.wait(30)
    assert {d.id for d in receiver.accepted} == expected
    # no event more than twice (at most the ones in flight at the kill come again)
    counts: dict[str, int] = {}
    for d in receiver.accepted:
        counts[d.id] = counts.get(d.id, 0) + 1
    assert sum(1 for n in counts.values() if n > 1) <= 8


def _readme_receiver(tmp_path, secret: str, port: int):
    """The receiver example of the README, as it is written, in its own process."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"<!-- receiver-example -->\n```python\n(.*?)```\n<!-- /receiver-example -->", readme, re.S)
    assert code, "the README's receiver example is missing"
    (tmp_path / "receiver.py").write_text(code.group(1))
    env = {**os.environ, "WEBHOOK_SECRET": secret, "PORT": str(port)}
    return subprocess.Popen([sys.executable, str(tmp_path / "receiver.py")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


async def test_the_readme_receiver_verifies_and_deduplicates(tenant, db, tmp_path, cleanup):
    """The receiver example of the README, run as it is written, against real deliveries (one sent twice)."""
    from tests.conftest import _free_port

    port = _free_port()
    created = await _endpoint(tenant, f"http://127.0.0.1:{port}/hooks")
    proc = _readme_receiver(tmp_path, created["secret"], port)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while True:  # until it listens
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
        await tenant.member("rm-1")
        assert (await tenant.adjust("rm-1", 25)).status_code == 201
        feed = await _feed(tenant)
        worker = _worker(db)
        await worker.run_until_idle()
        page = (await tenant.client.get(f"/v1/webhook-endpoints/{created['id']}/deliveries",
                                        headers=tenant.headers())).json()["data"]
        assert len(page) == len(feed) and {d["status"] for d in page} == {"delivered"}
        assert {a["status_code"] for d in page for a in d["log"]} == {204}
        # sent again (the same webhook-id): accepted, not processed twice
        r = await tenant.client.post(f"/v1/webhook-endpoints/{created['id']}/deliveries/{page[0]['id']}/retry",
                                     headers=tenant.headers())
        assert r.status_code == 202
        await worker.run_until_idle()
        again = (await tenant.client.get(f"/v1/webhook-endpoints/{created['id']}/deliveries",
                                         headers=tenant.headers())).json()["data"]
        assert [a["status_code"] for a in again[0]["log"]] == [204, 204]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == [e["type"] for e in feed]
    assert all(line.split()[1] == "rm-1" for line in lines)
