"""The FastAPI application factory."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI

from server import errors
from server.config import Settings, UpstreamSettings
from server.guardrail import Guardrail
from server.metrics import Metrics
from server.routes import router
from server.state import AppState
from server.upstream import Upstream


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        upstream = Upstream(settings.upstream)
        gm = settings.guard.guard_model
        guard_upstream = None
        if gm.url:
            guard_upstream = Upstream(
                UpstreamSettings(url=gm.url, read_timeout_s=gm.timeout_s, connect_timeout_s=gm.timeout_s)
            )
        guardrail = Guardrail.from_settings(settings.guard, guard_upstream)
        app.state.tg = AppState(upstream=upstream, guardrail=guardrail, metrics=Metrics())
        try:
            yield
        finally:
            await upstream.aclose()
            if guard_upstream is not None:
                await guard_upstream.aclose()
            await guardrail.aclose()

    app = FastAPI(title="thoughtguard", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    errors.install(app)
    app.include_router(router)
    return app
