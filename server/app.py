"""The FastAPI application factory."""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI
from prometheus_client import start_http_server

from server import errors
from server.api import openapi_components
from server.audit import AuditLog
from server.auth import KeyGate
from server.config import Settings, UpstreamSettings
from server.guardrail import Guardrail
from server.images import ImageResolver
from server.limits import BodySizeLimit
from server.memory import fix_mmap_threshold
from server.metrics import Metrics
from server.inspector import router as inspector_router
from server.routes import router
from server.state import AppState
from server.upstream import Upstream


WORKER_OVERRIDES = "THOUGHTGUARD_WORKER_OVERRIDES"


def worker_app() -> FastAPI:
    """The app of one of several workers (uvicorn imports this factory in each process): the
    same settings as the supervising ``thoughtguard serve``, whose flags travel in the env."""
    import json
    import logging
    import os

    settings = Settings.with_overrides(json.loads(os.environ.get(WORKER_OVERRIDES, "{}")))
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        fix_mmap_threshold(settings.malloc_mmap_threshold)
        upstream = Upstream(settings.upstream)
        gm = settings.guard.guard_model
        guard_upstream = None
        if gm.url:
            guard_upstream = Upstream(
                UpstreamSettings(url=gm.url, read_timeout_s=gm.timeout_s, connect_timeout_s=gm.timeout_s)
            )
        guardrail = Guardrail.from_settings(settings.guard, guard_upstream,
                                            named_policies=settings.inspector.policies)
        images = ImageResolver(settings.images)
        audit = None
        if settings.audit.path is not None:
            a = settings.audit
            audit = AuditLog(a.path, max_bytes=a.max_bytes, backups=a.backups, capture_window=a.capture_window)
        metrics = Metrics()
        metrics_server = None
        if settings.metrics_port and settings.workers == 1:
            # a separate port keeps scrapes off the API listener (and out of its auth); with several
            # workers the supervising process serves it (server.workers)
            metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.exposition)
        # what start-up built (the reader, the policy, module state) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it and stalls every stream
        gc.collect()
        gc.freeze()
        app.state.tg = AppState(
            settings=settings,
            upstream=upstream,
            guardrail=guardrail,
            metrics=metrics,
            auth=KeyGate(settings.auth, settings.inspector),
            images=images,
            audit=audit,
        )
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            metrics.close()
            if audit is not None:
                audit.close()
            await images.aclose()
            await upstream.aclose()
            if guard_upstream is not None:
                await guard_upstream.aclose()
            await guardrail.aclose()

    app = FastAPI(title="thoughtguard", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.include_router(router)
    app.include_router(inspector_router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_body_bytes)
    _with_request_schemas(app)
    return app


def _with_request_schemas(app: FastAPI) -> None:
    """Put the chat request schema into the OpenAPI components the route's body refers to."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
