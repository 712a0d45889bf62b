// The gallery: the model's predictions as a film strip (GET review/gallery/), sorted, grouped and
// filtered on the server. A card (gallery_card.js) is agreed with (its predicted class becomes the
// decision) or disagreed with (another class chosen); "accept all on this page" agrees with every card.
// Decisions go to review/bulk/, the same domain function as the review page, through the same outbox
// (outbox.js): kept in localStorage until the server answers, the same client_ids on a retry making it
// harmless. Keys: keys.js.
import { api } from "./api.js";
import { cssColor, el } from "./dom.js";
import { galleryCard } from "./gallery_card.js";
import * as reviewKeys from "./keys.js";
import { Outbox, clientId, sendDecisions } from "./outbox.js";

const FILTERS = ["class_name", "sort", "order", "group", "status", "reviewer", "min_confidence", "max_confidence"];

function galleryPage(root) {
  const d = root.dataset;
  const labelSet = d.labelSet;
  const role = (name) => root.querySelector(`[data-role="${name}"]`);
  const grid = role("grid"), tabs = role("tabs"), statusLine = role("status"), countLine = role("selected");
  const filters = role("filters");
  const help = document.querySelector('[data-role="help"]');
  const classes = JSON.parse(document.getElementById("gallery-classes").textContent);
  const keys = reviewKeys.load();
  const outbox = new Outbox(`review-gallery-outbox:${d.project}:${labelSet}:${d.user}`);

  // What the strip shows; kept in the address bar so that a reload shows the same, and each page or filter
  // is a step of the browser's history (Back goes to the previous page of cards, not out of the gallery).
  const state = { page: 1 };
  function readAddress() {
    const query = new URLSearchParams(window.location.search);
    for (const name of FILTERS) state[name] = query.get(name) || "";
    if (!state.class_name) state.class_name = d.className || "";
    state.page = Math.max(1, Number(query.get("page")) || 1);
  }
  readAddress();
  let firstLoad = true;
  let data = null;
  let counts = null;
  let current = null;  // the card the keys act on

  const setStatus = (text, kind = "") => { statusLine.textContent = text; statusLine.className = `small ${kind}`; };
  const tiles = () => Array.from(grid.querySelectorAll(".tile"));
  // Cards this reviewer may decide (not another reviewer's decision in the reviewed strip).
  const decidable = () => tiles().filter((t) => t._decidable);
  const selected = () => decidable().filter((t) => t.querySelector("input[type=checkbox]").checked);
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
    setStatus("", "");  // "Saved 1." was about the cards shown before
    syncForm();
  }
  filters.addEventListener("change", (event) => { readForm(event.target.name); load(); });
  // Back and Forward: the strip of that step, from its address.
  window.addEventListener("popstate", () => { readAddress(); syncForm(); load(); });
  filters.addEventListener("submit", (event) => { event.preventDefault(); readForm(""); load(); });

  function params(extra = {}) {
    const result = new URLSearchParams({ label_set: labelSet });
    for (const name of FILTERS) if (state[name]) result.set(name, state[name]);
    if (state.page > 1) result.set("page", state.page);
    for (const [k, v] of Object.entries(extra)) result.set(k, v);
    return result;
  }

  // ---------------------------------------------------------------- loading
  // Filters changed in quick succession start loads that may answer out of order: only the latest one's
  // answer is drawn (an earlier one's cards must not replace the answer to the filters now shown).
  let latestLoad = 0;
  // A page past the last is a 404 (as in the API's other lists): the last page's cards all decided, or an old
  // address. The page before it is shown instead, in place of the address; a second miss goes to the first page.
  let pastTheEnd = 0;

  async function load() {
    root.dataset.ready = "false";
    const mine = ++latestLoad;
    let answer;
    try {
      answer = await api(`${d.galleryUrl}?${params()}`);
      if (mine !== latestLoad) return;
      data = answer;
    } catch (err) {
      if (mine !== latestLoad) return;
      if (err.status === 404 && state.page > 1) {
        pastTheEnd += 1;
        state.page = pastTheEnd > 1 ? 1 : state.page - 1;
        load();
        return;
      }
      pastTheEnd = 0;
      if (!err.status) {
        setStatus("Could not load the gallery (no connection).", "error");
        return;
      }
      setStatus(`Could not load the gallery: ${err.detail || err.status}`, "error");
      // The filters refused (a minimum above the maximum): the cards of the earlier filters must not stay,
      // as if they were the answer to these, and be decided.
      grid.replaceChildren(el("p", { className: "muted" }, "No cards: fix the filters above."));
      choose(null);
      updateCount();
      root.dataset.ready = "true";
      return;
    }
    const shown = params();
    shown.delete("label_set");
    shown.set("label_set", labelSet);
    const address = `${window.location.pathname}?${shown}`;
    // The first load only tidies the address; later ones that show something else add a history step (not the
    // page shown in place of one past the last).
    const step = !firstLoad && !pastTheEnd && `?${shown}` !== window.location.search;
    pastTheEnd = 0;
    window.history[step ? "pushState" : "replaceState"](null, "", address);
    firstLoad = false;
    renderTabs();
    renderGrid();
    root.dataset.ready = "true";
    if (!counts) loadCounts();
  }

  // The per-class counts (unreviewed nuclei) are slower: fetched after the cards.
  async function loadCounts() {
    try {
      const answer = await api(`${d.galleryUrl}?${new URLSearchParams({ label_set: labelSet, page_size: 1, counts: 1 })}`);
      counts = answer.counts;
      renderTabs();
    } catch (err) { /* the tabs simply show no counts */ }
  }

  function renderTabs() {
    tabs.replaceChildren();
    const tab = (name, label, color, count) => {
      const active = state.class_name === name;
      const button = el("button", { type: "button", className: `tab${active ? " active" : ""}`,
                                    "aria-pressed": active ? "true" : "false", data: { className: name } },
                        color ? el("span", { className: "swatch" }) : null, label,
                        count == null ? null : el("span", { className: "visually-hidden" }, ", "),
                        el("span", { className: "count" }, count == null ? "" : String(count)));
      if (color) button.style.setProperty("--class-color", cssColor(color));
      button.addEventListener("click", () => { state.class_name = name; state.page = 1; load(); });
      tabs.appendChild(button);
    };
    // The counts are of the nuclei not reviewed yet: beside the reviewed ones they would read as theirs.
    const shown = filters.elements.status.value === "reviewed" ? null : counts;
    tab("", "All classes", null, shown ? Object.values(shown).reduce((a, b) => a + b, 0) : null);
    for (const cls of classes) tab(cls.name, cls.name, cls.color, shown ? shown[cls.name] : null);
  }

  // ---------------------------------------------------------------- the strip
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
        grid.append(el("h2", { className: "gallery-group", data: { group } }, item.group.label));
      }
      grid.append(galleryCard(item, classes, { user: d.user, save, choose, selectionChanged: updateCount }));
    }
    role("pager").hidden = !(data.has_more || state.page > 1);
    root.querySelector('[data-action="previous"]').disabled = state.page <= 1;
    root.querySelector('[data-action="next"]').disabled = !data.has_more;
    role("page").textContent = `page ${state.page}`;
    updateCount();
  }

  // The card the keys act on: marked for the eye by its border and for a screen reader by aria-current, with
  // the focus on its Agree (a class key or Enter then decides a card the user can tell).
  function choose(tile) {
    if (current) { current.classList.remove("is-current"); current.removeAttribute("aria-current"); }
    current = tile;
    if (tile) {
      tile.classList.add("is-current");
      tile.setAttribute("aria-current", "true");
      tile.scrollIntoView({ block: "nearest" });
      tile.querySelector("button.agree")?.focus({ preventScroll: true });
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
  // What the outbox holds left from before (a failed save, a closed tab): sent as one batch.
  async function flushOutbox() {
    const left = outbox.items;
    if (!left.length) return;
    const outcome = await sendDecisions(d.bulkUrl, { label_set: labelSet, decisions: left });
    if (outcome.kind === "failed") {
      outbox.retryLater(flushOutbox, 6000);
      return;
    }
    // Saved, or refused for good (a retry cannot fix a 4xx): either way they leave the outbox.
    outbox.remove(...left.map((x) => x.client_id));
    if (outcome.kind === "saved") setStatus(`Saved ${outcome.data.saved} decision(s) left over from before.`, "ok");
  }

  // Nuclei whose decision is on its way: a double click or a repeated Enter must not send them again
  // (the second answer, all refusals, would hide the first one's "saved").
  const saving = new Set();

  async function save(allChoices) {
    const choices = allChoices.filter((c) => !saving.has(c.item.nucleus));
    if (!choices.length) return;
    choices.forEach((c) => saving.add(c.item.nucleus));
    try {
      await send(choices);
    } finally {
      choices.forEach((c) => saving.delete(c.item.nucleus));
    }
  }

  async function send(choices) {
    // model_version: the version whose predictions the cards show, against which the decisions are scored.
    const shown = data.model_version ? data.model_version.number : null;
    const decisions = choices.map((c) => ({ nucleus: c.item.nucleus, class_name: c.class_name,
                                            version: c.item.version, client_id: clientId(), model_version: shown }));
    outbox.add(...decisions);
    setStatus(`Saving ${decisions.length}…`, "pending");
    const outcome = await sendDecisions(d.bulkUrl, { label_set: labelSet, decisions });
    if (outcome.kind === "failed") {
      setStatus(`Not saved yet (${outcome.detail}): kept in this browser, retrying…`, "error");
      outbox.retryLater(flushOutbox, outcome.status ? 6000 : 4000);
      return;
    }
    outbox.remove(...decisions.map((x) => x.client_id));
    if (outcome.kind !== "saved") {
      setStatus(`Not saved: ${outcome.data.detail || outcome.status}`, "error");
      return;
    }
    const answer = outcome.data;
    let refused = 0;
    const reviewedView = data.status === "reviewed";
    for (const r of answer.results) {
      const choice = choices.find((c) => c.item.nucleus === r.nucleus);
      if (r.status === 200 || r.status === 201) {
        if (choice.tile === current) choose(choice.tile.nextElementSibling && choice.tile.nextElementSibling.classList.contains("tile") ? choice.tile.nextElementSibling : null);
        if (!reviewedView) {
          // A keyboard user's focus was on this card (its Agree or Disagree): it moves on to the next card's
          // Agree, or the previous one's, instead of falling out of the page with the card.
          const hadFocus = choice.tile.contains(document.activeElement);
          const neighbour = [choice.tile.nextElementSibling, choice.tile.previousElementSibling]
            .find((node) => node && node.classList.contains("tile") && !node.classList.contains("refused"));
          choice.tile.remove();
          if (hadFocus && neighbour) neighbour.querySelector("button.agree, select.move")?.focus();
        }
        if (counts && !reviewedView && choice.item.class_name in counts) counts[choice.item.class_name] = Math.max(0, counts[choice.item.class_name] - 1);
      } else {
        refused += 1;
        choice.tile.classList.add("refused");
        // In words on the card: red and a tooltip told nobody who cannot see the one or reach the other.
        choice.tile.querySelector('[data-role="refusal"]')?.remove();
        choice.tile.append(el("div", { className: "tile-refusal", data: { role: "refusal" } },
                              `Not saved: ${r.detail || `HTTP ${r.status}`}`));
      }
    }
    setStatus(`Saved ${answer.saved}${refused ? `; ${refused} refused (the reason is on each card)` : ""}.`,
              refused ? "error" : "ok");
    tidyGroups();
    renderTabs();
    updateCount();
    // Reviewed cards show the new decision after a reload; an emptied page brings the next cards.
    // (Not while a refused card is red: the reload would take its reason away.)
    if ((reviewedView && !refused) || !tiles().length) load();
  }

  // ---------------------------------------------------------------- buttons and keys
  const allTiles = (list) => list.map((tile) => ({ item: tile._item, tile, class_name: tile._item.class_name }));
  // Many decisions at once, with no undo but one U press each on the review page: ask first.
  root.querySelector('[data-action="accept-page"]').addEventListener("click", () => {
    const cards = decidable();
    if (cards.length > 1 && !window.confirm(`Agree with the model on all ${cards.length} cards of this page? `
        + "Each becomes your decision (undo them one by one with U on the review page).")) return;
    save(allTiles(cards));
  });
  root.querySelector('[data-action="accept-selected"]').addEventListener("click", () => save(allTiles(selected())));
  root.querySelector('[data-action="select-all"]').addEventListener("click", () => {
    decidable().forEach((t) => { t.querySelector("input").checked = true; t.classList.add("selected"); });
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
  // From the keyboard it keeps the focus, which the dialog gives back to it when it closes.
  if (helpButton) helpButton.addEventListener("click", (event) => {
    reviewKeys.unfocusAfterMouseClick(event, helpButton);
    toggleHelp();
  });

  document.addEventListener("keydown", (e) => {
    if (reviewKeys.notForReview(e)) return;
    const meant = reviewKeys.meaning(keys, e);
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
    else if (meant.action === "accept" && current && current._decidable) save(allTiles([current]));
    else if (meant.classPosition != null && current && current._decidable && classes[meant.classPosition]) {
      save([{ item: current._item, tile: current, class_name: classes[meant.classPosition].name }]);
    } else return;
    e.preventDefault();
  });
  outbox.flushWhenOnline(flushOutbox);

  syncForm();
  flushOutbox().then(load);
}

const gallery = document.getElementById("gallery");
if (gallery) galleryPage(gallery);
