// DreamMask review UI: live refresh, mask toggle, review decisions with keyboard shortcuts. No library.
"use strict";
(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  // Live regions: <div data-poll="/url"> is refreshed while its content carries a data-live marker.
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

  // Mask overlays on and off, remembered across pages.
  const toggle = document.getElementById("toggle-masks");
  const setMasks = (on) => {
    document.body.classList.toggle("hide-masks", !on);
    if (toggle) toggle.checked = on;
    try { localStorage.setItem("dm-masks", on ? "1" : "0"); } catch (e) { /* private mode */ }
  };
  let masksOn = true;
  try { masksOn = localStorage.getItem("dm-masks") !== "0"; } catch (e) { /* private mode */ }
  setMasks(masksOn);
  if (toggle) toggle.addEventListener("change", () => setMasks(toggle.checked));

  // Review of one sample.
  const sample = document.getElementById("sample");
  const statusEl = document.getElementById("review-status");
  const rows = Array.from(document.querySelectorAll("#instances tbody tr"));
  let selected = -1;
  const select = (i) => {
    if (!rows.length) return;
    selected = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, j) => r.classList.toggle("selected", j === selected));
    rows[selected].scrollIntoView({ block: "nearest" });
  };
  const describe = (m) => (m ? `${m.decision}ed by ${m.who}` : "");
  async function decide(decision, instanceId) {
    if (!sample) return;
    const body = { scene_id: sample.dataset.scene, decision };
    if (instanceId !== undefined && instanceId !== null) body.instance_id = parseInt(instanceId, 10);
    const r = await fetch(`/ui/jobs/${sample.dataset.job}/reviews`, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      let detail = r.statusText;
      try { detail = (await r.json()).detail; } catch (e) { /* not JSON */ }
      statusEl.textContent = `not saved: ${detail}`;
      statusEl.classList.add("error");
      return;
    }
    const rec = await r.json();
    statusEl.classList.remove("error");
    document.getElementById("sample-mark").textContent = rec.sample ? describe(rec.sample) : "none";
    rows.forEach((row) => {
      row.querySelector("td.mark").textContent = describe(rec.instances[row.dataset.instance]);
    });
    const what = body.instance_id === undefined ? "sample" : `instance ${body.instance_id}`;
    statusEl.textContent = `saved: ${decision} ${what}`;
  }
  if (sample) {
    document.querySelectorAll(".side [data-decide]").forEach((b) =>
      b.addEventListener("click", () => decide(b.dataset.decide)));
    rows.forEach((row, i) => {
      row.querySelectorAll("[data-decide]").forEach((b) =>
        b.addEventListener("click", (ev) => { ev.stopPropagation(); select(i); decide(b.dataset.decide, row.dataset.instance); }));
      row.addEventListener("click", () => select(i));
    });
  }

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    const go = (id) => { const a = document.getElementById(id); if (a) location.href = a.href; };
    switch (ev.key) {
      case "m": setMasks(document.body.classList.contains("hide-masks")); break;
      case "n": go("next-sample") ; if (!sample) go("next-page"); break;
      case "p": go("prev-sample"); if (!sample) go("prev-page"); break;
      case "j": select(selected + 1); break;
      case "k": select(selected - 1); break;
      case "y": if (selected >= 0) decide("accept", rows[selected].dataset.instance); break;
      case "x": if (selected >= 0) decide("reject", rows[selected].dataset.instance); break;
      case "c": if (selected >= 0) decide("clear", rows[selected].dataset.instance); break;
      case "A": decide("accept"); break;
      case "R": decide("reject"); break;
      default: return;
    }
    ev.preventDefault();
  });
})();
