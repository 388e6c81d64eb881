"""The rating web app (FastAPI + Jinja2) behind `lego study serve`.

    from lego_inversion.study.app import create_app
    app = create_app(load_study("studies/melted"), open_storage("studies/melted/answers.sqlite", "melted"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (a rater's token is their link; the admin token protects /admin):
    GET  /r/{token}                 the next unanswered pair: reference images, two candidates, progress
    POST /r/{token}/answer          form: item, side=left|right  -> 303 back to /r/{token} (post/redirect/get)
    GET  /api/r/{token}             JSON: progress and the next item
    POST /api/r/{token}/answer      JSON {"item", "side"} -> {"stored", "choice", "same", "answered", "total"}
    GET  /img/{name}                a study image (only names from the study's images/ folder)
    GET  /admin?token=...           progress per concept and per rater (or header "Authorization: Bearer ...")
    GET  /api/admin/progress        the same as JSON
    GET  /healthz                   liveness only: {"ok": true}

An answer reply says whether this request stored the answer ("stored") and which side is stored now
("choice", as this rater sees the pair), and whether that is the side just sent ("same"): a retry whose
first reply was lost gets stored=false, same=true; a different second answer gets stored=false, same=false.
The candidate a rater picks is recorded as slot "a"/"b" (method under test / baseline) together with the side
it was shown on; left/right order was drawn per rater and pair at creation time (study.json "order").

Request bodies are capped at 16 KB of bytes actually read, whatever the framing (413); malformed or too deeply
nested JSON is a 400; an unreachable database is a 503 with one log line, and the next request reconnects.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from .model import IMAGE_NAME_RE, ITEM_ID_RE, Study
from .storage import Storage, StorageUnavailable

log = logging.getLogger("lego_inversion.study")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'; script-src 'self' "
           "'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"}
_HEADER_BYTES = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
MAX_BODY = 16 * 1024  # an answer is a few dozen bytes
TOO_LARGE = f"request body too large (at most {MAX_BODY} bytes)"
UNAVAILABLE = "The study is briefly unavailable. Please try again in a minute; your answers so far are saved."


class _Bad(Exception):
    """A request the app refuses: answered with `status` and a message for the rater."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


# -- middleware (plain ASGI: they see every byte of the request and every response) ------------------------------

class BodyLimit:
    """Reads at most `limit` request-body bytes. A declared Content-Length above it is refused before reading;
    a chunked (or lying) body is counted as it arrives and cut off the moment it passes the limit. Both are 413,
    with `Connection: close` so the server stops receiving the rest."""

    def __init__(self, app, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            response = JSONResponse({"error": TOO_LARGE}, status_code=413, headers={"Connection": "close"})
            return await response(scope, receive, send)
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if started:  # a response is on its way already (the route ignored the body): stop reading
                        return {"type": "http.disconnect"}
                    raise _Bad(413, TOO_LARGE, {"Connection": "close"})  # answered by the _Bad handler
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)


class SecurityHeaders:
    """Adds HEADERS to every response that does not set them itself."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in _HEADER_BYTES if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# -- errors ---------------------------------------------------------------------------------------------------------

def _error_response(request: Request, status: int, message: str, headers: dict[str, str]) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return TEMPLATES.TemplateResponse(request, "message.html", {"title": "Sorry", "message": message},
                                      status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(_Bad)
    async def bad_request(request: Request, exc: _Bad):
        return _error_response(request, exc.status, exc.message, exc.headers)

    @app.exception_handler(StorageUnavailable)
    async def storage_down(request: Request, exc: StorageUnavailable):
        log.warning("answered 503: %s", exc)  # one line; the token in the URL stays out of the log
        return _error_response(request, 503, UNAVAILABLE, {"Retry-After": "10"})


# -- the rater's view of the study ----------------------------------------------------------------------------------

class Rating:
    """What the rater routes share: token -> rater, next item, the page's view of an item, storing a choice."""

    def __init__(self, study: Study, storage: Storage):
        self.study, self.storage = study, storage
        self.totals = {r: len(items) for r, items in study.order.items()}

    def rater_of(self, token: str) -> str:
        rater = self.study.rater_for_token(token) if TOKEN_RE.match(token) else None
        if rater is None:
            raise _Bad(404, "This link is not valid. Please use the personal link you were given.")
        return rater

    def state(self, rater: str) -> tuple[dict[str, str], tuple[str, bool] | None]:
        """(item -> stored slot, the next unanswered (item, swapped) or None)."""
        done = {a.item: a.slot for a in self.storage.answers(rater)}
        nxt = next(((i, s) for i, s in self.study.order[rater] if i not in done), None)
        return done, nxt

    def view(self, entry: tuple[str, bool] | None) -> dict | None:
        if entry is None:
            return None
        item = self.study.items[entry[0]]
        left, right = (item.b, item.a) if entry[1] else (item.a, item.b)
        return {"item": item.id, "left": f"/img/{left.image}", "right": f"/img/{right.image}",
                "references": [f"/img/{r}" for r in self.study.references_for(item.concept)]}

    def submit(self, rater: str, item, side) -> tuple[bool, str]:
        """Store the choice; returns (stored by this call, slot it maps to)."""
        if not isinstance(item, str) or not ITEM_ID_RE.match(item) or item not in dict(self.study.order[rater]):
            raise _Bad(400, "This question is not part of your study; reload the page.")
        if side not in ("left", "right"):
            raise _Bad(400, "Answer with the left or the right image.")
        slot = self.study.choice_to_slot(rater, item, side)
        return self.storage.submit(rater, item, slot, side), slot


async def _json_body(request: Request):
    try:
        return json.loads(await request.body())
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise _Bad(400, "body must be JSON: {\"item\": ..., \"side\": \"left\" | \"right\"}") from None


# -- routes ---------------------------------------------------------------------------------------------------------

def _rater_pages(rating: Rating) -> APIRouter:
    router = APIRouter()
    study = rating.study

    @router.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return TEMPLATES.TemplateResponse(request, "message.html", {
            "title": study.name, "message": "Please open the personal link you were given to take part."})

    @router.get("/r/{token}", response_class=HTMLResponse)
    def rate(request: Request, token: str):
        rater = rating.rater_of(token)
        done, nxt = rating.state(rater)
        ctx = {"study": study, "token": token, "answered": len(done), "total": rating.totals[rater],
               "view": rating.view(nxt)}
        return TEMPLATES.TemplateResponse(request, "rate.html" if nxt else "done.html", ctx)

    @router.post("/r/{token}/answer")
    async def answer_form(request: Request, token: str):
        rater = rating.rater_of(token)
        form = await request.form()
        rating.submit(rater, form.get("item", ""), form.get("side", ""))
        return RedirectResponse(f"/r/{token}", status_code=303)

    return router


def _rater_api(rating: Rating) -> APIRouter:
    router = APIRouter(prefix="/api/r")

    @router.get("/{token}")
    def api_state(token: str):
        rater = rating.rater_of(token)
        done, nxt = rating.state(rater)
        return {"rater": rater, "answered": len(done), "total": rating.totals[rater], "next": rating.view(nxt),
                "question": rating.study.question}

    @router.post("/{token}/answer")
    async def answer_api(request: Request, token: str):
        rater = rating.rater_of(token)
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise _Bad(400, "body must be a JSON object")
        item, side = body.get("item"), body.get("side")
        stored, slot = rating.submit(rater, item, side)
        kept = {a.item: a for a in rating.storage.answers(rater)}
        if item not in kept:  # stored or refused as a duplicate, so the database has it; unless it went away
            raise StorageUnavailable("the answer just stored is not in the answer storage")
        return {"stored": stored, "choice": kept[item].side, "same": kept[item].slot == slot,
                "answered": len(kept), "total": rating.totals[rater]}

    return router


def _admin_routes(study: Study, storage: Storage) -> APIRouter:
    router = APIRouter()

    def require_admin(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token")
        if not study.is_admin(token):
            raise _Bad(401, "The admin page needs the admin token (see secrets.json): /admin?token=...")

    @router.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        require_admin(request)
        ctx = progress(study, storage) | {"study": study, "tokens": study.rater_tokens}
        return TEMPLATES.TemplateResponse(request, "admin.html", ctx)

    @router.get("/api/admin/progress")
    def admin_api(request: Request):
        require_admin(request)
        return progress(study, storage)

    return router


def _static_routes(study: Study) -> APIRouter:
    router = APIRouter()

    @router.get("/img/{name}")
    def image(name: str):
        root = study.images_dir.resolve()
        path = (root / name).resolve() if IMAGE_NAME_RE.match(name) else None
        if path is None or path.parent != root or not path.is_file():
            raise _Bad(404, "no such image")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/healthz")
    def healthz():
        return {"ok": True}

    @router.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    return router


def create_app(study: Study, storage: Storage) -> FastAPI:
    """The app for one study: rater pages and API, admin pages, images; errors and limits as in the docstring."""
    app = FastAPI(title=f"Lego study: {study.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study, app.state.storage = study, storage
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(SecurityHeaders)  # added last = outermost: also on 413s
    rating = Rating(study, storage)
    for router in (_rater_pages(rating), _rater_api(rating), _admin_routes(study, storage), _static_routes(study)):
        app.include_router(router)
    return app


def progress(study: Study, storage: Storage) -> dict:
    """Answers received vs. needed, per concept (pairs only) and per rater (all items incl. checks)."""
    answers = storage.answers()
    per_item = Counter(a.item for a in answers)
    per_rater = Counter(a.rater for a in answers)
    checks = {c.id: c.answer for c in study.checks}
    failed = Counter(a.rater for a in answers if a.item in checks and a.slot != checks[a.item])
    concepts: dict[str, dict] = {}
    for item in study.pairs:
        c = concepts.setdefault(item.concept, {"concept": item.concept, "pairs": 0, "needed": 0, "received": 0,
                                               "complete_pairs": 0})
        c["pairs"] += 1
        c["needed"] += study.raters_per_pair
        c["received"] += per_item[item.id]
        c["complete_pairs"] += per_item[item.id] >= study.raters_per_pair
    for c in concepts.values():
        c["percent"] = round(100 * c["received"] / c["needed"], 1) if c["needed"] else 0.0
    raters = [{"rater": r, "answered": per_rater[r], "total": len(items), "failed_checks": failed[r]}
              for r, items in study.order.items()]
    return {"concepts": list(concepts.values()), "raters": raters, "answers": len(answers),
            "needed": sum(len(v) for v in study.order.values())}
