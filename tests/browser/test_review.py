"""The review page in real Chromium: keyboard decisions, undo, skip, help, a 409 from a concurrent
change, a failed save kept and retried, and the gallery's accept-many."""

from __future__ import annotations

import time

import pytest
from django.utils import timezone

from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.webapp.review_project import unlabelled_in
from webapp.datasets.models import CurrentLabel, Label, LabelSource, Nucleus
from webapp.datasets.operations import do_record_label
from webapp.review.models import ReviewLease, ReviewSkip, ReviewUndo

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def top_by_entropy(rp, label_set) -> list[int]:
    free = set(unlabelled_in(rp, label_set))
    rows = [p for (n, ls), p in rp.predictions.items() if ls == label_set.pk and n in free]
    return [p.nucleus_id for p in sorted(rows, key=lambda p: (p.entropy, p.pk), reverse=True)]


def shown(page) -> int:
    return int(page.get_attribute("#review", "data-nucleus-id") or 0)


def wait_for_other_than(page, nucleus_id: int) -> int:
    wait_until(page, f"document.querySelector('#review').dataset.nucleusId !== '{nucleus_id}' && "
                     "document.querySelector('[data-role=loading]').hidden")
    return shown(page)


def open_review(page, live_server, rp, label_set="breast"):
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set={label_set}&strategy=entropy")
    page.wait_for_selector("#review[data-ready=true]")
    wait_until(page, "document.querySelector('[data-role=crop]').complete && "
                     "document.querySelector('[data-role=crop]').naturalWidth > 0")


def test_keyboard_flow_decide_accept_undo_skip_and_help(rp, logged_in_page, live_server, users):
    page = logged_in_page
    order = top_by_entropy(rp, rp.breast_set)
    open_review(page, live_server, rp)
    first = shown(page)
    assert first == order[0]
    # The nucleus, its neighbours in their class colours, probabilities of both branches.
    assert page.locator("svg.review-overlay polygon.target").count() == 1
    assert page.locator("svg.review-overlay polygon.neighbour").count() >= 1
    prediction = rp.prediction(first, rp.breast_set)
    probs = [(b + m) / 2 for b, m in zip(prediction.base_probs, prediction.mlp_probs)]
    values = page.locator(".class-button [data-role=prob-value]").all_inner_texts()
    assert values == [f"{round(p * 100)}%" for p in probs]
    assert prediction_name(rp, prediction.class_index) in page.inner_text("[data-role=prediction]")
    page.screenshot(path="/tmp/review.png", full_page=True)

    # A screen reader hears the new nucleus and its prediction, not only the status line.
    said = page.inner_text("[data-role=announce]")
    assert said.startswith("Next: nucleus ") and f"predicted {prediction_name(rp, prediction.class_index)} " in said

    # 2 = the second class ("connective"): saved at once, the next nucleus appears.
    page.keyboard.press("2")
    second = wait_for_other_than(page, first)
    assert second == order[1]
    assert page.inner_text("[data-role=announce]") != said
    label = Label.objects.get(nucleus_id=first, label_set=rp.breast_set)
    assert (label.class_index, label.source, label.author) == (1, LabelSource.REVIEW, users["owner"])
    assert label.model_version_id == rp.version.pk
    assert "Saved" in page.inner_text("[data-role=status]")

    # Enter accepts the prediction.
    page.keyboard.press("Enter")
    third = wait_for_other_than(page, second)
    accepted = Label.objects.get(nucleus_id=second, label_set=rp.breast_set)
    assert accepted.class_index == rp.prediction(second, rp.breast_set).class_index
    wait_until(page, "document.querySelector('[data-role=today]').textContent === '2'")

    # U undoes the last decision: its nucleus comes back, unlabelled again, the history keeps the row.
    page.keyboard.press("u")
    wait_until(page, f"document.querySelector('#review').dataset.nucleusId === '{second}'")
    assert "Undone" in page.inner_text("[data-role=status]")
    assert not CurrentLabel.objects.filter(nucleus_id=second, label_set=rp.breast_set).exists()
    assert ReviewUndo.objects.get().label_id == accepted.pk
    assert Label.objects.filter(nucleus_id=second, label_set=rp.breast_set).count() == 1
    wait_until(page, "document.querySelector('[data-role=today]').textContent === '1'")
    # The nucleus that was on screen goes back to the queue at once, not held unseen until its lease ends.
    wait_for(lambda: not ReviewLease.objects.filter(nucleus_id=third, expires_at__gt=timezone.now()).exists(),
             timeout=10, message="the release of the nucleus shown before the undo")

    # Decide it again with the mouse, then S skips the next one.
    page.click(".class-button[data-class-name=dead]")
    again = wait_for_other_than(page, second)
    assert CurrentLabel.objects.get(nucleus_id=second, label_set=rp.breast_set).class_index == 2
    assert again == third  # released, it is still the queue's next
    page.keyboard.press("s")
    after_skip = wait_for_other_than(page, third)
    assert ReviewSkip.objects.filter(nucleus_id=third, user=users["owner"]).exists()
    assert after_skip not in (first, second, third)
    assert not ReviewLease.objects.filter(nucleus_id__in=[first, second, third], expires_at__gt=timezone.now()).exists()

    # ? shows the keys, ? again hides them.
    page.keyboard.press("?")
    assert page.locator("dialog.keys-dialog").is_visible()
    assert "undo your last decision" in page.inner_text("dialog.keys-dialog")
    page.keyboard.press("?")
    assert not page.locator("dialog.keys-dialog").is_visible()
    # Rows in the database: three decisions (one undone), append-only.
    rows = list(Label.objects.filter(source=LabelSource.REVIEW, author=users["owner"]).order_by("id")
                .values_list("nucleus_id", "class_index"))
    assert rows == [(first, 1), (second, accepted.class_index), (second, 2)]


def test_enter_on_a_focused_control_does_what_the_control_says_not_accept(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    first = shown(page)
    # A keyboard user tabs to Skip and presses Enter: the nucleus is skipped, not accepted.
    page.focus("button[data-action=skip]")
    page.keyboard.press("Enter")
    second = wait_for_other_than(page, first)
    assert ReviewSkip.objects.filter(nucleus_id=first, user=users["owner"]).exists()
    assert not Label.objects.filter(nucleus_id=first, source=LabelSource.REVIEW).exists()
    # A class key still decides while a button has the focus; Enter on the Gallery link opens the gallery.
    page.focus("button[data-action=skip]")
    page.keyboard.press("1")
    wait_for_other_than(page, second)
    assert Label.objects.get(nucleus_id=second, label_set=rp.breast_set).class_index == 0
    page.focus("a[href*='/review/gallery/']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/review/gallery/**")
    assert Label.objects.filter(source=LabelSource.REVIEW).count() == 1


def test_with_single_character_keys_off_letters_decide_nothing_and_enter_still_accepts(rp, logged_in_page,
                                                                                      live_server, users):
    from webapp.review.operations import do_set_review_keys

    do_set_review_keys(users["owner"], {"character_keys": False})  # the owner is the page's user
    page = logged_in_page
    open_review(page, live_server, rp)
    first = shown(page)
    for key in ("1", "2", "s", "u", "z", "?"):  # speech input typing "12 suz?"
        page.keyboard.press(key)
    page.wait_for_timeout(300)
    assert shown(page) == first and not page.locator("dialog.keys-dialog").is_visible()
    assert not Label.objects.filter(source=LabelSource.REVIEW).exists()
    assert not ReviewSkip.objects.exists()
    page.keyboard.press("Enter")
    wait_for_other_than(page, first)
    assert Label.objects.get(nucleus_id=first, label_set=rp.breast_set).class_index == \
        rp.prediction(first, rp.breast_set).class_index


def test_back_to_the_review_page_claims_afresh_and_keeps_its_label_set(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    first = shown(page)
    # Leaving gives the nucleus back (pagehide); Back from the browser's cache showed it still "reserved for
    # you", while another reviewer could take it.
    page.click("[data-role=caption] a:has-text('whole image')")
    page.wait_for_url("**/images/**")
    wait_for(lambda: not ReviewLease.objects.filter(nucleus_id=first, expires_at__gt=timezone.now()).exists(),
             timeout=10, message="the release when the page was left")
    page.go_back()
    page.wait_for_selector("#review[data-ready=true]")
    wait_for(lambda: ReviewLease.objects.filter(nucleus_id=shown(page), user=users["owner"],
                                                expires_at__gt=timezone.now()).exists(),
             timeout=10, message="a reservation of the nucleus on screen after Back")
    # Switching the label set, then Back: the menu says the label set the page reviews, not the one left.
    page.select_option("#review-options select[name=label_set]", "colon")
    page.wait_for_url("**label_set=colon**")
    page.wait_for_selector("#review[data-ready=true]")
    page.go_back()
    page.wait_for_selector("#review[data-ready=true]")
    assert page.get_attribute("#review", "data-label-set") == "breast"
    assert page.eval_on_selector("#review-options select[name=label_set]", "s => s.value") == "breast"


def test_the_next_nucleus_is_not_drawn_over_the_last_ones_tissue(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    first = shown(page)
    held, holding = [], [True]
    page.route("**/region.png*", lambda route: held.append(route) if holding else route.continue_())
    page.keyboard.press("Enter")
    wait_until(page, f"document.querySelector('#review').dataset.nucleusId !== '{first}'")
    second = shown(page)
    assert page.is_visible("[data-role=loading]")
    assert page.eval_on_selector("[data-role=overlay]", "s => getComputedStyle(s).visibility") == "hidden"
    page.keyboard.press("1")  # unseen: no decision
    wait_until(page, "document.querySelector('#review').dataset.nucleusId !== ''")
    page.wait_for_timeout(300)
    assert page.inner_text("[data-role=status]") == "The tissue is still loading: nothing decided."
    assert not Label.objects.filter(nucleus_id=second, source=LabelSource.REVIEW).exists()
    holding.clear()  # the crop may come now
    for route in held:
        route.continue_()
    wait_until(page, "document.querySelector('[data-role=loading]').hidden")
    assert page.eval_on_selector("[data-role=overlay]", "s => getComputedStyle(s).visibility") == "visible"
    page.keyboard.press("1")
    wait_for_other_than(page, second)
    assert Label.objects.get(nucleus_id=second, label_set=rp.breast_set).class_index == 0


def test_a_long_label_set_name_fits_a_narrow_window(rp, logged_in_page, live_server):
    from urllib.parse import quote

    from webapp.datasets.models import LabelSet

    long_name = "breast cancer cohort uploaded by the pathology lab for cross-taxonomy merging, second batch"
    LabelSet.objects.filter(pk=rp.breast_set.pk).update(name=long_name + "x" * (100 - len(long_name)))
    page = logged_in_page
    page.set_viewport_size({"width": 800, "height": 900})
    name = quote(long_name + "x" * (100 - len(long_name)))
    for url in (f"/projects/{rp.project.pk}/review/?label_set={name}",
                f"/projects/{rp.project.pk}/review/gallery/?label_set={name}"):
        page.goto(live_server.url + url)
        page.wait_for_selector("[data-ready=true]")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 800, f"{url}: the page is {width} px wide in an 800 px window"



@pytest.mark.parametrize("width, height", [(1280, 800), (1024, 768), (900, 700), (800, 900), (700, 600)])
def test_the_class_buttons_and_accept_are_on_screen_without_scrolling(rp, logged_in_page, live_server,
                                                                      width, height):
    """A reviewer decides by looking and pressing: in a laptop's or a tablet's window the classes and Accept
    are beside the crop, not below the fold (below 980 px they were stacked under a window-high crop)."""
    page = logged_in_page
    page.set_viewport_size({"width": width, "height": height})
    open_review(page, live_server, rp)
    bottoms = page.evaluate("""() => [...document.querySelectorAll('.class-button, [data-action=accept]')]
                                     .map((b) => b.getBoundingClientRect().bottom)""")
    assert len(bottoms) == 4
    assert max(bottoms) <= height, f"{width}x{height}: a button ends at {max(bottoms):.0f} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    names = page.locator(".class-button .class-name").all()
    one_line = "e => e.getBoundingClientRect().height < 1.5 * parseFloat(getComputedStyle(e).lineHeight)"
    assert all(n.evaluate(one_line) for n in names), "a class name broke over two lines"


def test_on_a_phone_accept_and_skip_stay_on_screen_and_the_options_take_two_rows(rp, logged_in_page, live_server):
    from webapp.datasets.models import Image

    for image in Image.objects.filter(project=rp.project):  # a long name without spaces widened the page to 1474 px
        Image.objects.filter(pk=image.pk).update(name=f"case_{image.pk:04d}_" + "x" * 160)
    page = logged_in_page
    page.set_viewport_size({"width": 390, "height": 844})
    open_review(page, live_server, rp)
    page.screenshot(path="/tmp/review_phone.png")
    for action in ("accept", "skip"):
        box = page.locator(f"button[data-action={action}]").bounding_box()
        assert box["y"] + box["height"] <= 844, f"{action} ends at {box['y'] + box['height']:.0f} px"
    toolbar = page.locator("#review-options").bounding_box()
    assert toolbar["height"] < 130, f"the options take {toolbar['height']:.0f} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.click("button[data-action=accept]")  # the sticky bar is not covered by anything
    wait_until(page, "document.querySelector('[data-role=today]').textContent === '1'")


def test_a_fast_reviewer_gets_the_servers_figures_while_deciding(rp, logged_in_page, live_server):
    """Each decision put the refresh of the figures off by 1.5 s: deciding every second, the page showed only its
    own counts, which drift from the server's."""
    page = logged_in_page
    open_review(page, live_server, rp)
    asked = []
    page.on("request", lambda request: asked.append(time.monotonic()) if "/review/progress/" in request.url else None)
    started = time.monotonic()
    for _ in range(4):
        before = shown(page)
        page.keyboard.press("Enter")
        wait_for_other_than(page, before)
        page.wait_for_timeout(700)
    assert asked and asked[0] - started < 2.5, f"first refresh after {[round(t - started, 1) for t in asked]} s"


def prediction_name(rp, index: int) -> str:
    return ["neoplastic", "connective", "dead"][index]


def test_a_concurrent_change_shows_409_and_the_reviewer_decides_again(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus_id = shown(page)
    # Meanwhile another reviewer labels the same nucleus (e.g. from the gallery).
    do_record_label(Nucleus.objects.get(pk=nucleus_id), rp.breast_set, 2, author=users["reviewer2"])
    page.keyboard.press("1")
    page.wait_for_selector("[data-role=status].conflict")
    status = page.inner_text("[data-role=status]")
    assert "rob" in status and "dead" in status
    assert shown(page) == nucleus_id
    assert "dead" in page.inner_text("[data-role=current]") and "rob" in page.inner_text("[data-role=current]")
    assert not Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").exists()
    # Choosing again now (with the version just seen) is saved.
    page.keyboard.press("1")
    wait_for_other_than(page, nucleus_id)
    mine = Label.objects.get(nucleus_id=nucleus_id, author=users["owner"], source="review")
    assert mine.class_index == 0 and mine.previous.author == users["reviewer2"]


def test_a_nucleus_another_reviewer_decided_is_not_decided_twice_the_page_moves_on(rp, logged_in_page,
                                                                                  live_server, users):
    from webapp.review.operations import do_decide

    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus_id = shown(page)
    # Another reviewer decides it meanwhile through the queue's own save (the gallery, another page).
    theirs = do_decide(Nucleus.objects.get(pk=nucleus_id), rp.breast_set, 2, user=users["reviewer2"],
                       expected_label_id=None).label
    # The second decision is refused (not a version to retry with: the nucleus is done) and the page goes on.
    page.keyboard.press("1")
    other = wait_for_other_than(page, nucleus_id)
    assert other and other != nucleus_id
    page.wait_for_selector("[data-role=status].conflict")
    # The message names the nucleus it is about (the next one is on screen), and the queue's count follows.
    decided = Nucleus.objects.select_related("image").get(pk=nucleus_id)
    status = page.inner_text("[data-role=status]")
    assert status.startswith(f"Nucleus {decided.instance_id} in {decided.image.name}: rob already decided"), status
    left = len(unlabelled_in(rp, rp.breast_set))
    wait_until(page, f"document.querySelector('[data-role=left]').textContent === '{left}'")
    assert not Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").exists()
    assert CurrentLabel.objects.get(nucleus_id=nucleus_id, label_set=rp.breast_set).label_id == theirs.pk


def test_a_nucleus_whose_dataset_is_being_deleted_is_refused_saying_so_and_the_page_moves_on(rp, logged_in_page,
                                                                                            live_server, users):
    from webapp.jobs.models import Job

    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus = Nucleus.objects.select_related("image__dataset").get(pk=shown(page))
    dataset = nucleus.image.dataset
    # Its dataset's deletion is asked for while the nucleus is on screen.
    job = Job.objects.create(kind=Job.Kind.DELETE, state=Job.State.RUNNING, project=rp.project,
                             created_by=users["owner"], params={"target": "dataset", "dataset": dataset.pk,
                                                                "name": dataset.name})
    page.keyboard.press("1")
    wait_for_other_than(page, nucleus.pk)
    page.wait_for_selector("[data-role=status].conflict")
    status = page.inner_text("[data-role=status]")
    assert status.startswith(f"Nucleus {nucleus.instance_id} in {nucleus.image.name}: Dataset {dataset.name!r} is "
                             f"being deleted (job {job.pk}, running)"), status
    assert not Label.objects.filter(nucleus=nucleus, source=LabelSource.REVIEW).exists()
    # The queue offers none of that dataset's nuclei, and nothing is left in the outbox to send again.
    assert not Nucleus.objects.filter(pk=shown(page), image__dataset=dataset).exists()
    assert page.evaluate("Object.keys(localStorage).every(k => localStorage.getItem(k) === '[]')")


def test_a_failed_save_is_shown_kept_and_retried(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus_id = shown(page)
    page.route("**/api/nuclei/*/labels/", lambda route: route.abort())
    page.keyboard.press("3")
    page.wait_for_selector("[data-role=status].error")
    assert "retrying" in page.inner_text("[data-role=status]")
    outbox = page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert f'\\"nucleus\\":{nucleus_id}' in outbox
    wait_for_other_than(page, nucleus_id)  # the reviewer goes on meanwhile
    assert not Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").exists()
    page.unroute("**/api/nuclei/*/labels/")
    label = wait_for(lambda: Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").first(), timeout=20,
                     message="the retried save")
    assert label.class_index == 2
    wait_until(page, "Object.keys(localStorage).every(k => localStorage.getItem(k) === '[]')")
    assert Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").count() == 1


def test_a_save_the_server_never_answers_is_kept_and_retried(rp, logged_in_page, live_server, users):
    """A stalled server (a stopped process, a hung proxy): each try gives up after its timeout, and the page
    says so and keeps the decision instead of showing "Saving…" for ever."""
    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus_id = shown(page)
    stalled = []
    page.route("**/api/nuclei/*/labels/", lambda route: stalled.append(route))   # never answered
    page.keyboard.press("3")
    page.wait_for_selector("[data-role=status].error", timeout=40_000)
    assert "no answer from the server" in page.inner_text("[data-role=status]")
    assert len(stalled) == 3   # the first try and two retries
    wait_for_other_than(page, nucleus_id)  # the reviewer goes on meanwhile
    page.unroute("**/api/nuclei/*/labels/")
    label = wait_for(lambda: Label.objects.filter(nucleus_id=nucleus_id, author=users["owner"], source="review").first(),
                     timeout=30, message="the retried save")
    assert label.class_index == 2



def test_a_decision_counts_against_the_prediction_on_screen_when_another_version_goes_active(
        rp, logged_in_page, live_server, users):
    """The page names the version whose prediction it shows: a curator making another version active while the
    reviewer looks does not turn their agreement into a disagreement."""
    from tests.webapp.review_project import add_predictions
    from webapp.training.models import ModelVersion
    from webapp.training.operations import do_activate_version

    page = logged_in_page
    open_review(page, live_server, rp)
    nucleus_id = shown(page)
    v2 = ModelVersion.objects.create(project=rp.project, number=2, checkpoint_file="models/v2.pt",
                                     data_snapshot_at=timezone.now(), label_sets=rp.version.label_sets)
    add_predictions(v2, seed=7)
    do_activate_version(v2, actor=users["owner"])
    page.keyboard.press("Enter")   # accept v1's prediction, on screen
    label = wait_for(lambda: Label.objects.filter(nucleus_id=nucleus_id, source="review").first(), timeout=15,
                     message="the saved decision")
    assert label.model_version_id == rp.version.pk
    assert label.class_index == rp.prediction(nucleus_id, rp.breast_set).class_index

def test_gallery_accepts_many_and_moves_one(rp, logged_in_page, live_server, users):
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=breast&class_name=dead")
    page.wait_for_selector("#gallery[data-ready=true]")
    tiles = page.locator(".tile")
    count = tiles.count()
    assert count >= 2
    first_id = int(tiles.first.get_attribute("data-nucleus-id"))
    tiles.first.locator("select.move").select_option("neoplastic")
    page.wait_for_selector(f".tile[data-nucleus-id='{first_id}']", state="detached")
    assert CurrentLabel.objects.get(nucleus_id=first_id, label_set=rp.breast_set).class_index == 0
    ids = [int(x) for x in page.eval_on_selector_all(".tile", "els => els.map(e => e.dataset.nucleusId)")]
    page.click("[data-action=select-all]")
    assert page.inner_text("[data-role=selected]") == f"{len(ids)} selected"
    page.screenshot(path="/tmp/review-gallery.png", full_page=True)
    page.click("[data-action=accept-selected]")
    wait_until(page, "document.querySelector('[data-role=status]').textContent.startsWith('Saved')")
    assert sorted(CurrentLabel.objects.filter(nucleus_id__in=ids, label_set=rp.breast_set, source="review")
                  .values_list("nucleus_id", flat=True)) == sorted(ids)
    assert set(CurrentLabel.objects.filter(nucleus_id__in=ids, label_set=rp.breast_set)
               .values_list("class_index", flat=True)) == {2}


def test_agreement_page_settles_a_conflict_and_the_nucleus_page_shows_history(rp, logged_in_page, live_server, users):
    from webapp.review.operations import do_decide

    nuclei = list(Nucleus.objects.filter(image__dataset=rp.breast).order_by("id")[:4])
    for nucleus, (a, b) in zip(nuclei, [(0, 0), (0, 1), (1, 1), (1, 1)]):
        first = do_decide(nucleus, rp.colon_set, a, user=users["reviewer"], expected_label_id=None).label
        do_decide(nucleus, rp.colon_set, b, user=users["reviewer2"], expected_label_id=first.pk, second_opinion=True)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/agreement/?label_set=colon")
    row = page.locator("[data-pair='rita|rob']")
    assert row.locator("td.kappa").inner_text() == "0.500"
    conflict = page.locator(f"tr[data-nucleus-id='{nuclei[1].pk}']")
    assert "rita: epithelial" in conflict.inner_text() and "rob: inflammatory" in conflict.inner_text()
    page.screenshot(path="/tmp/review-agreement.png", full_page=True)
    conflict.locator("select[name=class_name]").select_option("epithelial")
    conflict.locator("button[type=submit]").click()
    page.wait_for_selector(".flash")
    assert "settled as 'epithelial'" in page.inner_text(".flash")
    assert page.locator(f"tr[data-nucleus-id='{nuclei[1].pk}']").count() == 0
    settled = CurrentLabel.objects.get(nucleus=nuclei[1], label_set=rp.colon_set)
    assert settled.class_index == 0 and settled.label.author == users["owner"]

    page.goto(f"{live_server.url}/projects/{rp.project.pk}/nuclei/{nuclei[1].pk}/")
    history = page.locator("table.history tbody tr")
    # newest first: owner's settlement, rob, rita, the ground truth in breast
    assert history.count() == 4
    texts = history.all_inner_texts()
    assert "owner" in texts[0] and "inflammatory → epithelial" in texts[0] and "settles conflict" in texts[0]
    assert "rob" in texts[1] and "epithelial → inflammatory" in texts[1]
    assert "rita" in texts[2] and "none → epithelial" in texts[2]
    assert "ground truth" in texts[3]
    wait_until(page, "document.querySelector('.nucleus-crop img').naturalWidth > 0")
    page.screenshot(path="/tmp/review-nucleus.png", full_page=True)


def test_status_lines_name_a_nucleus_by_its_number_in_its_image(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    first = Nucleus.objects.select_related("image").get(pk=shown(page))
    name = f"nucleus {first.instance_id} in {first.image.name}"
    assert f"nucleus {first.instance_id} ·" in page.inner_text("[data-role=caption]")
    page.keyboard.press("1")
    wait_for_other_than(page, first.pk)
    assert page.inner_text("[data-role=status]") == f"Saved: {name} is neoplastic."
    page.keyboard.press("u")  # the undo names the same nucleus the same way (it gave the database id)
    wait_until(page, f"document.querySelector('#review').dataset.nucleusId === '{first.pk}'")
    assert page.inner_text("[data-role=status]") == f"Undone: neoplastic on {name} (unlabelled again)."
    page.keyboard.press("s")
    wait_for_other_than(page, first.pk)
    assert page.inner_text("[data-role=status]") == f"Skipped {name}."


def test_before_any_prediction_the_page_serves_nuclei_in_random_order_and_says_so(logged_in_page, live_server, users,
                                                                                  media_root, tmp_path):
    from tests.webapp.review_project import add_members, build_review_project

    rp = build_review_project(users["owner"], tmp_path / "src", predictions=False, images=1, nuclei=6)
    add_members(rp.project, users)
    page = logged_in_page
    # The page as the project page's "Review nuclei" opens it: no order chosen.
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set=breast")
    page.wait_for_selector("#review[data-ready=true]")
    assert page.get_attribute("#review", "data-strategy") == "random"
    assert page.input_value("select[name=strategy]") == "random"
    assert "random order" in page.inner_text("#random-fallback")
    assert shown(page) in set(unlabelled_in(rp, rp.breast_set))  # not "The queue is empty"
    assert page.locator("[data-role=empty]").is_hidden()
    wait_until(page, "document.querySelector('[data-role=left]').textContent === '6'")
    wait_until(page, "document.querySelector('[data-role=loading]').hidden")  # the tissue is on screen
    # Enter has no prediction to accept: the keys it names are this label set's three.
    page.keyboard.press("Enter")
    assert page.inner_text("[data-role=status]") == "No prediction to accept: choose a class with 1, 2, 3."
    page.keyboard.press("3")
    wait_for_other_than(page, shown(page))
    assert Label.objects.filter(label_set=rp.breast_set, source=LabelSource.REVIEW, class_index=2).count() == 1


def test_a_small_crop_is_not_blown_up_past_four_times(rp, logged_in_page, live_server, users):
    page = logged_in_page
    open_review(page, live_server, rp)
    box = page.evaluate("""() => {
        const crop = document.querySelector('[data-role=crop]');
        const url = new URL(crop.src);
        const side = Math.max(url.searchParams.get('x1') - url.searchParams.get('x0'),
                              url.searchParams.get('y1') - url.searchParams.get('y0'));
        const img = crop.getBoundingClientRect(), svg = document.querySelector('svg.review-overlay').getBoundingClientRect();
        const stage = document.querySelector('[data-role=stage]').getBoundingClientRect();
        return {side, img: [img.x, img.y, img.width, img.height], svg: [svg.x, svg.y, svg.width, svg.height],
                stage: stage.width};
    }""")
    assert box["stage"] > 4 * box["side"]  # this stage would show the crop larger than that
    assert box["img"][2] == pytest.approx(4 * box["side"], abs=1)
    assert box["svg"] == pytest.approx(box["img"], abs=0.5)  # the outlines stay on the tissue


def crop_region(page) -> list[int]:
    src = page.get_attribute("[data-role=crop]", "src")
    query = dict(part.split("=") for part in src.split("?", 1)[1].split("&"))
    return [int(query[k]) for k in ("x0", "y0", "x1", "y1")]


def wait_for_crop(page, zoom: str):
    wait_until(page, f"document.querySelector('#review').dataset.zoom === '{zoom}' && "
                     "document.querySelector('[data-role=crop]').complete && "
                     "document.querySelector('[data-role=crop]').naturalWidth > 0")


def test_review_context_other_label_set_zoom_out_and_full_class_names(rp, logged_in_page, live_server, users):
    from webapp.datasets.models import LabelClass
    from webapp.review.queue import context_around

    long_name = "Inflammatory cells of the lamina propria, lymphocytes and plasma cells"
    LabelClass.objects.filter(label_set=rp.colon_set, index=0).update(name=long_name)
    page = logged_in_page
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_review(page, live_server, rp, label_set="colon")
    nucleus = Nucleus.objects.select_related("image").get(pk=shown(page))

    # The colon queue serves a breast nucleus: the side panel shows its breast ground truth and the
    # model's breast class, by their names.
    truth = CurrentLabel.objects.get(nucleus=nucleus, label_set=rp.breast_set)
    breast_names = dict(LabelClass.objects.filter(label_set=rp.breast_set).values_list("index", "name"))
    panel = page.locator("[data-role=others] li[data-label-set=breast]")
    current_text = panel.locator("[data-role=other-current]").inner_text()
    assert breast_names[truth.class_index] in current_text and "ground truth" in current_text
    predicted = rp.prediction(nucleus.pk, rp.breast_set).class_index
    assert breast_names[predicted] in panel.locator("[data-role=other-prediction]").inner_text()

    # Full class names: the whole name on the button, wrapped, not cut off.
    name = page.locator(".class-button[data-class-index='0'] .class-name")
    assert name.inner_text() == long_name
    assert name.evaluate("n => n.scrollWidth <= n.clientWidth + 1")

    # Zoom out (z): a wider region around the same nucleus, at 1 screen px per tissue px where it fits (a small
    # neighbourhood up to 2 px, to fill the stage), the nucleus still outlined; z again comes back close up.
    close = crop_region(page)
    assert page.get_attribute("#review", "data-zoom") == "in"
    page.keyboard.press("z")
    wait_for_crop(page, "out")
    wide = crop_region(page)
    assert wide == context_around(close, nucleus.image.width, nucleus.image.height)
    assert wide[2] - wide[0] > close[2] - close[0]
    assert wide[0] <= close[0] and wide[1] <= close[1] and wide[2] >= close[2] and wide[3] >= close[3]
    assert page.locator("svg.review-overlay polygon.target").count() == 1
    assert page.locator("svg.review-overlay rect.closeup-frame").count() == 1
    shown_width = page.evaluate("() => document.querySelector('[data-role=crop]').getBoundingClientRect().width")
    stage_width = page.evaluate("() => document.querySelector('[data-role=stage]').getBoundingClientRect().width")
    wide_size = max(wide[2] - wide[0], wide[3] - wide[1])
    assert shown_width == pytest.approx(min(stage_width, max(wide_size, min(2 * wide_size, stage_width))), abs=1)
    assert page.get_attribute("[data-role=zoom]", "aria-pressed") == "true"
    page.keyboard.press("z")
    wait_for_crop(page, "in")
    assert crop_region(page) == close
    # The button and the mouse wheel do the same.
    page.click("[data-role=zoom]")
    wait_for_crop(page, "out")
    assert crop_region(page) == wide
    box = page.locator("[data-role=stage]").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -120)
    wait_for_crop(page, "in")
    assert crop_region(page) == close
    page.mouse.wheel(0, 120)
    wait_for_crop(page, "out")
    # A decision moves on to the next nucleus, close up again.
    page.keyboard.press("2")
    wait_for_other_than(page, nucleus.pk)
    wait_for_crop(page, "in")
    assert shown(page) != nucleus.pk


def test_a_reviewer_removed_mid_review_sees_the_reservation_end(rp, logged_in_page, live_server, users):
    """The server frees a removed member's nucleus at once; the caption stopped counting a reservation down only
    when the clock ran out."""
    from webapp.projects.models import Role
    from webapp.projects.operations import do_change_member_role, do_remove_member

    page = logged_in_page
    open_review(page, live_server, rp)
    assert page.inner_text("[data-role=lease]").startswith("reserved for you")
    do_change_member_role(rp.project, users["curator"], Role.ADMIN, actor=users["owner"])
    do_remove_member(rp.project, users["owner"], actor=users["curator"])
    assert not ReviewLease.objects.filter(user=users["owner"], decided=False, expires_at__gt=timezone.now()).exists()
    page.keyboard.press("1")
    page.wait_for_selector("[data-role=lease].expired")
    assert page.inner_text("[data-role=lease]") == "not reserved: you can no longer review this project"
    assert "Not saved" in page.inner_text("[data-role=status]")
    page.wait_for_timeout(1500)   # the clock is stopped: the text stays
    assert page.inner_text("[data-role=lease]") == "not reserved: you can no longer review this project"



def test_the_focus_stays_usable_when_the_queue_runs_out(rp, logged_in_page, live_server, users):
    """Deciding the last nucleus with a focused class button disabled every button: the focus fell to the page
    and nothing said the queue was empty."""
    page = logged_in_page
    open_review(page, live_server, rp)
    page.route("**/review/next/**", lambda route: route.fulfill(status=204, body=""))
    page.focus(".class-button >> nth=0")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-role=empty]:not([hidden])")
    assert page.get_attribute("[data-role=empty]", "role") == "status"
    assert page.evaluate("document.activeElement.dataset.role") == "empty-heading"
    # Nothing left to accept, skip or zoom into; the last decision can still be undone.
    assert page.is_disabled("button[data-action=accept]") and page.is_disabled("button[data-action=skip]")
    assert page.is_disabled("button[data-action=zoom]") and not page.is_disabled("button[data-action=undo]")
    assert "Include labelled nuclei" in page.inner_text("[data-role=empty]")
