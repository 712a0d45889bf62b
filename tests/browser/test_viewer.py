"""The image viewer in real Chromium: outlines drawn, colours follow the label set, hover shows labels."""

import json
import re
import zipfile

import pytest

from tests.browser.conftest import wait_until
from tests.webapp.viewer_project import ALPHA_CLASSES, BETA_CLASSES, build_viewer_project
from webapp.datasets.models import CurrentLabel, LabelClass, Nucleus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def strokes(page) -> list[str]:
    return page.eval_on_selector_all("svg.overlay polygon", "els => els.map(e => e.getAttribute('stroke'))")


def test_viewer_draws_outlines_switches_label_sets_and_shows_labels_on_hover(logged_in_page, live_server, owner,
                                                                            media_root, tmp_path):
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=2, nuclei=40, size=256)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{vp.project.pk}/images/{vp.image.pk}/")
    page.wait_for_selector("#viewer[data-ready=true]")

    nuclei = list(Nucleus.objects.filter(image=vp.image).order_by("instance_id"))
    assert page.locator("svg.overlay polygon").count() == len(nuclei) > 20
    assert page.inner_text("[data-role=status]") == f"{len(nuclei)} nuclei"
    image_loaded = page.eval_on_selector(".stage img", "img => img.complete && img.naturalWidth")
    assert image_loaded == 256
    # The fitted image follows the window when it narrows (it stayed as wide as before, cut off).
    page.set_viewport_size({"width": 375, "height": 800})
    wait_until(page, "document.querySelector('.stage').getBoundingClientRect().right <= "
                     "document.querySelector('.viewport').getBoundingClientRect().right + 1")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Alpha (the dataset's own label set) is chosen first: every nucleus in an alpha class colour.
    alpha_colors = {c.index: c.color for c in LabelClass.objects.filter(label_set=vp.alpha_set)}
    current = dict(CurrentLabel.objects.filter(nucleus__image=vp.image, label_set=vp.alpha_set)
                   .values_list("nucleus__instance_id", "class_index"))
    assert strokes(page) == [alpha_colors[current[n.instance_id]] for n in nuclei]
    legend = page.inner_text("#legend")
    assert all(name in legend for name in ALPHA_CLASSES)

    # Beta: only the three reviewed nuclei have a class there; the others turn grey.
    page.select_option("#label-set", str(vp.beta_set.pk))
    beta_colors = {c.index: c.color for c in LabelClass.objects.filter(label_set=vp.beta_set)}
    after = strokes(page)
    reviewed = {n.pk: vp.reviewed[n.pk][vp.beta_set.pk] for n in nuclei if vp.beta_set.pk in vp.reviewed.get(n.pk, {})}
    assert len(reviewed) == 3
    for nucleus, color in zip(nuclei, after):
        assert color == (beta_colors[reviewed[nucleus.pk]] if nucleus.pk in reviewed else "#9e9e9e")
    assert all(name in page.inner_text("#legend") for name in BETA_CLASSES)
    assert "label_set=" in page.url  # the choice survives a reload

    # Source "ground truth" in alpha: the first nucleus shows its original class again.
    page.select_option("#label-set", str(vp.alpha_set.pk))
    first = nuclei[0]
    reviewed_color = page.get_attribute(f"polygon[data-nucleus-id='{first.pk}']", "stroke")
    page.select_option("#source", "ground_truth")
    gt_color = page.get_attribute(f"polygon[data-nucleus-id='{first.pk}']", "stroke")
    assert reviewed_color == alpha_colors[vp.reviewed[first.pk][vp.alpha_set.pk]]
    assert gt_color != reviewed_color

    # Hover: the labels of the nucleus in every label set, with their source.
    page.hover(f"polygon[data-nucleus-id='{first.pk}']")
    tip = page.locator("#nucleus-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert f"Nucleus {first.instance_id}" in text
    assert "alpha-types" in text and "beta-types" in text
    assert ALPHA_CLASSES[vp.reviewed[first.pk][vp.alpha_set.pk]] in text
    assert BETA_CLASSES[vp.reviewed[first.pk][vp.beta_set.pk]] in text
    assert "review" in text and "ground truth" in text
    assert page.inner_text("#nucleus-info") == text  # the side panel keeps it

    # Zoom with the buttons and the wheel, pan by dragging.
    def scale():
        transform = page.eval_on_selector(".stage", "e => e.style.transform")
        return float(re.search(r"scale\(([\d.]+)\)", transform).group(1))

    fitted = scale()
    page.click("[data-zoom=in]")
    assert scale() == pytest.approx(fitted * 1.5, rel=1e-3)
    box = page.locator(".viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -300)
    wait_until(page, f"() => !document.querySelector('.stage').style.transform.includes('scale({fitted * 1.5})')")
    assert scale() > fitted * 1.5
    before = page.eval_on_selector(".stage", "e => e.style.transform")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 80, box["y"] + box["height"] / 2 + 40, steps=4)
    page.mouse.up()
    assert page.eval_on_selector(".stage", "e => e.style.transform") != before
    page.click("[data-zoom=fit]")
    assert scale() == pytest.approx(fitted, rel=1e-3)

    page.select_option("#source", "current")
    page.hover(f"polygon[data-nucleus-id='{nuclei[5].pk}']")
    page.screenshot(path="/tmp/viewer.png", full_page=True)



def test_viewer_steps_through_nuclei_with_the_keyboard_and_keeps_a_clicked_one(logged_in_page, live_server, owner,
                                                                              media_root, tmp_path):
    """Labels without a mouse: n / p walk the nuclei in reading order, the side panel names each, a nucleus
    outside the zoomed view is brought into it; a click keeps a nucleus in the panel while others are hovered."""
    vp = build_viewer_project(owner, tmp_path / "sources", n_images=1, nuclei=30, size=256)
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{vp.project.pk}/images/{vp.image.pk}/")
    page.wait_for_selector("#viewer[data-ready=true]")
    nuclei = list(Nucleus.objects.filter(image=vp.image).order_by("instance_id"))  # the API's order
    reading = sorted(nuclei, key=lambda n: (min(y for _, y in n.outline) // 32, min(x for x, _ in n.outline)))

    def selected_ids():
        return page.eval_on_selector_all("svg.overlay polygon.selected", "els => els.map(e => e.dataset.nucleusId)")

    page.focus(".viewport")
    page.keyboard.press("n")
    assert selected_ids() == [str(reading[0].pk)]
    info = page.inner_text("#nucleus-info")
    assert f"1 of {len(nuclei)}" in info and f"Nucleus {reading[0].instance_id} " in info
    assert "alpha-types" in info and "beta-types" in info
    page.keyboard.press("n")
    assert selected_ids() == [str(reading[1].pk)]
    page.keyboard.press("p")
    page.keyboard.press("p")  # before the first: round to the last
    assert selected_ids() == [str(reading[-1].pk)]
    assert f"{len(nuclei)} of {len(nuclei)}" in page.inner_text("#nucleus-info")

    # Zoomed in on the middle, the last nucleus (at the bottom) is out of view; stepping to it brings it in.
    page.keyboard.press("Escape")
    assert selected_ids() == []
    for _ in range(5):
        page.keyboard.press("+")
    before = page.eval_on_selector(".stage", "e => e.style.transform")
    page.keyboard.press("ArrowLeft")  # arrow keys pan
    assert page.eval_on_selector(".stage", "e => e.style.transform") != before
    viewport = page.locator(".viewport").bounding_box()

    def in_view(nucleus):
        shape = page.locator(f"polygon[data-nucleus-id='{nucleus.pk}']").bounding_box()
        x, y = shape["x"] + shape["width"] / 2, shape["y"] + shape["height"] / 2
        return (viewport["x"] <= x <= viewport["x"] + viewport["width"]
                and viewport["y"] <= y <= viewport["y"] + viewport["height"])

    assert not in_view(reading[-1])
    page.keyboard.press("p")
    assert selected_ids() == [str(reading[-1].pk)]
    assert in_view(reading[-1])

    # A click keeps its nucleus in the side panel while the pointer hovers others (the tip follows them).
    page.click("[data-zoom=fit]")
    clicked, other = reading[3], reading[10]
    page.click(f"polygon[data-nucleus-id='{clicked.pk}']")
    assert selected_ids() == [str(clicked.pk)]
    page.hover(f"polygon[data-nucleus-id='{other.pk}']")
    page.locator("#nucleus-tip").wait_for(state="visible")
    assert f"Nucleus {other.instance_id} " in page.inner_text("#nucleus-tip")
    assert f"Nucleus {clicked.instance_id} " in page.inner_text("#nucleus-info")
    # The next nucleus after a clicked one is the next in reading order.
    page.focus(".viewport")
    page.keyboard.press("n")
    assert selected_ids() == [str(reading[4].pk)]


def test_upload_form_reports_errors_and_follows_the_import_job(logged_in_page, live_server, owner, media_root,
                                                               tmp_path):
    """The project page's upload form (upload.js): JSON errors shown, then the job followed live (jobs.js).

    The error comes from the real upload API; for the accepted upload the POST is answered by the test
    with a real job row, which the page then polls through the real job API (no worker needed here:
    the import itself is the upload API's and the workers' tests' business).
    """
    from webapp.jobs.models import Job
    from webapp.projects.operations import do_create_project

    project = do_create_project("Uploads", actor=owner)
    archive = tmp_path / "tiles.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("images/a.png", b"not really a png")
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.fill("#upload-form input[name=name]", "   ")  # passes the browser's `required`, not the API
    page.set_input_files("#upload-form input[name=archive]", str(archive))
    page.click("#upload-form button[type=submit]")
    error = page.locator("#upload-form-name-error")  # beside the name field (the form's alert is for the rest)
    error.wait_for(state="visible")
    assert error.inner_text() == "This field may not be blank."
    assert page.locator("#upload-form [data-role=error]").is_hidden()
    assert page.locator("#upload-job").is_hidden()

    job = Job.objects.create(kind=Job.Kind.IMPORT, created_by=owner, project=project,
                             params={"name": "tiles", "format": "coco"})
    posted = {}

    def answer(route):
        posted["body"] = route.request.post_data_buffer
        posted["csrf"] = route.request.headers.get("x-csrftoken")
        route.fulfill(status=202, content_type="application/json", body=json.dumps(
            {"job": {"id": job.pk, "url": f"{live_server.url}/api/jobs/{job.pk}/", "state": "queued"}}))

    page.route(f"**/api/projects/{project.pk}/datasets/", answer)
    page.fill("#upload-form input[name=name]", "tiles")
    page.select_option("#upload-form select[name=format]", "coco")
    page.fill("#upload-form input[name=label_set]", "pannuke")
    page.uncheck("#upload-form input[name=labelled]")
    page.set_input_files("#upload-form input[name=archive]", str(archive))
    page.click("#upload-form button[type=submit]")
    card = page.locator("#upload-job")
    card.wait_for(state="visible")
    assert page.inner_text("#upload-job [data-field=state]") == "queued"
    body = posted["body"]
    for part in (b'name="name"\r\n\r\ntiles', b'name="format"\r\n\r\ncoco', b'name="label_set"\r\n\r\npannuke',
                 b'name="labelled"\r\n\r\nfalse', b'filename="tiles.zip"'):
        assert part in body, part
    assert posted["csrf"]

    Job.objects.filter(pk=job.pk).update(state=Job.State.RUNNING, progress={"percent": 40, "message": "image 2/5"})
    wait_until(page, "document.querySelector('#upload-job [data-field=state]').textContent === 'running'")
    assert "image 2/5" in page.inner_text("#upload-job [data-field=detail]")
    Job.objects.filter(pk=job.pk).update(state=Job.State.SUCCEEDED, progress={"percent": 100},
                                         result={"dataset_id": 77, "dataset": "tiles", "images": 5, "nuclei": 321})
    done = page.locator("#upload-job [data-field=done]")
    done.wait_for(state="visible")
    assert "Imported 5 images and 321 nuclei." in done.inner_text()
    assert page.get_attribute("#upload-job [data-field=done] a", "href") == f"/projects/{project.pk}/datasets/77/"
