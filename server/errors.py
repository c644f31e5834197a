"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.param, self.code, self.headers = param, code, headers

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


_TYPE_SEGMENT = re.compile(r"^(str|int|float|bool|none|.*\[.*\]|function-.*)$")


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """pydantic's error location as the OpenAI ``param`` path, e.g. ``messages[2].content[1].image_url``."""
    out, last = "", None
    for p in loc:
        if p == "body" or (isinstance(p, str) and _TYPE_SEGMENT.match(p)) or p == last:
            continue  # union branch names and discriminator tags are pydantic's, not the client's
        last = p
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or None


def validation_error(errors: list[Any]) -> APIError:
    """A pydantic error list as one OpenAI-style 400 naming the first offending field."""
    # the most specific error names the field the client got wrong, not a union branch it didn't pick
    first = max(errors, key=lambda e: len(e.get("loc", ()))) if errors else {"msg": "invalid request", "loc": ()}
    param = _loc_to_param(tuple(first.get("loc", ())))
    message = f"{param}: {first['msg']}" if param else str(first["msg"])
    return APIError(400, message, param=param)


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(list(exc.errors()))
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            error_body(str(exc.detail), type=kind), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - last resort
        return JSONResponse(error_body("internal error", type="server_error"), status_code=500)
