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


def progress_bars(page) -> list[dict]:
    """Every progressbar of Chromium's accessibility tree (not ignored): its name and value from the tree, its
    value text (aria-valuetext: the DevTools protocol leaves it out of the tree it reports) and the id of the card
    or form it sits in."""
    cdp = page.context.new_cdp_session(page)
    bars = []
    for node in cdp.send("Accessibility.getFullAXTree")["nodes"]:
        if node.get("ignored") or (node.get("role") or {}).get("value") != "progressbar":
            continue
        element = cdp.send("DOM.resolveNode", {"backendNodeId": node["backendDOMNodeId"]})["object"]["objectId"]
        place, text = cdp.send("Runtime.callFunctionOn", {
            "objectId": element, "returnByValue": True, "functionDeclaration":
            "function () { return [this.parentElement.closest('[id]').id, this.getAttribute('aria-valuetext')]; }",
        })["result"]["value"]
        bars.append({"in": place, "name": ((node.get("name") or {}).get("value") or "").strip(),
                     "now": (node.get("value") or {}).get("value"), "text": text})
    cdp.detach()
    return bars


def test_every_progress_bar_says_what_it_measures_and_how_far_it_is(logged_in_page, live_server, owner, tmp_path,
                                                                   monkeypatch):
    """The bars were all named "progress" (set by the script) and read only a bare percentage: five on one page
    could not be told apart."""
    from webapp.jobs.models import Job

    monkeypatch.setattr(job_operations, "_send", lambda job: None)  # the classify job stays queued
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    running = {"project": project, "created_by": owner, "state": Job.State.RUNNING}
    upload = Job.objects.create(kind=Job.Kind.IMPORT, progress={"percent": 40, "message": "image 2/5"}, **running)
    slide = Job.objects.create(kind=Job.Kind.PREDICT, progress={"percent": 10}, **running)
    training = Job.objects.create(kind=Job.Kind.TRAIN, **running,
                                  progress={"percent": 25, "stage": "sparse", "epoch": 1, "epochs": 4})
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/?import_job={upload.pk}&slide_job={slide.pk}")
    # A slide upload (any bytes: its registration is refused here, so that the slide job card stays) and a
    # classification.
    page.route(f"**/api/projects/{project.pk}/slides/", lambda route: route.fulfill(
        status=400, content_type="application/json", body='{"detail": "refused by the test"}'))
    page.evaluate("document.getElementById('slide-upload-form').dataset.chunkBytes = '1000'")
    page.fill("#slide-upload-form input[name=name]", "case")
    page.set_input_files("#slide-upload-form input[name=slide]", files=[
        {"name": "case.svs", "mimeType": "application/octet-stream", "buffer": b"s" * 2500}])
    page.set_input_files("#slide-upload-form input[name=detections]", files=[
        {"name": "case.geojson", "mimeType": "application/json", "buffer": b"{}"}])
    page.click("#slide-upload-form button[type=submit]")
    page.wait_for_selector("#slide-upload-form [data-role=error]:not([hidden])")
    choose_tile_to_classify(page)
    page.click("#infer-form button[type=submit]")
    wait_until(page, "document.querySelector('#infer-result [data-field=state]').textContent === 'queued'")
    wait_until(page, "document.querySelector('#training-job [data-field=detail]').textContent.includes('%')")

    bars = {bar["in"]: bar for bar in progress_bars(page)}
    assert {place: bar["name"] for place, bar in bars.items()} == {
        "upload-job": "Dataset import progress", "slide-upload-form": "Slide upload progress",
        "slide-job": "Slide job progress", "training-job": "Training progress", "infer-result": "Classification progress"}
    assert {place: bar["now"] for place, bar in bars.items()} == {
        "upload-job": 40, "slide-upload-form": 100, "slide-job": 10, "training-job": 25, "infer-result": 0}
    # What a screen reader says of the value: the card's progress line, or the file and its megabytes.
    assert bars["upload-job"]["text"] == "image 2/5 · 40%"
    assert bars["training-job"]["text"] == "stage sparse · epoch 1/4 · 25%"
    assert bars["slide-upload-form"]["text"] == "case.geojson: uploaded (100%)"
    assert bars["infer-result"]["text"] == "0%"  # queued

    # The script keeps the bar in step with the job.
    Job.objects.filter(pk=training.pk).update(progress={"percent": 60, "stage": "sparse", "epoch": 3, "epochs": 4})
    wait_until(page, "document.querySelector('#training-job [data-field=detail]').textContent.includes('60%')")
    bar = {bar["in"]: bar for bar in progress_bars(page)}["training-job"]
    assert (bar["now"], bar["text"]) == (60, "stage sparse · epoch 3/4 · 60%")

    # The job's own page, before its script has run and after.
    page.route("**/static/js/jobs.js", lambda route: route.abort())
    page.goto(f"{live_server.url}/jobs/{training.pk}/")
    assert [(bar["name"], bar["now"]) for bar in progress_bars(page)] == [("Training progress", 60)]
    page.unroute("**/static/js/jobs.js")
    page.goto(f"{live_server.url}/jobs/{upload.pk}/")
    wait_until(page, "document.querySelector('#job [data-field=detail]').textContent.includes('%')")
    assert [(bar["name"], bar["now"], bar["text"]) for bar in progress_bars(page)] == [
        ("Dataset import progress", 40, "image 2/5 · 40%")]
