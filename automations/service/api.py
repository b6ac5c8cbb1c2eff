"""The HTTP API (FastAPI). Everything but ``/health`` needs the bearer token."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, cast

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from automations.service import Service
from automations.service.wiring import freeze_startup_heap
from automations.state import AttemptRow, OutboxRow
from events.errors import EventsError
from events.model import MAX_EVENT_BYTES, Event
from events.store import EventQuery

_bearer = HTTPBearer(auto_error=False)
_UNAUTHORISED = "missing or wrong bearer token"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


class _RunbellApi(FastAPI):
    """FastAPI, with ``POST /api/events`` (the hot path) handed straight to its route's
    handler: the same one handler, without the middleware stack and the route table
    walk in front of it (about 60 µs of a single-event request; bench/README.md,
    "bench: POST /api/events"). The handler answers every refusal itself, so it needs
    none of the exception middleware."""

    events_route: APIRoute | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.events_route
        if (
            route is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/api/events"
        ):
            await route.handle(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _PlainRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns a ``Response``, called as
    Starlette calls one: no dependency solving, no response model. For ``POST
    /api/events``, where FastAPI's dependency layer cost more than the rest of the
    framework (bench/README.md, "bench: POST /api/events"). Still an ``APIRoute``, so
    the OpenAPI schema documents it (``openapi_extra``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        return cast(Callable[[Request], Coroutine[Any, Any, Response]], self.endpoint)


_EVENTS_OPENAPI: dict[str, Any] = {
    "security": [{"HTTPBearer": []}],
    "requestBody": {
        "required": True,
        "description": "One event or a list of events (the envelope of events.model.Event).",
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]
                }
            }
        },
    },
    "responses": {
        "202": {"description": 'Durable: ``{"accepted": [ids]}``'},
        "401": {"description": "Missing or wrong bearer token"},
        "413": {"description": "Body over the limit, or one event over 1 MB"},
        "422": {"description": "Malformed JSON or an invalid event: nothing is stored"},
        "503": {"description": "The store or the bus failed: nothing is accepted, retry"},
    },
}


def create_app(service: Service, token: str, *, manage_lifecycle: bool = True) -> FastAPI:
    """The API over ``service``; with ``manage_lifecycle`` the app starts and stops it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start()
            freeze_startup_heap()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = _RunbellApi(title="runbell", version="0.1.0", lifespan=lifespan)
    expected = token.encode()

    def refuse_unless(given: str) -> None:
        """The one token check: a 401 with the Bearer challenge unless ``given`` is it."""
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, _UNAUTHORISED, headers=_CHALLENGE)

    async def authorised(  # async: a sync dependency would run in a worker thread
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        refuse_unless(credentials.credentials if credentials else "")

    auth = [Depends(authorised)]

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def post_events(request: Request) -> Response:
        """Ingest one event or a list (all or nothing): 202 once durable."""
        # HTTPBearer's reading of the header, without its dependency (see _PlainRoute).
        scheme, given = get_authorization_scheme_param(request.headers.get("authorization"))
        try:
            refuse_unless(given if scheme.lower() == "bearer" else "")
        except HTTPException as exc:  # answered here: no exception middleware in front
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        limit = service.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return _too_large(f"body is {declared} bytes; the limit is {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                return _too_large(f"body exceeds {limit} bytes")
        events, problem = _parse_events(bytes(body))
        if problem is not None:
            return problem
        try:
            ids = await service.ingest(events)
        except EventsError as exc:  # the store or the bus, not this request: retry later
            detail = f"nothing was accepted: {type(exc).__name__}; retry later"
            return JSONResponse({"detail": detail}, status.HTTP_503_SERVICE_UNAVAILABLE)
        except ValueError as exc:  # an event of this request cannot be written
            return _unprocessable([{"loc": ["body"], "msg": f"cannot be stored: {exc}"}])
        return Response(
            orjson.dumps({"accepted": [str(i) for i in ids]}),
            status_code=202,
            media_type="application/json",
        )

    app.router.add_api_route(
        "/api/events",
        post_events,
        methods=["POST"],
        status_code=202,
        openapi_extra=_EVENTS_OPENAPI,
        route_class_override=_PlainRoute,
    )
    events_route = app.router.routes[-1]
    if not isinstance(events_route, APIRoute) or events_route.endpoint is not post_events:
        raise RuntimeError("POST /api/events is not the route just added")
    app.events_route = events_route

    @app.get("/api/events", dependencies=auth)
    async def get_events(
        name: str | None = None,
        resource_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        try:
            page = await service.store.query(
                EventQuery(name, resource_id, since, until, limit, cursor)
            )
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["query", "cursor"], "msg": str(exc)}]) from exc
        return {
            "events": [e.model_dump(mode="json", exclude_none=True) for e in page.events],
            "next_cursor": page.next_cursor,
        }

    @app.get("/api/firings", dependencies=auth)
    async def get_firings(
        automation: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        firings = await service.state.firings(automation, limit)
        return {
            "firings": [
                {
                    "id": f.id,
                    "automation": f.automation,
                    "state": f.state,
                    "at": f.at.isoformat(),
                    "bucket": f.bucket,
                    "event_ids": f.event_ids,
                    "silenced": f.silenced,
                }
                for f in firings
            ]
        }

    @app.get("/api/deliveries", dependencies=auth)
    async def get_deliveries(
        status_: Annotated[str | None, Query(alias="status")] = None,
        automation: str | None = None,
        firing_id: str | None = None,
        channel: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Outbox rows, newest first, each with every attempt (targets are masked)."""
        found = await service.state.deliveries(
            status=status_,
            automation=automation,
            firing_id=firing_id,
            channel=channel,
            since=since,
            limit=limit,
        )
        return {"deliveries": [_delivery(row, attempts) for row, attempts in found]}

    @app.post("/api/deliveries/{delivery_id}/replay", status_code=202, dependencies=auth)
    async def replay_delivery(delivery_id: str) -> dict[str, Any]:
        """Owe a sent or dead delivery again (a new attempt series, the same idempotency key)."""
        outcome = await service.state.replay(delivery_id, service.clock.now())
        if outcome == "missing":
            raise HTTPException(404, f"no delivery {delivery_id!r}")
        if outcome == "busy":
            raise HTTPException(409, "the delivery is still pending or sending; replay it later")
        service.wake_delivery()
        return {"replayed": delivery_id}

    return app


def _delivery(row: OutboxRow, attempts: list[AttemptRow]) -> dict[str, Any]:
    out = row.model_dump(
        mode="json",
        include={
            "id",
            "firing_id",
            "automation",
            "action_index",
            "status",
            "attempts",
            "created_at",
            "next_attempt_at",
            "last_error",
            "ref",
            "series",
        },
    )
    out["action_type"] = row.action.get("type")
    out["channel"] = row.action.get("channel")
    out["attempt_log"] = [
        a.model_dump(
            mode="json",
            include={
                "attempt",
                "series",
                "at",
                "ok",
                "retryable",
                "status_code",
                "latency_ms",
                "target",
                "reason",
            },
        )
        for a in attempts
    ]
    return out


def _too_large(message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=413)


def _parse_events(body: bytes) -> tuple[list[Event], JSONResponse | None]:
    """All or nothing: one bad event rejects the request and stores nothing."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return [], _unprocessable([{"loc": ["body"], "msg": f"malformed JSON: {exc}"}])
    items = raw if isinstance(raw, list) else [raw]
    events: list[Event] = []
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where: list[Any] = ["body", index] if isinstance(raw, list) else ["body"]
        if not isinstance(item, dict):
            errors.append({"loc": where, "msg": "an event must be a JSON object"})
            continue
        # A body within the limit cannot hold an event over it: measure only then.
        if len(body) > MAX_EVENT_BYTES and len(orjson.dumps(item)) > MAX_EVENT_BYTES:
            return [], _too_large(f"event at {where} is larger than {MAX_EVENT_BYTES} bytes")
        try:
            events.append(Event.from_parsed_json(item))
        except ValidationError as exc:
            errors.extend(
                {"loc": [*where, *err["loc"]], "msg": err["msg"], "type": err["type"]}
                for err in exc.errors(include_url=False, include_input=False)
            )
        except ValueError as exc:
            errors.append({"loc": where, "msg": str(exc)})
    if not items:
        errors.append({"loc": ["body"], "msg": "no events: send an event object or a list"})
    return events, (_unprocessable(errors) if errors else None)


def _unprocessable(errors: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": errors}, status_code=422)
