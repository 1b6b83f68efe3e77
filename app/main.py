"""The FastAPI application: routers, middleware, error handlers, and the lifespan that owns the pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api.auth import FailedAuthLimiter, KeyCache, KeyInvalidation, RateLimiter
from app.api.docs import install_docs
from app.api.fast_reads import FastReads
from app.api.problems import Problem, install_handlers
from app.api.routes import (
    admin,
    bulk,
    earning,
    events,
    expiry,
    insight,
    ledger,
    members,
    programs,
    redemption,
    rewards,
    tiers,
)
from app.config import Settings, get_settings
from app.dashboard.routes import router as dashboard_router
from app.db.access import Db
from app.db.bootstrap import resolve_database_url_async
from app.db.migrate import head_revision
from app.db.pool import create_pool
from app.db.urls import asyncpg_dsn
from app.events.worker import WebhookWorker, WorkerSettings
from app.jobs.scheduler import Scheduler, default_jobs
from app.ledger.batch import Batcher
from app.ledger.writes import Writer
from app.observability import RequestContextMiddleware
from app.programs.versions import VersionCache
from app.rewards.codes import FailureGuard

log = logging.getLogger(__name__)

DESCRIPTION = """
Loyalty points on an append-only, double-entry ledger in Postgres.

* Authenticate with `Authorization: Bearer <api key>`; a key belongs to one program and has scopes
  (`earn`, `redeem`, `read`, `admin`; `admin` implies all).
* Every write that changes the ledger needs an `Idempotency-Key` header; a retry with the same key and
  body replays the first answer (`Idempotent-Replayed: true`).
* Errors are `application/problem+json` with a stable `code`.
"""


# The API's route modules, in the order of the document (tests/conftest.py reads their response models from here).
API_ROUTES = (programs, members, ledger, earning, redemption, rewards, expiry, tiers, events, insight, bulk, admin)


def create_app(settings: Settings | None = None, database_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or await resolve_database_url_async(settings)
        app.state.pool = await create_pool(
            url, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
            statement_timeout_ms=settings.statement_timeout_ms, lock_timeout_ms=settings.lock_timeout_ms,
        )
        app.state.head_revision = head_revision()
        batcher = None
        if settings.group_commit:
            batcher = Batcher(app.state.pool, settings.group_commit_window_ms / 1000, settings.group_commit_max)
        app.state.db = Db(app.state.pool, Writer(app.state.pool, batcher), app.state.versions)
        invalidation = KeyInvalidation(asyncpg_dsn(url), app.state.key_cache,
                                       ack_timeout=settings.invalidation_ack_timeout_ms / 1000)
        invalidation.start()
        app.state.key_invalidation = invalidation
        scheduler = None
        if settings.scheduler_enabled:
            scheduler = Scheduler(url, app.state.pool, default_jobs(settings))
            scheduler.start()
        app.state.scheduler = scheduler
        worker = None
        if settings.webhook_worker:
            worker = WebhookWorker(app.state.pool, worker_settings(settings))
            worker.start()
        app.state.webhook_worker = worker
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            if scheduler is not None:
                await scheduler.stop()
            await invalidation.stop()
            await app.state.pool.close()

    app = FastAPI(
        title="points-ledger", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
        openapi_url="/openapi.json", docs_url=None, redoc_url=None,
        # One schema per model for requests and responses alike: generated clients get one class per model
        # (no `Tier-Input`/`Tier-Output` pairs whose names collide in openapi-python-client).
        separate_input_output_schemas=False,
        # operationId = the route function's name (`post_purchase`, `get_balance`): the names generated clients
        # give their functions, instead of FastAPI's `post_purchase_v1_purchases_post`.
        generate_unique_id_function=lambda route: route.name,
    )
    install_docs(app, "points-ledger")
    app.state.settings = settings
    app.state.key_cache = KeyCache(settings.api_key_cache_seconds)
    # The programs' configuration versions, invalidated with the keys (NOTIFY program:<id>).
    app.state.versions = VersionCache(settings.api_key_cache_seconds, lambda: app.state.key_cache.listening)
    app.state.key_cache.followers.append(app.state.versions)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app.state.failed_auth_limiter = FailedAuthLimiter(settings.auth_failure_rate_per_second,
                                                      settings.auth_failure_burst)
    app.state.voucher_guard = FailureGuard(settings.voucher_lookup_failures_per_minute,
                                           settings.voucher_lookup_failure_burst)
    install_handlers(app)
    for module in API_ROUTES:
        app.include_router(module.router)
    app.include_router(dashboard_router)  # /dashboard: HTML pages, not part of the API document
    # CORS is closed by default: no origins allowed unless configured.
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"],
                           allow_headers=["*"])
    # Inside the request context (request id, metrics, logs), in front of the router: the balance read's fast lane.
    app.add_middleware(FastReads, state=app.state, routes=ledger.router.routes)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_body_bytes,
                       larger_bodies={"/v1/imports": settings.import_max_body_bytes})
    _register_problem_schema(app)
    return app


def worker_settings(settings: Settings) -> WorkerSettings:
    return WorkerSettings(
        concurrency=settings.webhook_concurrency, timeout_seconds=settings.webhook_timeout_seconds,
        poll_seconds=settings.webhook_poll_ms / 1000, allow_private=settings.webhook_allow_private_urls,
        disable_after=timedelta(days=settings.webhook_disable_after_days),
    )


def _register_problem_schema(app: FastAPI) -> None:
    """Make sure ``#/components/schemas/Problem`` exists for the problem+json content entries."""
    original = app.openapi

    def openapi() -> dict:  # type: ignore[type-arg]
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}"))
        for name, sub in Problem.model_json_schema(ref_template="#/components/schemas/{model}").get(
            "$defs", {}
        ).items():
            components.setdefault(name, sub)
        components["Problem"].pop("$defs", None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
