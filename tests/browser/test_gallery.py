"""The gallery as a film strip, in real Chromium: sort by margin, filter by class, agree with a card,
disagree with another, accept the rest of the page; and review keys rebound by the user and used by
the review page. Each checks the Label rows in the database."""

from __future__ import annotations

import pytest

from tests.browser.conftest import wait_until
from tests.webapp.review_project import unlabelled_in
from webapp.datasets.models import CurrentLabel, Label

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def tile_ids(page) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all("#gallery .tile", "els => els.map(e => e.dataset.nucleusId)")]


def wait_loaded(page, fragment: str):
    wait_until(page, f"location.search.includes({fragment!r}) && "
                     "document.querySelector('#gallery').dataset.ready === 'true'")


def test_sort_by_margin_filter_by_class_agree_disagree_and_accept_the_page(rp, logged_in_page, live_server, users):
    page = logged_in_page
    owner = users["owner"]
    free = set(unlabelled_in(rp, rp.breast_set))
    rows = [p for (n, ls), p in rp.predictions.items() if ls == rp.breast_set.pk and n in free]
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    assert page.locator("#gallery .tab.active").inner_text().startswith("All classes")

    # Sort: smallest margin first (stored margin = 1 - gap, highest first).
    page.select_option("select[name=sort]", "margin:asc")
    wait_loaded(page, "sort=margin")
    by_margin = sorted(rows, key=lambda p: (-p.margin, -p.pk))
    assert tile_ids(page) == [p.nucleus_id for p in by_margin][:len(tile_ids(page))]

    # Filter: predicted "dead" only, still by margin.
    page.locator("#gallery .tab", has_text="dead").click()
    wait_loaded(page, "class_name=dead")
    dead = [p for p in by_margin if p.class_index == 2]
    assert len(dead) >= 3
    shown = tile_ids(page)
    assert shown == [p.nucleus_id for p in dead]
    assert set(page.eval_on_selector_all("#gallery .tile", "els => els.map(e => e.dataset.predicted)")) == {"dead"}
    texts = page.locator("#gallery .tile").all_inner_texts()
    assert all("dead" in text and "margin" in text and "null" not in text for text in texts), texts
    page.screenshot(path="/tmp/gallery-strip.png", full_page=True)

    # Agree with the first card: its predicted class becomes the decision.
    agreed, disagreed, *rest = shown
    page.locator(f".tile[data-nucleus-id='{agreed}'] button.agree").click()
    page.wait_for_selector(f".tile[data-nucleus-id='{agreed}']", state="detached")
    label = CurrentLabel.objects.select_related("label").get(nucleus_id=agreed, label_set=rp.breast_set).label
    assert (label.class_index, label.source, label.author_id) == (2, "review", owner.pk)

    # Disagree with the second: choose "connective" instead.
    page.locator(f".tile[data-nucleus-id='{disagreed}'] select.move").select_option("connective")
    page.wait_for_selector(f".tile[data-nucleus-id='{disagreed}']", state="detached")
    label = CurrentLabel.objects.select_related("label").get(nucleus_id=disagreed, label_set=rp.breast_set).label
    assert (label.class_index, label.source, label.author_id) == (1, "review", owner.pk)

    # Accept all on this page: every remaining card agrees with its prediction. A double click sends the
    # decisions once (a second batch, all refused, used to replace "Saved" with "refused").
    assert tile_ids(page) == rest
    batches, questions = [], []
    page.on("request", lambda request: batches.append(request.url) if "/review/bulk/" in request.url else None)
    # It asks first: declined, nothing is sent.
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("[data-action=accept-page]")
    page.wait_for_timeout(300)
    assert batches == [] and questions[0].startswith(f"Agree with the model on all {len(rest)} cards of this page?")
    page.on("dialog", lambda dialog: dialog.accept())
    page.dblclick("[data-action=accept-page]")
    wait_until(page, "document.querySelector('#gallery [data-role=status]').textContent.startsWith('Saved')")
    wait_until(page, "document.querySelector('#gallery').dataset.ready === 'true' && "
                     "!document.querySelector('#gallery .tile')")
    page.wait_for_timeout(500)
    assert len(batches) == 1, batches
    assert page.inner_text("#gallery [data-role=status]") == f"Saved {len(rest)}."
    reviews = dict(Label.objects.filter(label_set=rp.breast_set, source="review", author=owner)
                   .values_list("nucleus_id", "class_index"))
    assert reviews == {agreed: 2, disagreed: 1, **{n: 2 for n in rest}}
    assert page.inner_text("#gallery .gallery-grid") == "No unreviewed nuclei predicted as dead on this page."

    # The reviewed strip, grouped by reviewer, shows them under the owner's name with the decisions.
    page.select_option("select[name=group]", "reviewer")
    wait_loaded(page, "group=reviewer")
    assert page.locator("#gallery .gallery-group").all_inner_texts() == ["owner"]
    page.screenshot(path="/tmp/gallery-reviewed.png", full_page=True)
    assert sorted(tile_ids(page)) == sorted([agreed, disagreed, *rest])
    assert page.locator(f".tile[data-nucleus-id='{disagreed}'] [data-role=decided]").inner_text() == \
        "decided: connective by owner"


def test_a_rebound_key_is_listed_in_the_help_and_used_by_the_review_page(rp, logged_in_page, live_server, users):
    page = logged_in_page
    review_url = f"/projects/{rp.project.pk}/review/?label_set=breast&strategy=margin"
    page.goto(f"{live_server.url}{review_url}")
    page.wait_for_selector("#review[data-ready=true]")
    # The help's "Change your keys" link leads to the keys page and back.
    page.keyboard.press("?")
    page.wait_for_selector("dialog[data-role=help][open]")
    assert page.inner_text("[data-class-key='1'] kbd") == "2"
    page.click("[data-role=help] [data-role=change-keys]")
    page.wait_for_selector("#keys-form")
    page.fill("input[name=classes]", "jkl")
    page.fill("input[name=help]", "h")
    page.click("#keys-form button[type=submit]:not([name])")
    page.wait_for_url(f"{live_server.url}{review_url}")
    page.wait_for_selector("#review[data-ready=true]")
    wait_until(page, "document.querySelector('[data-role=crop]').complete")

    # The buttons and the help list the new keys.
    assert page.locator(".class-button kbd").all_inner_texts() == ["j", "k", "l"]
    page.keyboard.press("h")
    page.wait_for_selector("dialog[data-role=help][open]")
    assert page.inner_text("[data-class-key='1'] kbd") == "k"
    assert page.inner_text("[data-action-key='help'] kbd") == "h"
    page.screenshot(path="/tmp/review-keys-help.png")
    page.keyboard.press("h")
    wait_until(page, "!document.querySelector('dialog[data-role=help]').open")

    # "2" no longer chooses a class; "k" chooses the second one (connective) and saves it.
    first = int(page.get_attribute("#review", "data-nucleus-id"))
    page.keyboard.press("2")
    page.wait_for_timeout(300)
    assert int(page.get_attribute("#review", "data-nucleus-id")) == first
    assert not Label.objects.filter(nucleus_id=first, source="review").exists()
    page.keyboard.press("k")
    wait_until(page, f"document.querySelector('#review').dataset.nucleusId !== '{first}'")
    label = Label.objects.get(nucleus_id=first, label_set=rp.breast_set, source="review")
    assert (label.class_index, label.author_id) == (1, users["owner"].pk)

    # The gallery uses the same keys: choose a card, "l" (the third class, dead) decides it.
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast&sort=margin")
    page.wait_for_selector("#gallery[data-ready=true]")
    card = tile_ids(page)[1]
    page.click(f".tile[data-nucleus-id='{card}'] .tile-scores")
    wait_until(page, f"document.querySelector('.tile.is-current').dataset.nucleusId === '{card}'")
    page.keyboard.press("ArrowRight")
    following = tile_ids(page)[2]
    wait_until(page, f"document.querySelector('.tile.is-current').dataset.nucleusId === '{following}'")
    page.keyboard.press("l")
    page.wait_for_selector(f".tile[data-nucleus-id='{following}']", state="detached")
    label = Label.objects.get(nucleus_id=following, label_set=rp.breast_set, source="review")
    assert (label.class_index, label.author_id) == (2, users["owner"].pk)
    page.keyboard.press("h")
    page.wait_for_selector("dialog[data-role=help][open]")
    assert page.inner_text("[data-class-key='2'] kbd") == "l"


def test_another_reviewers_decisions_are_shown_without_actions_that_would_be_refused(rp, logged_in_page,
                                                                                    live_server, users):
    from webapp.datasets.models import Nucleus
    from webapp.review.operations import do_decide

    page = logged_in_page
    rita = users["reviewer"]
    theirs = unlabelled_in(rp, rp.breast_set)[:2]
    for nucleus in Nucleus.objects.filter(pk__in=theirs):
        do_decide(nucleus, rp.breast_set, 0, user=rita, expected_label_id=None)
    batches = []
    page.on("request", lambda request: batches.append(request.url) if "/review/bulk/" in request.url else None)
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast&status=reviewed"
              f"&reviewer={rita.username}")
    page.wait_for_selector("#gallery[data-ready=true]")
    assert sorted(tile_ids(page)) == sorted(theirs)
    assert page.locator("#gallery .tile button.agree").count() == 0
    assert page.locator("#gallery .tile select.move").count() == 0
    assert page.locator("#gallery .tile", has_text="another reviewer's decision").count() == 2
    # Accept all, select all and the keys leave their decisions alone: nothing is sent.
    page.click("[data-action=select-all]")
    assert page.inner_text("#gallery [data-role=selected]") == "0 selected"
    page.click("[data-action=accept-page]")
    page.locator("#gallery .tile").first.click()
    page.keyboard.press("Enter")
    page.keyboard.press("2")
    page.wait_for_timeout(500)
    assert batches == []
    assert set(Label.objects.filter(label_set=rp.breast_set, source="review").values_list("author_id", flat=True)) == \
        {rita.pk}


def test_the_class_tabs_count_only_beside_the_nuclei_they_count(rp, logged_in_page, live_server):
    """The tabs count the nuclei not reviewed yet; shown on the reviewed ones, "All classes 1193" read as theirs."""
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    wait_until(page, "document.querySelector('#gallery .tab .count').textContent !== ''")
    page.select_option("select[name=status]", "reviewed")
    wait_until(page, "new URLSearchParams(location.search).get('status') === 'reviewed'")
    wait_until(page, "[...document.querySelectorAll('#gallery .tab .count')].every((c) => c.textContent === '')")


def test_on_a_phone_a_card_shows_before_the_page_can_be_accepted(rp, logged_in_page, live_server):
    page = logged_in_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    page.screenshot(path="/tmp/gallery_phone.png")
    card = page.locator("#gallery .tile").first.bounding_box()
    assert card["y"] < 844, f"the first card starts at {card['y']:.0f} px"
    accept = page.locator("button[data-action=accept-page]").bounding_box()
    assert accept["y"] + accept["height"] <= 844 and accept["y"] > card["y"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_refused_filters_leave_no_cards_of_the_earlier_ones(rp, logged_in_page, live_server):
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    assert page.locator("#gallery .tile").count() > 0
    page.fill("input[name=min_confidence]", "95")
    page.fill("input[name=max_confidence]", "50")
    page.press("input[name=max_confidence]", "Tab")
    wait_until(page, "document.querySelector('#gallery [data-role=status]').textContent.includes('is above')")
    assert page.locator("#gallery .tile").count() == 0
    assert page.inner_text("#gallery .gallery-grid") == "No cards: fix the filters above."


def test_an_arrow_key_on_a_select_chooses_nothing_until_enter(rp, logged_in_page, live_server, users):
    """A keyboard user moving past the options of a closed select: the gallery's Disagree menu saved a label,
    and the review page's Order loaded another page, on the first arrow key."""
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    first = tile_ids(page)[0]
    batches = []
    page.on("request", lambda request: batches.append(request.url) if "/review/bulk/" in request.url else None)
    menu = page.locator(f".tile[data-nucleus-id='{first}'] select.move")
    menu.focus()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(400)
    assert batches == [] and first in tile_ids(page)
    chosen = menu.input_value()
    page.keyboard.press("Enter")
    page.wait_for_selector(f".tile[data-nucleus-id='{first}']", state="detached")
    label = CurrentLabel.objects.select_related("label").get(nucleus_id=first, label_set=rp.breast_set).label
    assert rp.breast_set.classes.get(index=label.class_index).name == chosen and len(batches) == 1

    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set=breast&strategy=entropy")
    page.wait_for_selector("#review[data-ready=true]")
    page.focus("select[name=strategy]")
    page.keyboard.press("ArrowDown")
    page.wait_for_timeout(400)
    assert "strategy=entropy" in page.url
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert "strategy=entropy" not in page.url and "strategy=" in page.url


def test_the_keyboard_focus_stays_in_the_gallery_and_on_the_review_buttons(rp, logged_in_page, live_server):
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    first, second = tile_ids(page)[:2]
    page.focus(f".tile[data-nucleus-id='{first}'] button.agree")
    page.keyboard.press("Enter")
    page.wait_for_selector(f".tile[data-nucleus-id='{first}']", state="detached")
    # The focus moved on to the next card's Agree, not out of the page.
    assert page.evaluate("document.activeElement.closest('.tile')?.dataset.nucleusId") == str(second)
    # The keys dialog, opened from the keyboard, gives the focus back to its button when it closes.
    page.focus("[data-action=help]")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog[open]")
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.dataset.action") == "help"
    # On the review page a button pressed from the keyboard keeps the focus.
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set=breast&strategy=entropy")
    page.wait_for_selector("#review[data-ready=true]")
    page.focus("button[data-action=skip]")
    page.keyboard.press("Enter")
    page.wait_for_timeout(500)
    assert page.evaluate("document.activeElement.dataset.action") == "skip"


def test_back_goes_to_the_previous_filters_not_out_of_the_gallery(rp, logged_in_page, live_server):
    page = logged_in_page
    gallery = f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast"
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/")
    page.goto(gallery)
    page.wait_for_selector("#gallery[data-ready=true]")
    everything = sorted(tile_ids(page))
    page.locator("#gallery .tab", has_text="dead").click()
    wait_loaded(page, "class_name=dead")
    dead = tile_ids(page)
    assert set(dead) < set(everything)
    page.go_back()
    wait_until(page, "!location.search.includes('class_name') && "
                     "document.querySelector('#gallery').dataset.ready === 'true'")
    assert "/review/gallery/" in page.url and sorted(tile_ids(page)) == everything
    assert page.locator("#gallery .tab.active").inner_text().startswith("All classes")
    page.go_forward()
    wait_loaded(page, "class_name=dead")
    assert tile_ids(page) == dead


def test_the_current_card_and_a_refusal_are_told_in_words(rp, logged_in_page, live_server, users):
    """The card the keys act on was marked by a border only, and a refused card by red and a tooltip: a screen
    reader, or a colour-blind reviewer, could tell neither."""
    import json

    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast")
    page.wait_for_selector("#gallery[data-ready=true]")
    first, second = tile_ids(page)[:2]
    page.click(f".tile[data-nucleus-id='{first}'] .tile-scores")
    page.keyboard.press("ArrowRight")
    wait_until(page, f"document.querySelector('[aria-current=true]').dataset.nucleusId === '{second}'")
    agree = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert agree.startswith("Agree: nucleus ") and page.evaluate("document.activeElement.classList.contains('agree')")

    refusal = {"saved": 0, "results": [{"nucleus": second, "status": 409,
                                        "detail": "another reviewer already decided this nucleus"}]}
    page.route("**/review/bulk/", lambda route: route.fulfill(status=200, content_type="application/json",
                                                               body=json.dumps(refusal)))
    page.keyboard.press("Enter")   # Agree, on the focused button
    page.wait_for_selector(f".tile[data-nucleus-id='{second}'] [data-role=refusal]")
    assert page.inner_text(f".tile[data-nucleus-id='{second}'] [data-role=refusal]") == (
        "Not saved: another reviewer already decided this nucleus")
    assert "the reason is on each card" in page.inner_text("[data-role=status]")


def test_a_page_past_the_last_shows_the_cards_before_it(rp, logged_in_page, live_server):
    """A page past the last is a 404 now (as in the API's other lists): an old address, or a last page whose cards
    were all decided, shows the pages before it, not "Could not load the gallery"."""
    page = logged_in_page
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    free = set(unlabelled_in(rp, rp.breast_set))
    assert 0 < len(free) <= 48   # one page of cards: pages 3 and 2 are past the last
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast&page=3")
    page.wait_for_selector("#gallery[data-ready=true]")
    assert set(tile_ids(page)) == {n for n, ls in rp.predictions if ls == rp.breast_set.pk and n in free}
    assert "page=" not in page.evaluate("location.search")
    assert page.locator('[data-role="page"]').inner_text() == "page 1"
    assert "Could not load" not in page.locator("main").inner_text()
    assert not errors, errors
