"""The slide viewer in real Chromium: Deep Zoom tiles, the density heatmap zoomed out, outlines past the zoom
threshold that follow a pan, hover labels, a label-set switch; and not one console error (CSP included)."""

import pytest

from tests.browser.conftest import wait_until
from tests.webapp.slide_world import ALPHA_CLASSES, BETA_CLASSES, build_slide_world
from webapp.datasets import slides
from webapp.datasets.models import Nucleus

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def slide_world(owner, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    slides.forget_open_slides()
    return build_slide_world(owner, tiles_x=8, tiles_y=6)  # 2048 x 1536 px


def strokes(page) -> dict:
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll('svg.slide-overlay polygon'))
                                  .map((p) => [p.dataset.nucleusId, p.getAttribute('stroke')]))""")


def test_slide_viewer_zoom_pan_hover_and_label_sets(logged_in_page, live_server, slide_world):
    world = slide_world
    page = logged_in_page
    problems, tiles = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: tiles.append(r.status) if "/slide_files/" in r.url else None)

    page.goto(f"{live_server.url}/images/{world.image.pk}/slide/")
    page.wait_for_selector("#slide-viewer[data-ready=true]")
    # Zoomed out: the slide fits, below the outline zoom; the heatmap is shown and no outline is drawn.
    wait_until(page, "() => document.querySelector('canvas.slide-heatmap') !== null")
    assert page.evaluate("slideViewer.imageZoom() < slideViewer.OUTLINE_ZOOM")
    assert page.locator("svg.slide-overlay polygon").count() == 0
    assert "hidden" not in page.get_attribute("canvas.slide-heatmap", "class")
    # Pictures without words: hidden from assistive technology (the density legend and the keys say what is there).
    assert page.get_attribute("canvas.slide-heatmap", "aria-hidden") == "true"
    assert page.get_attribute("svg.slide-overlay", "aria-hidden") == "true"
    note = page.inner_text("[data-role=density-note]")
    assert f"{world.image.nucleus_count} in all" in note
    wait_until(page, "() => performance.getEntriesByType('resource').some((e) => e.name.includes('/slide_files/'))")

    # Zoom in past the threshold (one slide pixel per screen pixel) at the slide's centre.
    page.evaluate("""() => { const v = slideViewer.viewer.viewport;
                             v.zoomTo(v.imageToViewportZoom(1.0), v.imageToViewportCoordinates(1024, 768)); }""")
    wait_until(page, "() => Number(document.getElementById('slide-viewer').dataset.outlines || 0) > 0")
    count = page.locator("svg.slide-overlay polygon").count()
    assert 0 < count < world.image.nucleus_count
    assert "hidden" in page.get_attribute("canvas.slide-heatmap", "class")
    assert "hidden" not in (page.get_attribute("svg.slide-overlay", "class") or "")
    assert all(status == 200 for status in tiles) and tiles

    # Every outline is in its ground-truth class colour in the dataset's label set.
    colors = {i: c for i, (_, c) in enumerate(ALPHA_CLASSES)}
    before = strokes(page)
    assert before and all(color == colors[world.truth[int(pk)]] for pk, color in before.items())
    legend = page.inner_text("#legend")
    assert all(name in legend for name, _ in ALPHA_CLASSES)

    # Pan by dragging well to the left: other nuclei are loaded for the new view.
    box = page.locator("#slide-osd").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 300, cy, steps=8)
    page.mouse.move(cx + 700, cy, steps=8)
    page.mouse.up()
    wait_until(page, f"() => slideViewer.nuclei().some((n) => !{list(map(int, before))}.includes(n.id))")
    view = page.evaluate("""() => { const v = slideViewer.viewer.viewport;
                                    const r = v.viewportToImageRectangle(v.getBounds(true));
                                    return [r.x, r.y, r.x + r.width, r.y + r.height]; }""")
    assert view[0] < 1024 - 300  # the view moved left

    # Hover a nucleus near the centre: its labels in both label sets.
    target = page.evaluate("""() => { const v = slideViewer.viewer.viewport;
        const r = v.viewportToImageRectangle(v.getBounds(true));
        const mx = r.x + r.width / 2, my = r.y + r.height / 2;
        const inView = slideViewer.nuclei().filter((n) => n.labels && n.outline.length > 4);
        inView.sort((a, b) => Math.hypot(a.centroid[0] - mx, a.centroid[1] - my) - Math.hypot(b.centroid[0] - mx, b.centroid[1] - my));
        const n = inView.find((n) => Object.keys(n.classes).length === 2) || inView[0];
        const p = v.imageToViewerElementCoordinates(new OpenSeadragon.Point(n.centroid[0] + 0.5, n.centroid[1] + 0.5));
        return {id: n.id, instance: n.instance_id, x: p.x, y: p.y}; }""")
    page.mouse.move(box["x"] + target["x"], box["y"] + target["y"], steps=3)
    tip = page.locator("#nucleus-tip")
    tip.wait_for(state="visible")
    text = tip.inner_text()
    assert f"Nucleus {target['instance']}" in text
    assert "alpha-types" in text and "beta-types" in text
    assert ALPHA_CLASSES[world.truth[target["id"]]][0] in text
    if target["id"] in world.beta_reviews:
        assert BETA_CLASSES[world.beta_reviews[target["id"]]][0] in text and "review" in text
    assert page.inner_text("#nucleus-info") == text
    page.mouse.move(box["x"] + 5, box["y"] + box["height"] - 5)

    # Switch to the second label set: reviewed nuclei in its colours, the others grey.
    now = strokes(page)
    page.select_option("#label-set", str(world.beta.pk))
    after = strokes(page)
    beta_colors = {i: c for i, (_, c) in enumerate(BETA_CLASSES)}
    assert after.keys() == now.keys()
    for pk, color in after.items():
        reviewed = world.beta_reviews.get(int(pk))
        assert color == (beta_colors[reviewed] if reviewed is not None else "#9e9e9e")
    assert after != now
    assert all(name in page.inner_text("#legend") for name, _ in BETA_CLASSES)
    assert f"label_set={world.beta.pk}" in page.url

    # The review source: refetched, only reviewed nuclei keep a class.
    page.select_option("#source", "review")
    wait_until(page, "() => slideViewer.nuclei().every((n) => Object.keys(n.classes).length <= 1)")

    assert not problems, "\n".join(problems)


def test_the_review_link_opens_the_slide_on_the_nucleus(logged_in_page, live_server, slide_world):
    """``?x=&y=`` (the review page's "open in the viewer"): at one slide pixel per screen pixel, centred
    there, with the outlines of that neighbourhood drawn at once."""
    from webapp.datasets.models import Nucleus

    nucleus = Nucleus.objects.filter(image=slide_world.image).order_by("-y0").first()
    page = logged_in_page
    page.goto(f"{live_server.url}/images/{slide_world.image.pk}/slide/"
              f"?x={round(nucleus.centroid_x)}&y={round(nucleus.centroid_y)}")
    page.wait_for_selector("#slide-viewer[data-ready=true]")
    assert abs(page.evaluate("slideViewer.imageZoom()") - 1.0) < 0.01
    centre = page.evaluate("""() => { const v = slideViewer.viewer.viewport;
                                      const c = v.viewportToImageCoordinates(v.getCenter(true)); return [c.x, c.y]; }""")
    assert abs(centre[0] - nucleus.centroid_x) < 2 and abs(centre[1] - nucleus.centroid_y) < 2
    wait_until(page, f"() => slideViewer.nuclei().some((n) => n.id === {nucleus.pk})")


def test_slide_viewer_steps_through_the_nuclei_in_view_with_the_keyboard(logged_in_page, live_server, slide_world):
    """n / p choose the nuclei in view one after another in reading order, without a mouse; the side panel
    names each and keeps it while the pointer hovers others; zoomed out, n says to zoom in."""
    page = logged_in_page
    page.goto(f"{live_server.url}/images/{slide_world.image.pk}/slide/")
    page.wait_for_selector("#slide-viewer[data-ready=true]")
    page.focus(".openseadragon-canvas")
    page.keyboard.press("n")
    assert "Zoom in" in page.inner_text("#nucleus-info")
    # The toolbar's zoom buttons are real buttons (a keyboard reaches them; OpenSeadragon's images are off).
    assert page.locator(".openseadragon-container [title='Zoom in']").count() == 0
    # The page's own zoom buttons: names and keys for a screen reader, no tooltip.
    assert page.locator("button[data-zoom][title]").count() == 0
    assert page.get_attribute("button[data-zoom=home]", "aria-keyshortcuts") == "0"
    assert page.get_attribute("button[data-zoom=in]", "aria-keyshortcuts") == "Shift+= ="
    home = page.evaluate("slideViewer.imageZoom()")
    page.focus("[data-zoom=in]")
    page.keyboard.press("Enter")
    wait_until(page, f"() => slideViewer.imageZoom() > {home} * 1.4")
    page.click("[data-zoom=home]")
    wait_until(page, f"() => Math.abs(slideViewer.imageZoom() - {home}) < {home} * 0.01")
    page.evaluate("""() => { const v = slideViewer.viewer.viewport;
                             v.zoomTo(v.imageToViewportZoom(1.0), v.imageToViewportCoordinates(1024, 768), true); }""")
    wait_until(page, "() => Number(document.getElementById('slide-viewer').dataset.outlines || 0) > 0")
    view = page.evaluate("""() => { const v = slideViewer.viewer.viewport;
                                    const r = v.viewportToImageRectangle(v.getBounds(true));
                                    return [r.x, r.y, r.x + r.width, r.y + r.height]; }""")
    loaded = page.evaluate("() => slideViewer.nuclei().map((n) => ({id: n.id, bbox: n.bbox, outline: n.outline}))")

    def centre_in_view(n):
        cx, cy = (n["bbox"][0] + n["bbox"][2]) / 2, (n["bbox"][1] + n["bbox"][3]) / 2
        return view[0] <= cx <= view[2] and view[1] <= cy <= view[3]

    in_view = [n for n in loaded if centre_in_view(n)]
    reading = sorted(in_view, key=lambda n: (min(y for _, y in n["outline"]) // 32, min(x for x, _ in n["outline"])))
    assert len(reading) > 3

    def selected():
        return page.eval_on_selector_all("svg.slide-overlay polygon.selected",
                                         "els => els.map(e => Number(e.dataset.nucleusId))")

    page.focus(".openseadragon-canvas")
    page.keyboard.press("n")
    assert selected() == [reading[0]["id"]]
    assert f"1 of {len(reading)} in view" in page.inner_text("#nucleus-info")
    page.keyboard.press("n")
    page.keyboard.press("n")
    assert selected() == [reading[2]["id"]]
    page.keyboard.press("p")
    assert selected() == [reading[1]["id"]]
    instance = Nucleus.objects.get(pk=reading[1]["id"]).instance_id
    assert f"Nucleus {instance} " in page.inner_text("#nucleus-info")
    assert "alpha-types" in page.inner_text("#nucleus-info")
    page.keyboard.press("Escape")
    assert selected() == []


def test_a_missing_slide_file_is_said_plainly_on_the_page(logged_in_page, live_server, slide_world):
    """OpenSeadragon's own message named "[object Object]"; the page shows the server's reason."""
    slide_world.path.unlink()
    slides.forget_open_slides()
    page = logged_in_page
    page.goto(f"{live_server.url}/images/{slide_world.image.pk}/slide/")
    wait_until(page, "() => document.querySelector('[data-role=status]').classList.contains('error')")
    status = page.inner_text("[data-role=status]")
    assert status.startswith("Could not open the slide: ") and "the slide file is missing" in status, status
    assert "[object Object]" not in status
