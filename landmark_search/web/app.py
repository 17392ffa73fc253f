"""`landmark serve`: the pages and the JSON API over one Library (FastAPI; Jinja2 templates; no build step, no CDN).

Safety: only indexed photos are ever read (Library.photo_file); requests for another Host are refused (a page
on another site cannot reach the app through DNS rebinding); a POST from another site's page is refused (its
Origin or Sec-Fetch-Site says so), uploads included; requests that write (naming photos) also carry the session's
CSRF token; uploads are capped in bytes before they are read and in pixels when decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import mimetypes
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..photos.files import supported_extensions
from ..errors import BadImageError, LandmarkError
from ..render.templating import environment
from ..render.images import placeholder
from ..index.catalog import SORTS, Filter
from .library import SIMILAR_MAX, SIMILAR_MIN_SCORE, UPLOAD_MAX_BYTES, Library, NotInLibrary
from .thumbs import LARGE_SIDE, THUMB_SIDE, jpeg_bytes

HERE = Path(__file__).parent
PAGE = 120  # tiles per library page
QUERY_MAX = 200  # characters of a search
MAP_THUMBS = 12  # photos shown per place on the map page
SESSION_COOKIE = "landmark_session"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
_MULTIPART_SLACK = 64 * 1024  # the form's boundaries and headers around the file


class HeadAsGet:
    """HEAD answered as the GET of the same URL, headers only (RFC 9110: every GET resource answers HEAD;
    FastAPI's routes answer GET alone, 405 for HEAD). ASGI middleware around the whole app, so HEAD passes every
    check GET does."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def create_app(library: Library, *, allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS) -> FastAPI:
    """The web app over `library`; `allowed_hosts` None accepts any Host header (a non-local --host)."""
    # The API's description is our own page over the OpenAPI schema: Swagger UI would load its code from a CDN.
    app = FastAPI(title="landmark-search", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(env=environment(HERE / "templates"))
    secret = secrets.token_bytes(32)

    def csrf_token(session: str) -> str:
        return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()

    @app.middleware("http")
    async def session_cookie(request: Request, call_next):
        if request.method not in _SAFE_METHODS and _cross_site(request):
            return JSONResponse({"error": CROSS_SITE}, status_code=403)
        session = request.cookies.get(SESSION_COOKIE)
        fresh = not session or len(session) != 32
        request.state.session = secrets.token_hex(16) if fresh else session
        response = await call_next(request)
        if fresh:
            response.set_cookie(SESSION_COOKIE, request.state.session, httponly=True, samesite="strict")
        if response.headers.get("content-type", "").startswith("text/html"):
            # A page shows the library as it is now: Back after a form must not show the state before it.
            response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    def check_csrf(request: Request, token: str | None) -> None:
        expected = csrf_token(request.state.session)
        if not token or not hmac.compare_digest(token, expected):
            raise _Refused(403, "missing or wrong CSRF token: reload the page (API: GET /api/session first)")

    def error(request: Request, status: int, message: str) -> Response:
        """JSON {"error"} for the API, an HTML page with the same line for a page."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        return page(request, "error.html", status_code=status, message=message, title="Not found" if
                    status == 404 else "Refused")

    async def json_body(request: Request, usage: str, valid: Callable[[dict], bool]) -> dict:
        """The JSON object a request that writes sends, after its CSRF token (header X-CSRF-Token) is checked;
        400 with `usage` when it is no JSON object or not `valid`."""
        check_csrf(request, request.headers.get("x-csrf-token"))
        try:
            body = await request.json()
        except ValueError:
            raise _Refused(400, usage) from None
        if not isinstance(body, dict) or not valid(body):
            raise _Refused(400, usage)
        return body

    async def checked_form(request: Request, max_fields: int):
        """The form a page posts to write, after its `csrf` field is checked."""
        form = await request.form(max_files=0, max_fields=max_fields)
        check_csrf(request, str(form.get("csrf") or ""))
        return form

    @app.exception_handler(NotInLibrary)
    async def not_in_library(request: Request, exc: NotInLibrary):
        return error(request, 404, str(exc))

    @app.exception_handler(LandmarkError)
    async def bad_request(request: Request, exc: LandmarkError):
        return error(request, 400, str(exc))

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused):
        return error(request, exc.status, exc.message)

    @app.exception_handler(HTTPException)
    async def no_such(request: Request, exc: HTTPException):  # an unknown address, a method a route does not take
        if exc.status_code == 404:
            return error(request, 404, f"{request.url.path}: no such page here; the library starts at /")
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def not_valid(request: Request, exc: RequestValidationError):  # ?offset=abc, a missing ?path=
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
        return error(request, 400, f"{where}: {str(first.get('msg', 'not valid')).lower()}")

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        kept = urlencode([(k, v) for k, v in request.query_params.multi_items() if k not in ("done", "problem")])
        shared = {"lib": library, "csrf": csrf_token(request.state.session), "version": __version__,
                  "done": request.query_params.get("done"), "problem": request.query_params.get("problem") == "1",
                  "back": request.url.path + ("?" + kept if kept else "")}
        return templates.TemplateResponse(request, name, {**shared, **context}, status_code=status_code)

    def told(where: str, text: str, problem: bool) -> RedirectResponse:
        """Back to the page `where` after a form, saying what happened (`problem`: not all of it worked)."""
        joint = "&" if "?" in where else "?"
        return RedirectResponse(where + joint + urlencode({"done": text, **({"problem": "1"} if problem else {})}),
                                status_code=303)

    def listing_filter(flt: Filter = Depends(_filter)) -> Filter:
        """The listing the query string asks for, its words also matched against the landmarks' known places."""
        return library.with_places(flt)

    # ------------------------------------------------------------------------------ JSON API

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_docs(request: Request) -> HTMLResponse:
        """Every route of the API from the OpenAPI schema, on a page that loads nothing from elsewhere."""
        routes = [{"method": method.upper(), "path": path, "summary": op.get("summary", ""),
                   "doc": op.get("description", ""),
                   "params": [p["name"] for p in op.get("parameters", [])]}
                  for path, ops in app.openapi()["paths"].items() for method, op in ops.items()]
        return page(request, "api_docs.html", routes=routes, title="API")

    @app.get("/api/session")
    def api_session(request: Request) -> dict:
        """The CSRF token of this session (sent back as X-CSRF-Token with requests that write)."""
        return {"csrf": csrf_token(request.state.session)}

    @app.get("/api/photos")
    def api_photos(offset: int = 0, limit: int = PAGE, flt: Filter = Depends(listing_filter)) -> dict:
        """Indexed photos: path, label (a name given by hand first; null: none of the landmarks), confidence.
        sort=path (default), taken (capture time, oldest first) or -taken; q: words that must each match the file
        path, the landmark, the landmark's known place or the sidecars' keywords and place."""
        tiles, total = library.catalog.page(offset, limit, flt)
        return {"total": total, "offset": max(0, offset), "photos": [t.to_dict() for t in tiles]}

    @app.get("/api/labels")
    def api_labels() -> dict:
        """Every landmark label with its photo count (null: none of the landmarks), and every folder holding photos."""
        return {"labels": [{"label": lab, "count": n} for lab, n in library.catalog.labels()],
                "folders": [{"folder": f, "count": n} for f, n in library.catalog.folders()]}

    @app.get("/api/photo")
    def api_photo(path: str) -> dict:
        """One indexed photo: its label and confidence, its sidecar's tags, its place and its camera facts."""
        return library.details(path)

    @app.get("/api/similar")
    def api_similar(path: str, k: int = 10) -> dict:
        """The same JSON as `landmark similar PATH --json`."""
        return library.similar(path, _k(k)).to_json(path)

    @app.post("/api/search")
    async def api_search(request: Request) -> dict:
        """Multipart field `file`: a photo (not stored); its most similar indexed photos."""
        name, (result, _) = await _search(request)
        return result.to_json(name)

    @app.get("/api/thumb")
    def api_thumb(request: Request, path: str, size: str = "thumb") -> Response:
        """A JPEG of an indexed photo, upright: size=thumb (320 px) or large (1600 px)."""
        side = LARGE_SIDE if size == "large" else THUMB_SIDE
        photo = library.photo_file(path)
        try:
            data, etag = library.thumbs.get(photo, side)
        except BadImageError:  # a photo that became unreadable: a placeholder, never a 500
            return _placeholder(side)
        tag = f'"{etag}"'
        headers = {"ETag": tag, "Cache-Control": "private, max-age=86400"}
        if request.headers.get("if-none-match") == tag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/original")
    def api_original(path: str) -> Response:
        """The photo's own file, byte for byte (a RAW file downloads)."""
        photo = library.photo_file(path)
        kind = mimetypes.guess_type(photo.name)[0] or "application/octet-stream"
        return FileResponse(photo, media_type=kind, content_disposition_type="inline", filename=photo.name)

    @app.get("/api/explain")
    def api_explain(path: str) -> Response:
        """Grad-CAM of the photo's top class (PNG)."""
        try:
            return Response(library.explain(path), media_type="image/png", headers={"Cache-Control": "no-store"})
        except BadImageError:
            return _placeholder(THUMB_SIDE)

    @app.get("/api/groups")
    def api_groups(wait: float = 0.0) -> dict:
        """`landmark group`'s groups of this index, less photos named by hand: {"state": "computing", "progress"}
        while they are computed in the background (waiting up to `wait` seconds, at most 60), then "ready"."""
        return library.review_groups(wait=min(max(wait, 0.0), 60.0))

    async def paths_and_name(request: Request, usage: str, name_may_be_null: bool = False) -> dict:
        """The JSON body {"paths": [str...], "name": str, ...} of a request that writes, its CSRF token checked."""
        return await json_body(request, usage, lambda b: "name" in b and (
            isinstance(b["name"], str) or (name_may_be_null and b["name"] is None)) and isinstance(
            b.get("paths"), list) and all(isinstance(p, str) for p in b["paths"]))

    @app.post("/api/name")
    async def api_name(request: Request) -> dict:
        """JSON {"paths": [...], "name": "...", "train": bool} with header X-CSRF-Token: tags the photos."""
        body = await paths_and_name(request, NAME_USAGE)
        return library.name_photos(body["paths"], body["name"], bool(body.get("train")))

    @app.post("/api/retag")
    async def api_retag(request: Request) -> dict:
        """JSON {"paths": [...], "name": "Hawa Mahal"} (or "name": null: none of the landmarks) with header
        X-CSRF-Token: sets the photos' landmark by hand, as `landmark tag` writes it (JSON, XMP where used)."""
        body = await paths_and_name(request, RETAG_USAGE, name_may_be_null=True)
        return library.retag(body["paths"], body["name"])

    @app.post("/retag")
    async def retag_form(request: Request) -> Response:
        """The photo page's and the library's form: fields csrf, paths, name, back; the button `remove` clears."""
        form = await checked_form(request, REVIEW_FIELDS)
        back = str(form.get("back") or "/")
        back = back if back.startswith("/") and back[1:2] not in ("/", "\\") else "/"  # never off this app
        name = None if form.get("remove") else str(form.get("name") or "")
        try:
            result = library.retag([str(p) for p in form.getlist("paths")], name)
            now = "without a landmark" if name is None else repr(name.strip())
            done = f"{len(result['retagged'])} photo(s) now {now}" + (
                f", {len(result['relinked'])} training link(s) moved to that name" if result["relinked"] else "") + (
                f"; {len(result['failed'])} failed: {result['failed'][0]['reason']}" if result["failed"] else "")
        except LandmarkError as exc:
            return told(back, f"nothing changed: {exc}", True)
        return told(back, done, bool(result["failed"]))

    @app.get("/api/duplicates")
    def api_duplicates(wait: float = 0.0) -> dict:
        """`landmark duplicates --json` over the index plus "state": "ready" and "review_dir"; {"state":
        "computing", "progress"} while computed in the background (waiting up to `wait` seconds, at most 60)."""
        return library.duplicates(wait=min(max(wait, 0.0), 60.0))

    @app.post("/api/duplicates/move")
    async def api_duplicates_move(request: Request) -> dict:
        """JSON {"keep": PATH} with header X-CSRF-Token: keeps PATH and moves its group's others (and their
        sidecars) into the review folder, as `landmark duplicates --keep PATH --action move --to DIR`."""
        body = await json_body(request, MOVE_USAGE, lambda b: isinstance(b.get("keep"), str))
        return library.move_duplicates(body["keep"])

    @app.post("/api/duplicates/undo")
    def api_duplicates_undo(request: Request) -> dict:
        """Header X-CSRF-Token: puts back every photo moved into the review folder (`duplicates --undo DIR`)."""
        check_csrf(request, request.headers.get("x-csrf-token"))
        return library.undo_duplicates()

    @app.get("/api/map")
    def api_map() -> dict:
        return library.places_map()

    @app.get("/api/basemap")
    def api_basemap() -> Response:
        """The map's country outlines: Natural Earth 1:110m as a GeoJSON FeatureCollection (bundled, public domain)."""
        from ..places.map import basemap

        return JSONResponse(basemap(), headers={"Cache-Control": "private, max-age=86400"})

    # ------------------------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse)
    def library_page(request: Request, offset: int = 0, month: str | None = None,
                     flt: Filter = Depends(listing_filter)) -> HTMLResponse:
        if month and flt.sort == "path":
            flt = replace(flt, sort="taken")
        if month:
            offset = library.catalog.month_offset(month, flt)
        tiles, total = library.catalog.page(offset, PAGE, flt)
        listing = _listing(flt)
        link = lambda off: "/?" + "&".join(filter(None, (listing, f"offset={off}")))  # noqa: E731
        labels = library.catalog.labels()
        return page(request, "library.html", tiles=tiles, total=total, offset=max(0, offset), flt=flt,
                    labels=labels, folders=library.catalog.folder_tree(), all_count=sum(n for _, n in labels),
                    unknown_count=sum(n for label, n in labels if label is None),
                    prev=link(max(0, offset - PAGE)) if offset > 0 else None,
                    next=link(offset + PAGE) if offset + PAGE < total else None, listing=listing, month=month,
                    months=library.catalog.months(flt) if flt.sort != "path" else [], title="Library")

    @app.get("/photo", response_class=HTMLResponse)
    def photo_page(request: Request, path: str, flt: Filter = Depends(listing_filter)) -> HTMLResponse:
        details = library.details(path)
        before, after = library.catalog.neighbours(path, flt)
        try:
            similar = library.similar(path, SIMILAR_MAX, min_score=SIMILAR_MIN_SCORE)
            problem = None
        except BadImageError as exc:
            similar, problem = None, str(exc)
        return page(request, "photo.html", photo=details, path=path, result=similar, problem=problem,
                    before=before, after=after, listing=_listing(flt), min_score=SIMILAR_MIN_SCORE,
                    title=details["name"])

    @app.get("/search", response_class=HTMLResponse)
    def search_page(request: Request) -> HTMLResponse:
        return page(request, "search.html", result=None, problem=None, title="Search by photo",
                    accept=",".join(sorted(supported_extensions())))

    @app.post("/search", response_class=HTMLResponse)
    async def search_post(request: Request) -> HTMLResponse:
        try:
            name, (result, preview) = await _search(request, page=True)
            problem = None
        except (_Refused, LandmarkError) as exc:
            name, result, preview, problem = None, None, None, getattr(exc, "message", None) or str(exc)
        return page(request, "search.html", result=result, problem=problem, upload_name=name, preview=preview,
                    min_score=SIMILAR_MIN_SCORE,
                    title="Search by photo", accept=",".join(sorted(supported_extensions())),
                    status_code=200 if problem is None else 400)

    @app.get("/review", response_class=HTMLResponse)
    def review_page(request: Request, done: str | None = None) -> HTMLResponse:
        return page(request, "review.html", review=library.review_groups(wait=REVIEW_WAIT), done=done, title="Review")

    @app.post("/review/name")
    async def review_name(request: Request) -> Response:
        form = await checked_form(request, REVIEW_FIELDS)
        paths = [str(p) for p in form.getlist("paths")]
        try:
            result = library.name_photos(paths, str(form.get("name") or ""), form.get("train") == "1")
        except LandmarkError as exc:  # nothing ticked, a name that cannot be a folder: said on the page
            return told("/review", f"nothing named: {exc}", True)
        done = f"named {len(result['named'])} photo(s) {str(form.get('name')).strip()!r}" + (
            f", linked {len(result['linked'])} into {result.get('train_dir')}" if result["linked"] else "") + (
            f"; {len(result['failed'])} failed: {result['failed'][0]['reason']}" if result["failed"] else "")
        return told("/review", done, bool(result["failed"]))

    @app.get("/duplicates", response_class=HTMLResponse)
    def duplicates_page(request: Request, done: str | None = None) -> HTMLResponse:
        return page(request, "duplicates.html", report=library.duplicates(wait=REVIEW_WAIT), done=done,
                    title="Duplicates")

    @app.post("/duplicates/move")
    async def duplicates_move(request: Request) -> Response:
        form = await checked_form(request, 8)
        try:
            result = library.move_duplicates(str(form.get("keep") or ""))
        except LandmarkError as exc:  # a group gone since the page was drawn, a review folder refused
            return told("/duplicates", f"nothing moved: {exc}", True)
        done = f"kept {Path(result['kept']).name}, moved {len(result['moved'])} photo(s) into {result['review_dir']}" + (
            f"; {len(result['failed'])} not moved: {result['failed'][0]['reason']}" if result["failed"] else "")
        return told("/duplicates", done, bool(result["failed"]))

    @app.post("/duplicates/undo")
    async def duplicates_undo(request: Request) -> Response:
        form = await checked_form(request, 4)
        try:
            result = library.undo_duplicates()
        except LandmarkError as exc:
            return told("/duplicates", f"nothing put back: {exc}", True)
        done = f"put back {len(result['restored'])} photo(s)" + (
            f"; {len(result['failed'])} stayed: {result['failed'][0]['reason']}" if result["failed"] else "")
        return told("/duplicates", done, bool(result["failed"]))

    @app.get("/map", response_class=HTMLResponse)
    def map_page(request: Request) -> HTMLResponse:
        from ..places.map import world_view

        places, without = library.map_places()
        link = lambda photo: (f"/photo?path={quote(str(photo), safe='')}",  # noqa: E731
                              f"/api/thumb?path={quote(str(photo), safe='')}")
        return page(request, "map.html", world=world_view(places, link, thumbs=MAP_THUMBS), places=places,
                    without=without, title="Map")

    async def _search(request: Request, page: bool = False):
        """(the upload's name, (its hits, its thumbnail for a page)); the page's hits stop at SIMILAR_MIN_SCORE."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise _Refused(411, "send the upload with a Content-Length")
        if int(length) > UPLOAD_MAX_BYTES + _MULTIPART_SLACK:
            raise _Refused(413, f"the upload is {int(length) // 1_000_000} MB; the limit is "
                                f"{UPLOAD_MAX_BYTES // 1_000_000} MB")
        form = await request.form(max_files=1, max_fields=4)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise _Refused(400, "send the photo as the multipart field `file`")
        name = Path(upload.filename or "upload.jpg").name
        suffix = Path(name).suffix.lower()
        if suffix not in supported_extensions():
            raise _Refused(415, f"{name}: not a photo type this tool reads ({', '.join(sorted(supported_extensions()))})")
        data = await upload.read(UPLOAD_MAX_BYTES + 1)
        if len(data) > UPLOAD_MAX_BYTES:
            raise _Refused(413, f"{name}: more than {UPLOAD_MAX_BYTES // 1_000_000} MB")
        k = _k(form.get("k") or 24)
        try:
            if page:
                return name, library.search_upload(data, suffix, SIMILAR_MAX, SIMILAR_MIN_SCORE, preview=True)
            return name, library.search_upload(data, suffix, k)
        except BadImageError as exc:
            raise _Refused(400, f"{name}: {str(exc).split(': ', 2)[-1]}") from None

    app.add_middleware(HeadAsGet)  # added last, so outermost: a HEAD meets every check a GET meets
    return app


MOVE_USAGE = 'send JSON: {"keep": PATH}, a photo of a duplicate group'
RETAG_USAGE = 'send JSON: {"paths": [...], "name": "Hawa Mahal"} (or "name": null to remove our landmark)'
NAME_USAGE = 'send JSON: {"paths": [...], "name": "...", "train": false}'
REVIEW_FIELDS = 5000  # a group's photos, one field each
REVIEW_WAIT = 0.5  # seconds the Review and Duplicates pages wait for their background work before showing progress


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE = "refused: a request from another site's page; use this app's own pages, or send no Origin header (curl)"


def _cross_site(request: Request) -> bool:
    """A browser sent this from another site's page (Sec-Fetch-Site, else an Origin not this host). Tools such as
    curl send neither header and pass; a page elsewhere cannot leave both out."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


class _Refused(Exception):
    """A request refused with an HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _placeholder(side: int) -> Response:
    """The grey "unreadable" tile for a photo that cannot be decoded (never cached: it may be fixed)."""
    return Response(jpeg_bytes(placeholder(side)), media_type="image/jpeg",
                    headers={"Cache-Control": "no-store", "X-Landmark-Placeholder": "unreadable"})


def _filter(tag: str | None = None, unknown: bool = False, folder: str | None = None, q: str | None = None,
            sort: str = "path") -> Filter:
    """The library listing asked for by the query string (the library, the photo page and /api/photos alike)."""
    if sort not in SORTS:
        raise _Refused(400, f"sort={sort[:40]}: use one of {', '.join(SORTS)}")
    return Filter(tag or None, unknown, folder or None, (q or "").strip()[:QUERY_MAX] or None, sort)


def _listing(flt: Filter) -> str:
    """The query string that keeps a library listing's filter on the links out of it ("" for all photos)."""
    query = {k: v for k, v in (("tag", flt.tag), ("unknown", "1" if flt.unknown else None),
                               ("folder", flt.folder), ("q", flt.q), ("sort", flt.sort if flt.sort != "path" else None))
             if v}
    return urlencode(query)


K_MAX = 200  # hits one similar/search request may ask for


def _k(k: object) -> int:
    """The number of hits asked for; 400 for anything but a whole number from 1 to K_MAX."""
    text = str(k).strip()
    if not text.isdigit() or not 1 <= int(text) <= K_MAX:
        raise _Refused(400, f"k={text[:20]}: use a number of photos from 1 to {K_MAX}")
    return int(text)
