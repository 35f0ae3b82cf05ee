"""/ui/loops: the closed loops of the reviewer's tenant (docs/ui.md, docs/loop.md): a list, and a page per loop
with the per-class IoU curves across rounds (server-side SVG), each round's allocation, job, dataset and
training, and a cancel action (form + CSRF). Same frame, style and CSP as the other pages; no inline script."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse

from dreammask.shared import loops as lp
from dreammask.shared.schemas import normalise_name, utcnow

from ..deps import RuntimeDep
from ..ui import plots
from .loops import _owned, loop_view
from .ui import PALETTE, CsrfSessionDep, SessionDep, _HtmlErrors, page

router = APIRouter(prefix="/ui", include_in_schema=False, route_class=_HtmlErrors)
GREY = "#8a8f98"


def _owned_loop(rt, loop_id: str, sess) -> lp.StoredLoopSpec:
    return _owned(rt, loop_id, sess.tenant)


@router.get("/loops", response_class=HTMLResponse)
def loops_page(request: Request, rt: RuntimeDep, sess: SessionDep):
    ids = sorted(lp.list_loops(rt.store, sess.tenant), reverse=True)[:100]
    views = [loop_view(rt, "", lp.read_spec(rt.store, i), history=False) for i in ids]
    return page(request, "loops.html", sess, loops=views)


def _context(rt, stored: lp.StoredLoopSpec) -> dict:
    view = loop_view(rt, "", stored)
    rounds = [r for r in view.history if r.finished_at is not None]
    target = {normalise_name(t) for t in stored.spec.target}
    classes = list(dict.fromkeys(c for r in rounds for c in r.per_class))
    # The classes the loop steers first (in colour), then the others (grey, dashed).
    classes.sort(key=lambda c: normalise_name(c) not in target)
    colours, k = {}, 0
    for c in classes:
        if normalise_name(c) in target:
            colours[c] = "#{:02x}{:02x}{:02x}".format(*PALETTE[k % len(PALETTE)])
            k += 1
        else:
            colours[c] = GREY
    series = {c: [r.per_class.get(c) for r in rounds] for c in classes}
    chart = plots.curves_svg([r.round for r in rounds], series, colours,
                             dashed={c for c in classes if normalise_name(c) not in target}) if rounds else None
    # `lv`, not `loop`: Jinja's for loops have their own `loop`.
    return {"lv": view, "spec": stored.spec, "rounds": view.history, "chart": chart, "classes": classes,
            "target_classes": {c for c in classes if normalise_name(c) in target}, "finished": rounds,
            "live": not view.state.terminal, "colours": colours}


@router.get("/loops/{loop_id}", response_class=HTMLResponse)
def loop_page(loop_id: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    stored = _owned_loop(rt, loop_id, sess)
    return page(request, "loop.html", sess, spec_json=stored.spec.model_dump(mode="json"), **_context(rt, stored))


@router.get("/loops/{loop_id}/body", response_class=HTMLResponse)
def loop_body(loop_id: str, request: Request, rt: RuntimeDep, sess: SessionDep):
    """The page's live part alone: the page polls it while the loop runs."""
    return page(request, "_loop_body.html", sess, **_context(rt, _owned_loop(rt, loop_id, sess)))


@router.post("/loops/{loop_id}/cancel")
def ui_cancel_loop(loop_id: str, rt: RuntimeDep, sess: CsrfSessionDep):
    _owned_loop(rt, loop_id, sess)
    st = lp.read_status(rt.store, loop_id)
    if st.state.terminal:
        raise HTTPException(status.HTTP_409_CONFLICT, f"loop {loop_id} already {st.state.value}")
    rt.store.put_bytes(lp.cancel_key(loop_id), utcnow().isoformat().encode(), "text/plain")
    if st.state == lp.LoopState.queued:
        lp.transition(rt.store, st, lp.LoopState.cancelled, f"cancelled while queued by {sess.reviewer}")
    return RedirectResponse(f"/ui/loops/{loop_id}", status.HTTP_303_SEE_OTHER)
