"""The HTTP API and the dashboard, an ASGI app (Starlette) over the control socket's handlers.

Every socket command is an endpoint, from the one handler table (daemon/commands.py), so a
new command is served as soon as it exists:

    POST /api/<command>   the JSON body is the command's args; any command
    GET  /api/<command>   the query string is the args; read-only commands only (READ_ONLY)

The answer is the command's result as JSON, exactly what the socket answers (and what
``personad <command> --json`` prints), or ``{"error": {"code", "message"}}`` with the
socket's error code and the HTTP status of :func:`http_status`. Besides: ``GET /`` the
dashboard, ``GET /api/events`` Server-Sent Events (daemon/http_events.py),
``GET /api/profiles`` the profiles part of status, ``GET /api/openapi.json``.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from daemon.control import CommandError, Handler
from daemon.http_events import EventFeed

log = structlog.get_logger(__name__)

# Commands that change nothing: also served on GET. Names not (yet) in the handler table
# are ignored.
READ_ONLY = frozenset(
    {"ping", "status", "search", "rejects", "jobs", "versions", "run_info", "stats"}
)
# Commands left to the socket's peers: the dashboard's URL carries the token.
SOCKET_ONLY = frozenset({"dashboard"})
MAX_BODY_BYTES = 1 << 20

STATUS_BY_CODE = {
    "bad_request": 400,
    "bad_args": 400,
    "unauthorized": 401,
    "cross_origin": 403,
    "bad_host": 403,
    "unknown_command": 404,
    "no_run": 404,
    "not_published": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "not_cancellable": 409,
    "busy": 503,
    "unavailable": 503,
    "timeout": 504,
    "internal": 500,
}
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


def http_status(code: str) -> int:
    """The HTTP status of a socket error code: the table, then ``unknown_*`` 404 (no such
    thing), ``*_failed`` 409 (cannot be done in the present state), anything else 400."""
    if code in STATUS_BY_CODE:
        return STATUS_BY_CODE[code]
    if code.startswith("unknown_"):
        return 404
    if code.endswith("_failed"):
        return 409
    return 400


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(value, default=str)
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"cache-control": "no-store", **(headers or {})},
    )


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": {"code": code, "message": message}}, http_status(code), headers)


def query_value(text: str) -> Any:
    """A query-string value: JSON numbers, booleans and null as such, the rest as text."""
    if text in ("true", "false", "null") or text.lstrip("-").replace(".", "", 1).isdigit():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


@functools.cache
def dashboard_file(name: str) -> bytes:
    return resources.files("daemon").joinpath("dashboard", name).read_bytes()


def summary(cmd: str, handler: Handler) -> str:
    """The handler's first docstring line, or a pointer to the socket's reference."""
    lines = (handler.__doc__ or "").strip().splitlines()
    return lines[0] if lines else f"the socket command {cmd!r} (README, 'The control socket')"


def openapi(handlers: dict[str, Handler]) -> dict[str, Any]:
    error = {"$ref": "#/components/responses/Error"}
    errors = {str(s): error for s in (400, 401, 403, 404, 409, 503)}
    paths: dict[str, Any] = {}
    for cmd in sorted(set(handlers) - SOCKET_ONLY):
        op = {
            "summary": summary(cmd, handlers[cmd]),
            "operationId": cmd,
            "responses": {"200": {"description": "the command's result, as the socket's"}} | errors,
        }
        ops: dict[str, Any] = {
            "post": op
            | {
                "operationId": f"{cmd}_post",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "description": "the command's args"}
                        }
                    },
                },
            }
        }
        if cmd in READ_ONLY:
            ops["get"] = op | {"description": "args in the query string"}
        paths[f"/api/{cmd}"] = ops
    paths["/api/events"] = {
        "get": {
            "summary": "Server-Sent Events: 'counts' (profiles, ingest) and 'progress' (jobs)",
            "responses": {"200": {"content": {"text/event-stream": {}}}} | errors,
        }
    }
    paths["/api/profiles"] = {
        "get": {"summary": "the profiles part of status", "responses": {"200": {}} | errors}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "personad", "version": "1"},
        "paths": paths,
        "security": [{"bearer": []}, {"cookie": []}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "personad_token_PORT"},
            },
            "responses": {
                "Error": {
                    "description": "the socket's error code and message",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "code": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
    }


def build_app(handlers: dict[str, Handler], feed: EventFeed) -> Starlette:
    """The app, without its guard (daemon/http_security.py wraps it)."""

    async def command(request: Request) -> Response:
        cmd = request.path_params["cmd"]
        handler = None if cmd in SOCKET_ONLY else handlers.get(cmd)
        if handler is None:
            known = ", ".join(sorted(set(handlers) - SOCKET_ONLY))
            return error_response("unknown_command", f"unknown command {cmd!r}; known: {known}")
        if request.method == "GET":
            if cmd not in READ_ONLY:
                return error_response(
                    "method_not_allowed", f"{cmd!r} changes state: POST it", {"allow": "POST"}
                )
            args: Any = {k: query_value(v) for k, v in request.query_params.items()}
        else:
            body = await request.body()
            if len(body) > MAX_BODY_BYTES:
                return error_response("too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
            try:
                args = json.loads(body) if body.strip() else {}
            except (ValueError, RecursionError) as exc:
                return error_response("bad_request", f"the body is not JSON: {exc}")
            if not isinstance(args, dict):
                return error_response("bad_request", "the body must be a JSON object of args")
        try:
            result = await handler(args)
        except CommandError as exc:
            return error_response(exc.code, exc.message)
        except Exception as exc:
            log.exception("HTTP command failed", cmd=cmd)
            return error_response("internal", f"{type(exc).__name__}: {exc}")
        return json_response(result)

    async def profiles(request: Request) -> Response:
        status = await handlers["status"]({})
        return json_response({"profiles": status["profiles"]})

    async def events(request: Request) -> Response:
        return StreamingResponse(
            feed.stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    document = openapi(handlers)

    async def openapi_json(request: Request) -> Response:
        return json_response(document)

    async def index(request: Request) -> Response:
        return Response(
            dashboard_file("index.html"),
            media_type="text/html; charset=utf-8",
            headers={"cache-control": "no-store"},
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return error_response("unknown_file", f"no file {name!r}")
        return Response(
            dashboard_file(name), media_type=STATIC[name], headers={"cache-control": "no-cache"}
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/static/{name}", static),
            Route("/api/openapi.json", openapi_json),
            Route("/api/events", events),
            Route("/api/profiles", profiles),
            Route("/api/{cmd}", command, methods=["GET", "POST"]),
        ]
    )
