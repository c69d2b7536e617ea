"""The review app: a Starlette app serving the page (`static/`) and a JSON API over
`queries`, `DataBrowser`'s statistics and `provider_review` (the one way a decision is
made).

Access: every `/api/` request carries the session's token, as `Authorization: Bearer
<token>` or as the `mephisto_review` cookie, which `GET /?token=<token>` sets (HttpOnly,
SameSite=Strict) before redirecting to `/`. Without it: 401 `{"error": ...}`. Requests
that change anything are POSTs whose body is JSON (`Content-Type: application/json`,
at most `MAX_BODY` bytes): a form on another site can send neither the header nor the
cookie (SameSite=Strict), which is the CSRF defence.

When the app starts it settles the bonus payments left `recorded` or `failed` (a crash
or an outage between recording and paying) of the providers of the runs in view, so a
reviewer never sees a bonus as given that was not paid.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mephisto.errors import (
    DatabaseUnavailable,
    EntryDoesNotExist,
    InvalidTransition,
    MephistoError,
    ProviderError,
)
from mephisto.review import queries
from mephisto.review.decisions import BadRequest, parse_decision, parse_unit_ids

if TYPE_CHECKING:
    from mephisto.data_model.payment import Payment
    from mephisto.db.database import MephistoDB

__all__ = ["COOKIE", "MAX_BODY", "create_app", "settle_pending_payments"]

logger = logging.getLogger(__name__)

COOKIE = "mephisto_review"
MAX_BODY = 64 * 1024
STATIC = Path(__file__).with_name("static")

Handler = Callable[[Request], Awaitable[Response]]


def settle_pending_payments(db: MephistoDB, run_ids: list[str]) -> list[Payment]:
    """Finish the unpaid bonuses of the providers of `run_ids` (one provider per type,
    configured as its first run in view was launched). Returns the payments tried."""
    from mephisto.data_model.task_run import TaskRun
    from mephisto.operations.payments import settle_payments
    from mephisto.operations.registry import get_crowd_provider_from_type

    seen: set[str] = set()
    settled: list[Payment] = []
    for run_id in run_ids:
        run = TaskRun(db, run_id)
        if run.provider_type in seen:
            continue
        seen.add(run.provider_type)
        provider = get_crowd_provider_from_type(run.provider_type)(db, run.args)
        settled.extend(settle_payments(db, provider))
    return settled


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(db: MephistoDB, token: str, task_name: str | None = None,
               run_id: str | None = None, settle: bool = True) -> Starlette:
    """The app for one review session over the runs of `task_name` / `run_id` (None:
    all). `token` is the session's secret. With `settle`, starting the app settles
    pending payments (`app.state.settled` holds them)."""
    if len(token) < 16:
        raise MephistoError("the review token must be at least 16 characters")
    run_ids = queries.run_ids_in_view(db, task_name, run_id)

    def authorized(request: Request) -> bool:
        given = request.cookies.get(COOKIE, "")
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            given = header[7:].strip()
        return bool(given) and secrets.compare_digest(given.encode(), token.encode())

    def api(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            if not authorized(request):
                return _error(401, "a valid review token is needed: open the URL that "
                                   "`mephisto review` printed")
            try:
                return await fn(request)
            except BadRequest as exc:
                return _error(exc.status, str(exc))
            except queries.BadFilter as exc:
                return _error(400, str(exc))
            except EntryDoesNotExist as exc:
                return _error(404, str(exc))
            except InvalidTransition as exc:
                return _error(409, str(exc))
            except ProviderError as exc:
                return _error(502, str(exc))
            except DatabaseUnavailable as exc:
                response = _error(503, str(exc))
                response.headers["Retry-After"] = str(exc.retry_after)
                return response
            except MephistoError as exc:
                return _error(400, str(exc))
        return wrapped

    async def body(request: Request) -> Any:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest("send the body as JSON (Content-Type: application/json)", 415)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
            raise BadRequest(f"the body is over {MAX_BODY} bytes", 413)
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise BadRequest(f"the body is over {MAX_BODY} bytes", 413)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None

    async def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None:
            if not secrets.compare_digest(given.encode(), token.encode()):
                return _error(401, "this review token is not the session's: open the URL "
                                   "that `mephisto review` printed")
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return response
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def session(request: Request) -> Response:
        return JSONResponse({"task_name": task_name, "run_id": run_id, "run_ids": run_ids,
                             "settled": len(request.app.state.settled)})

    async def tasks(request: Request) -> Response:
        found = await run_in_threadpool(queries.list_tasks, db)
        if task_name is not None or run_id is not None:
            found = [t for t in found if task_name in (None, t["task_name"])]
            for t in found:
                t["runs"] = [r for r in t["runs"] if r["run_id"] in run_ids]
            found = [t for t in found if t["runs"]]
        return JSONResponse({"tasks": found})

    async def units(request: Request) -> Response:
        p = request.query_params
        status = p.get("status", queries.AWAITING) or None
        f = queries.UnitFilter(
            task_name=p.get("task") or task_name, run_id=p.get("run") or run_id,
            status=None if status == "any" else status, worker=p.get("worker") or None,
            since=_float(p.get("since"), "since"), until=_float(p.get("until"), "until"))
        if run_id is not None and f.run_id != run_id:
            raise BadRequest(f"this session reviews run {run_id} only")
        if task_name is not None and f.task_name != task_name:
            raise BadRequest(f"this session reviews task {task_name!r} only")
        limit = _int(p.get("limit"), "limit", 50)
        page = await run_in_threadpool(queries.page_units, db, f, p.get("after"), limit)
        return JSONResponse(page)

    def in_view(unit: dict[str, Any]) -> None:
        if unit["task_run_id"] not in run_ids:
            raise EntryDoesNotExist(f"unit {unit['unit_id']} is not in this session's runs")

    async def unit(request: Request) -> Response:
        unit_id = request.path_params["unit_id"]
        detail = await run_in_threadpool(queries.unit_detail, db, unit_id)
        if detail["run_id"] not in run_ids:
            raise EntryDoesNotExist(f"unit {unit_id} is not in this session's runs")
        return JSONResponse(detail)

    async def template(request: Request) -> Response:
        detail = await run_in_threadpool(queries.unit_detail, db, request.path_params["unit_id"])
        path = await run_in_threadpool(queries.review_template_path, db, detail["run_id"])
        if path is None or detail["run_id"] not in run_ids:
            raise EntryDoesNotExist("this unit's run has no review template")
        text = await run_in_threadpool(path.read_text)
        return Response(text, media_type="text/plain; charset=utf-8")

    async def review_one(request: Request) -> Response:
        decision = parse_decision(await body(request), bulk=False)
        unit_id = request.path_params["unit_id"]
        from mephisto.tools.provider_review import review_unit

        def run() -> dict[str, Any]:
            row = db.get_unit(unit_id)
            in_view(row)
            try:
                outcome = review_unit(db, unit_id, decision)
            except EntryDoesNotExist as exc:  # a qualification to revoke, say
                raise BadRequest(str(exc)) from None
            return _outcome(outcome)

        return JSONResponse(await run_in_threadpool(run))

    async def review_many(request: Request) -> Response:
        data = await body(request)
        unit_ids = parse_unit_ids(data)
        decision = parse_decision(data, bulk=True)
        from mephisto.tools.provider_review import ReviewOutcome, review_units

        def run() -> list[dict[str, Any]]:
            ours, outcomes = [], {}
            for uid in unit_ids:
                try:
                    in_view(db.get_unit(uid))
                    ours.append(uid)
                except EntryDoesNotExist as exc:
                    outcomes[uid] = _outcome(ReviewOutcome(uid, error=str(exc)))
            for outcome in review_units(db, ours, decision):
                outcomes[outcome.unit_id] = _outcome(outcome)
            return [outcomes[uid] for uid in unit_ids]

        return JSONResponse({"outcomes": await run_in_threadpool(run)})

    async def worker(request: Request) -> Response:
        from mephisto.tools.data_browser import DataBrowser

        stats = await run_in_threadpool(DataBrowser(db).get_worker_stats,
                                        request.path_params["worker_id"])
        return JSONResponse(stats)

    async def stats(request: Request) -> Response:
        from mephisto.tools.data_browser import DataBrowser

        p = request.query_params
        which = p.get("run") or run_id
        target = {"run_id": which} if which else {"task_name": p.get("task") or task_name}
        if not any(target.values()):
            raise BadRequest("give a task (task=NAME) or a run (run=ID)")
        result = await run_in_threadpool(lambda: DataBrowser(db).get_task_stats(**target))
        return JSONResponse(result)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settle:
            app.state.settled = await run_in_threadpool(settle_pending_payments, db, run_ids)
        for payment in app.state.settled:
            logger.info("payment %s settled: %s", payment.db_id, payment.status)
        yield

    routes = [
        Route("/", index),
        Route("/api/session", api(session)),
        Route("/api/tasks", api(tasks)),
        Route("/api/units", api(units)),
        Route("/api/units/{unit_id}", api(unit)),
        Route("/api/units/{unit_id}/template", api(template)),
        Route("/api/units/{unit_id}/review", api(review_one), methods=["POST"]),
        Route("/api/review", api(review_many), methods=["POST"]),
        Route("/api/workers/{worker_id}", api(worker)),
        Route("/api/stats", api(stats)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.settled = []
    app.state.run_ids = run_ids
    return app


def _outcome(outcome: Any) -> dict[str, Any]:
    payment = outcome.payment
    return {"unit_id": outcome.unit_id, "ok": outcome.ok, "error": outcome.error,
            "review_id": outcome.review_id, "warnings": outcome.warnings,
            "bonus_paid": None if payment is None else payment.is_paid}


def _float(value: str | None, what: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(str(value))
    except ValueError:
        raise BadRequest(f"{what} is a time in UNIX seconds, not {value!r}") from None


def _int(value: str | None, what: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(str(value))
    except ValueError:
        raise BadRequest(f"{what} is an integer, not {value!r}") from None
