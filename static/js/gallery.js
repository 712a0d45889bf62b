// The gallery: the model's predictions as a film strip (GET review/gallery/), sorted, grouped and
// filtered on the server. A card is agreed with (its predicted class becomes the decision) or
// disagreed with (another class chosen); "accept all on this page" agrees with every card. Decisions
// go to review/bulk/, the same domain function as the review page. Keys: static/js/keys.js.
//
// Decisions sent but not confirmed stay in localStorage until the server answers (the same
// client_ids on a retry make it harmless).
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const UNLABELLED = "#9e9e9e";
  const FILTERS = ["class_name", "sort", "order", "group", "status", "reviewer", "min_confidence", "max_confidence"];
  const { el } = window.dom;

  function uid() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }
  const pct = (p) => `${Math.round(p * 100)}%`;

  async function api(url, { method = "GET", body, csrf, keepalive = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRFToken"] = csrf;
    const response = await fetch(url, { method, headers, credentials: "same-origin", keepalive,
                                        body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    return { status: response.status, ok: response.ok, data };
  }

  function galleryPage(root) {
    const d = root.dataset;
    const csrf = d.csrf;
    const labelSet = d.labelSet;
    const role = (name) => root.querySelector(`[data-role="${name}"]`);
    const grid = role("grid"), tabs = role("tabs"), statusLine = role("status"), countLine = role("selected");
    const filters = role("filters");
    const help = document.querySelector('[data-role="help"]');
    const classes = JSON.parse(document.getElementById("gallery-classes").textContent);
    const keys = window.reviewKeys.load();
    const outboxKey = `review-gallery-outbox:${d.project}:${labelSet}:${d.user}`;

    // What the strip shows; kept in the address bar so that a reload shows the same.
    const state = { page: 1 };
    const query = new URLSearchParams(window.location.search);
    for (const name of FILTERS) state[name] = query.get(name) || "";
    if (!state.class_name) state.class_name = d.className || "";
    state.page = Math.max(1, Number(query.get("page")) || 1);
    let data = null;
    let counts = null;
    let current = null;  // the card the keys act on

    const setStatus = (text, kind = "") => { statusLine.textContent = text; statusLine.className = `small ${kind}`; };
    const colorOf = (index) => (classes.find((c) => c.index === index) || {}).color || UNLABELLED;
    const tiles = () => Array.from(grid.querySelectorAll(".tile"));
    const selected = () => tiles().filter((t) => t.querySelector("input[type=checkbox]").checked);
    const updateCount = () => { countLine.textContent = `${selected().length} selected`; };

    // ---------------------------------------------------------------- the filter form
    function syncForm() {
      filters.elements.sort.value = `${state.sort || "confidence"}:${state.order || (state.sort === "margin" ? "asc" : "desc")}`;
      filters.elements.group.value = state.group;
      filters.elements.status.value = state.status || (state.reviewer || state.group === "reviewer" ? "reviewed" : "unreviewed");
      filters.elements.reviewer.value = state.reviewer;
      filters.elements.min_confidence.value = state.min_confidence === "" ? "" : Math.round(Number(state.min_confidence) * 100);
      filters.elements.max_confidence.value = state.max_confidence === "" ? "" : Math.round(Number(state.max_confidence) * 100);
    }
    function readForm(changed) {
      const f = filters.elements;
      [state.sort, state.order] = f.sort.value.split(":");
      state.group = f.group.value;
      state.reviewer = f.reviewer.value;
      state.status = f.status.value;
      // A reviewer, or grouping by reviewer, means reviewed nuclei; "not reviewed yet" has neither.
      if (changed === "status" && state.status === "unreviewed") {
        state.reviewer = "";
        if (state.group === "reviewer") state.group = "";
      } else if ((changed === "reviewer" && state.reviewer) || (changed === "group" && state.group === "reviewer")) {
        state.status = "reviewed";
      }
      const fraction = (input) => (input.value === "" ? "" : String(Math.min(Math.max(Number(input.value), 0), 100) / 100));
      state.min_confidence = fraction(f.min_confidence);
      state.max_confidence = fraction(f.max_confidence);
      state.page = 1;
      syncForm();
    }
    filters.addEventListener("change", (event) => { readForm(event.target.name); load(); });
    filters.addEventListener("submit", (event) => { event.preventDefault(); readForm(""); load(); });

    function params(extra = {}) {
      const result = new URLSearchParams({ label_set: labelSet });
      for (const name of FILTERS) if (state[name]) result.set(name, state[name]);
      if (state.page > 1) result.set("page", state.page);
      for (const [k, v] of Object.entries(extra)) result.set(k, v);
      return result;
    }

    // ---------------------------------------------------------------- loading
    async function load() {
      root.dataset.ready = "false";
      let result;
      try {
        result = await api(`${d.galleryUrl}?${params()}`);
      } catch (err) {
        setStatus("Could not load the gallery (no connection).", "error");
        return;
      }
      if (!result.ok) {
        setStatus(`Could not load the gallery: ${(result.data && result.data.detail) || result.status}`, "error");
        root.dataset.ready = "true";
        return;
      }
      data = result.data;
      const shown = params();
      shown.delete("label_set");
      shown.set("label_set", labelSet);
      window.history.replaceState(null, "", `${window.location.pathname}?${shown}`);
      renderTabs();
      renderGrid();
      root.dataset.ready = "true";
      if (!counts) loadCounts();
    }

    // The per-class counts (unreviewed nuclei) are slower: fetched after the cards.
    async function loadCounts() {
      try {
        const result = await api(`${d.galleryUrl}?${new URLSearchParams({ label_set: labelSet, page_size: 1, counts: 1 })}`);
        if (!result.ok) return;
        counts = result.data.counts;
        renderTabs();
      } catch (err) { /* the tabs simply show no counts */ }
    }

    function renderTabs() {
      tabs.replaceChildren();
      const tab = (name, label, color, count) => {
        const button = el("button", { type: "button", className: `tab${state.class_name === name ? " active" : ""}`,
                                      data: { className: name } },
                          color ? el("span", { className: "swatch" }) : null, label,
                          el("span", { className: "count" }, count == null ? "" : String(count)));
        if (color) button.style.setProperty("--class-color", window.dom.cssColor(color));
        button.addEventListener("click", () => { state.class_name = name; state.page = 1; load(); });
        tabs.appendChild(button);
      };
      tab("", "All classes", null, counts ? Object.values(counts).reduce((a, b) => a + b, 0) : null);
      for (const cls of classes) tab(cls.name, cls.name, cls.color, counts ? counts[cls.name] : null);
    }

    // ---------------------------------------------------------------- the strip
    function card(item) {
      const tile = el("div", { className: "tile", data: { nucleusId: item.nucleus, predicted: item.class_name } });
      const box = el("input", { type: "checkbox", "aria-label": `select nucleus ${item.instance_id} in ${item.image_name}` });
      box.addEventListener("change", () => { tile.classList.toggle("selected", box.checked); updateCount(); });
      const img = el("img", { src: item.crop_url, alt: `nucleus ${item.instance_id} in ${item.image_name}`, loading: "lazy" });
      const overlay = document.createElementNS(SVG, "svg");
      const [x0, y0, x1, y1] = item.region;
      overlay.setAttribute("viewBox", `${x0 - 0.5} ${y0 - 0.5} ${x1 - x0} ${y1 - y0}`);
      const shape = document.createElementNS(SVG, "polygon");
      shape.setAttribute("points", item.outline.map(([x, y]) => `${x},${y}`).join(" "));
      shape.setAttribute("class", "target");
      shape.setAttribute("stroke", colorOf(item.class_index));
      overlay.appendChild(shape);
      const picture = el("span", { className: "tile-img" }, img, overlay);
      const predicted = el("div", { className: "tile-class" },
                           el("a", { href: item.page_url, title: "open the nucleus and its history" }, item.class_name),
                           ` ${pct(item.probability)}`);
      const scores = el("div", { className: "tile-scores muted" },
                        `margin ${pct(item.margin)} · disagreement ${item.disagreement.toFixed(2)}`);
      const decided = item.current && item.current.source === "review"
        ? el("div", { className: "tile-decided", data: { role: "decided" } },
             `decided: ${item.current.class_name}${item.current.author ? ` by ${item.current.author}` : ""}`)
        : null;
      const agree = el("button", { type: "button", className: "agree small-button", title: `Agree: ${item.class_name}` }, "Agree");
      agree.addEventListener("click", () => save([{ item, tile, class_name: item.class_name }]));
      const move = el("select", { className: "move", "aria-label": "disagree: choose another class" },
                      el("option", { value: "" }, "Disagree…"),
                      ...classes.filter((c) => c.index !== item.class_index)
                        .map((c) => el("option", { value: c.name }, c.name)));
      move.addEventListener("change", () => { if (move.value) save([{ item, tile, class_name: move.value }]); });
      tile.append(...[el("label", { className: "tile-pick" }, box, picture), predicted, scores, decided,
                      el("div", { className: "tile-meta" }, agree, move)].filter((node) => node != null));
      tile.addEventListener("click", (event) => {
        if (!event.target.closest("select, button, a, input")) choose(tile);
      });
      tile._item = item;
      return tile;
    }

    function renderGrid() {
      grid.replaceChildren();
      current = null;
      if (!data.model_version) {
        grid.append(el("p", { className: "muted" }, "The project has no active model: train one to get predictions."));
      } else if (!data.items.length) {
        const what = data.status === "reviewed" ? "reviewed" : "unreviewed";
        grid.append(el("p", { className: "muted" }, data.class_name
          ? `No ${what} nuclei predicted as ${data.class_name} on this page.`
          : `No ${what} nuclei on this page with these filters.`));
      }
      let group = null;
      for (const item of data.items) {
        if (item.group && item.group.key !== group) {
          group = item.group.key;
          grid.append(el("h3", { className: "gallery-group", data: { group } }, item.group.label));
        }
        grid.append(card(item));
      }
      role("pager").hidden = !(data.has_more || state.page > 1);
      root.querySelector('[data-action="previous"]').disabled = state.page <= 1;
      root.querySelector('[data-action="next"]').disabled = !data.has_more;
      role("page").textContent = `page ${state.page}`;
      updateCount();
    }

    function choose(tile) {
      if (current) current.classList.remove("is-current");
      current = tile;
      if (tile) {
        tile.classList.add("is-current");
        tile.scrollIntoView({ block: "nearest" });
      }
    }

    // Headers left without cards (all of them decided) go too.
    function tidyGroups() {
      grid.querySelectorAll(".gallery-group").forEach((header) => {
        const next = header.nextElementSibling;
        if (!next || next.classList.contains("gallery-group")) header.remove();
      });
    }

    // ---------------------------------------------------------------- saving
    const pending = () => { try { return JSON.parse(localStorage.getItem(outboxKey) || "[]"); } catch (err) { return []; } };
    const keep = (list) => (list.length ? localStorage.setItem(outboxKey, JSON.stringify(list)) : localStorage.removeItem(outboxKey));
    let retryTimer = null;
    async function flushOutbox() {
      const left = pending();
      if (!left.length) return;
      try {
        const result = await api(d.bulkUrl, { method: "POST", csrf, body: { label_set: labelSet, decisions: left } });
        if (result.ok || (result.status >= 400 && result.status < 500)) keep([]);
        if (result.ok) setStatus(`Saved ${result.data.saved} decision(s) left over from before.`, "ok");
      } catch (err) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(flushOutbox, 6000);
      }
    }

    async function save(choices) {
      if (!choices.length) return;
      const decisions = choices.map((c) => ({ nucleus: c.item.nucleus, class_name: c.class_name,
                                              version: c.item.version, client_id: uid() }));
      keep([...pending(), ...decisions]);
      setStatus(`Saving ${decisions.length}…`, "pending");
      let result;
      try {
        result = await api(d.bulkUrl, { method: "POST", csrf, keepalive: true, body: { label_set: labelSet, decisions } });
      } catch (err) {
        setStatus("Not saved yet (no connection): kept in this browser, retrying…", "error");
        clearTimeout(retryTimer);
        retryTimer = setTimeout(flushOutbox, 4000);
        return;
      }
      if (result.status >= 500) {
        setStatus(`Not saved yet (HTTP ${result.status}): kept in this browser, retrying…`, "error");
        clearTimeout(retryTimer);
        retryTimer = setTimeout(flushOutbox, 6000);
        return;
      }
      const sent = new Set(decisions.map((x) => x.client_id));
      keep(pending().filter((x) => !sent.has(x.client_id)));
      if (!result.ok) {
        setStatus(`Not saved: ${(result.data && result.data.detail) || result.status}`, "error");
        return;
      }
      let refused = 0;
      const reviewedView = data.status === "reviewed";
      for (const r of result.data.results) {
        const choice = choices.find((c) => c.item.nucleus === r.nucleus);
        if (r.status === 200 || r.status === 201) {
          if (choice.tile === current) choose(choice.tile.nextElementSibling && choice.tile.nextElementSibling.classList.contains("tile") ? choice.tile.nextElementSibling : null);
          if (!reviewedView) choice.tile.remove();
          if (counts && !reviewedView && choice.item.class_name in counts) counts[choice.item.class_name] = Math.max(0, counts[choice.item.class_name] - 1);
        } else {
          refused += 1;
          choice.tile.classList.add("refused");
          choice.tile.title = r.detail || "";
        }
      }
      setStatus(`Saved ${result.data.saved}${refused ? `; ${refused} refused (see the red cards)` : ""}.`,
                refused ? "error" : "ok");
      tidyGroups();
      renderTabs();
      updateCount();
      // Reviewed cards show the new decision after a reload; an emptied page brings the next cards.
      if (reviewedView || !tiles().length) load();
    }

    // ---------------------------------------------------------------- buttons and keys
    const allTiles = (list) => list.map((tile) => ({ item: tile._item, tile, class_name: tile._item.class_name }));
    root.querySelector('[data-action="accept-page"]').addEventListener("click", () => save(allTiles(tiles())));
    root.querySelector('[data-action="accept-selected"]').addEventListener("click", () => save(allTiles(selected())));
    root.querySelector('[data-action="select-all"]').addEventListener("click", () => {
      tiles().forEach((t) => { t.querySelector("input").checked = true; t.classList.add("selected"); });
      updateCount();
    });
    root.querySelector('[data-action="clear"]').addEventListener("click", () => {
      tiles().forEach((t) => { t.querySelector("input").checked = false; t.classList.remove("selected"); });
      updateCount();
    });
    root.querySelector('[data-action="previous"]').addEventListener("click", () => { state.page -= 1; load(); });
    root.querySelector('[data-action="next"]').addEventListener("click", () => { state.page += 1; load(); });
    const helpButton = document.querySelector('[data-action="help"]');
    const toggleHelp = () => { if (help.open) help.close(); else help.showModal(); };
    if (helpButton) helpButton.addEventListener("click", () => { helpButton.blur(); toggleHelp(); });

    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if (["input", "select", "textarea"].includes((e.target.tagName || "").toLowerCase())) return;
      const meant = window.reviewKeys.meaning(keys, e);
      if (help.open) {
        if (meant && meant.action === "help") { toggleHelp(); e.preventDefault(); }
        return;
      }
      const list = tiles();
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const at = list.indexOf(current);
        const next = e.key === "ArrowRight" ? Math.min(at + 1, list.length - 1) : Math.max(at - 1, 0);
        choose(list[next] || null);
        e.preventDefault();
        return;
      }
      if (!meant) return;
      if (meant.action === "help") toggleHelp();
      else if (meant.action === "accept" && current) save(allTiles([current]));
      else if (meant.classPosition != null && current && classes[meant.classPosition]) {
        save([{ item: current._item, tile: current, class_name: classes[meant.classPosition].name }]);
      } else return;
      e.preventDefault();
    });
    window.addEventListener("online", () => flushOutbox());

    syncForm();
    flushOutbox().then(load);
  }

  const gallery = document.getElementById("gallery");
  if (gallery) galleryPage(gallery);
})();
