"""The HTTP API (FastAPI). Everything but ``/health`` needs the bearer token (the schema
pages too, unless ``RUNBELL_PUBLIC_DOCS=1``)."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, cast
from uuid import UUID

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, AwareDatetime, ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from automations.service import Service
from automations.service.wiring import freeze_startup_heap
from automations.state import AttemptRow, OutboxRow
from events.errors import BusError, EventsError
from events.model import MAX_EVENT_BYTES, Event, json_bytes, json_loads
from events.store import EventQuery

_bearer = HTTPBearer(auto_error=False)
_UNAUTHORISED = "missing or wrong bearer token"
_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_DOCS_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


def _in_utc(moment: datetime) -> datetime:
    # A year-1 time east of UTC (or a year-9999 one west of it) has no UTC reading.
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range once in UTC (years 1 to 9999)") from exc


# A query time: with a timezone and in range in UTC, else FastAPI's 422 naming the parameter.
_Moment = Annotated[AwareDatetime, AfterValidator(_in_utc)]


def presented_token(header: str | None) -> str:
    """The token in an ``Authorization`` header value, "" when it holds none: the one
    reading every route uses. RFC 6750's ``"Bearer" 1*SP b64token``: the scheme in any
    case, then one or more spaces (not tabs), then the token, compared whole."""
    scheme, _, rest = (header or "").partition(" ")
    return rest.strip(" ") if scheme.lower() == "bearer" else ""


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

    public_docs = service.settings.public_docs
    # Behind the token, FastAPI's own schema routes are off and _add_docs_behind_token's
    # serve the same pages.
    closed: dict[str, Any] = {} if public_docs else dict.fromkeys(("docs_url", "redoc_url"))
    app = _RunbellApi(
        title="runbell",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url="/openapi.json" if public_docs else None,
        **closed,
    )
    expected = token.encode()
    # What /health reports: the reason the last write through the API failed for want
    # of storage (or of the bus), kept until a write succeeds.
    trouble: dict[str, str] = {}

    def refuse_unless(given: str) -> None:
        """The one token check: a 401 with the Bearer challenge unless ``given`` is it."""
        if not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, _UNAUTHORISED, headers=_CHALLENGE)

    async def authorised(  # async: a sync dependency would run in a worker thread
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        # HTTPBearer only declares the scheme in the OpenAPI schema; the header is read
        # by presented_token, as POST /api/events reads it (FastAPI's reading of extra
        # spaces changed between versions).
        refuse_unless(presented_token(request.headers.get("authorization")))

    auth = [Depends(authorised)]

    def unavailable(request: Request, exc: Exception) -> JSONResponse:
        """503 with what failed (the driver's first line: no SQL, no parameters, no
        password); a failed write is what /health reports until one succeeds."""
        reason = _reason(exc, service.settings.database_url)
        if request.method != "GET":
            trouble.clear()
            trouble["bus" if isinstance(exc, BusError) else "storage"] = reason
        return JSONResponse({"detail": f"storage unavailable: {reason}"}, status_code=503)

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        return unavailable(request, exc)

    app.add_exception_handler(EventsError, on_storage_error)
    app.add_exception_handler(OperationalError, on_storage_error)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 ``{"status": "ok"}``; 503 ``{"status": "degraded", "storage": why}`` while
        the last write through the API failed for want of storage, until one succeeds."""
        if trouble:
            return JSONResponse({"status": "degraded", **trouble}, status_code=503)
        return JSONResponse({"status": "ok"})

    if not public_docs:
        _add_docs_behind_token(app, auth)

    async def post_events(request: Request) -> Response:
        """Ingest one event or a list (all or nothing): 202 once durable."""
        try:  # the header read as every route reads it, without a dependency (_PlainRoute)
            refuse_unless(presented_token(request.headers.get("authorization")))
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
            ids = await service.ingest(_first_of_each_id(events))
        except (EventsError, OperationalError) as exc:  # no exception middleware here
            return unavailable(request, exc)  # the store or the bus: retry later
        except ValueError as exc:  # an event of this request cannot be written
            return _unprocessable([{"loc": ["body"], "msg": f"cannot be stored: {exc}"}])
        trouble.clear()
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
        since: _Moment | None = None,
        until: _Moment | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        try:
            page = await service.store.query(
                EventQuery(name, resource_id, since, until, limit, cursor)
            )
        except ValueError as exc:  # since and until are checked above: the cursor
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
        since: _Moment | None = None,
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
        trouble.clear()  # a write succeeded
        return {"replayed": delivery_id}

    return app


def _add_docs_behind_token(app: FastAPI, auth: list[Any]) -> None:
    """/openapi.json, /docs and /redoc as FastAPI serves them, behind the token (a
    browser cannot send it: fetch the schema with ``curl -H "Authorization: Bearer ..."``,
    or set ``RUNBELL_PUBLIC_DOCS=1``)."""
    schema, docs, redirect, redoc = _DOCS_PATHS

    @app.get(schema, include_in_schema=False, dependencies=auth)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(docs, include_in_schema=False, dependencies=auth)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema, title=f"{app.title} - Swagger UI", oauth2_redirect_url=redirect
        )

    @app.get(redirect, include_in_schema=False, dependencies=auth)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc, include_in_schema=False, dependencies=auth)
    async def redoc_ui() -> HTMLResponse:
        return get_redoc_html(openapi_url=schema, title=f"{app.title} - ReDoc")


def _first_of_each_id(events: list[Event]) -> list[Event]:
    """A batch that repeats an id is accepted once per id, the first copy winning (as
    the store keeps the first): the answer lists each id once."""
    unique: dict[UUID, Event] = {}
    for event in events:
        unique.setdefault(event.id, event)
    return list(unique.values()) if len(unique) < len(events) else events


def _reason(exc: Exception, database_url: str) -> str:
    """The cause of a storage error in one line, without the database password."""
    cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's message carries SQL and values
    first = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    password = make_url(database_url).password
    return first.replace(str(password), "***") if password else first


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
        raw = json_loads(body)  # orjson's, but exact for integers past 64 bits
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
        if len(body) > MAX_EVENT_BYTES and len(json_bytes(item)) > MAX_EVENT_BYTES:
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
