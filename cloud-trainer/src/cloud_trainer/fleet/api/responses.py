"""The fleet API's refusals, declared so its OpenAPI document says what it really returns."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.routing import compile_path

HTTP_METHODS = frozenset({"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"})


class Problem(BaseModel):
    """Why a request was refused, in one sentence."""

    detail: str = Field(description="What was wrong, for a person to read.")


class FieldProblem(BaseModel):
    """One field of the request that failed validation (FastAPI's own shape)."""

    loc: list[str | int] = Field(description="Where: body, query, path, then the field's path.")
    msg: str
    type: str


class Unprocessable(BaseModel):
    """A well-formed request the service cannot act on.

    Field validation answers with the list of fields at fault; checks that need the service's
    state (a feature the model lacks, an empty upload) answer with one sentence.
    """

    detail: list[FieldProblem] | str


_DESCRIPTIONS = {
    400: "The body cannot be parsed (not UTF-8 JSON, broken multipart).",
    401: "No bearer token, or one the service does not know.",
    404: "No such resource.",
    409: "The request conflicts with the resource's current state.",
    410: "The resource is known but its content is gone.",
    413: "The body is over the service's size limit.",
    415: "The content type is not one the service takes.",
    422: "The request is well formed but cannot be acted on.",
    500: "The service failed reading or writing its own files or records.",
    502: "The model registry behind the service failed.",
    503: "The service is busy, or a part it needs (broker, signing key) is unavailable; "
    "retry after Retry-After seconds where given.",
    507: "The service has no space left to store the upload.",
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: Bearer.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}


def refusals(*codes: int, beside: str | None = None) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status it may refuse with, its body and meaning.

    ``beside`` names a route's own non-JSON media type (``text/html``): FastAPI would file a
    model under that type, so the JSON body is spelled out instead.
    """
    answers: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        model = Unprocessable if code == 422 else Problem
        answer: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if beside is None:
            answer["model"] = model
        elif model is Problem:
            answer["content"] = {"application/json": {"schema": Problem.model_json_schema()}}
        else:
            raise ValueError(f"no inline schema for {code} beside {beside}")
        if code in _HEADERS:
            answer["headers"] = _HEADERS[code]
        answers[code] = answer
    return answers


@lru_cache(maxsize=256)
def _path_regex(template: str) -> re.Pattern[str]:
    regex, _format, _converters = compile_path(template)
    return regex


def allowed_methods(request: Request) -> list[str]:
    """Every method the OpenAPI document gives this path, not just the first route's.

    Starlette stops at the first route whose path matches, so a path served by two routes
    (``GET`` and ``POST /api/devices``) would advertise only one of them.
    """
    path = request.scope["path"]
    methods: set[str] = set()
    for template, item in request.app.openapi()["paths"].items():
        if _path_regex(template).match(path):
            methods |= {name.upper() for name in item if name.upper() in HTTP_METHODS}
    return sorted(methods)


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """405 with an ``Allow`` header that lists every method of the path (RFC 9110)."""
    headers = dict(getattr(exc, "headers", None) or {})
    documented = allowed_methods(request)
    if documented:  # paths outside the document (the dashboard's) keep the router's answer
        headers["Allow"] = ", ".join(documented)
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)
