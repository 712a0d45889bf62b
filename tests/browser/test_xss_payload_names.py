"""Stored XSS, end to end in real Chromium: a project whose project, dataset, label-set, class and file
names are script payloads, imported, uploaded through the page, trained on and classified with, and
then every page opened (the admin's and the API docs' too). No dialog may open, no payload element may
appear in the DOM, the browser may report no Content-Security-Policy violation and no script error,
and each payload must be shown as the text it is.

One test on purpose: the setup (imports, an upload, a training and an inference on a real worker) is
most of the cost, and the live server's tests flush the database after each test.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from playwright.sync_api import Error as PlaywrightError

from mlcore.synthetic import generate_nucleus_dataset
from mlcore.writers import write_dataset
from tests.browser.conftest import wait_until
from tests.conftest import wait_for
from tests.workers.training_helpers import FAST
from webapp.datasets.importing import do_import_dataset
from webapp.datasets.models import Dataset, Image, Nucleus
from webapp.jobs.models import Job
from webapp.projects.operations import do_create_project
from webapp.training.models import ModelVersion, Prediction

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.celery_worker]

# Payloads that run a script wherever a string is parsed as HTML (element, attribute or script
# context). Names that may become part of a URL or a file name keep clear of "/".
PROJECT = '"><img src=x onerror=alert("project")> lab'
COLON_DATASET = '"><img src=x onerror=alert("dataset")> colon'
COLON_SET = "'><svg onload=alert('labelset')> colon"
COLON_CLASSES = ["<script>alert('class')</script>", '"><img src=x onerror=alert("class2")>']
TILE = '"><img src=x onerror=alert("file")> tile'
BREAST_DATASET = "<svg onload=alert('breast')> breast"
BREAST_SET = '<img src=x onerror=alert("set2")> breast'
BREAST_CLASSES = ['<img src=x onerror=alert("neo")> neoplastic', "<b onmouseover=alert('conn')>connective</b>",
                  "dead</title><script>alert('dead')</script>"]
UPLOADED_DATASET = '<iframe src="javascript:alert(\'upload\')"> uploaded'
INFER_STEM = "'><img src=x onerror=alert('infer')> new"  # browsers send a " in a file name as %22

# Elements and attributes that only a payload parsed as markup can have put into a page.
INJECTED = ("img[src='x'], svg[onload], [onerror], [onmouseover], [onload]:not(body), iframe, "
            "script:not([src]):not([type='application/json'])")

MONITOR = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportViolation(`${event.violatedDirective} blocked ${event.blockedURI || "inline"}: ${event.sample}`);
});
"""


def write_payload_dataset(folder: Path, format: str, classes: list[str], seed: int, images: int) -> Path:
    dataset = generate_nucleus_dataset(images, 12, classes, seed, (128, 128), name=folder.name)
    for index, item in enumerate(dataset.images):
        item.name = f"{TILE} {seed}-{index}"
    return write_dataset(dataset, format, folder)


def zipped(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, str(path.relative_to(folder)))
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


class Watch:
    """Everything the browser reports that a payload or a CSP breach would cause."""

    def __init__(self, page):
        self.problems: list[str] = []
        self.where = "start"
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda error: self.problems.append(f"{self.where}: script error {error}"))
        page.on("console", self._console)
        page.expose_function("__reportViolation", lambda text: self.problems.append(f"{self.where}: CSP {text}"))
        page.add_init_script(MONITOR)

    def _dialog(self, dialog):
        self.problems.append(f"{self.where}: a {dialog.type} dialog opened: {dialog.message!r}")
        dialog.dismiss()

    def _console(self, message):
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.problems.append(f"{self.where}: console error {message.text}")


def check_page(page, watch: Watch, where: str, *texts: str) -> None:
    """The page shows each text as text and holds no element a payload would have made."""
    watch.where = where
    page.wait_for_load_state("load")
    injected = page.eval_on_selector_all(INJECTED, "nodes => nodes.map(n => n.outerHTML.slice(0, 120))")
    if injected:
        watch.problems.append(f"{where}: payload markup in the DOM: {injected}")
    body = page.inner_text("body")
    for text in texts:
        if text not in body:
            watch.problems.append(f"{where}: {text!r} is not shown as text")


def test_payload_names_stay_text_on_every_page(page, live_server, owner, tmp_path, api_client_for,
                                               celery_worker_process):
    project = do_create_project(PROJECT, actor=owner)
    for dataset_name, label_set, format, classes, seed in (
            (COLON_DATASET, COLON_SET, "seed", COLON_CLASSES, 0),
            (BREAST_DATASET, BREAST_SET, "coco", BREAST_CLASSES, 1)):
        root = write_payload_dataset(tmp_path / f"set{seed}", format, classes, seed, images=2)
        do_import_dataset(project, name=dataset_name, format=format, path=root, actor=owner, label_set_name=label_set)
    colon = Dataset.objects.get(project=project, name=COLON_DATASET)
    image = Image.objects.filter(dataset=colon).order_by("id").first()
    assert image.name.startswith(TILE)

    watch = Watch(page)
    page.set_default_timeout(60_000)  # the worker trains on the same two cores meanwhile
    base = live_server.url
    watch.where = "login"
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", owner.username)
    page.fill("input[name=password]", "pw-" + owner.username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/")
    check_page(page, watch, "home", PROJECT)

    # Upload a third dataset through the page: upload.js shows the job and the new dataset's name.
    page.goto(f"{base}/projects/{project.pk}/")
    upload_root = write_payload_dataset(tmp_path / "upload", "seed", COLON_CLASSES, 2, images=1)
    page.fill("#upload-form input[name=name]", UPLOADED_DATASET)
    page.select_option("#upload-form select[name=format]", "seed")
    page.fill("#upload-form input[name=label_set]", COLON_SET)
    page.set_input_files("#upload-form input[name=archive]",
                         files=[{"name": f"{TILE}.zip", "mimeType": "application/zip", "buffer": zipped(upload_root)}])
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#upload-job [data-field=done]:not([hidden])", timeout=120_000)
    check_page(page, watch, "project page after the upload", f"Open {UPLOADED_DATASET}")

    # A tiny training on the worker, then its prediction job.
    response = api_client_for(owner).post(f"/api/projects/{project.pk}/train/", FAST, format="json")
    assert response.status_code == 202, response.content
    train_job = Job.objects.get(pk=response.json()["id"])
    version = wait_for(lambda: ModelVersion.objects.filter(project=project).first(), timeout=300,
                       message=f"the model version\n{celery_worker_process.log()}")
    wait_for(lambda: Job.objects.filter(project=project, kind="predict", state="succeeded").exists(), timeout=120,
             message=f"stored predictions\n{celery_worker_process.log()}")

    # The project page: datasets, label-set charts, training panel with per-class metrics. The page still
    # open reloads itself when it sees the training finish; a navigation of ours at that moment is cut
    # short by it, so go again.
    try:
        page.goto(f"{base}/projects/{project.pk}/")
    except PlaywrightError as exc:
        if "interrupted by another navigation" not in str(exc):
            raise
        page.goto(f"{base}/projects/{project.pk}/")
    page.wait_for_selector("table.versions")
    check_page(page, watch, "project page", PROJECT, COLON_DATASET, BREAST_DATASET, UPLOADED_DATASET, COLON_SET,
               BREAST_SET)
    page.eval_on_selector_all("table.versions details", "all => all.forEach((details) => { details.open = true; })")
    check_page(page, watch, "training panel metrics", *COLON_CLASSES, *BREAST_CLASSES)

    # Classify a new image whose file name is a payload: training.js lists the output files.
    tile = generate_nucleus_dataset(1, 10, COLON_CLASSES, 5, (96, 96)).images[0]
    mask = io.BytesIO()
    np.save(mask, tile.instance_map.astype(np.int32))
    page.set_input_files("#infer-form input[name=image]",
                         files=[{"name": f"{INFER_STEM}.png", "mimeType": "image/png", "buffer": png_bytes(tile.image)}])
    page.set_input_files("#infer-form input[name=mask]",
                         files=[{"name": "mask.npy", "mimeType": "application/octet-stream", "buffer": mask.getvalue()}])
    page.click("#infer-form button[type=submit]")
    page.wait_for_selector("#infer-result .overlays a", timeout=120_000)
    check_page(page, watch, "inference result", INFER_STEM)

    page.goto(f"{base}/projects/{project.pk}/datasets/{colon.pk}/")
    check_page(page, watch, "dataset page", COLON_DATASET, COLON_SET, TILE)

    page.goto(f"{base}/projects/{project.pk}/images/{image.pk}/")
    page.wait_for_selector("#viewer[data-ready=true]")
    page.locator("svg.overlay polygon").first.hover(force=True)
    page.wait_for_selector("#nucleus-info table")
    check_page(page, watch, "image viewer", image.name, COLON_DATASET, COLON_SET, BREAST_SET)

    # The review queue, for the payload label set chosen in its autosubmitting select.
    page.goto(f"{base}/projects/{project.pk}/review/")
    with page.expect_navigation():
        page.select_option("#review-options select[name=label_set]", label=COLON_SET)
    page.wait_for_selector("#review[data-ready=true]")
    check_page(page, watch, "review queue", COLON_SET, *COLON_CLASSES)
    wait_until(page, "document.querySelector('[data-role=loading]').hidden", timeout=60)  # keys wait for the tissue
    page.keyboard.press("1")
    wait_until(page, "document.querySelector('[data-role=status]').textContent.startsWith('Saved')", timeout=60)
    check_page(page, watch, "review decision", COLON_CLASSES[0])
    history = page.locator("[data-role=caption] a", has_text="history")
    if history.count():
        page.goto(f"{base}{history.get_attribute('href')}")
    else:  # the queue is empty after one decision: open the reviewed nucleus from the database
        page.goto(f"{base}/projects/{project.pk}/nuclei/{Nucleus.objects.filter(image__dataset=colon).first().pk}/")
    check_page(page, watch, "nucleus page", COLON_SET)

    # The gallery, then a class the model predicts nowhere: the empty state names the class.
    page.goto(f"{base}/projects/{project.pk}/review/")
    with page.expect_navigation():
        page.select_option("#review-options select[name=label_set]", label=COLON_SET)
    with page.expect_navigation():
        page.click("a:text('Gallery')")
    page.wait_for_selector("#gallery[data-ready=true]")
    check_page(page, watch, "gallery", *COLON_CLASSES)
    empty_class = COLON_CLASSES[1]
    Prediction.objects.filter(model_version=version, label_set__name=COLON_SET, class_index=1).delete()
    page.locator("#gallery .tab", has_text=empty_class).click()
    page.wait_for_selector("#gallery .gallery-grid p.muted")
    check_page(page, watch, "empty gallery class", f"No unreviewed nuclei predicted as {empty_class}")

    page.goto(f"{base}/projects/{project.pk}/review/agreement/")
    check_page(page, watch, "agreement page", COLON_SET, BREAST_SET)

    page.goto(f"{base}/projects/{project.pk}/members/")
    check_page(page, watch, "members page", PROJECT, owner.username)

    for job in (train_job, Job.objects.filter(project=project, kind="import").first()):
        page.goto(f"{base}/jobs/{job.pk}/")
        wait_until(page, "document.querySelector('#job [data-field=detail]').textContent !== ''", timeout=60)
        check_page(page, watch, f"{job.kind} job page")

    page.goto(f"{base}/account/")
    check_page(page, watch, "account page", owner.username)

    # Django's admin keeps to the same policy (its scripts are static files too).
    type(owner).objects.filter(pk=owner.pk).update(is_staff=True, is_superuser=True)
    page.goto(f"{base}/admin/projects/project/")
    check_page(page, watch, "admin project list", PROJECT)
    page.goto(f"{base}/admin/projects/project/{project.pk}/change/")
    check_page(page, watch, "admin project form")

    page.goto(f"{base}/api/docs/")
    page.wait_for_selector(".swagger-ui .info")
    check_page(page, watch, "Swagger UI")
    # Redoc's sidebar shows its vendor's logo from a CDN: the CSP blocks it, and nothing else is reported.
    watch.where = "Redoc"
    page.goto(f"{base}/api/redoc/")
    page.wait_for_selector("redoc .api-content, .api-content", timeout=30_000)
    watch.problems = [p for p in watch.problems if not (p.startswith("Redoc:") and "cdn.redoc.ly" in p)]
    check_page(page, watch, "Redoc")
    # DRF's browsable API: its one inline style (the Extra Actions menu's float) is let in by hash.
    page.goto(f"{base}/api/projects/{project.pk}/")
    page.wait_for_selector("#extra-actions-menu")
    check_page(page, watch, "browsable API")

    assert not watch.problems, "\n".join(watch.problems)
