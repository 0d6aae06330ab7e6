"""The web server: a FastAPI app with a JSON API (OpenAPI at /openapi.json, browsable at
/docs) and one HTML page that uses it.

Safe by default: with a token (the CLI's default) every request, the page, images, CSV
and the API docs included, must carry it, as a ``?token=`` parameter (the page's first
visit: the answer sets a cookie for the rest), the cookie, or an ``Authorization: token
...`` header; binding 127.0.0.1 keeps other machines out, the token keeps out the other
users of a shared login node. Every parameter is typed and bounded (k, page, ra/dec
ranges), object ids are integers looked up in the survey (never paths), uploads are capped
before they are parsed, and errors reach the client as one JSON line ({"detail": ...}),
never a stack trace.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import io
import logging
import secrets
import tempfile
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import SslHpcError
from ..search.query import QueryError
from .state import ServeState, image_png

log = logging.getLogger("ssl_hpc.serve")

MAX_K = 100  # results per page
MAX_RANK = 1000  # deepest result a page may reach
UPLOAD_MB = 8


class ApiError(Exception):
    """An error the client caused: HTTP `status` with a message."""

    def __init__(self, status: int, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after_s = status, message, retry_after_s


def create_app(
    state: ServeState,
    *,
    token: str | None,
    max_upload_bytes: int = UPLOAD_MB << 20,
    max_uploads: int = 2,
    request_timeout_s: float = 60.0,
) -> FastAPI:
    """The app over `state`, requiring `token` on every request unless it is None, with
    at most `max_uploads` uploads embedded at once and a 504 for any request unanswered
    after `request_timeout_s` (see the module docstring for the rules it keeps).

    long: FastAPI routes are closures over the app's state; one route per endpoint below.
    """
    survey = state.searcher.survey
    app = FastAPI(
        title="ssl-hpc similarity search",
        description=f"Galaxies most similar to a query in {survey.manifest.survey} "
        "(cosine similarity of self-supervised representations).",
        version="1",
    )
    page = resources.files("ssl_hpc.serve").joinpath("page.html").read_text()
    cookie = token_cookie(token) if token is not None else ""

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if token is None:
            return await call_next(request)
        from_url = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        offered = [from_url, request.cookies.get(cookie), header.partition(" ")[2]]
        if not any(t and secrets.compare_digest(t.encode(), token.encode()) for t in offered):
            return _error(
                403,
                "this server needs its token: open the URL that ssl-hpc serve "
                "printed (http://HOST:PORT/?token=...)",
            )
        response = await call_next(request)
        if from_url:  # the first visit: the browser keeps it for the page's own requests
            response.set_cookie(cookie, token, httponly=True, samesite="strict")
        return response

    @app.middleware("http")
    async def cap_uploads(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.method == "POST" and length and int(length) > max_upload_bytes + 65536:
            return _error(413, f"upload of {int(length)} bytes: the limit is {max_upload_bytes}")
        return await call_next(request)

    @app.middleware("http")
    async def time_limit(request: Request, call_next):
        try:
            return await asyncio.wait_for(call_next(request), request_timeout_s)
        except TimeoutError:
            path = request.url.path
            return _error(504, f"{path}: no answer within {request_timeout_s:g} s")

    uploading = 0  # uploads being embedded now (the event loop's thread counts them)

    @app.exception_handler(ApiError)
    async def api_error(_, exc: ApiError):
        response = _error(exc.status, exc.message)
        if exc.retry_after_s is not None:  # a busy server: well-behaved clients come back
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def internal(_, exc: Exception):
        log.exception("unhandled error")
        return _error(500, "internal error (logged on the server)")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/info")
    def info() -> dict:
        """The survey, the index and the limits of this server."""
        return {
            "survey": survey.manifest.survey,
            "objects": state.n,
            "bands": list(survey.bands),
            "dim": state.searcher.set.dim,
            "index": state.searcher.index_info["kind"],
            "max_k": MAX_K,
            "max_rank": MAX_RANK,
            "max_upload_bytes": max_upload_bytes,
            "has_trust": state.trust is not None,
            "has_anomaly": state.anomaly is not None,
        }

    def resolve(object_id: int | None, ra: float | None, dec: float | None):
        if object_id is not None and (ra is not None or dec is not None):
            raise ApiError(400, "give object_id, or ra and dec, not both")
        try:
            if object_id is not None:
                return state.searcher.by_id(object_id)
            if ra is None or dec is None:
                raise ApiError(400, "give object_id, or both ra and dec")
            return state.searcher.by_position(ra, dec)
        except QueryError as e:
            raise ApiError(404, str(e).split(": ", 1)[-1]) from None

    def results(query, k: int, page_no: int) -> dict:
        if (page_no - 1) * k >= MAX_RANK:  # a last page cut at MAX_RANK is still served
            raise ApiError(400, f"page {page_no} of {k} reaches rank {page_no * k} > {MAX_RANK}")
        deepest = min(page_no * k, state.n - 1, MAX_RANK)
        table = state.searcher.table(query, deepest)
        shown = table[(page_no - 1) * k : page_no * k]
        if query.row is not None:
            head = state.card(state.searcher.catalogue.table(np.array([query.row]), [1.0])[0])
            del head["rank"], head["similarity"]
        else:
            head = {"object_id": None, "image": _data_uri(query.image, state)}
        head["label"] = query.label
        return {
            "query": head,
            "k": k,
            "page": page_no,
            "pages": max(1, -(-min(MAX_RANK, state.n - 1) // k)),  # a last, partial page too
            "index": state.searcher.index_info["kind"],
            "results": [state.card(t) for t in shown],
        }

    @app.get("/api/search")
    def search(
        object_id: int | None = Query(None, description="search from this object (any int64)"),
        ra: float | None = Query(None, ge=0, lt=360, description="or from the object nearest"),
        dec: float | None = Query(None, ge=-90, le=90),
        k: int = Query(12, ge=1, le=MAX_K, description="results per page"),
        page: int = Query(1, ge=1, le=MAX_RANK, description="page of results (1 first)"),
    ) -> dict:
        """The k most similar galaxies to a query, one page at a time."""
        return results(resolve(object_id, ra, dec), k, page)

    @app.get("/api/search.csv")
    def search_csv(
        object_id: int | None = Query(None),
        ra: float | None = Query(None, ge=0, lt=360),
        dec: float | None = Query(None, ge=-90, le=90),
        k: int = Query(12, ge=1, le=MAX_K),
        page: int = Query(1, ge=1, le=MAX_RANK),
    ) -> Response:
        """The same page of results as a CSV file."""
        found = results(resolve(object_id, ra, dec), k, page)
        rows = [{k_: v for k_, v in r.items() if k_ != "image"} for r in found["results"]]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["rank"])
        writer.writeheader()
        writer.writerows(rows)
        name = f"similar-{object_id if object_id is not None else 'radec'}-p{page}.csv"
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/random")
    def random_object() -> dict:
        """A randomly chosen object id."""
        row = int(np.random.default_rng().integers(state.n))
        object_id = int(state.searcher.catalogue.columns["object_id"][row])
        return {"object_id": object_id, "id": str(object_id)}

    @app.get("/api/anomalous")
    def anomalous(rank: int = Query(1, ge=1, le=100)) -> dict:
        """The object at `rank` among the most anomalous (kNN distance)."""
        if state.anomalous is None:
            raise ApiError(404, "no anomaly scores on this server")
        rank = min(rank, len(state.anomalous))  # the last there is, labelled as what it is
        row = int(state.anomalous[rank - 1])
        object_id = int(state.searcher.catalogue.columns["object_id"][row])
        return {
            "object_id": object_id,
            "id": str(object_id),
            "anomaly_score": float(state.anomaly[row]),
            "rank": rank,
        }

    @app.get("/api/image/{object_id}.png", response_class=Response)
    def image(object_id: int) -> Response:
        """The colour composite of one object (PNG)."""
        try:
            q = state.searcher.by_id(object_id)
        except QueryError as e:
            raise ApiError(404, str(e).split(": ", 1)[-1]) from None
        return Response(
            state.png(q.row),
            media_type="image/png",
            headers={"Cache-Control": "private, max-age=86400"},
        )

    @app.post("/api/upload")
    async def upload(
        file: Annotated[UploadFile, File(description="FITS cube (bands, H, W)")],
        k: int = Query(12, ge=1, le=MAX_K),
        page: int = Query(1, ge=1, le=MAX_RANK),
    ) -> dict:
        """Embed an uploaded FITS cutout and search from it."""
        nonlocal uploading
        if uploading >= max_uploads:
            raise ApiError(
                503,
                f"{uploading} uploads are being embedded (at most "
                f"{max_uploads} at once): try again in a moment",
                retry_after_s=1,
            )
        uploading += 1
        try:
            query = await _embed_upload(file)
        finally:
            uploading -= 1
        return results(query, k, page)

    async def _embed_upload(file: UploadFile):
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(413, f"upload larger than the limit of {max_upload_bytes} bytes")
        if not data:
            raise ApiError(400, "empty upload")
        name = Path(file.filename or "upload.fits").name[:80]  # shown only, never opened
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.fits"
            path.write_bytes(data)
            try:  # the encoder runs in a worker thread: other requests go on meanwhile
                return await run_in_threadpool(
                    state.searcher.by_fits, path, label=f"uploaded {name}"
                )
            except QueryError as e:
                raise ApiError(400, str(e).split(": ", 1)[-1].replace(str(path), name)) from None
            except SslHpcError as e:
                raise ApiError(400, str(e).replace(str(path), name)) from None

    return app


def token_cookie(token: str) -> str:
    """The cookie that carries `token`: named after it, so servers on other ports of the
    same host (cookies ignore ports) do not overwrite each other's."""
    return "ssl_hpc_token_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _data_uri(image, state: ServeState) -> str:
    png = image_png(image, state.searcher.survey.bands, state.display)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
