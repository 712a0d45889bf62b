"""Keyboard and screen-reader use of the pages other than the review page and the gallery: every control and
link has an accessible name (read from Chromium's own accessibility tree), and what an async action says is in
a live region."""

import pytest
from django.utils import timezone

from tests.browser.conftest import choose_tile_to_classify, wait_until
from tests.workers.training_helpers import two_taxonomy_project
from webapp.jobs import operations as job_operations
from webapp.datasets.models import Dataset
from webapp.training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Roles a user operates or reads as one thing: each needs a name (WAI-ARIA: name required).
NAMED_ROLES = {"button", "link", "textbox", "checkbox", "combobox", "spinbutton", "radio", "slider", "searchbox",
               "listbox", "progressbar", "img", "log", "switch", "tab", "menuitem"}


def unnamed_controls(page):
    """The nodes of Chromium's accessibility tree (not ignored) with a role that needs a name and none."""
    cdp = page.context.new_cdp_session(page)
    nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    found = []
    for node in nodes:
        if node.get("ignored"):
            continue
        role = (node.get("role") or {}).get("value")
        name = ((node.get("name") or {}).get("value") or "").strip()
        if role in NAMED_ROLES and not name:
            found.append((role, node.get("backendDOMNodeId")))
    described = []
    for role, backend_id in found:
        html = cdp.send("DOM.getOuterHTML", {"backendNodeId": backend_id})["outerHTML"][:160]
        described.append(f"{role}: {html}")
    cdp.detach()
    return described


def test_every_control_on_the_pages_has_an_accessible_name(logged_in_page, live_server, owner, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    dataset = Dataset.objects.filter(project=project).first()
    page = logged_in_page
    problems = {}
    for path in ["/", f"/projects/{project.pk}/", f"/projects/{project.pk}/versions/1/",
                 f"/projects/{project.pk}/activity/", "/account/",
                 f"/projects/{project.pk}/datasets/{dataset.pk}/"]:
        assert page.goto(f"{live_server.url}{path}").status == 200, path
        page.wait_for_load_state("networkidle")
        unnamed = unnamed_controls(page)
        if unnamed:
            problems[path] = unnamed
    assert not problems, problems


# What a screen reader hears of an element's changes: it is shown to assistive technology (not inside a hidden
# subtree) and inside a live region that is not off.
ANNOUNCED = """(selector) => {
  const node = document.querySelector(selector);
  if (!node || !node.checkVisibility()) return null;
  const region = node.closest('[aria-live]:not([aria-live="off"]), [role=status], [role=alert], [role=log]');
  return region ? (region.getAttribute("aria-live") || region.getAttribute("role")) : null;
}"""


def test_what_the_project_page_says_after_an_action_is_in_a_live_region(logged_in_page, live_server, owner,
                                                                        tmp_path, monkeypatch):
    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the inference job stays queued
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")

    # The job cards' states are live regions before a job starts: the first state after Upload, Register or Start
    # training ("queued") is read out too, not only the later ones.
    for card in ("#upload-job", "#slide-job", "#training-job"):
        assert page.get_attribute(f"{card} [data-field=state]", "aria-live") == "polite", card
    # The chunked slide upload's progress line ("case.svs: 16.0 of 80.0 MB", "uploaded") is a status.
    assert page.evaluate("""document.querySelector('#slide-upload-form [data-role=file-state]')
                            .closest('[role=status]') !== null""")

    # Scheduled retraining: "Saved." is heard (the focus stays on the Save button).
    page.click("#policy-form button[type=submit]")
    wait_until(page, "document.getElementById('policy-status').textContent === 'Saved.'")
    assert page.evaluate(ANNOUNCED, "#policy-status") == "status"

    # Classify a new image: the job's state is heard (it was in a hidden element, so never read out).
    choose_tile_to_classify(page)
    page.click("#infer-form button[type=submit]")
    wait_until(page, "document.querySelector('#infer-result [data-field=state]').textContent === 'queued'")
    assert page.evaluate(ANNOUNCED, "#infer-result [data-field=state]") == "polite"
    # Shown to assistive technology only: the bar and the progress line show it on screen.
    assert page.evaluate("""document.querySelector('#infer-result [data-field=state]').parentElement
                            .getBoundingClientRect().width""") <= 1
