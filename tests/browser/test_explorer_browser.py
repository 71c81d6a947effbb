"""RelevanceExplorer in a real browser: JupyterLab 4 and Notebook 7, driven by Playwright.

Run: ``tests/browser/run.sh`` (or ``pytest -m browser tests/browser -s``). Screenshots:
``artifacts/browser/<lab|notebook>-*.png``.
"""

from __future__ import annotations

import time

from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"

pytestmark = pytest.mark.browser

ROOT_SEL = ".sglrp-explorer"
CANVAS = f"{ROOT_SEL} canvas[data-role=heatmap]"

PIXEL_HASH = """() => {
  const c = document.querySelector('.sglrp-explorer canvas[data-role=heatmap]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261 >>> 0;
  for (let i = 0; i < d.length; i++) { h ^= d[i]; h = Math.imul(h, 16777619) >>> 0; }
  return h;
}"""


def _shot(page, kind, name):
    path = ARTIFACTS / f"{kind}-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def _run_all(page, kind):
    """Run all cells through the main menu (same in Lab 4 and Notebook 7)."""
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    # wait until the kernel is connected and idle
    page.wait_for_function(
        """() => { const s = document.querySelector('.jp-Notebook'); return !!s; }""", timeout=60_000)
    for _ in range(3):
        _dismiss_dialogs(page)
        try:
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=10_000)
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - menus may not be ready yet; retry
            page.keyboard.press("Escape")
            time.sleep(2)
    # fallback: select the cell and Shift+Enter
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")


def _dismiss_dialogs(page, wait_s: float = 0.0):
    """Accept a kernel chooser (or any other modal) if one shows up within wait_s seconds."""
    deadline = time.time() + wait_s
    while True:
        loc = page.locator(".jp-Dialog .jp-mod-accept")
        if loc.count():
            try:
                loc.first.click(timeout=2000)
                time.sleep(0.5)
                return True
            except Exception:  # noqa: BLE001
                pass
        if time.time() >= deadline:
            return False
        time.sleep(0.5)


def _status(page):
    return page.locator(f"{ROOT_SEL} [data-role=status]").inner_text()


def _comm_count(page):
    return int(page.locator(f"{ROOT_SEL} [data-role=comm-count]").text_content() or 0)


def test_explorer_in_browser(browser, server):
    kind = server.kind
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    sent_comm = []

    def on_ws(ws):
        def framesent(payload):
            data = payload if isinstance(payload, (bytes, bytearray)) else payload.encode()
            if b"comm_msg" in data:
                sent_comm.append(len(data))
        ws.on("framesent", framesent)

    page.on("websocket", on_ws)
    try:
        page.goto(server.url("explorer.ipynb"), wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        _dismiss_dialogs(page, wait_s=15)  # Lab may ask which kernel to start
        _run_all(page, kind)

        # 1. the widget renders and draws a heatmap over the image
        page.wait_for_selector(CANVAS, timeout=180_000)
        page.wait_for_function(
            """() => { const c = document.querySelector('.sglrp-explorer canvas[data-role=heatmap]');
                       return c && c.dataset.map && c.dataset.image !== ''; }""", timeout=120_000)
        _shot(page, kind, "1-first-map")
        first_map = page.locator(CANVAS).get_attribute("data-map")
        h0 = page.evaluate(PIXEL_HASH)
        assert page.locator(f"{ROOT_SEL} [data-role=method-select] optgroup").count() >= 3
        assert page.locator(f"{ROOT_SEL} [data-role=opacity]").count() == 1

        # 2. choosing another class recomputes and changes the pixels
        options = page.locator(f"{ROOT_SEL} [data-role=class-select] option")
        assert options.count() >= 2
        current = first_map.split("|")[2]
        other = next(v for v in (options.nth(i).get_attribute("value") for i in range(options.count()))
                     if v != current)
        page.locator(f"{ROOT_SEL} [data-role=class-select]").select_option(other)
        page.wait_for_function(
            "(t) => document.querySelector('.sglrp-explorer canvas[data-role=heatmap]').dataset.map.split('|')[2] === t",
            arg=other, timeout=120_000)
        h1 = page.evaluate(PIXEL_HASH)
        assert h1 != h0, "the canvas did not change after choosing another class"
        assert "computing" not in _status(page)
        _shot(page, kind, "2-other-class")

        # 2b. search over all class names, then pick a match
        page.locator(f"{ROOT_SEL} [data-role=class-search]").fill("tri")
        match = page.locator(f"{ROOT_SEL} [data-role=class-select] optgroup").nth(1).locator("option").first
        match_value = match.get_attribute("value")
        assert "tri" in match.inner_text()
        if match_value != page.locator(CANVAS).get_attribute("data-map").split("|")[2]:
            page.locator(f"{ROOT_SEL} [data-role=class-select]").select_option(match_value)
            page.wait_for_function(
                "(t) => document.querySelector('.sglrp-explorer canvas[data-role=heatmap]').dataset.map.split('|')[2] === t",
                arg=match_value, timeout=120_000)
            h1 = page.evaluate(PIXEL_HASH)

        # 3. moving the opacity slider changes pixels and sends nothing to the kernel
        time.sleep(1.0)
        count0, frames0 = _comm_count(page), len(sent_comm)
        for v in ("0.1", "0.95", "0.3"):  # as a user dragging: a stream of input events
            page.locator(f"{ROOT_SEL} [data-role=opacity]").evaluate(
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", v)
        h2 = page.evaluate(PIXEL_HASH)
        assert h2 != h1, "the opacity slider did not change the canvas"
        time.sleep(1.5)
        assert _comm_count(page) == count0, "the kernel received a message while moving the slider"
        assert len(sent_comm) == frames0, "a comm message was sent while moving the slider"
        # colormap and positive-only are browser-only as well
        page.locator(f"{ROOT_SEL} [data-role=colormap]").select_option("viridis")
        page.locator(f"{ROOT_SEL} [data-role=positive-only]").check()
        assert page.evaluate(PIXEL_HASH) != h2
        time.sleep(1.0)
        assert _comm_count(page) == count0 and len(sent_comm) == frames0
        _shot(page, kind, "3-opacity-viridis")

        # 4. a bad parameter shows an error in the widget, which keeps working
        page.locator(f"{ROOT_SEL} [data-role=method-select]").select_option("lrp.epsilon")
        page.wait_for_function(
            "() => document.querySelector('.sglrp-explorer canvas[data-role=heatmap]').dataset.map.split('|')[1] === 'lrp.epsilon'",
            timeout=120_000)
        assert _comm_count(page) > count0
        eps = page.locator(f"{ROOT_SEL} [data-role=param][data-param=epsilon]")
        eps.fill("-1")
        eps.dispatch_event("change")
        err = page.locator(f"{ROOT_SEL} [data-role=error]")
        page.wait_for_function(
            "() => document.querySelector('.sglrp-explorer [data-role=error]').textContent.includes('epsilon')",
            timeout=60_000)
        _shot(page, kind, "4-error")
        eps.fill("0.5")
        eps.dispatch_event("change")
        page.wait_for_function(
            "() => document.querySelector('.sglrp-explorer [data-role=error]').textContent === ''",
            timeout=60_000)
        assert "epsilon" not in err.text_content()

        # 5. next image: the image and a fresh map arrive
        page.locator(f"{ROOT_SEL} [data-role=next]").click()
        page.wait_for_function(
            """() => { const c = document.querySelector('.sglrp-explorer canvas[data-role=heatmap]');
                       return c.dataset.image === '1' && c.dataset.map.startsWith('1|'); }""",
            timeout=120_000)
        assert "mass in box" in page.locator(f"{ROOT_SEL} [data-role=metrics]").inner_text()
        _shot(page, kind, "5-next-image")

        # 6. export: PNG download of the canvas, made in the browser
        with page.expect_download(timeout=30_000) as dl:
            page.locator(f"{ROOT_SEL} [data-role=download]").click()
        target = ARTIFACTS / f"{kind}-download.png"
        dl.value.save_as(str(target))
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"downloaded: {target}")

        # 7. compare: a methods x classes grid for the current image
        page.locator(f"{ROOT_SEL} [data-role=compare]").click()
        page.wait_for_function(
            "() => { const i = document.querySelector('.sglrp-explorer [data-role=compare-image]');"
            " return i && i.complete && i.naturalWidth > 0; }", timeout=180_000)
        _shot(page, kind, "6-compare")
        errors = [c for c in console if c.startswith("error") and "sglrp" in c.lower()]
        assert not errors, errors
    except Exception:
        _shot(page, kind, "failure")
        print("\n".join(console[-40:]))
        raise
    finally:
        context.close()
