"""The long explanations of the training, retraining-policy and test-time-augmentation fields reach keyboard and
screen-reader users: each field is described by its text (aria-describedby, read with the field), and the text is
on the page or behind a button that shows it. They were `title` tooltips, which only a mouse shows."""

import pytest
from django.utils import timezone

from tests.workers.training_helpers import two_taxonomy_project
from webapp.datasets.models import Image
from webapp.training.models import ModelVersion

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# field: the start of the text a screen reader reads with it (Chromium's accessible description).
HELP = {
    "#train-form input[name=stain_jitter]": "HED stain augmentation for slides from other scanners or stains",
    "#train-form input[name=grayscale]": "The share of training crops turned grey",
    "#train-form select[name=crop_context_view]": "A second view of each nucleus, the 128 px around it",
    "#train-form input[name=ensemble]": "Models trained with consecutive seeds and averaged",
    "#train-form input[name=predict_tta]": "The new version classifies the project's tile images with the mean",
    "#policy-form input[name=activate_only_if_not_lower]": "Both versions are scored on the new version's validation",
    "#infer-form input[name=tta]": "The mean over the 8 flips and rotations of each nucleus's crop: on the validation",
    "#slide-tta": "The mean over the 8 flips and rotations of each nucleus's crop: more accurate on tiles",
}


def accessible_description(page, selector: str) -> str:
    cdp = page.context.new_cdp_session(page)
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    backend = cdp.send("DOM.describeNode", {"nodeId": node})["node"]["backendNodeId"]
    ax = cdp.send("Accessibility.getPartialAXTree", {"backendNodeId": backend, "fetchRelatives": False})["nodes"][0]
    cdp.detach()
    return ((ax.get("description") or {}).get("value") or "").strip()


def test_the_long_field_explanations_are_read_with_their_fields_and_shown_by_keyboard(logged_in_page, live_server,
                                                                                      owner, tmp_path):
    project = two_taxonomy_project(owner, tmp_path, images=1, nuclei=6)
    ModelVersion.objects.create(project=project, number=1, checkpoint_file="models/v1.pt",
                                data_snapshot_at=timezone.now(), is_active=True)
    # One image shown as a slide: the slides table, and its Classify's test-time augmentation box.
    Image.objects.filter(pk=Image.objects.filter(project=project).first().pk).update(slide_file="slides/case.svs")
    page = logged_in_page
    page.goto(f"{live_server.url}/projects/{project.pk}/")

    for field, text in HELP.items():
        assert accessible_description(page, field).startswith(text), field
        # No tooltip left to say it twice (or to say something else).
        assert page.eval_on_selector(field, "f => f.title || f.closest('label').title") == "", field

    # Shown to the eye: under the field, or, in the training form, by a button the keyboard reaches.
    help_text = "document.getElementById(document.querySelector('{}').getAttribute('aria-describedby'))"
    for field in HELP:
        if not field.startswith("#train-form"):
            assert page.evaluate(f"{help_text.format(field)}.checkVisibility()"), field
    assert not page.evaluate(f"{help_text.format('#train-form input[name=grayscale]')}.checkVisibility()")
    page.focus("#train-form input[name=predict_tta]")
    toggle = "#train-form button[aria-controls=train-help]"
    while not page.evaluate(f"document.activeElement.matches('{toggle}')"):
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('#train-form') !== null"), "left the form"
    assert page.get_attribute(toggle, "aria-expanded") == "false"
    page.keyboard.press("Enter")
    assert page.get_attribute(toggle, "aria-expanded") == "true"
    for field in HELP:
        if field.startswith("#train-form"):
            assert page.evaluate(f"{help_text.format(field)}.checkVisibility()"), field
    page.screenshot(path=str(tmp_path / "field-help.png"), full_page=True)
