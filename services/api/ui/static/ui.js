// DreamMask review UI: live refresh, the sample page's mask viewer (fills, outlines, labels, highlight, zoom
// and pan), review decisions with keyboard shortcuts, sortable tables. No library; the page's CSP allows
// only this file ('self'), so nothing here is inline in the HTML.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const store = {
    get(k, d) { try { const v = localStorage.getItem(k); return v === null ? d : v; } catch (e) { return d; } },
    set(k, v) { try { localStorage.setItem(k, v); } catch (e) { /* private mode */ } },
  };

  // ------------------------------------------------------------------ live regions
  // <div data-poll="/url"> is refreshed while its content carries a data-live marker.
  document.querySelectorAll("[data-poll]").forEach((box) => {
    const live = () => box.dataset.pollAlways || box.querySelector("[data-live]");
    if (!live()) return;
    const tick = async () => {
      try {
        const r = await fetch(box.dataset.poll, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (r.redirected || !r.ok) return;
        box.innerHTML = await r.text();
      } catch (e) { /* a missed poll is retried */ }
      if (live()) setTimeout(tick, box.querySelector("[data-live]") ? 1500 : 5000);
      else if (box.dataset.reloadWhenDone) location.reload();
    };
    setTimeout(tick, 1500);
  });
  document.querySelectorAll("[data-poll-reload]").forEach((el) => {
    setTimeout(() => location.reload(), parseInt(el.dataset.pollReload, 10) || 2000);
  });

  // ------------------------------------------------------------------ sortable tables
  document.querySelectorAll("table.sortable").forEach((table) => {
    const heads = Array.from(table.querySelectorAll("thead th"));
    heads.forEach((th, col) => {
      const button = th.querySelector("button[data-sort]");
      if (!button) return;
      button.addEventListener("click", () => {
        const numeric = button.dataset.sort === "num";
        const asc = th.getAttribute("aria-sort") !== "ascending";
        heads.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        const body = table.tBodies[0];
        const key = (tr) => {
          const td = tr.children[col];
          const raw = td.dataset.value !== undefined ? td.dataset.value : td.textContent.trim();
          return numeric ? (raw === "" ? -Infinity : parseFloat(raw)) : raw.toLowerCase();
        };
        const sorted = Array.from(body.rows).sort((a, b) => {
          const ka = key(a), kb = key(b);
          return (ka < kb ? -1 : ka > kb ? 1 : 0) * (asc ? 1 : -1);
        });
        sorted.forEach((tr) => body.appendChild(tr));
      });
    });
  });

  // ------------------------------------------------------------------ masks on/off (grid and sample page)
  const toggle = document.getElementById("toggle-masks");
  let redraw = () => {};
  const setMasks = (on) => {
    document.body.classList.toggle("hide-masks", !on);
    if (toggle) toggle.checked = on;
    store.set("dm-masks", on ? "1" : "0");
    redraw();
  };
  setMasks(store.get("dm-masks", "1") !== "0");
  if (toggle) toggle.addEventListener("change", () => setMasks(toggle.checked));
  const masksOn = () => !document.body.classList.contains("hide-masks");

  // ------------------------------------------------------------------ the sample page
  const sample = document.getElementById("sample");
  const statusEl = document.getElementById("review-status");
  const rows = Array.from(document.querySelectorAll("#instances tbody tr"));
  const say = (text, isError) => {
    if (!statusEl) return;
    statusEl.textContent = text;
    statusEl.classList.toggle("error", !!isError);
  };
  let selected = -1;
  let hovered = -1;

  const viewer = sample ? makeViewer() : null;
  if (viewer) redraw = viewer.draw;

  const select = (i) => {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("selected", j === selected));
    rows[selected].scrollIntoView({ block: "nearest" });
    if (viewer) viewer.draw();
    if (viewer) viewer.info(selected);
  };

  function makeViewer() {
    const canvas = document.getElementById("mask-canvas");
    const stage = document.getElementById("stage");
    const viewport = document.getElementById("viewport");
    const info = document.getElementById("hover-info");
    if (!canvas || !stage || !viewport) return null;
    const W = parseInt(sample.dataset.width, 10), H = parseInt(sample.dataset.height, 10);
    const ctx = canvas.getContext("2d");
    const hex = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
    const insts = rows.map((row) => ({
      row, color: hex(row.dataset.color || "#ff0000"), label: row.dataset.label, shown: true,
      fill: null, edge: null, box: null,
    }));
    const opacityEl = document.getElementById("opacity");
    const opacityOut = document.getElementById("opacity-value");
    const outlinesEl = document.getElementById("toggle-outlines");
    const labelsEl = document.getElementById("toggle-labels");
    let opacity = parseFloat(store.get("dm-opacity", "0.45"));
    let owner = null; // per pixel: the topmost shown instance (paint order), -1 for none
    let ready = false;

    const setOpacity = (v) => {
      opacity = Math.max(0, Math.min(1, Math.round(v * 20) / 20));
      if (opacityEl) opacityEl.value = String(Math.round(opacity * 100));
      if (opacityOut) opacityOut.textContent = `${Math.round(opacity * 100)}%`;
      store.set("dm-opacity", String(opacity));
      draw();
    };

    const computeOwner = () => {
      owner = new Int16Array(W * H).fill(-1);
      insts.forEach((m, k) => { if (m.shown && m.fill) for (const p of m.fill) owner[p] = k; });
    };

    // Masks are painted at the image's own resolution (exact pixels), then drawn scaled onto the canvas,
    // which has the resolution of the screen (and of the zoom, up to 4x), so that labels stay sharp.
    const native = document.createElement("canvas");
    native.width = W; native.height = H;
    const nctx = native.getContext("2d");
    let zoom = () => 1;

    function draw() {
      if (!ready) return;
      const dpr = window.devicePixelRatio || 1, z = zoom(), zr = Math.min(z, 4);
      const cw = Math.max(1, Math.round((stage.offsetWidth || W) * dpr * zr));
      const ch = Math.max(1, Math.round(cw * H / W));
      if (canvas.width !== cw || canvas.height !== ch) { canvas.width = cw; canvas.height = ch; }
      ctx.clearRect(0, 0, cw, ch);
      if (!masksOn()) return;
      const out = nctx.createImageData(W, H);
      const d = out.data;
      const focus = new Set([selected, hovered].filter((k) => k >= 0));
      const order = insts.map((m, k) => k).filter((k) => insts[k].shown);
      // The highlighted instances are painted last, so they are on top and whole.
      order.sort((a, b) => (focus.has(a) ? 1 : 0) - (focus.has(b) ? 1 : 0) || a - b);
      const outlines = !outlinesEl || outlinesEl.checked;
      for (const k of order) {
        const m = insts[k];
        const [r, g, b] = m.color;
        const hot = focus.has(k);
        const a = Math.round(255 * (hot ? Math.min(1, opacity + 0.3) : focus.size ? opacity * 0.5 : opacity));
        for (const p of m.fill) { const i = p * 4; d[i] = r; d[i + 1] = g; d[i + 2] = b; d[i + 3] = a; }
        if (!outlines && !hot) continue;
        for (const p of m.edge) {
          const i = p * 4;
          if (hot) { d[i] = 255; d[i + 1] = 255; d[i + 2] = 255; } else { d[i] = r; d[i + 1] = g; d[i + 2] = b; }
          d[i + 3] = 255;
        }
      }
      nctx.putImageData(out, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(native, 0, 0, cw, ch);
      if (!labelsEl || labelsEl.checked) drawLabels(focus, cw / W, 12 * dpr * zr / z);
    }

    function drawLabels(focus, sx, fs) {
      const pad = Math.round(fs / 4);
      insts.forEach((m, k) => {
        if (!m.shown || !m.box) return;
        const hot = focus.has(k);
        ctx.font = `${hot ? "bold " : ""}${Math.round(fs)}px system-ui, sans-serif`;
        const text = m.label;
        const tw = ctx.measureText(text).width + 2 * pad, th = fs + 2 * pad;
        const bx = m.box[0] * sx, by = m.box[1] * sx;
        const x = Math.min(Math.max(0, bx), canvas.width - tw);
        const y = by >= th ? by - th : by;
        const [r, g, b] = m.color;
        ctx.fillStyle = hot ? "rgba(255,255,255,0.95)" : `rgba(${r},${g},${b},0.88)`;
        ctx.fillRect(x, y, tw, th);
        if (hot) { ctx.strokeStyle = `rgb(${r},${g},${b})`; ctx.lineWidth = Math.max(2, pad / 2); ctx.strokeRect(x, y, tw, th); }
        // Dark text on light colours, light text on dark ones.
        ctx.fillStyle = hot || 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#111" : "#fff";
        ctx.textBaseline = "top";
        ctx.fillText(text, x + pad, y + pad);
      });
    }

    const load = new Image();
    load.onload = () => {
      const off = document.createElement("canvas");
      off.width = load.naturalWidth; off.height = load.naturalHeight;
      const octx = off.getContext("2d");
      octx.drawImage(load, 0, 0);
      const px = octx.getImageData(0, 0, off.width, off.height).data;
      insts.forEach((m, k) => {
        const base = Math.floor(k / 3) * H * W, ch = k % 3;
        const fill = [], edge = [];
        let x0 = W, y0 = H, x1 = -1, y1 = -1;
        const on = (x, y) => x >= 0 && y >= 0 && x < W && y < H && px[(base + y * W + x) * 4 + ch] > 127;
        for (let y = 0; y < H; y++) {
          for (let x = 0; x < W; x++) {
            if (!on(x, y)) continue;
            const p = y * W + x;
            fill.push(p);
            if (!on(x - 1, y) || !on(x + 1, y) || !on(x, y - 1) || !on(x, y + 1)) edge.push(p);
            if (x < x0) x0 = x; if (y < y0) y0 = y; if (x > x1) x1 = x; if (y > y1) y1 = y;
          }
        }
        m.fill = Int32Array.from(fill);
        m.edge = Int32Array.from(edge);
        m.box = x1 >= 0 ? [x0, y0, x1, y1] : null;
      });
      ready = true;
      computeOwner();
      stage.classList.add("drawn");
      sample.dataset.viewer = "ready";
      draw();
    };
    load.onerror = () => { sample.dataset.viewer = "failed"; };
    load.src = sample.dataset.masks;

    // Zoom and pan: a CSS transform of the stage (image and canvas together) inside the viewport.
    let z = 1, tx = 0, ty = 0;
    zoom = () => z;
    const zoomEl = document.getElementById("zoom-level");
    // The image fits the screen's height whatever its shape (the stylesheet's default is for squares).
    stage.style.maxWidth = `min(100%, calc((100vh - 215px) * ${W / H}))`;
    const apply = () => {
      const vw = stage.offsetWidth, vh = stage.offsetHeight;
      tx = Math.min(0, Math.max(vw - vw * z, tx));
      ty = Math.min(0, Math.max(vh - vh * z, ty));
      stage.style.transform = `translate(${tx}px, ${ty}px) scale(${z})`;
      viewport.classList.toggle("zoomed", z > 1);
      if (zoomEl) zoomEl.textContent = `${Math.round(z * 100)}%`;
      sample.dataset.zoom = z.toFixed(2);
      draw();
    };
    const zoomAt = (factor, cx, cy) => {
      const nz = Math.max(1, Math.min(16, z * factor));
      tx = cx - (cx - tx) * (nz / z);
      ty = cy - (cy - ty) * (nz / z);
      z = nz;
      apply();
    };
    const centre = () => [stage.offsetWidth / 2, stage.offsetHeight / 2];
    const zoomIn = () => zoomAt(1.5, ...centre());
    const zoomOut = () => zoomAt(1 / 1.5, ...centre());
    const reset = () => { z = 1; tx = 0; ty = 0; apply(); };
    const pan = (dx, dy) => { tx += dx; ty += dy; apply(); };
    viewport.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const r = viewport.getBoundingClientRect();
      zoomAt(ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - r.left - stage.offsetLeft, ev.clientY - r.top - stage.offsetTop);
    }, { passive: false });
    let drag = null;
    viewport.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      drag = { x: ev.clientX, y: ev.clientY, moved: false };
      viewport.setPointerCapture(ev.pointerId);
    });
    viewport.addEventListener("pointerup", (ev) => {
      if (drag && !drag.moved && hovered >= 0) select(hovered);  // a click on a mask selects it
      drag = null;
      viewport.releasePointerCapture(ev.pointerId);
    });
    const at = (ev) => {
      const r = canvas.getBoundingClientRect();
      const x = Math.floor((ev.clientX - r.left) / r.width * W), y = Math.floor((ev.clientY - r.top) / r.height * H);
      return x >= 0 && y >= 0 && x < W && y < H && owner ? owner[y * W + x] : -1;
    };
    viewport.addEventListener("pointermove", (ev) => {
      if (drag) {
        const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
        drag.x = ev.clientX; drag.y = ev.clientY;
        if (z > 1) pan(dx, dy);
        return;
      }
      setHover(masksOn() ? at(ev) : -1);
    });
    viewport.addEventListener("pointerleave", () => setHover(-1));
    viewport.addEventListener("keydown", (ev) => {
      const step = 40;
      const moves = { ArrowLeft: [step, 0], ArrowRight: [-step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
      if (moves[ev.key] && z > 1) { pan(...moves[ev.key]); ev.preventDefault(); }
    });
    const bind = (id, fn) => { const el = document.getElementById(id); if (el) el.addEventListener("click", fn); };
    bind("zoom-in", zoomIn); bind("zoom-out", zoomOut); bind("zoom-reset", reset);
    window.addEventListener("resize", apply);

    function setHover(k) {
      if (k === hovered) return;
      hovered = k;
      rows.forEach((r, j) => r.classList.toggle("hovered", j === k));
      describe(k >= 0 ? k : selected);
      draw();
    }
    function describe(k) {
      if (!info) return;
      if (k < 0) { info.textContent = ""; return; }
      const r = rows[k];
      const rules = r.querySelector("td.rules").textContent.trim();
      const mark = r.querySelector("td.mark").textContent.trim();
      const metric = r.querySelector("td.metric");
      info.textContent = `#${r.dataset.label}` + (metric ? ` · score ${metric.textContent.trim()}` : "") +
        (rules ? ` · rules: ${rules}` : "") + (mark ? ` · ${mark}` : "");
    }
    rows.forEach((row, k) => {
      row.addEventListener("mouseenter", () => setHover(k));
      row.addEventListener("mouseleave", () => setHover(-1));
      const cb = row.querySelector("input.show-instance");
      if (cb) {
        cb.addEventListener("click", (ev) => ev.stopPropagation());
        cb.addEventListener("change", () => {
          insts[k].shown = cb.checked;
          row.classList.toggle("hidden-mask", !cb.checked);
          computeOwner();
          draw();
        });
      }
    });
    if (opacityEl) opacityEl.addEventListener("input", () => setOpacity(parseInt(opacityEl.value, 10) / 100));
    [outlinesEl, labelsEl].forEach((el) => el && el.addEventListener("change", draw));
    setOpacity(opacity);
    apply();
    return {
      draw, info: describe, zoomIn, zoomOut, reset,
      opacity: (delta) => setOpacity(opacity + delta),
      flip: (el) => { if (el) { el.checked = !el.checked; el.dispatchEvent(new Event("change")); } },
      outlinesEl, labelsEl,
      toggleShown: (k) => { const cb = rows[k].querySelector("input.show-instance"); if (cb) { cb.checked = !cb.checked; cb.dispatchEvent(new Event("change")); } },
    };
  }

  // ------------------------------------------------------------------ review decisions
  const describeMark = (m) => (m ? `${m.decision}ed by ${m.who}` : "");
  async function decide(decision, instanceId) {
    if (!sample) return;
    const body = { scene_id: sample.dataset.scene, decision };
    if (instanceId !== undefined && instanceId !== null) body.instance_id = parseInt(instanceId, 10);
    const r = await fetch(`/ui/jobs/${sample.dataset.job}/reviews`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf(), Accept: "application/json" },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
      say(`not saved: ${detail}`, true);
      return;
    }
    const rec = await r.json();
    document.getElementById("sample-mark").textContent = rec.sample ? describeMark(rec.sample) : "none";
    rows.forEach((row) => {
      const m = rec.instances[row.dataset.instance];
      row.querySelector("td.mark").textContent = describeMark(m);
      row.classList.toggle("rv-accept", !!m && m.decision === "accept");
      row.classList.toggle("rv-reject", !!m && m.decision === "reject");
    });
    const what = body.instance_id === undefined ? "sample" : `instance ${body.instance_id}`;
    say(`saved: ${decision} ${what}`);
    if (viewer && selected >= 0) viewer.info(selected);
  }
  const onSelected = (decision) => {
    if (selected < 0) {
      say(`no instance selected: press j (or click a row) first, then ${decision === "accept" ? "y" : decision === "reject" ? "x" : "c"}`, true);
      return;
    }
    decide(decision, rows[selected].dataset.instance);
  };
  if (sample) {
    document.querySelectorAll(".side .buttons [data-decide]").forEach((b) => {
      if (!b.closest("#instances")) b.addEventListener("click", () => decide(b.dataset.decide));
    });
    rows.forEach((row, i) => {
      row.querySelectorAll("[data-decide]").forEach((b) =>
        b.addEventListener("click", (ev) => { ev.stopPropagation(); select(i); decide(b.dataset.decide, row.dataset.instance); }));
      row.addEventListener("click", () => select(i));
    });
  }

  // ------------------------------------------------------------------ keyboard
  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === "INPUT" && t.type !== "checkbox" && t.type !== "range" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const go = (id) => { const a = document.getElementById(id); if (a) { location.href = a.href; return true; } return false; };
    switch (ev.key) {
      case "m": setMasks(!masksOn()); break;
      case "n": if (!go("next-sample") && !sample) go("next-page"); break;
      case "p": if (!go("prev-sample") && !sample) go("prev-page"); break;
      case "j": if (!sample) return; select(selected + 1); break;
      case "k": if (!sample) return; select(selected < 0 ? 0 : selected - 1); break;
      case "y": if (!sample) return; onSelected("accept"); break;
      case "x": if (!sample) return; onSelected("reject"); break;
      case "c": if (!sample) return; onSelected("clear"); break;
      case "A": decide("accept"); break;
      case "R": decide("reject"); break;
      case "v": if (!viewer) return; if (selected < 0) { say("no instance selected: press j first, then v", true); break; } viewer.toggleShown(selected); break;
      case "o": if (!viewer) return; viewer.flip(viewer.outlinesEl); break;
      case "l": if (!viewer) return; viewer.flip(viewer.labelsEl); break;
      case "[": if (!viewer) return; viewer.opacity(-0.1); break;
      case "]": if (!viewer) return; viewer.opacity(0.1); break;
      case "+": case "=": if (!viewer) return; viewer.zoomIn(); break;
      case "-": if (!viewer) return; viewer.zoomOut(); break;
      case "0": if (!viewer) return; viewer.reset(); break;
      default: return;
    }
    ev.preventDefault();
  });
})();
