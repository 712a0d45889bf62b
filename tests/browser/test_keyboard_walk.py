"""Every page walked with the keyboard alone in Chromium: Tab reaches every control and each shows the site's focus
ring; one h1, headings in order, main and nav landmarks; images, SVG overlays and canvases have a text alternative
or are hidden from assistive technology; and no `title` tooltip is the only place a piece of information is (a
tooltip shows to a mouse only: not on a table cell, a disabled button or an option). Then what the tooltips said,
read where a screen reader reads it (a description), the review keys as aria-keyshortcuts, and the keys dialog
giving the focus back."""

import pytest

from tests.browser.conftest import accessible
from tests.browser.test_accessibility_pages import unnamed_controls
from webapp.core import audit
from webapp.datasets.models import Nucleus
from webapp.jobs.models import Job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# What a page offers to the keyboard: shown, not inert, not disabled.
FOCUSABLE = ("a[href], button:not([disabled]), input:not([disabled]):not([type=hidden]), select:not([disabled]), "
             "textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])")

STRUCTURE = r"""(focusable) => {
  const shown = (e) => e.checkVisibility() && e.getClientRects().length > 0;
  const hiddenFromAT = (e) => e.closest('[aria-hidden=true]') !== null;
  const headings = Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6'))
    .filter((h) => !h.closest('[hidden], dialog:not([open])')).map((h) => Number(h.tagName[1]));
  const named = (e) => e.getAttribute('aria-label') || e.getAttribute('aria-labelledby');
  const text = (e) => e.textContent.replace(/\s+/g, ' ').trim();
  // The one title allowed repeats the element's own text (a name cut short by an ellipsis): a tooltip shows to a
  // mouse only, on a control too (the viewers' zoom buttons said their keys there; now aria-keyshortcuts).
  return {
    h1: headings.filter((level) => level === 1).length,
    skipped: headings.flatMap((level, i) => (i > 0 && level > headings[i - 1] + 1) ? [`h${headings[i - 1]} then h${level}`] : []),
    main: document.querySelectorAll('main, [role=main]').length,
    nav: document.querySelectorAll('nav, [role=navigation]').length,
    images: Array.from(document.querySelectorAll('img:not([alt])')).map((e) => e.outerHTML.slice(0, 100)),
    pictures: Array.from(document.querySelectorAll('svg, canvas'))
      .filter((e) => !hiddenFromAT(e) && !(e.getAttribute('role') === 'img' && named(e)))
      .map((e) => e.outerHTML.slice(0, 100)),
    titles: Array.from(document.querySelectorAll('[title]'))
      .filter((e) => e.namespaceURI === 'http://www.w3.org/1999/xhtml' && e.title.trim() !== text(e))
      .map((e) => e.outerHTML.slice(0, 140)),
    controls: Array.from(document.querySelectorAll(focusable))
      .filter((e) => shown(e) && !e.closest('[inert], dialog:not([open])')).map((e) => e.outerHTML.slice(0, 100)),
  };
}"""

# The focused element, and whether it shows the site's ring (static/css/app.css: a 2 px solid outline; the image
# viewers' viewport a box-shadow) rather than nothing or the browser's own ("auto").
FOCUSED = r"""() => {
  const e = document.activeElement;
  if (!e || e === document.body) return null;
  const style = getComputedStyle(e);
  const ring = (style.outlineStyle === 'solid' && parseFloat(style.outlineWidth) >= 2) || style.boxShadow !== 'none';
  return [e.outerHTML.slice(0, 100), ring];
}"""


def keyboard_walk(page, controls: list[str]) -> tuple[list[str], list[str]]:
    """Tab from the top of the page until the focus comes back round: the controls it never reached, and those it
    reached without a visible focus ring."""
    page.evaluate("window.scrollTo(0, 0); document.activeElement?.blur()")
    reached, ringless = [], []
    for _ in range(len(controls) + 10):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused is None:
            continue
        if reached and focused[0] == reached[0]:
            break   # round again: no trap
        reached.append(focused[0])
        if not focused[1]:
            ringless.append(focused[0])
    return [control for control in controls if control not in reached], ringless


def page_problems(page, *, signed_in: bool = True, walk: bool = True) -> dict:
    found = page.evaluate(STRUCTURE, FOCUSABLE)
    problems = {}
    if found["h1"] != 1:
        problems["h1"] = found["h1"]
    if found["main"] != 1 or found["nav"] < signed_in:   # signed out, the top bar has no links but home's
        problems["landmarks"] = {"main": found["main"], "nav": found["nav"]}
    for key in ("skipped", "images", "pictures", "titles"):
        if found[key]:
            problems[key] = found[key]
    unnamed = unnamed_controls(page)
    if unnamed:
        problems["unnamed"] = unnamed
    if not walk:
        return problems
    missed, ringless = keyboard_walk(page, found["controls"])
    if missed:
        problems["not reached by Tab"] = missed
    if ringless:
        problems["no focus ring"] = ringless
    return problems


@pytest.fixture
def walked_project(rp, users):
    """The review project with what the pages show only in some states: a figure scored with test-time augmentation,
    an automatic entry in the activity, a κ that is undefined (two reviewers, one class), a long job error."""
    from webapp.review.operations import do_decide

    rp.version.metrics = {"colon": {"accuracy": 0.8, "macro_f1": 0.7, "weighted_f1": 0.75, "n": 10, "tta": True,
                                    "per_class": {}, "confusion": []}}
    rp.version.save(update_fields=["metrics"])
    audit.record("job.succeeded", target=rp.project, kind="train")
    nucleus = Nucleus.objects.filter(image__dataset=rp.breast).order_by("id").first()   # no colon label yet
    first = do_decide(nucleus, rp.colon_set, 0, user=users["reviewer"], expected_label_id=None).label
    do_decide(nucleus, rp.colon_set, 0, user=users["reviewer2"], expected_label_id=first.pk, second_opinion=True)
    job = Job.objects.create(kind=Job.Kind.IMPORT, project=rp.project, created_by=users["owner"],
                             state=Job.State.FAILED, error="The archive 'colon.zip' holds no image: " + "x" * 60)
    return {"nucleus": nucleus, "job": job}


def page_paths(rp, walked_project) -> list[str]:
    project = rp.project.pk
    nucleus = walked_project["nucleus"]
    return ["/", "/account/", "/account/review-keys/", "/account/password/", f"/projects/{project}/",
            f"/projects/{project}/members/", f"/projects/{project}/activity/", f"/projects/{project}/versions/1/",
            f"/projects/{project}/datasets/{rp.colon.pk}/", f"/projects/{project}/images/{nucleus.image_id}/",
            f"/projects/{project}/review/?label_set=colon", f"/projects/{project}/review/agreement/?label_set=colon",
            f"/projects/{project}/review/gallery/?label_set=colon", f"/projects/{project}/nuclei/{nucleus.pk}/",
            f"/jobs/{walked_project['job'].pk}/"]


def every_page_problems(page, browser, live_server, rp, walked_project, *, walk: bool) -> dict:
    # The training estimate times the model on first use (seconds): the project page's structure does not need it.
    page.route("**/train/estimate/**", lambda route: route.abort())
    problems = {}
    for path in page_paths(rp, walked_project):
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        # What the page's script draws (the gallery's cards, the nucleus under review, the viewer's outlines).
        if any(part in path for part in ("/review/", "/images/")):
            page.wait_for_load_state("networkidle")
        problems[path] = page_problems(page, walk=walk)
    # The gallery grouped: a heading per group, under the page's h1.
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=colon")
    page.select_option("#gallery select[name=group]", index=1)
    page.wait_for_selector("#gallery .gallery-group")
    page.wait_for_load_state("networkidle")
    problems["gallery, grouped"] = page_problems(page, walk=walk)
    # Signed out: the login page.
    context = browser.new_context()
    signed_out = context.new_page()
    signed_out.goto(f"{live_server.url}/login/")
    problems["/login/"] = page_problems(signed_out, signed_in=False, walk=walk)
    context.close()
    return {path: found for path, found in problems.items() if found}


@pytest.mark.slow
def test_every_page_has_one_h1_landmarks_named_controls_and_no_tooltip_only_information(
        rp, walked_project, logged_in_page, live_server, browser):
    assert every_page_problems(logged_in_page, browser, live_server, rp, walked_project, walk=False) == {}


@pytest.mark.slow
def test_tab_reaches_every_control_of_every_page_and_shows_where_the_focus_is(
        rp, walked_project, logged_in_page, live_server, browser):
    assert every_page_problems(logged_in_page, browser, live_server, rp, walked_project, walk=True) == {}


def test_the_review_keys_dialog_holds_the_focus_until_escape_gives_it_back(rp, logged_in_page, live_server):
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set=colon")
    page.wait_for_load_state("networkidle")
    page.focus("[data-action=help]")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog[data-role=help][open]")
    # Tab goes round the dialog's links and button (the page behind is inert), and never sticks on one.
    inside = set()
    for _ in range(6):
        page.keyboard.press("Tab")
        # On the way round, the focus passes to the browser's own controls (the body, from the page's side).
        inside.add(page.evaluate("""document.activeElement === document.body ? "the browser"
                                    : document.activeElement.closest('dialog') !== null && document.activeElement.outerHTML"""))
    assert False not in inside and len(inside - {"the browser"}) >= 2
    page.keyboard.press("Escape")
    assert page.evaluate("document.querySelector('dialog[data-role=help]').open") is False
    assert page.evaluate("document.activeElement.dataset.action") == "help"


def test_what_the_tooltips_said_is_on_the_page_and_read_with_what_it_explains(rp, walked_project, logged_in_page,
                                                                              live_server):
    page = logged_in_page
    project = rp.project.pk
    page.route("**/train/estimate/**", lambda route: route.abort())
    page.goto(f"{live_server.url}/projects/{project}/")
    # A validation figure scored with test-time augmentation: "TTA" is explained under the table, and read with it.
    note = "TTA: scored with test-time augmentation (the mean over 8 flips and rotations)"
    assert page.locator("#versions-tta").is_visible() and note in page.inner_text("#versions-tta")
    assert note in accessible(page, "table.versions summary")["description"]
    # The activity's "automatic" (no person).
    page.goto(f"{live_server.url}/projects/{project}/activity/")
    assert page.locator("table.activity td", has_text="automatic").count() >= 1
    assert "no person, but a worker, the retraining policy or a training" in page.inner_text("#activity-automatic")
    assert "no person" in accessible(page, "table.activity")["description"]
    # The agreement's undefined κ and what "Involved" counts.
    page.goto(f"{live_server.url}/projects/{project}/review/agreement/?label_set=colon")
    assert page.inner_text("[data-pair='rita|rob'] td.kappa") == "undefined"
    assert "undefined where both reviewers used one class only" in accessible(page, "[data-role=pairs]")["description"]
    assert "at least one reviewer chose the class" in accessible(page, "[data-role=classes]")["description"]
    # The review order's meaning (each option had it as a tooltip): shown, and the select's description.
    page.goto(f"{live_server.url}/projects/{project}/review/?label_set=colon&strategy=random")
    about = page.inner_text("#review-strategy-about")
    assert about == "Random — random order; needs no predictions"
    assert about in accessible(page, "select[name=strategy]")["description"]


def test_the_review_pages_keys_are_said_with_their_buttons(rp, logged_in_page, live_server):
    """The keys were in tooltips (and <kbd> text a screen reader reads as part of the name): each button now
    carries its key as aria-keyshortcuts, which a screen reader announces as the shortcut."""
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/?label_set=colon")
    shortcuts = {action: accessible(page, f"[data-action={action}]")["shortcuts"]
                 for action in ("accept", "skip", "undo", "help", "zoom")}
    assert shortcuts == {"accept": "Enter", "skip": "s", "undo": "u", "help": "?", "zoom": "z"}
    classes = page.locator(".class-button").count()
    assert [accessible(page, f".class-button[data-class-index='{index}']")["shortcuts"] for index in range(classes)] == [
        str(index + 1) for index in range(classes)]
    assert accessible(page, "[data-action=help]")["name"].startswith("Keys")
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/review/gallery/?label_set=colon")
    assert accessible(page, "[data-action=help]")["shortcuts"] == "?"


def test_the_image_viewers_zoom_buttons_say_their_names_and_keys(rp, logged_in_page, live_server):
    """They said their keys in tooltips, which only a mouse shows: a name and aria-keyshortcuts now, no title."""
    page = logged_in_page
    image_id = Nucleus.objects.filter(image__dataset=rp.colon).values_list("image_id", flat=True).first()
    page.goto(f"{live_server.url}/projects/{rp.project.pk}/images/{image_id}/")
    said = {zoom: accessible(page, f"button[data-zoom={zoom}]") for zoom in ("out", "in", "fit", "actual")}
    assert {zoom: (a["name"], a["shortcuts"]) for zoom, a in said.items()} == {
        "out": ("Zoom out", "-"), "in": ("Zoom in", "Shift+= ="), "fit": ("Fit the image", "0"),
        "actual": ("1:1, one screen pixel per image pixel", "1")}
    assert page.locator("button[data-zoom][title]").count() == 0
