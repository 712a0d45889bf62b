"""Real headless Chromium (Debian's package) driven by Playwright; never `playwright install`."""

import os
import shutil
import threading
import time

import pytest

# Playwright's sync API keeps an event loop in the test thread; the ORM calls the tests make there
# are still plain synchronous calls (the documented setting for Django with Playwright).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium package (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def wait_for_live_server_requests(timeout: float = 15.0) -> None:
    """Wait until the live server has no request in progress.

    Closing the browser does not stop a request the server is still handling (a fetch fired by the
    page's JavaScript, say). If that request is inside a transaction when the test's database flush
    runs, PostgreSQL sees TRUNCATE and the request's writes wait on each other and reports a
    deadlock. The live server handles each connection in a thread running `process_request_thread`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [thread for thread in threading.enumerate()
                if "process_request_thread" in thread.name and thread.is_alive()]
        if not busy:
            return
        busy[0].join(timeout=0.1)
    raise AssertionError(f"the live server still handles {len(busy)} request(s) {timeout:.0f} s "
                         "after the browser closed")


def wait_until(page, expression: str, timeout: float = 15.0, interval: float = 0.05):
    """Wait until a JavaScript expression (or a "() => ..." function) is truthy in the page; returns its value.

    Playwright's wait_for_function evaluates its predicate with eval inside the page, which the site's
    Content-Security-Policy (no 'unsafe-eval') forbids; page.evaluate goes through the DevTools protocol
    and is not subject to the page's CSP.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s in the page: {expression}")
        page.wait_for_timeout(interval * 1000)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()
    wait_for_live_server_requests()


@pytest.fixture
def logged_in_page(page, live_server, owner):
    """A browser session logged in through the real login form."""
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", owner.username)
    page.fill("input[name=password]", "pw-" + owner.username)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    return page


def choose_tile_to_classify(page) -> None:
    """Put a 64 px tile (PNG) and its instance mask (one 10 px nucleus, .npy) in the project page's classify form."""
    import io

    import numpy as np
    from PIL import Image

    mask = np.zeros((64, 64), np.int32)
    mask[20:30, 20:30] = 1
    png, npy = io.BytesIO(), io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(png, format="PNG")
    np.save(npy, mask)
    page.set_input_files("#infer-form input[name=image]",
                         files=[{"name": "tile.png", "mimeType": "image/png", "buffer": png.getvalue()}])
    page.set_input_files("#infer-form input[name=mask]", files=[
        {"name": "tile.npy", "mimeType": "application/octet-stream", "buffer": npy.getvalue()}])



def shown_beside_its_field(page, form: str, field: str, alert: str):
    """A refusal shown beside the field it names (static/js/field_errors.js): the message visible, the field marked
    invalid, described by the message and focused, the form's alert (``alert``, a selector) hidden. Returns the
    message and the field, for the caller's checks of the words and of what takes the message away."""
    message = page.locator(f"#{form}-{field}-error")
    message.wait_for(state="visible")
    control = page.locator(f"#{form} input[name={field}]")
    assert control.get_attribute("aria-invalid") == "true"
    assert control.get_attribute("aria-describedby") == f"{form}-{field}-error"
    assert page.evaluate("(selector) => document.activeElement === document.querySelector(selector)",
                         f"#{form} input[name={field}]")
    assert page.locator(alert).is_hidden()
    return message, control


def accessible(page, selector: str) -> dict:
    """The name, description and key shortcuts (aria-keyshortcuts) Chromium gives the element: its accessibility
    tree, as a screen reader gets it."""
    cdp = page.context.new_cdp_session(page)
    document = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": document, "selector": selector})["nodeId"]
    assert node, selector
    ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"][0]
    cdp.detach()
    return {"name": (ax.get("name") or {}).get("value", ""), "description": (ax.get("description") or {}).get("value", ""),
            "shortcuts": next((p["value"]["value"] for p in ax.get("properties", []) if p["name"] == "keyshortcuts"), None)}
