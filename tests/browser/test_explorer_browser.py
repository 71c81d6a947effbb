"""RelevanceExplorer in a real browser: JupyterLab 4 (light and dark), Notebook 7 and marimo, driven by Playwright.

Run: ``tests/browser/run.sh`` (or ``pytest -m browser tests/browser -s``). Screenshots:
``artifacts/browser/<lab-light|lab-dark|notebook|marimo>-*.png``. Locators pierce shadow roots (marimo
renders widgets in one), so every DOM read goes through a locator, never ``document.querySelector``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from PIL import Image

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"

pytestmark = pytest.mark.browser

ROOT_SEL = ".sglrp-explorer"
LONG = 180_000  # ms; first maps trace TensorFlow functions on a busy 2-core machine

PIXEL_HASH = """(c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261 >>> 0;
  for (let i = 0; i < d.length; i++) { h ^= d[i]; h = Math.imul(h, 16777619) >>> 0; }
  return h;
}"""

# WCAG contrast of an element's text against the first opaque background behind it (alpha composited).
CONTRAST = """(el) => {
  const parse = (s) => {  // rgb(a, b, c[, alpha]) or color(srgb r g b[ / alpha]) (what color-mix computes to)
    const m = s.match(/[\\d.]+/g).map(Number);
    const k = s.startsWith("color(") ? 255 : 1;
    return [m[0] * k, m[1] * k, m[2] * k, m.length > 3 ? m[3] : 1];
  };
  const over = (top, below) => [0, 1, 2].map((i) => top[i] * top[3] + below[i] * (1 - top[3]));
  const layers = [];
  for (let node = el; node && node.nodeType === 1;
       node = node.parentElement || (node.getRootNode && node.getRootNode().host) || null) {
    const c = parse(getComputedStyle(node).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  let bg = [255, 255, 255];
  for (const c of layers.reverse()) bg = over(c, bg);
  const fg = over(parse(getComputedStyle(el).color), bg);
  const lum = (c) => { const v = c.map((x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
                       return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]; };
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


def poll(pred, what, detail, timeout_ms=LONG):
    """Wait until ``pred()`` holds (exceptions count as not yet: the element may be re-rendering); on timeout
    fail with ``what`` and ``detail()``, what the page shows."""
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        try:
            if pred():
                return
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; {detail()}")


class Explorer:
    """The widget on a page, through locators."""

    def __init__(self, page, kind):
        self.page, self.kind = page, kind

    def loc(self, role, extra=""):
        return self.page.locator(f"{ROOT_SEL} [data-role={role}]{extra}").first

    @property
    def canvas(self):
        return self.loc("heatmap")

    def drawn(self):
        return self.canvas.get_attribute("data-map") or ""

    def wait(self, pred, what, timeout_ms=LONG):
        poll(pred, what, lambda: f"drawn={self.drawn()!r}, status={self.text('status')!r}, "
                                 f"error={self.text('error')!r}", timeout_ms)

    def wait_map(self, pred, what):
        self.wait(lambda: self.drawn() and pred(self.drawn().split("|")), what)

    def text(self, role, extra=""):
        loc = self.loc(role, extra)
        return loc.text_content() if loc.count() else ""

    def pixels(self):
        return self.canvas.evaluate(PIXEL_HASH)

    def comm_count(self):
        return int(self.text("comm-count") or 0)

    def contrast(self, role, extra=""):
        return self.loc(role, extra).evaluate(CONTRAST)

    def shot(self, name):
        path = ARTIFACTS / f"{self.kind}-{name}.png"
        self.loc("heatmap").scroll_into_view_if_needed()
        self.page.locator(ROOT_SEL).first.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path


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


def _open(page, server):
    page.goto(server.url(), wait_until="domcontentloaded", timeout=120_000)
    if not server.jupyter:  # marimo runs the app's cells itself
        return
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    _dismiss_dialogs(page, wait_s=10)  # Lab may ask which kernel to start


def _run_all(page):
    """Run all cells through the main menu (same in Lab 4 and Notebook 7)."""
    for _ in range(5):
        _dismiss_dialogs(page)
        try:
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click(timeout=10_000)
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - menus may not be ready yet; retry
            page.keyboard.press("Escape")
            time.sleep(2)
    page.locator(".jp-Cell .jp-InputArea-editor").first.click()
    page.keyboard.press("Shift+Enter")


def _type(field, text, key):
    field.click()
    field.fill(text)
    field.press(key)


def test_explorer_in_browser(browser, server):
    kind = server.kind
    context = browser.new_context(viewport={"width": 1400, "height": 1500}, accept_downloads=True)
    page = context.new_page()
    console = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"error: {e}"))
    sent = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(len(payload))))
    ex = Explorer(page, kind)
    try:
        _open(page, server)
        if server.jupyter:
            _run_all(page)

        # 1. the first map: drawn over its image, labelled, with a colour bar that names the class
        page.wait_for_selector(f"{ROOT_SEL} canvas[data-role=heatmap]", timeout=LONG)
        ex.wait(lambda: ex.drawn() and ex.canvas.get_attribute("data-image") == "0", "the first map")
        first = ex.drawn().split("|")
        cls = ex.text("caption").split(" · ")[0]
        assert cls and cls in ex.text("legend-high-words"), ex.text("legend-high-words")
        assert re.fullmatch(r".+ · \d+\.\d %", ex.text("caption"))
        width = ex.canvas.evaluate("c => c.getBoundingClientRect().width")
        assert width >= 256, "a 64 px image is shown enlarged"
        ex.shot("1-first-map")
        for role in ("caption", "legend-high-words", "legend-note", "method-help", "status"):
            assert ex.contrast(role) >= 4.5, (role, ex.contrast(role))

        # 2. another class: the map, the caption and the colour bar's words follow it
        h0 = ex.pixels()
        options = page.locator(f"{ROOT_SEL} [data-role=class-select] option")
        other_opt = next(options.nth(i) for i in range(options.count())
                         if options.nth(i).get_attribute("value") != first[2])
        other, other_name = other_opt.get_attribute("value"), other_opt.text_content().split(" · ")[0]
        ex.loc("class-select").select_option(other)
        ex.wait_map(lambda m: m[2] == other, f"class {other}")
        assert ex.pixels() != h0
        assert other_name in ex.text("legend-high-words") and ex.text("caption").startswith(other_name)
        assert re.search(r"%|n/a", ex.text("metrics"))

        # 3. view settings are browser-only: pixels change, nothing is sent to the kernel
        time.sleep(1.0)
        count0, frames0 = ex.comm_count(), len(sent)
        h1 = ex.pixels()
        for v in ("0.1", "0.95", "0.3"):
            ex.loc("opacity").evaluate(
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", v)
        assert ex.pixels() != h1
        ex.loc("colormap").select_option("viridis")
        ex.loc("positive-only").check()
        ex.loc("layout").select_option("side")
        assert "percentile" in ex.text("legend-note") and ex.text("legend-low") == "0"
        time.sleep(1.5)
        assert ex.comm_count() == count0, "the kernel received a message for a view setting"
        if server.jupyter:
            assert len(sent) == frames0, "a message was sent for a view setting"
        ex.shot("2-side-by-side-viridis")
        ex.loc("layout").select_option("overlay")
        ex.loc("colormap").select_option("bwr")
        ex.loc("positive-only").uncheck()

        # 4. one bound typed, the other automatic, applied with Enter
        low = ex.loc("param", "[data-param=low]")
        _type(low, "0", "Enter")
        ex.wait(lambda: "low=[0.0, 0.0, 0.0]" in ex.text("code"), "the map with low=0")
        assert ex.text("error") == "" and ex.text("field-error", "[data-param=low]") == ""
        assert ex.drawn().split("|")[1] == "sglrp"

        # 5. Grad-CAM's maps are never negative: its colour bar starts at 0, with no "no evidence" end, and
        # positive-only shows ticked and fixed; the next method has both ends again and the box free
        ex.loc("method-select").select_option("grad_cam")
        ex.wait_map(lambda m: m[1] == "grad_cam", "Grad-CAM")
        assert (ex.text("legend-low"), ex.text("legend-mid"), ex.text("legend-low-words")) == ("0", "", "")
        box = ex.loc("positive-only")
        assert box.is_checked() and box.is_disabled()
        ex.shot("3-grad-cam-from-zero")

        # 6. a bad value: a sentence next to its field (legible), then a good value clears it
        ex.loc("method-select").select_option("lrp.epsilon")
        ex.wait_map(lambda m: m[1] == "lrp.epsilon", "LRP-epsilon")
        assert ex.text("legend-low").startswith("−") and ex.text("legend-low-words")
        assert not box.is_checked() and box.is_enabled()
        eps = ex.loc("param", "[data-param=epsilon]")
        count1 = ex.comm_count()
        _type(eps, "abc", "Enter")
        err = ex.loc("field-error", "[data-param=epsilon]")
        ex.wait(lambda: "abc" in (err.text_content() or ""), "the error next to epsilon")
        assert err.is_visible() and eps.input_value() == "abc"
        assert ex.contrast("field-error", "[data-param=epsilon]") >= 4.5
        ex.shot("4-error-next-to-field")
        assert ex.comm_count() == count1, "a rejected value was sent"
        _type(eps, "0.5", "Tab")
        ex.wait(lambda: (err.text_content() or "") == "" and "epsilon=0.5" in ex.text("code"), "epsilon=0.5")
        assert not err.is_visible()

        # 7. Compare: a titled grid, k of n, then stale when the image changes
        ex.loc("compare").click()
        ex.wait(lambda: re.fullmatch(r"(\d+) of \1", ex.text("compare-progress")), "the comparison", LONG)
        grid = ex.loc("compare-grid")
        assert grid.locator("canvas").count() == 4 * 3
        assert "× top 3 classes · image 1 / 8" in ex.text("compare-title")
        assert ex.loc("compare-key-bar").is_visible()      # the grid's own colour key, under it
        assert (ex.text("compare-key-low"), ex.text("compare-key-high")) == \
            ("against the column's class", "for the column's class")
        page.wait_for_timeout(300)
        ex.shot("5-compare")
        ex.loc("next").click()
        ex.wait_map(lambda m: m[0] == "1", "image 2")
        assert ex.text("compare-progress").startswith("stale: shows image 1, the selection is image 2")
        assert "sglrp-stale" in (ex.loc("compare-view").get_attribute("class") or "")
        ex.shot("6-compare-stale")

        # 8. PNG export: display size, title, colour bar; named after the 1-based image, method, class
        with page.expect_download(timeout=30_000) as dl:
            ex.loc("download").click()
        name = dl.value.suggested_filename
        assert re.fullmatch(r"sglrp_image2_lrp-epsilon_[a-z-]+\.png", name), name
        target = ARTIFACTS / f"{kind}-7-export-{name}"
        dl.value.save_as(str(target))
        cw, ch = ex.canvas.evaluate("c => [c.width, c.height]")
        assert Image.open(target).size == (max(320, cw), ch + 46 + 52)
        print(f"downloaded: {target}")

        # 9. saved, closed, reopened without the kernel: the last map and its labels, not an error
        if server.jupyter:
            last, caption = ex.drawn(), ex.text("caption")
            page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
            page.keyboard.press("Control+s")
            nb_path = server.root / server.app

            def saved():
                meta = json.loads(nb_path.read_text()).get("metadata", {})
                state = meta.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
                return any(s["state"].get("heatmap_meta", {}).get("index") == 1 for s in state.values())
            ex.wait(saved, "the notebook saved with the widget state", 60_000)
            server.shutdown_kernels()
            page.reload(wait_until="domcontentloaded")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            _dismiss_dialogs(page, wait_s=10)
            page.wait_for_selector(f"{ROOT_SEL} canvas[data-role=heatmap]", timeout=LONG)
            ex.wait(lambda: ex.drawn() == last, "the saved map")
            assert ex.text("caption") == caption
            assert "Error displaying widget" not in page.locator(".jp-OutputArea").first.inner_text()
            ex.shot("8-reopened")
        errors = [c for c in console if c.startswith("error") and "sglrp" in c.lower()]
        assert not errors, errors
    except Exception:
        try:
            page.screenshot(path=str(ARTIFACTS / f"{kind}-failure.png"), full_page=True)
        finally:
            print("\n".join(console[-40:]))
        raise
    finally:
        context.close()
