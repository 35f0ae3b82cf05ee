"""/ui: the review UI, served by the API itself (server-rendered Jinja2 templates and one small script; every
asset ships in the package, no CDN, no build step). docs/ui.md describes the pages."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ValidationError

from dreammask.shared import keys
from dreammask.shared import review as rv
from dreammask.shared.masks import decode_rle, png_bytes
from dreammask.shared.quotas import QuotaExceeded
from dreammask.shared.schemas import (
    CategorySet,
    DatasetManifest,
    JobState,
    RenderRecord,
    SceneAnnotation,
    SceneLayout,
)
from dreammask.shared.storage import ObjectNotFound
from dreammask.shared.timefmt import timestamp

from .. import reviewing, throttle
from ..deps import RuntimeDep, SettingsDep
from ..hardening import STORE_ERRORS, store_down
from ..rerender import RerenderRequest, rerender_sample, rerenders_of
from ..streaming import object_response
from ..ui import markdown, plots
from ..ui import session as ses
from .jobs import _owned_spec, _view

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
STATIC_FILES = {"ui.css": "text/css", "ui.js": "text/javascript"}
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (170, 110, 40)]
MAX_FILES_LISTED = 300
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")

templates = Jinja2Templates(directory=str(UI_DIR / "templates"))
templates.env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, default=str)
templates.env.filters["ts"] = timestamp  # one timestamp format on every page (and in the CLI)
templates.env.filters["markdown"] = markdown.render  # escapes first: no HTML from the text passes
templates.env.globals["palette"] = ["#{:02x}{:02x}{:02x}".format(*c) for c in PALETTE]


def _secure(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _login_redirect(request: Request) -> HTTPException:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(status.HTTP_303_SEE_OTHER, "log in first",
                         headers={"Location": "/ui/login?" + urlencode({"next": target})})


def get_session(request: Request, rt: RuntimeDep, settings: SettingsDep) -> ses.Session:
    s = ses.load(rt, settings, request)
    if s is None:
        raise _login_redirect(request)
    return s


SessionDep = Annotated[ses.Session, Depends(get_session)]


async def require_csrf(request: Request, sess: SessionDep) -> ses.Session:
    given = request.headers.get("x-csrf-token")
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get("csrf_token")
    ses.check_csrf(sess.csrf, given if isinstance(given, str) else None)
    return sess


CsrfSessionDep = Annotated[ses.Session, Depends(require_csrf)]

class _HtmlErrors(APIRoute):
    """A refusal (4xx, or 5xx) of a UI route is a page when a browser asked for one: the message, and the way
    back, in the UI's frame. The script's JSON requests and redirects (303 to the login page) are unchanged."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as e:
                if e.status_code < 400 or not _wants_html(request):
                    raise
                resp = error_page(request, e.status_code, str(e.detail))
                resp.headers.update(e.headers or {})  # Retry-After of a 429, WWW-Authenticate...
                return resp
            except RequestValidationError as e:
                if not _wants_html(request):
                    raise
                msgs = ["{}: {}".format(".".join(str(x) for x in err.get("loc", ())[1:]), err.get("msg", ""))
                        for err in e.errors()]
                return error_page(request, 422, "; ".join(msgs))
            except STORE_ERRORS as e:
                if not _wants_html(request):
                    raise
                # The API's handler (hardening.py) logs it and words it; a browser gets that as a page.
                down = await store_down(request, e)
                resp = error_page(request, down.status_code, json.loads(down.body)["detail"])
                resp.headers["Retry-After"] = down.headers["Retry-After"]
                return resp

        return handle


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def error_page(request: Request, code: int, detail: str) -> Response:
    try:
        sess = ses.load(request.app.state.runtime, request.app.state.settings, request)
    except Exception:  # noqa: BLE001 - the page must render even when Redis is the problem
        sess = None
    titles = {404: "Not found", 422: "Check the address", 403: "Not allowed", 409: "Not now", 429: "Over a quota",
              503: "Unavailable for now"}
    return page(request, "error.html", sess, status_code=code, code=code, title=titles.get(code, "Error"),
                detail=detail)


router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_HtmlErrors)
# `/` of the API: people who open the bare address in a browser land on the review UI.
root_router = APIRouter(include_in_schema=False)


@root_router.get("/")
def site_root():
    return RedirectResponse("/ui", status.HTTP_303_SEE_OTHER)


def page(request: Request, name: str, sess: ses.Session | None, status_code: int = 200, **ctx) -> Response:
    ctx.update(session=sess, csrf=sess.csrf if sess else None)
    return _secure(templates.TemplateResponse(request, name, ctx, status_code=status_code))


def _safe_next(target: str | None) -> str:
    # Only paths inside the UI: a login link must not send people elsewhere.
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/jobs"


# ------------------------------------------------------------ static, login, logout

@router.get("/static/{name}")
def static(name: str):
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    resp = FileResponse(UI_DIR / "static" / name, media_type=STATIC_FILES[name])
    resp.headers["Cache-Control"] = "max-age=300"
    return resp


@router.get("", response_class=HTMLResponse)
@router.get("/", response_class=HTMLResponse)
def root():
    return RedirectResponse("/ui/jobs", status.HTTP_303_SEE_OTHER)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, rt: RuntimeDep, next: str | None = None, error: str | None = None):  # noqa: A002
    return _login_page(request, rt, next, error, 401 if error else 200)


def _login_page(request: Request, rt, next_: str | None, error: str | None, status_code: int) -> Response:
    token = ses.issue_login_csrf(rt)  # single-use: each attempt posts a fresh form
    resp = page(request, "login.html", None, status_code=status_code, login_csrf=token,
                next=_safe_next(next_), error=error)
    resp.set_cookie(ses.LOGIN_CSRF_COOKIE, token, max_age=ses.LOGIN_CSRF_TTL_S, **ses.cookie_args(request))
    return resp


def _form_text(form, name: str, required: bool = True) -> str | None:
    """A text field of the login form: a file (or anything else) sent in its place is a 422 naming it."""
    values = form.getlist(name)
    if not values:
        if required:
            raise HTTPException(422, f"{name}: missing; send the login form's {name} field")
        return None
    if len(values) > 1 or not isinstance(values[0], str):
        raise HTTPException(422, f"{name}: must be one text field (not a file, not repeated)")
    return values[0]


@router.post("/login")
async def login(request: Request, rt: RuntimeDep, settings: SettingsDep):
    form = await request.form(max_files=4, max_fields=20)
    token = _form_text(form, "csrf_token")
    api_key, target = _form_text(form, "api_key", required=False), _safe_next(_form_text(form, "next", required=False))
    ses.use_login_csrf(rt, request.cookies.get(ses.LOGIN_CSRF_COOKIE), token)
    api_key = (api_key or "").strip()
    addr = throttle.client_addr(request.scope)
    wait = throttle.locked_for(rt.redis, addr) if api_key else 0
    sess = ses.create(rt, settings, api_key) if not wait else None
    if sess is None and api_key and not wait:
        wait = throttle.failed(rt.redis, settings, addr, api_key, "ui_login", request.url.path)
    if wait:
        throttle.throttled("ui_login")
        resp = _login_page(request, rt, target, f"too many failed attempts; try again in {wait} s", 429)
        resp.headers["Retry-After"] = str(wait)
        return resp
    if sess is None:
        return RedirectResponse("/ui/login?" + urlencode({"next": target, "error": "unknown API key"}),
                                status.HTTP_303_SEE_OTHER)
    resp = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
    resp.set_cookie(ses.SESSION_COOKIE, sess.sid, max_age=ses.SESSION_TTL_S, **ses.cookie_args(request))
    resp.delete_cookie(ses.LOGIN_CSRF_COOKIE, path="/ui")
    return resp


@router.post("/logout")
def logout(rt: RuntimeDep, sess: CsrfSessionDep):
    ses.destroy(rt, sess.sid)
    resp = RedirectResponse("/ui/login", status.HTTP_303_SEE_OTHER)
    resp.delete_cookie(ses.SESSION_COOKIE, path="/ui")
    return resp


# ------------------------------------------------------------ jobs

def _job_rows(request, rt, settings, sess):
    views = []
    for job_id in sorted(rt.tracker.list_jobs(sess.tenant), reverse=True)[:100]:
        # The list needs each job's stage counts, not its transitions and failures.
        v = _view(rt, request, settings, rt.tracker.spec(job_id), detail=False)
        v.stages = rt.tracker.counts(job_id, v.planned_scenes)
        views.append(v)
    return views


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(request: Request, rt: RuntimeDep, settings: SettingsDep, sess: SessionDep):
    views = _job_rows(request, rt, settings, sess)
    return page(request, "jobs.html", sess, jobs=views,
                live=any(not v.state.terminal for v in views))


@router.get("/jobs/rows", response_class=HTMLResponse)
def jobs_rows(request: Request, rt: RuntimeDep, settings: SettingsDep, sess: SessionDep):
    views = _job_rows(request, rt, settings, sess)
    return page(request, "_job_rows.html", sess, jobs=views,
                live=any(not v.state.terminal for v in views))


def _owned(rt, job_id: str, sess: ses.Session):
    return _owned_spec(rt, job_id, sess.tenant)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, sess: SessionDep):
    stored = _owned(rt, job_id, sess)
    view = _view(rt, request, settings, stored)
    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    return page(request, "job.html", sess, job=view, stored=stored, cats=cats,
                spec_json=stored.spec.model_dump(mode="json"), live=not view.state.terminal,
                index=rv.read_index(rt.store, job_id))


@router.get("/jobs/{job_id}/categories", response_class=HTMLResponse)
def job_categories(job_id: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    """The novel-category table alone: the job page polls it until association has written it."""
    _owned(rt, job_id, sess)
    cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
    return page(request, "_job_categories.html", sess, cats=cats,
                live=cats is None and not rt.tracker.status(job_id).state.terminal)


@router.get("/jobs/{job_id}/stages", response_class=HTMLResponse)
def job_stages(job_id: str, request: Request, rt: RuntimeDep, settings: SettingsDep, sess: SessionDep):
    view = _view(rt, request, settings, _owned(rt, job_id, sess))
    return page(request, "_job_stages.html", sess, job=view, live=not view.state.terminal)


# ------------------------------------------------------------ samples

def _float_or_none(v: str | None, field: str) -> float | None:
    if v is None or v.strip() == "":
        return None
    try:
        x = float(v)
    except ValueError:
        raise HTTPException(422, f"{field}: not a number: {v!r}") from None
    if not math.isfinite(x):
        raise HTTPException(422, f"{field}: must be a finite number")
    return x


@router.get("/jobs/{job_id}/samples", response_class=HTMLResponse)
def samples_page(job_id: str, request: Request, rt: RuntimeDep, sess: SessionDep,
                 page_no: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1,
                 category: str | None = None, status_filter: Annotated[str | None, Query(alias="status")] = None,
                 min_score: str | None = None, max_score: str | None = None, rule: str | None = None):
    _owned(rt, job_id, sess)
    index = rv.read_index(rt.store, job_id)
    if status_filter not in (None, "", "kept", "rejected"):
        raise HTTPException(422, "status: must be 'kept' or 'rejected'")
    flt = rv.SampleFilter(category=category or None, status=status_filter or None,
                          min_score=_float_or_none(min_score, "min_score"),
                          max_score=_float_or_none(max_score, "max_score"), rule=rule or None)
    items, more = ([], False) if index is None else rv.query(rt.store, job_id, index, page_no - 1, flt)
    reviewed = {}
    if items:
        # One read per sample of this page that has a review (at most a page's worth).
        wanted = {s.scene_id for s in items}
        for k in rt.store.list(rv.reviews_prefix(job_id)):
            sid = k.rsplit("/", 1)[1][:-5]
            if sid in wanted:
                rec = rt.store.try_get_model(k, rv.SampleReview)
                if rec is not None:
                    reviewed[sid] = rec
    params = {k: v for k, v in {"category": flt.category, "status": flt.status, "min_score": min_score,
                                "max_score": max_score, "rule": flt.rule}.items() if v not in (None, "")}
    return page(request, "samples.html", sess, job_id=job_id, index=index, items=items, page_no=page_no,
                more=more, flt=flt, params=params, reviewed=reviewed,
                prev_url=f"?{urlencode({**params, 'page': page_no - 1})}" if page_no > 1 else None,
                next_url=f"?{urlencode({**params, 'page': page_no + 1})}" if more else None)


@router.get("/jobs/{job_id}/thumbs/{name}")
def thumb(job_id: str, name: str, rt: RuntimeDep, sess: SessionDep):
    _owned(rt, job_id, sess)
    sid, _, ext = name.rpartition(".")
    try:
        key = rv.thumbnail(job_id, sid) if ext == "jpg" else rv.thumbnail_overlay(job_id, sid) if ext == "png" \
            else None
    except ValueError:
        key = None
    if key is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no thumbnail {name!r}")
    resp = object_response(rt.store, key)
    resp.headers["Cache-Control"] = "private, max-age=3600"  # written once at curation, never changed
    return resp


def _scene(rt, job_id: str, sid: str) -> SceneAnnotation:
    try:
        keys.check_id(sid, "scene id")
        return rt.store.get_model(keys.annotation(job_id, sid), SceneAnnotation)
    except (ValueError, ObjectNotFound):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no annotated scene {sid!r} in job {job_id}") from None


@router.get("/jobs/{job_id}/samples/{sid}", response_class=HTMLResponse)
def sample_page(job_id: str, sid: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    stored = _owned(rt, job_id, sess)
    ann = _scene(rt, job_id, sid)
    layout = rt.store.try_get_model(keys.layout(job_id, sid), SceneLayout)
    render = rt.store.try_get_model(keys.render_record(job_id, sid), RenderRecord)
    index = rv.read_index(rt.store, job_id)
    entry = rv.read_entry(rt.store, job_id, sid)
    summary = entry.summary if entry else None
    prev_sid, next_sid = rv.find_neighbours(rt.store, job_id, index, entry) if index and entry else (None, None)
    verdicts = {i.id: i for i in summary.instances} if summary else {}
    review = rt.store.try_get_model(rv.review(job_id, sid), rv.SampleReview)
    plan = rt.tracker.plan(job_id, required=False)
    try:
        planned = plan.scene(sid) if plan is not None else None
    except KeyError:
        planned = None
    provenance = {
        "seed": render.seed if render else (layout.seed if layout else None),
        # Every seed by its name (shared/seeding.py): the job's, the scene's (derived from it and the scene's
        # index, or an origin's for a re-render), and the stage seeds derived from that, or pinned.
        "seeds": {"job": stored.spec.seed, "scene": planned.seed if planned else None,
                  "layout": layout.seed if layout else None, "render": render.seed if render else None,
                  "pinned": sorted(planned.stage_seeds) if planned else []},
        "prompt": layout.caption if layout else None,
        "layout": layout.model_dump(mode="json") if layout else None,
        "render": render.model_dump(mode="json", exclude={"schema_version", "job_id", "scene_id"}) if render
        else None,
        "annotation": {"mask_backend": ann.mask_backend, "score_backend": ann.score_backend,
                       "models": ann.provenance, "seconds": ann.seconds},
        "job_seed": stored.spec.seed,
    }
    # Scores as columns: every score name any instance has, in the order they first appear.
    score_names = list(dict.fromkeys(k for inst in ann.instances for k in inst.scores))
    metric = next((i.metric for i in summary.instances if i.metric), None) if summary else None
    return page(request, "sample.html", sess, job_id=job_id, ann=ann, layout=layout, summary=summary,
                verdicts=verdicts, review=review, provenance=provenance, prev_sid=prev_sid, next_sid=next_sid,
                score_names=score_names, metric=metric, thresholds=stored.spec.thresholds,
                origin=stored.rerender_of, rerenders=rerenders_of(rt, job_id, sid),
                render_defaults={"seed": render.seed if render else None,
                                 "steps": (render.synthesis or stored.spec.synthesis).steps if render else None,
                                 "guidance_scale": (render.synthesis or stored.spec.synthesis).guidance_scale
                                 if render else None,
                                 "image_size": render.width if render else None})


@router.post("/jobs/{job_id}/samples/{sid}/rerender")
async def ui_rerender(job_id: str, sid: str, request: Request, rt: RuntimeDep, sess: CsrfSessionDep):
    """The sample page's re-render form: blank fields keep the origin's value; then the new job's page."""
    stored = _owned(rt, job_id, sess)
    form = await request.form()
    values = {k: str(form.get(k) or "").strip() for k in ("seed", "steps", "guidance_scale", "image_size")}
    try:
        body = RerenderRequest(**{k: v for k, v in values.items() if v})
    except ValidationError as e:
        raise RequestValidationError([{**x, "loc": ("body", *x["loc"])} for x in e.errors()]) from None
    new = rerender_sample(rt, stored, sid, body)
    return RedirectResponse(f"/ui/jobs/{new.job_id}", status.HTTP_303_SEE_OTHER)


@router.get("/jobs/{job_id}/samples/{sid}/image.png")
def sample_image(job_id: str, sid: str, rt: RuntimeDep, sess: SessionDep):
    _owned(rt, job_id, sess)
    return object_response(rt.store, _scene(rt, job_id, sid).image_key)


@router.get("/jobs/{job_id}/samples/{sid}/overlay.png")
def sample_overlay(job_id: str, sid: str, rt: RuntimeDep, sess: SessionDep):
    """Every instance's mask in its table colour, transparent elsewhere (one scene: made on request)."""
    _owned(rt, job_id, sess)
    ann = _scene(rt, job_id, sid)
    rgba = np.zeros((ann.height, ann.width, 4), np.uint8)
    for i, inst in enumerate(ann.instances):
        m = decode_rle(inst.mask.model_dump())
        if m.shape == rgba.shape[:2]:
            rgba[m, :3] = PALETTE[i % len(PALETTE)]
            rgba[m, 3] = 130
    return Response(png_bytes(rgba), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/jobs/{job_id}/samples/{sid}/masks.png")
def sample_masks(job_id: str, sid: str, rt: RuntimeDep, sess: SessionDep):
    """Every instance's mask, exactly, for the sample page's viewer to draw (fills, outlines, labels,
    highlight): instance k is channel k % 3 (R, G, B) of the tile k // 3; tiles are stacked vertically, each
    the image's size. Opaque, so the browser hands the bytes back to the script unchanged."""
    _owned(rt, job_id, sess)
    ann = _scene(rt, job_id, sid)
    h, w = ann.height, ann.width
    tiles = max(1, -(-len(ann.instances) // 3))
    rgb = np.zeros((tiles * h, w, 3), np.uint8)
    for k, inst in enumerate(ann.instances):
        m = decode_rle(inst.mask.model_dump())
        if m.shape == (h, w):
            rgb[(k // 3) * h:(k // 3 + 1) * h, :, k % 3][m] = 255
    return Response(png_bytes(rgb), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


class UIReview(BaseModel):
    scene_id: str
    instance_id: int | None = None
    decision: str


@router.post("/jobs/{job_id}/reviews")
def ui_review(job_id: str, body: UIReview, rt: RuntimeDep, sess: CsrfSessionDep):
    _owned(rt, job_id, sess)
    rec = reviewing.record_decision(rt, job_id, body.scene_id, body.instance_id, body.decision, sess.reviewer)
    return rec.model_dump(mode="json")


# ------------------------------------------------------------ plots

@router.get("/jobs/{job_id}/plots", response_class=HTMLResponse)
def plots_page(job_id: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    stored = _owned(rt, job_id, sess)
    try:
        stats = rt.store.get_json(rv.sample_stats(job_id))
    except ObjectNotFound:
        stats = None
    charts, counts, rates = [], None, []
    thresholds = stored.spec.thresholds
    index = rv.read_index(rt.store, job_id)
    metric = None
    if index is not None and index.pages:
        first = rv.read_page(rt.store, job_id, 0)
        metric = next((i.metric for s in first for i in s.instances if i.metric), None)
    if stats:
        grid = f"/ui/jobs/{job_id}/samples"
        cats = rt.store.try_get_model(keys.categories(job_id), CategorySet)
        novel = {n.name for n in cats.novel} if cats else set()
        # The novel categories first (what the job is for), then by how many instances each has.
        order = sorted(stats["categories"].items(),
                       key=lambda kv: (kv[0] not in novel, -(kv[1]["kept"] + kv[1]["rejected"]), kv[0]))
        for name, c in order:
            bars = plots.bars_from_stats(c, grid, name, thresholds.min_score)
            charts.append(plots.histogram_svg(name, bars, thresholds.min_score, metric))
            total = c["kept"] + c["rejected"]
            rates.append({"name": name, "kept": c["kept"], "rejected": c["rejected"], "total": total,
                          "rate": c["kept"] / total if total else 0.0, "min": c.get("min"), "max": c.get("max"),
                          "url": f"{grid}?{urlencode({'category': name})}"})
        counts = plots.counts_svg([(n, c["kept"], c["rejected"]) for n, c in stats["categories"].items()])
    return page(request, "plots.html", sess, job_id=job_id, stats=stats, charts=charts, counts=counts,
                rates=rates, thresholds=thresholds, metric=metric)


# ------------------------------------------------------------ datasets and versions

def _dataset(rt, dataset_id: str, sess) -> DatasetManifest:
    try:
        m = rt.store.get_model(keys.dataset_manifest(keys.check_id(dataset_id, "dataset id")), DatasetManifest)
    except (ObjectNotFound, ValueError):
        m = None
    if m is None or m.tenant != sess.tenant:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no dataset {dataset_id!r}")
    return m


@router.get("/datasets/{dataset_id}", response_class=HTMLResponse)
def dataset_page(dataset_id: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    m = _dataset(rt, dataset_id, sess)
    prefix = keys.dataset_prefix(dataset_id)
    files, more_files = [], 0
    for k in rt.store.list(prefix):
        # A large dataset has three files per image: list the first ones, count the rest.
        if len(files) < MAX_FILES_LISTED:
            files.append(k[len(prefix):])
        else:
            more_files += 1
    try:
        card_md = rt.store.get_bytes(keys.dataset_file(dataset_id, keys.CARD_MD)).decode()
    except ObjectNotFound:
        card_md = None
    versions = reviewing.versions(rt, m.job_id)
    latest = versions[-1] if versions else None
    since = _reviews_since(rt, m.job_id, latest["created_at"] if latest and latest["version"] > 1 else None)
    job_state = rt.tracker.status(m.job_id).state
    return page(request, "dataset.html", sess, m=m, files=files, more_files=more_files, card_md=card_md,
                versions=versions, latest=latest, reviews_since=since,
                can_publish=job_state == JobState.succeeded, live=any(v["state"] == "pending" for v in versions))


def _reviews_since(rt, job_id: str, since) -> int:
    """Reviewed samples with a decision after `since` (the newest published version's request; None: all):
    what a new version would add. Reviews are people's work, so they stay few enough to read."""
    if isinstance(since, str):
        since = datetime.fromisoformat(since.replace("Z", "+00:00"))
    n = 0
    for k in rt.store.list(rv.reviews_prefix(job_id)):
        rec = rt.store.try_get_model(k, rv.SampleReview)
        if rec is not None and rec.history and (since is None or rec.history[-1].at > since):
            n += 1
    return n


@router.get("/datasets/{dataset_id}/files/{path:path}")
def dataset_file(dataset_id: str, path: str, rt: RuntimeDep, sess: SessionDep):
    _dataset(rt, dataset_id, sess)
    try:
        key = keys.dataset_file(dataset_id, path)
    except ValueError as e:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(e)) from None
    return object_response(rt.store, key)


@router.post("/datasets/{dataset_id}/versions")
async def ui_publish(dataset_id: str, request: Request, rt: RuntimeDep, sess: CsrfSessionDep):
    m = _dataset(rt, dataset_id, sess)
    note = None
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        note = str((await request.form()).get("note") or "")[:500] or None
    try:
        reviewing.request_version(rt, m.job_id, sess.reviewer, note)
    except QuotaExceeded as e:
        # As an HTTP error, so a browser gets the message as a page (the API's 429 handler answers JSON).
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, e.message,
                            headers={"Retry-After": str(e.retry_after_s)}) from None
    return RedirectResponse(f"/ui/datasets/{dataset_id}", status.HTTP_303_SEE_OTHER)


@router.get("/{path:path}", response_class=HTMLResponse)
def unknown_page(path: str, request: Request):
    """Any other address under /ui: a 404 page (registered last, after every real page)."""
    raise HTTPException(status.HTTP_404_NOT_FOUND, f"there is no page /ui/{path}")
