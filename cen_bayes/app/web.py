"""The web app: the sorting page, its images and a two-call JSON API.

``GET /api/next?worker_id=W`` gives the grid W should sort next (``choose``),
``POST /api/answer`` stores an answer (``store``). Every refusal is a 4xx
whose body is ``{"detail": "<one line>"}``, the validation errors FastAPI
would report as a list included, so the page (and a script) can show the
reason as it is. Images are served by id from the files found at startup,
never by a path taken from the request.

Endpoints are plain (sync) functions: FastAPI runs them in its thread pool,
and the store's lock orders their database work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, StrictStr

from cen_bayes.app.choose import fewest_answers
from cen_bayes.app.grids import MAX_GROUPS, Grids, check_answer
from cen_bayes.app.store import AnswerConflict, AnswerStore

STATIC = Path(__file__).with_name("static")
Chooser = Callable[[str, Grids, Any, Any], "str | None"]


class Answer(BaseModel):
    """The body of POST /api/answer; unknown fields are refused rather than ignored."""

    model_config = ConfigDict(extra="forbid")
    worker_id: StrictStr
    grid_id: StrictStr
    groups: dict[StrictStr, Any]  # image_id -> group; checked by grids.check_answer for one-line reasons


def create_app(grids: Grids, store: AnswerStore, choose: Chooser = fewest_answers) -> FastAPI:
    app = FastAPI(title="cen-bayes collection", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_message(exc)}, status_code=422)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> FileResponse:
        if name not in {"app.js", "app.css"}:
            raise HTTPException(404, f"no file {name}")
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    @app.get("/images/{image_id:path}")
    def image(image_id: str) -> FileResponse:
        if image_id not in grids.files:
            raise HTTPException(404, f"no image {image_id} in the grids file")
        return FileResponse(grids.files[image_id])

    @app.get("/api/health")
    def health() -> dict:
        return {"grids": len(grids), "answers": store.count()}

    @app.get("/api/next")
    def next_grid(worker_id: str = Query(...)) -> dict:
        worker = clean_worker(worker_id)
        counts, answered = store.progress(worker)
        grid = choose(worker, grids, counts, answered)
        n_answered = sum(g in grids.images for g in answered)
        if grid is None:
            raise HTTPException(404, f"worker {worker} has answered all {len(grids)} grids")
        return {"grid_id": grid, "images": list(grids.images[grid]), "max_groups": MAX_GROUPS,
                "answered": n_answered, "grids": len(grids)}

    @app.post("/api/answer")
    def answer(body: Answer) -> dict:
        worker = clean_worker(body.worker_id)
        try:
            groups = check_answer(grids, body.grid_id, body.groups)
        except ValueError as err:
            raise HTTPException(422, str(err)) from None
        try:
            new = store.save(worker, body.grid_id, groups)
        except AnswerConflict as err:
            raise HTTPException(409, str(err)) from None
        return {"stored": True, "already_stored": not new, "worker_id": worker, "grid_id": body.grid_id}

    return app


def clean_worker(worker_id: str) -> str:
    """The worker id without surrounding spaces ('ann ' typed in a box is 'ann'); blank is refused."""
    worker = worker_id.strip()
    if not worker:
        raise HTTPException(422, "worker_id is empty")
    return worker


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's first validation error as one line: where in the request, and what is wrong."""
    errors = exc.errors()
    if not errors:
        return "malformed request"
    error = errors[0]
    if error.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body", "query"))
    what = error.get("msg", "invalid value")
    if error.get("type") == "model_attributes_type":
        what = "the request body must be a JSON object"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {what}{more}" if where else f"{what}{more}"
