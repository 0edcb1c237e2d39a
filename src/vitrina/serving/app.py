"""FastAPI application factory: the service is built in the lifespan and injected with ``Depends``.

Until it is loaded every endpoint but ``/metrics`` answers 503 (``/health`` says why).
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vitrina import __version__
from vitrina.errors import ModelLoadError
from vitrina.serving.filters import BadRequest, UnknownItem
from vitrina.serving.metrics import Metrics
from vitrina.serving.schemas import (
    EventsRequest,
    EventsResponse,
    Health,
    RecommendRequest,
    RecommendResponse,
    SimilarRequest,
    SimilarResponse,
    SlateRequest,
    SlateResponse,
    SwapRequest,
    SwapResponse,
)
from vitrina.serving.service import OutsideModelRoot, Service
from vitrina.serving.settings import Settings

log = logging.getLogger("vitrina.serving")


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with 413 (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = declared is not None and declared.isdigit() and int(declared) > self.limit
        chunks: list[bytes] = []
        size = 0
        more = not too_big
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            too_big = size > self.limit
            if too_big:
                break
        if too_big:
            detail = f"request body over {self.limit} bytes (--max-body-bytes); send fewer items per request"
            await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
            return
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class Timing:
    """Counts requests and observes latency per route template (``/recommend``, ...)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - start)


async def get_service(request: Request) -> Service:
    """The loaded service, or 503 while it loads (or after loading failed).

    ``async`` on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a thread
    hand-off per request that cost more CPU than ranking itself (py-spy, issue 16).
    """
    state = request.app.state.vitrina
    service = state["service"]
    if service is None:
        detail = state["error"] or "model is loading; retry shortly"
        raise HTTPException(503, detail, headers={"Retry-After": "1"})
    return service


def _check_bearer(authorization: str | None, token: str, what: str) -> None:
    """401 unless ``authorization`` is ``Bearer <token>`` (compared in constant time)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        detail = f"{what} need 'Authorization: Bearer <token>'"
        raise HTTPException(401, detail, {"WWW-Authenticate": "Bearer"})


def require_admin(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Admin endpoints take ``Authorization: Bearer <token>``; without a configured token they are off."""
    token = request.app.state.vitrina["settings"].admin_token
    if not token:
        raise HTTPException(403, "admin endpoints are disabled; start the service with --admin-token")
    _check_bearer(authorization, token, "admin endpoints")


async def require_writer(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """``/events`` takes the events token (``VITRINA_EVENTS_TOKEN``) when one is configured."""
    token = request.app.state.vitrina["settings"].events_token
    if token:
        _check_bearer(authorization, token, "/events (VITRINA_EVENTS_TOKEN is set)")


async def require_reader(request: Request, authorization: Annotated[str | None, Header()] = None) -> None:
    """Ranking endpoints take the read token (``VITRINA_READ_TOKEN``) when one is configured."""
    token = request.app.state.vitrina["settings"].read_token
    if token:
        _check_bearer(authorization, token, "/recommend, /slate and /similar (VITRINA_READ_TOKEN is set)")


def _at_most(n: int, limit: int, field: str, option: str) -> None:
    """413 when a request's list ``field`` is longer than the service's limit."""
    if n > limit:
        detail = f"{field}: {n} entries, more than this service takes in one request ({limit}, {option})"
        raise HTTPException(413, detail)


ServiceDep = Annotated[Service, Depends(get_service)]


def _describe(errors: list[Any]) -> str:
    """``field: problem (got value)`` per error; a check across fields (whose message names the
    fields itself) is its message alone, not the whole body echoed back."""
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        msg = str(e.get("msg"))
        if not where and e.get("type") == "value_error":
            parts.append(msg.removeprefix("Value error, "))
            continue
        got = repr(e.get("input"))
        parts.append(f"{where or 'body'}: {msg} (got {got[:80]})")
    return "; ".join(parts)


def _is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/<x>+json`` (parameters such as charset allowed)."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def create_app(
    settings: Settings,
    *,
    build: Callable[[Settings], Service] = Service.from_settings,
    background_load: bool = False,
    metrics: Metrics | None = None,
) -> FastAPI:
    """The HTTP app. ``build`` makes the service (tests inject theirs); with ``background_load``
    the server answers 503 while the model loads instead of starting after it. ``metrics``: the
    counters to fill and render (``--workers N`` passes ones that add the other workers' in)."""
    metrics = Metrics() if metrics is None else metrics
    state: dict[str, Any] = {"service": None, "error": None, "settings": settings}

    def load() -> Service:
        service = build(settings)
        service.metrics = metrics
        return service

    async def load_into_state() -> None:
        try:
            state["service"] = await asyncio.to_thread(load)
            gc.freeze()  # the loaded model is permanent: keep it out of later collections
        except Exception as exc:
            state["error"] = f"{type(exc).__name__}: {exc}"
            log.exception("model loading failed")
            if not background_load:
                raise

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(load_into_state())
        if not background_load:
            await task
        try:
            yield
        finally:
            if not task.done():
                await asyncio.wait([task])
            service, state["service"] = state["service"], None
            if service is not None:
                await asyncio.to_thread(service.close)

    app = FastAPI(
        title="vitrina serving",
        version=__version__,
        summary="Recommendations with filters before ranking, slates, events and experiments.",
        lifespan=lifespan,
    )

    app.state.vitrina = state

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Every POST takes a JSON body; FastAPI hands it over as raw bytes when the Content-Type is
        # not JSON, which then fails validation -- so this check costs nothing on good requests.
        content_type = request.headers.get("content-type")
        if request.method == "POST" and not _is_json(content_type):
            got = f"got {content_type!r}" if content_type else "none was given"
            detail = f"expected Content-Type: application/json; {got}"
            return JSONResponse({"detail": detail}, 415)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            reason = errors[0].get("ctx", {}).get("error", "cannot parse the body")
            return JSONResponse({"detail": f"malformed JSON: {reason}"}, 400)
        return JSONResponse({"detail": _describe(errors)}, 422)

    @app.exception_handler(UnknownItem)
    async def unknown_item(request: Request, exc: UnknownItem) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    async def health() -> Any:
        service = state["service"]
        if service is None:
            status = "failed" if state["error"] else "loading"
            return JSONResponse(Health(status=status).model_dump(), 503)
        variants = {f"{e}/{v}": b.version for e, vs in service.variant_models.items() for v, b in vs.items()}
        store = type(service.store).__name__
        return Health(status="ok", model_version=service.default.version, variants=variants, store=store)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    reader = [Depends(require_reader)]
    history_limit = settings.max_request_history

    @app.post("/recommend", response_model=RecommendResponse, dependencies=reader)
    async def recommend(req: RecommendRequest, service: ServiceDep) -> RecommendResponse:
        """Top-k for a user and/or a history of trigger items, business rules applied first."""
        _at_most(len(req.history or ()), history_limit, "history", "--max-request-history")
        return await service.recommend(req)

    @app.post(
        "/similar",
        response_model=SimilarResponse,
        responses={404: {"description": "unknown item"}},
        dependencies=reader,
    )
    async def similar(req: SimilarRequest, service: ServiceDep) -> SimilarResponse:
        """Items similar to one item (item vectors' cosine, or item-item weights), rules applied first."""
        return service.similar(req)

    @app.post("/slate", response_model=SlateResponse, dependencies=reader)
    async def slate(req: SlateRequest, service: ServiceDep) -> SlateResponse:
        """Several carousels from one model call, de-duplicated and ordered by value."""
        _at_most(len(req.history or ()), history_limit, "history", "--max-request-history")
        return await service.slate(req)

    @app.post("/events", response_model=EventsResponse, dependencies=[Depends(require_writer)])
    def events(req: EventsRequest, service: ServiceDep) -> EventsResponse:
        """Interactions and exposures; acknowledged only after they are durably stored."""
        _at_most(len(req.events), settings.max_events_per_request, "events", "--max-events-per-request")
        return service.record(req)

    @app.post("/admin/model", response_model=SwapResponse, dependencies=[Depends(require_admin)])
    def swap(req: SwapRequest, service: ServiceDep) -> SwapResponse:
        """Hot-swap a model bundle; a bundle that fails to load is refused and the old one keeps serving."""
        try:
            new, old = service.swap(Path(req.model_dir), req.variant)
        except OutsideModelRoot as exc:
            service.metrics.swap("refused")
            raise HTTPException(403, f"model refused, still serving the previous one: {exc}") from exc
        except ModelLoadError as exc:
            service.metrics.swap("refused")
            raise HTTPException(422, f"model refused, still serving the previous one: {exc}") from exc
        service.metrics.swap("ok")
        return SwapResponse(model_version=new, previous_version=old)

    @app.get("/admin/users/{user_id}/history", dependencies=[Depends(require_admin)])
    def user_history(user_id: str, service: ServiceDep) -> dict[str, list[str]]:
        """The user's logged interaction history (item ids, oldest first)."""
        return {"items": service.store.history(user_id)}

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Timing, metrics=metrics)
    return app
