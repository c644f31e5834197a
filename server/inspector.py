"""The inspector: one page that sends a chat request through this gateway and draws what the
guard saw (each checked window by its score, the verdicts, what was held back and for how long).

Off by default (``inspector.enabled``); when any API key is configured, only keys with the
inspector right open it (a browser sends the key as the HTTP Basic password). The page is plain
HTML with a small script, served from package data; the per-window readings reach it through the
``thoughtguard.windows`` debug extension, which :func:`server.auth.KeyGate.require_inspector` guards.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from guard.policy import HoldBack
from server.errors import APIError
from server.state import AppState

router = APIRouter(include_in_schema=False)
_PAGE = files("server") / "static" / "inspect.html"
_CHALLENGE = 'Basic realm="thoughtguard inspector", charset="UTF-8"'


def _allowed(request: Request) -> AppState:
    state: AppState = request.app.state.tg
    if not state.settings.inspector.enabled:
        # off means not there: the same answer as any unknown path
        raise APIError(404, "not found (the inspector is off: inspector.enabled)", code="not_found")
    who = state.auth.authenticate(request, challenge=_CHALLENGE)
    state.auth.require_inspector(who)
    return state


@router.get("/inspect")
async def page(request: Request) -> HTMLResponse:
    _allowed(request)
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"), headers={"Cache-Control": "no-store"})


@router.get("/inspect/config")
async def config(request: Request) -> JSONResponse:
    """What the page offers: the upstream's models, the policies by name, the hold-back modes."""
    state = _allowed(request)
    models = await state.upstream.models()
    policies = {
        name: {"mode": p.mode.value, "unsafe": p.thresholds.unsafe, "high": p.thresholds.high,
               "hold": p.thresholds.hold, "consecutive": p.thresholds.consecutive}
        for name, p in state.guardrail.policies.items()
    }
    return JSONResponse({
        "models": [m["id"] for m in models.get("data", [])],
        "policies": policies,
        "modes": [m.value for m in HoldBack],
        "guard": state.guardrail.enabled,
        "detector": state.guardrail.detector.name,
        "max_image_bytes": state.settings.images.max_bytes,
    }, headers={"Cache-Control": "no-store"})
