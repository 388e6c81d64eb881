"""The rating web app (FastAPI + Jinja2) behind `lego study serve`.

    from lego_inversion.study.app import create_app
    app = create_app(load_study("studies/melted"), open_storage("studies/melted/answers.sqlite", "melted"))
    uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (a rater's token is their link; the admin token protects /admin):
    GET  /r/{token}                 the next unanswered pair: reference images, two candidates, progress
    POST /r/{token}/answer          form: item, side=left|right  -> 303 back to /r/{token} (post/redirect/get)
    GET  /api/r/{token}             JSON: progress and the next item
    POST /api/r/{token}/answer      JSON {"item", "side"} -> {"stored": bool, "answered", "total"}
    GET  /img/{name}                a study image (only names from the study's images/ folder)
    GET  /admin?token=...           progress per concept and per rater (or header "Authorization: Bearer ...")
    GET  /api/admin/progress        the same as JSON

The candidate a rater picks is recorded as slot "a"/"b" (method under test / baseline) together with the side
it was shown on; left/right order was drawn per rater and pair at creation time (study.json "order").
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from .model import IMAGE_NAME_RE, ITEM_ID_RE, Study
from .storage import Storage

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'; script-src 'self' "
           "'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self'; frame-ancestors 'none'"}
MAX_BODY = 16 * 1024  # an answer is a few dozen bytes


class _Bad(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(study: Study, storage: Storage) -> FastAPI:
    app = FastAPI(title=f"Lego study: {study.name}", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study, app.state.storage = study, storage
    totals = {r: len(items) for r, items in study.order.items()}

    @app.exception_handler(_Bad)
    async def _bad(request: Request, exc: _Bad):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=HEADERS)
        return TEMPLATES.TemplateResponse(request, "message.html", {"title": "Sorry", "message": exc.message},
                                          status_code=exc.status, headers=HEADERS)

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY:
            return JSONResponse({"error": "request body too large"}, status_code=413, headers=HEADERS)
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def rater_of(token: str) -> str:
        rater = study.rater_for_token(token) if TOKEN_RE.match(token) else None
        if rater is None:
            raise _Bad(404, "This link is not valid. Please use the personal link you were given.")
        return rater

    def state(rater: str) -> tuple[dict[str, str], tuple[str, bool] | None]:
        done = {a.item: a.slot for a in storage.answers(rater)}
        nxt = next(((i, s) for i, s in study.order[rater] if i not in done), None)
        return done, nxt

    def view(rater: str, entry: tuple[str, bool] | None) -> dict | None:
        if entry is None:
            return None
        item = study.items[entry[0]]
        left, right = (item.b, item.a) if entry[1] else (item.a, item.b)
        return {"item": item.id, "left": f"/img/{left.image}", "right": f"/img/{right.image}",
                "references": [f"/img/{r}" for r in study.references_for(item.concept)]}

    def submit(rater: str, item: str, side: str) -> bool:
        if not isinstance(item, str) or not ITEM_ID_RE.match(item) or item not in dict(study.order[rater]):
            raise _Bad(400, "This question is not part of your study; reload the page.")
        if side not in ("left", "right"):
            raise _Bad(400, "Answer with the left or the right image.")
        return storage.submit(rater, item, study.choice_to_slot(rater, item, side), side)

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        return TEMPLATES.TemplateResponse(request, "message.html", {
            "title": study.name, "message": "Please open the personal link you were given to take part."})

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "answers": storage.count()}

    @app.get("/r/{token}", response_class=HTMLResponse)
    def rate(request: Request, token: str):
        rater = rater_of(token)
        done, nxt = state(rater)
        ctx = {"study": study, "token": token, "answered": len(done), "total": totals[rater],
               "view": view(rater, nxt)}
        return TEMPLATES.TemplateResponse(request, "rate.html" if nxt else "done.html", ctx)

    @app.post("/r/{token}/answer")
    async def answer_form(request: Request, token: str):
        rater = rater_of(token)
        form = await request.form()
        submit(rater, form.get("item", ""), form.get("side", ""))
        return RedirectResponse(f"/r/{token}", status_code=303)

    @app.get("/api/r/{token}")
    def api_state(token: str):
        rater = rater_of(token)
        done, nxt = state(rater)
        return {"rater": rater, "answered": len(done), "total": totals[rater], "next": view(rater, nxt),
                "question": study.question}

    @app.post("/api/r/{token}/answer")
    async def answer_api(request: Request, token: str):
        rater = rater_of(token)
        try:
            body = await request.json()
        except ValueError:
            raise _Bad(400, "body must be JSON: {\"item\": ..., \"side\": \"left\" | \"right\"}") from None
        if not isinstance(body, dict):
            raise _Bad(400, "body must be a JSON object")
        stored = submit(rater, body.get("item"), body.get("side"))
        done = {a.item for a in storage.answers(rater)}
        return {"stored": stored, "answered": len(done), "total": totals[rater]}

    @app.get("/img/{name}")
    def image(name: str):
        root = study.images_dir.resolve()
        path = (root / name).resolve() if IMAGE_NAME_RE.match(name) else None
        if path is None or path.parent != root or not path.is_file():
            raise _Bad(404, "no such image")
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    def require_admin(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else request.query_params.get("token")
        if not study.is_admin(token):
            raise _Bad(401, "The admin page needs the admin token (see secrets.json): /admin?token=...")
        return token

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request):
        require_admin(request)
        ctx = progress(study, storage) | {"study": study, "tokens": study.rater_tokens}
        return TEMPLATES.TemplateResponse(request, "admin.html", ctx)

    @app.get("/api/admin/progress")
    def admin_api(request: Request):
        require_admin(request)
        return progress(study, storage)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

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
