// Review in the browser: the active-learning queue, one nucleus at a time, decided with the keyboard
// (the user's own keys, static/js/keys.js) or the mouse. The gallery is static/js/gallery.js.
//
// Every decision is saved at once: it goes into a small outbox in localStorage, is sent with
// fetch(keepalive) so that closing the tab does not lose it, and leaves the outbox only when the
// server answered. A failed save is shown and retried; the same client_id makes a retry harmless.
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const UNLABELLED = "#9e9e9e";
  // Screen pixels per tissue pixel, at most: a small crop blown up to the whole stage only blurs.
  const MAX_ZOOM = 4;
  // Zoomed out, the neighbourhood is shown at 1 screen px per tissue px (smaller where it does not fit).
  const CONTEXT_ZOOM = 1;
  const { el, replace } = window.dom;

  // ------------------------------------------------------------------ helpers
  function uid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const urlFor = (template, id) => template.replace("/0/", `/${id}/`);
  // A nucleus as people know it, everywhere on the page: its number in its image (the mask's id).
  const nucleusName = (number, image) => (number == null ? "a nucleus" : `nucleus ${number}${image ? ` in ${image}` : ""}`);
  const pct = (p) => `${Math.round(p * 100)}%`;

  async function api(url, { method = "GET", body, csrf, keepalive = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrf;
    const response = await fetch(url, {
      method, headers, credentials: "same-origin", keepalive,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (err) { data = null; }
    }
    return { status: response.status, ok: response.ok, data };
  }

  function polygon(svg, outline, attrs) {
    const shape = document.createElementNS(SVG, "polygon");
    shape.setAttribute("points", outline.map(([x, y]) => `${x},${y}`).join(" "));
    for (const [key, value] of Object.entries(attrs)) shape.setAttribute(key, value);
    svg.appendChild(shape);
    return shape;
  }

  function viewBox(svg, [x0, y0, x1, y1]) {
    svg.setAttribute("viewBox", `${x0 - 0.5} ${y0 - 0.5} ${x1 - x0} ${y1 - y0}`);
    svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  }

  // Decisions not yet confirmed by the server, per project and label set, kept across reloads.
  class Outbox {
    constructor(key) { this.key = key; }
    get items() {
      try { return JSON.parse(localStorage.getItem(this.key) || "[]"); } catch (err) { return []; }
    }
    set items(list) { localStorage.setItem(this.key, JSON.stringify(list)); }
    add(entry) { this.items = [...this.items, entry]; }
    remove(clientId) { this.items = this.items.filter((e) => e.client_id !== clientId); }
    nuclei() { return this.items.map((e) => e.nucleus); }
  }

  // Send one decision. "saved" | "conflict" | "rejected" (a 4xx that a retry cannot fix) | "failed".
  async function sendDecision(labelsUrl, csrf, entry) {
    let result;
    try {
      result = await api(urlFor(labelsUrl, entry.nucleus), {
        method: "POST", csrf, keepalive: true,
        body: { label_set: entry.label_set, class_name: entry.class_name, version: entry.version,
                client_id: entry.client_id, second_opinion: Boolean(entry.second_opinion) },
      });
    } catch (err) {
      return { kind: "failed", detail: "no connection" };
    }
    if (result.status === 200 || result.status === 201) return { kind: "saved", data: result.data };
    if (result.status === 409) return { kind: "conflict", data: result.data || {} };
    if (result.status >= 400 && result.status < 500 && result.status !== 408 && result.status !== 429) {
      return { kind: "rejected", data: result.data || {}, status: result.status };
    }
    return { kind: "failed", detail: `HTTP ${result.status}` };
  }

  // ------------------------------------------------------------------ the queue page
  function reviewPage(root) {
    const d = root.dataset;
    const csrf = d.csrf;
    const labelSet = d.labelSet;
    const role = (name) => root.querySelector(`[data-role="${name}"]`);
    const stage = role("stage"), crop = role("crop"), svg = role("overlay");
    const empty = role("empty"), loading = role("loading"), caption = role("caption");
    const predictionBox = role("prediction"), branches = role("branches"), currentLine = role("current");
    const statusLine = role("status");
    const zoomButton = role("zoom"), othersCard = document.querySelector('[data-role="others-card"]');
    const othersList = document.querySelector('[data-role="others"]');
    const help = document.querySelector('[data-role="help"]');
    const buttons = Array.from(root.querySelectorAll(".class-button"));
    const classes = buttons.map((b) => ({ index: Number(b.dataset.classIndex), name: b.dataset.className,
                                          color: window.dom.cssColor(b.dataset.classColor) }));
    const outbox = new Outbox(`review-outbox:${d.project}:${labelSet}:${d.user}`);
    const keys = window.reviewKeys.load();
    const progress = { today: null, left: null, compared: 0, agreed: 0 };
    let item = null;
    let busy = false;
    let retryTimer = null;
    let leaseTimer = null;
    let zoomedOut = false;   // the neighbourhood instead of the close-up; each new nucleus opens close up

    const query = (extra = {}) => {
      const params = new URLSearchParams({ label_set: labelSet, strategy: d.strategy });
      if (d.includeLabelled === "1") params.set("include_labelled", "1");
      for (const [k, v] of Object.entries(extra)) if (v !== "" && v != null) params.set(k, v);
      return params.toString();
    };
    function setStatus(text, kind = "") {
      statusLine.textContent = text;
      statusLine.className = `review-status small ${kind}`;
    }
    const classOf = (index) => classes.find((c) => c.index === index);
    const colorOf = (index) => (index == null ? UNLABELLED : (classOf(index) || {}).color || UNLABELLED);

    // -------------------------------------------------------------- drawing
    // The close-up or the neighbourhood around it: the crop, its size on screen and the overlay's box.
    function showView() {
      if (!item) return;
      const view = zoomedOut && item.context ? item.context : item.region;
      crop.src = view.url;
      const [x0, y0, x1, y1] = view.bbox;
      const zoom = zoomedOut ? CONTEXT_ZOOM : MAX_ZOOM;
      stage.style.setProperty("--crop-size", `${zoom * Math.max(x1 - x0, y1 - y0)}px`);
      root.dataset.zoom = zoomedOut ? "out" : "in";
      zoomButton.setAttribute("aria-pressed", String(zoomedOut));
      zoomButton.firstChild.textContent = zoomedOut ? "Close up " : "Zoom out ";
      draw();
    }

    function setZoom(out) {
      if (!item || out === zoomedOut) return;
      zoomedOut = out;
      showView();
    }

    function draw() {
      svg.replaceChildren();
      if (!item) return;
      const view = zoomedOut && item.context ? item.context : item.region;
      viewBox(svg, view.bbox);
      if (zoomedOut) {
        // Where the close-up was, so the eye finds the nucleus again.
        const [rx0, ry0, rx1, ry1] = item.region.bbox;
        svg.appendChild(window.dom.svgEl("rect", { class: "closeup-frame", x: rx0 - 0.5, y: ry0 - 0.5,
                                                   width: rx1 - rx0, height: ry1 - ry0 }));
      }
      for (const n of item.neighbours) {
        const known = n.class_index != null;
        polygon(svg, n.outline, {
          class: `neighbour${known ? "" : " predicted-only"}`,
          stroke: colorOf(known ? n.class_index : n.predicted_class),
          "data-nucleus-id": n.id,
        });
      }
      const target = item.current ? item.current.class_index
        : item.prediction ? item.prediction.class_index : null;
      polygon(svg, item.nucleus.outline, { class: "target-halo" });
      polygon(svg, item.nucleus.outline, { class: "target", stroke: colorOf(target), "data-nucleus-id": item.nucleus.id,
                                           "data-role": "target" });
    }

    function renderCurrent() {
      const c = item && item.current;
      currentLine.textContent = "";
      if (!item) return;
      if (!c) { currentLine.textContent = "No label in this label set yet."; return; }
      currentLine.append("Current label: ");
      const strong = document.createElement("strong");
      strong.textContent = c.class_name;
      currentLine.append(strong, ` (${c.source.replace("_", " ")}${c.author ? `, by ${c.author}` : ""})`);
      buttons.forEach((b) => b.classList.toggle("is-current", Number(b.dataset.classIndex) === c.class_index));
    }

    function render() {
      loading.hidden = true;
      empty.hidden = !!item;
      stage.classList.toggle("is-empty", !item);
      buttons.forEach((b) => { b.disabled = !item; b.classList.remove("is-predicted", "is-current"); });
      renderOthers();
      if (!item) {
        crop.removeAttribute("src");
        svg.replaceChildren();
        caption.textContent = "\u00a0";
        replace(predictionBox, el("span", { className: "muted" }, "Nothing to review."));
        branches.hidden = true;
        currentLine.textContent = "\u00a0";
        root.dataset.nucleusId = "";
        return;
      }
      root.dataset.nucleusId = item.nucleus.id;
      showView();
      // Caption: where the nucleus comes from, with links to its history and the whole image.
      caption.replaceChildren();
      const link = (href, text) => { const a = document.createElement("a"); a.href = href; a.textContent = text; return a; };
      caption.append(`${item.image.dataset.name} / ${item.image.name} · ${nucleusName(item.nucleus.instance_id)} · `,
                     link(item.nucleus.page_url, "history"), " · ", link(item.image.viewer_url, "whole image"));
      const lease = document.createElement("span");
      lease.className = "lease";
      lease.dataset.role = "lease";
      caption.append(" · ", lease);
      startLeaseClock(lease);
      // Prediction and probabilities, both branches.
      const p = item.prediction;
      predictionBox.replaceChildren();
      if (p) {
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.style.background = colorOf(p.class_index);
        const name = document.createElement("strong");
        name.textContent = p.class_name;
        predictionBox.append("Predicted ", swatch, name, ` ${pct(p.probability)}`);
        const meta = document.createElement("span");
        meta.className = "muted small";
        meta.textContent = ` · model v${p.model_version ? p.model_version.number : "?"}`;
        predictionBox.append(meta);
      } else {
        replace(predictionBox, el("span", { className: "muted" }, "No prediction for this nucleus."));
      }
      buttons.forEach((b) => {
        const index = Number(b.dataset.classIndex);
        const value = p ? p.probs[index] || 0 : null;
        b.querySelector('[data-role="prob"]').style.width = p ? pct(value) : "0";
        b.querySelector('[data-role="base"]').style.width = p ? pct(p.base_probs[index] || 0) : "0";
        b.querySelector('[data-role="mlp"]').style.width = p && p.mlp_probs ? pct(p.mlp_probs[index] || 0) : "0";
        b.querySelector('[data-role="prob-value"]').textContent = p ? pct(value) : "";
        b.classList.toggle("is-predicted", !!p && p.class_index === index);
        const tags = [];
        if (p && p.mlp_probs && p.branches_disagree) {
          if (p.base_class === index) tags.push("base");
          if (p.mlp_class === index) tags.push("correlation");
        }
        b.querySelector('[data-role="tag"]').textContent = tags.join(" · ");
      });
      root.classList.toggle("show-branches", !!(p && p.mlp_probs && p.branches_disagree));
      if (p && p.mlp_probs && p.branches_disagree) {
        branches.hidden = false;
        branches.textContent = `The branches disagree: base head says ${classOf(p.base_class).name} ` +
          `(${pct(p.base_probs[p.base_class])}), the label-correlation branch ${classOf(p.mlp_class).name} ` +
          `(${pct(p.mlp_probs[p.mlp_class])}).`;
      } else {
        branches.hidden = true;
      }
      renderCurrent();
    }

    // The nucleus in the project's other label sets: its current label there and the model's class.
    function renderOthers() {
      const others = (item && item.other_label_sets) || [];
      othersCard.hidden = !others.length;
      const swatch = (color) => {
        const node = el("span", { className: "swatch" });
        node.style.background = window.dom.cssColor(color, UNLABELLED);
        return node;
      };
      const source = (c) => `${c.source.replace("_", " ")}${c.author ? `, by ${c.author}` : ""}`;
      replace(othersList, ...others.map((other) => el("li", { data: { labelSet: other.name } },
        el("div", { className: "other-name" }, other.name),
        other.current
          ? el("div", { className: "other-line", data: { role: "other-current" } }, "Label ", swatch(other.current.color),
               el("strong", { className: "other-class" }, other.current.class_name),
               el("span", { className: "muted" }, `(${source(other.current)})`))
          : el("div", { className: "other-line muted", data: { role: "other-current" } }, "No label"),
        other.prediction
          ? el("div", { className: "other-line", data: { role: "other-prediction" } }, "Predicted ",
               swatch(other.prediction.color), el("span", { className: "other-class" }, other.prediction.class_name),
               el("span", { className: "muted" }, pct(other.prediction.probability)))
          : el("div", { className: "other-line muted", data: { role: "other-prediction" } }, "No prediction"))));
    }

    function startLeaseClock(el) {
      clearInterval(leaseTimer);
      if (!item || !item.lease) return;
      const until = new Date(item.lease.expires_at).getTime();
      const tick = () => {
        const left = Math.round((until - Date.now()) / 1000);
        if (left <= 0) {
          el.textContent = "reservation expired: others may get this nucleus";
          el.classList.add("expired");
          clearInterval(leaseTimer);
          return;
        }
        el.textContent = `reserved for you ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
      };
      tick();
      leaseTimer = setInterval(tick, 1000);
    }

    // -------------------------------------------------------------- queue
    async function loadNext() {
      busy = true;
      loading.hidden = false;
      let result;
      try {
        result = await api(`${d.nextUrl}?${query({ exclude: outbox.nuclei().join(",") })}`);
      } catch (err) {
        loading.hidden = true;
        setStatus("Could not load the next nucleus (no connection); retrying…", "error");
        setTimeout(loadNext, 3000);
        return;
      }
      busy = false;
      if (result.status === 204) {
        item = null;
        render();
        root.dataset.ready = "true";
        return;
      }
      if (!result.ok) {
        loading.hidden = true;
        setStatus(`Could not load the next nucleus: ${(result.data && result.data.detail) || `HTTP ${result.status}`}`,
                  "error");
        return;
      }
      item = result.data;
      zoomedOut = false;
      render();
      root.dataset.ready = "true";
    }

    function applyProgress() {
      const set = (name, text) => { root.querySelector(`[data-role="${name}"]`).textContent = text; };
      set("today", progress.today == null ? "–" : progress.today);
      set("left", progress.left == null ? "–" : progress.left);
      set("agreement", progress.compared ? `${pct(progress.agreed / progress.compared)} of ${progress.compared}` : "–");
    }
    let progressTimer = null;
    function refreshProgress(delay = 0) {
      clearTimeout(progressTimer);
      progressTimer = setTimeout(async () => {
        try {
          const result = await api(`${d.progressUrl}?${query()}`);
          if (!result.ok) return;
          progress.today = result.data.reviewed_today;
          progress.left = result.data.left;
          progress.compared = result.data.compared_with_model;
          progress.agreed = result.data.agreed_with_model;
          applyProgress();
        } catch (err) { /* the figures refresh after the next decision */ }
      }, delay);
    }

    // -------------------------------------------------------------- decisions
    function countDecision(entry, sign) {
      if (progress.today != null) progress.today += sign;
      if (progress.left != null && d.includeLabelled !== "1") progress.left -= sign;
      if (entry.predicted != null) {
        progress.compared += sign;
        if (entry.predicted === entry.class_index) progress.agreed += sign;
      }
      applyProgress();
    }

    async function decide(classIndex) {
      if (!item || busy) return;
      const cls = classOf(classIndex);
      if (!cls) return;
      const entry = {
        client_id: uid(), nucleus: item.nucleus.id, instance_id: item.nucleus.instance_id, image: item.image.name,
        label_set: labelSet, class_index: cls.index,
        class_name: cls.name, version: item.version, second_opinion: d.includeLabelled === "1",
        predicted: item.prediction ? item.prediction.class_index : null, at: Date.now(),
      };
      outbox.add(entry);
      busy = true;
      setStatus(`Saving ${cls.name}…`, "pending");
      const outcome = await sendDecision(d.labelsUrl, csrf, entry);
      busy = false;
      if (outcome.kind === "saved") {
        outbox.remove(entry.client_id);
        countDecision(entry, +1);
        setStatus(`Saved: ${nucleusName(entry.instance_id, entry.image)} is ${cls.name}.`, "ok");
        refreshProgress(1500);
        await loadNext();
      } else if (outcome.kind === "conflict" && outcome.data.already_decided) {
        // Another reviewer's decision stands: this nucleus is done, the queue moves on.
        outbox.remove(entry.client_id);
        await loadNext();
        setStatus(`${outcome.data.detail}`, "error conflict");
      } else if (outcome.kind === "conflict") {
        outbox.remove(entry.client_id);
        const current = outcome.data.current;
        item.current = current || null;
        item.version = current ? current.version : null;
        renderCurrent();
        draw();
        setStatus(`${outcome.data.detail || "The label changed meanwhile."}`, "error conflict");
      } else if (outcome.kind === "rejected") {
        outbox.remove(entry.client_id);
        setStatus(`Not saved: ${(outcome.data && outcome.data.detail) || `HTTP ${outcome.status}`}`, "error");
      } else {
        setStatus(`Not saved yet (${outcome.detail}): kept in this browser, retrying…`, "error");
        scheduleRetry();
        await loadNext();
      }
    }

    function scheduleRetry(delay = 4000) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(flushOutbox, delay);
    }

    async function flushOutbox() {
      const pending = outbox.items;
      if (!pending.length) return;
      for (const entry of pending) {
        const outcome = await sendDecision(d.labelsUrl, csrf, entry);
        if (outcome.kind === "failed") {
          setStatus(`${outbox.items.length} decision(s) not saved yet (${outcome.detail}); retrying…`, "error");
          scheduleRetry(6000);
          return;
        }
        outbox.remove(entry.client_id);
        if (outcome.kind === "saved") {
          countDecision(entry, +1);
        } else if (outcome.kind === "conflict") {
          setStatus(`A decision saved late was refused: ${outcome.data.detail || "the label changed meanwhile"}`,
                    "error conflict");
        } else {
          setStatus(`A decision saved late was refused: ${(outcome.data && outcome.data.detail) || outcome.status}`,
                    "error");
        }
      }
      if (!outbox.items.length && statusLine.classList.contains("error") && !statusLine.classList.contains("conflict")) {
        setStatus("All decisions saved.", "ok");
      }
      refreshProgress(500);
    }

    function accept() {
      if (!item) return;
      if (!item.prediction) {
        // The user's own keys that choose a class in this label set (static/js/keys.js).
        const classKeys = keys.classes.slice(0, buttons.length);
        setStatus(`No prediction to accept: choose a class with ${classKeys.join(", ") || "the buttons"}.`, "error");
        return;
      }
      decide(item.prediction.class_index);
    }

    async function skip() {
      if (!item || busy) return;
      busy = true;
      try {
        const result = await api(urlFor(d.skipUrl, item.nucleus.id), { method: "POST", csrf, body: { label_set: labelSet } });
        busy = false;
        if (!result.ok) { setStatus(`Could not skip: ${(result.data && result.data.detail) || result.status}`, "error"); return; }
        setStatus(`Skipped ${nucleusName(item.nucleus.instance_id, item.image.name)}.`, "");
        await loadNext();
      } catch (err) {
        busy = false;
        setStatus("Could not skip (no connection).", "error");
      }
    }

    async function undo() {
      if (busy) return;
      // A decision still waiting in the outbox never reached the server: dropping it undoes it.
      const pending = outbox.items;
      if (pending.length) {
        const last = pending[pending.length - 1];
        outbox.remove(last.client_id);
        setStatus(`Unsaved decision on ${nucleusName(last.instance_id, last.image)} dropped.`, "ok");
        return;
      }
      busy = true;
      let result;
      try {
        result = await api(d.undoUrl, { method: "POST", csrf, body: { label_set: labelSet, client_id: uid() } });
      } catch (err) {
        busy = false;
        setStatus("Could not undo (no connection).", "error");
        return;
      }
      busy = false;
      if (!result.ok) {
        setStatus(`Nothing undone: ${(result.data && result.data.detail) || `HTTP ${result.status}`}`, "error");
        return;
      }
      const undone = result.data.undone;
      const back = result.data.restored ? `back to ${result.data.restored.class_name}` : "unlabelled again";
      setStatus(`Undone: ${undone.class_name} on ${nucleusName(result.data.instance_id, result.data.image_name)} (${back}).`, "ok");
      if (progress.today != null) progress.today -= 1;
      applyProgress();
      refreshProgress(1000);
      await loadNext();
    }

    function toggleHelp() {
      if (help.open) help.close(); else help.showModal();
    }

    // -------------------------------------------------------------- input
    buttons.forEach((b) => b.addEventListener("click", () => { b.blur(); decide(Number(b.dataset.classIndex)); }));
    const actions = { accept, skip, undo, help: toggleHelp, zoom: () => setZoom(!zoomedOut) };
    document.querySelectorAll("[data-action]").forEach((b) => b.addEventListener("click", () => {
      b.blur();
      actions[b.dataset.action]();
    }));
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      const tag = (e.target.tagName || "").toLowerCase();
      if (["input", "select", "textarea"].includes(tag)) return;
      // The user's own keys (static/js/keys.js): class keys by position, then the actions.
      const meant = window.reviewKeys.meaning(keys, e);
      if (help.open && !(meant && meant.action === "help")) return;
      let handled = true;
      if (meant && meant.classPosition != null) {
        const button = buttons[meant.classPosition];
        if (button) decide(Number(button.dataset.classIndex)); else handled = false;
      } else if (meant && meant.action === "accept") accept();
      else if (meant && meant.action === "skip") skip();
      else if (meant && meant.action === "undo") undo();
      else if (meant && meant.action === "help") toggleHelp();
      else if (meant && meant.action === "zoom") setZoom(!zoomedOut);
      else handled = false;
      if (handled) e.preventDefault();
    });
    // The mouse wheel over the tissue: back (down) zooms out to the neighbourhood, forward comes close up.
    stage.addEventListener("wheel", (e) => {
      if (!item || e.deltaY === 0) return;
      e.preventDefault();
      setZoom(e.deltaY > 0);
    }, { passive: false });
    crop.addEventListener("error", () => { if (item) setStatus("The tissue image could not be loaded.", "error"); });
    // Leaving the page gives the nucleus on screen back to the queue at once (else its lease expires).
    window.addEventListener("pagehide", () => {
      if (!item || outbox.nuclei().includes(item.nucleus.id)) return;
      try {
        fetch(urlFor(d.releaseUrl, item.nucleus.id), {
          method: "POST", keepalive: true, credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
          body: JSON.stringify({ label_set: labelSet }),
        });
      } catch (err) { /* the lease expires by itself */ }
    });
    window.addEventListener("online", () => flushOutbox());

    applyProgress();
    flushOutbox().then(loadNext);
    refreshProgress();
  }

  const review = document.getElementById("review");
  if (review) reviewPage(review);
})();
