"""DatasetExplorer in a real browser (JupyterLab 4, light and dark), driven by Playwright: pick a class, see the
eigengap plot and the scatter, load gallery pages by scrolling, open an image in the RelevanceExplorer below
and see its map, export a cluster's ids (Python attribute, line of code, .csv download).

Run: ``tests/browser/run.sh -k dataset``. Screenshots: ``artifacts/browser/dataset-<kind>-*.png``.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from test_explorer_browser import CONTRAST, _open, _run_all, poll

# the harness by path: "conftest" is also the name of tests/conftest.py
_spec = importlib.util.spec_from_file_location("sglrp_browser_harness", Path(__file__).with_name("conftest.py"))
harness = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(harness)
ARTIFACTS = harness.ARTIFACTS

pytestmark = pytest.mark.browser

ROOT = ".sglrp-dataset"
LONG = 240_000  # ms: the cell explains 48 images and runs SpRAy on a busy machine

CODE = """\
from sglrp_widgets import DatasetExplorer, demo, explain_dataset
from sglrp_widgets.spray import spray

images, labels, _ = demo.make_scenes(48, seed=5)
model = demo.load_model("cnn")
explain_dataset(model, (images, labels[:, 0]), "sglrp", targets="label", out="scenes.zarr", overwrite=True,
                preprocess=demo.preprocess, class_names=demo.class_names, progress=False)
spray("scenes.zarr", classes=[2, 4], max_clusters=4, progress=False)
explorer = DatasetExplorer("scenes.zarr", model, preprocess=demo.preprocess, images=images, page_size=3)
explorer"""


@pytest.fixture(params=["lab-light", "lab-dark"], scope="module")
def dataset_server(request, tmp_path_factory):
    yield from harness.serve(request.param, tmp_path_factory, prefix="dataset-", code=CODE)


def _wait(pred, what, page, timeout_ms=LONG):
    err = page.locator(f"{ROOT} [data-role=error]")
    poll(pred, what, lambda: f"error={err.first.text_content() if err.count() else ''!r}", timeout_ms)


def test_dataset_explorer_in_browser(browser, dataset_server):
    kind = dataset_server.kind
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    page = context.new_page()
    console = []
    page.on("pageerror", lambda e: console.append(f"error: {e}"))
    loc = lambda role, extra="": page.locator(f"{ROOT} [data-role={role}]{extra}").first

    def shot(name):
        path = ARTIFACTS / f"dataset-{kind}-{name}.png"
        page.locator(ROOT).first.screenshot(path=str(path))
        print(f"screenshot: {path}")

    try:
        _open(page, dataset_server)
        _run_all(page)

        # 1. the first analysed class: the eigengap plot with k marked, the scatter, the clusters
        page.wait_for_selector(f"{ROOT} canvas[data-role=eigengap][data-k]", timeout=LONG)
        assert loc("class").evaluate("s => s.value") == "2"
        assert int(loc("scatter").get_attribute("data-points")) == 11     # class 2 (triangle) has 11 maps
        assert page.locator(f"{ROOT} [data-role=clusters] button").count() >= 1
        assert loc("eigengap").evaluate("c => c.getBoundingClientRect().width") >= 200

        # 2. pick another class: the overview follows
        loc("class").select_option("4")
        _wait(lambda: loc("scatter").get_attribute("data-points") == "9", "class 4's scatter", page)
        _wait(lambda: "ring" in loc("gallery-title").text_content(), "class 4's gallery", page)
        for role in ("status", "gallery-count"):
            assert loc(role).evaluate(CONTRAST) >= 4.5, role

        # 3. k = 2 from the buttons, then the larger cluster in the gallery; scrolling loads the next pages
        page.locator(f"{ROOT} [data-role=k-buttons] button").nth(1).click()
        _wait(lambda: loc("eigengap").get_attribute("data-k") == "2", "k = 2", page)
        clusters = page.locator(f"{ROOT} [data-role=clusters] button")
        sizes = [int(clusters.nth(i).text_content().split(" · ")[1].split()[0]) for i in range(clusters.count())]
        big = max(range(len(sizes)), key=sizes.__getitem__)
        clusters.nth(big).click()
        _wait(lambda: f"Cluster {big + 1} of ring" in loc("gallery-title").text_content(), "the big cluster", page)
        tiles = page.locator(f"{ROOT} [data-role=tile]")
        _wait(lambda: tiles.count() >= min(3, sizes[big]), "the first gallery page", page)
        for _ in range(10):                      # scroll to the end: the next pages come in lazily
            page.locator(f"{ROOT} .sglrp-gallery-scroll").first.evaluate("e => { e.scrollTop = e.scrollHeight; }")
            time.sleep(0.5)
            if tiles.count() == sizes[big]:
                break
        _wait(lambda: tiles.count() == sizes[big], f"all {sizes[big]} tiles", page)
        assert loc("gallery-count").text_content() == f"{sizes[big]} of {sizes[big]} shown"
        assert loc("map-legend").text_content().startswith(
            "(red = speaks for the class over the others, blue = speaks for the other classes; each tile has its own")
        assert "largest |relevance| " in tiles.first.get_attribute("title")
        shot("1-class-gallery")

        # 4. click an image: the RelevanceExplorer below draws its map for the row's class
        tiles.first.click()
        heat = page.locator(f"{ROOT} .sglrp-explorer canvas[data-role=heatmap]").first
        _wait(lambda: heat.count() and (heat.get_attribute("data-map") or "").split("|")[2:3] == ["4"],
              "the opened image's map", page)
        assert "explained for ring" in loc("opened").text_content()
        heat.scroll_into_view_if_needed()
        shot("2-opened")
        second = tiles.nth(1).locator(".sglrp-tile-id").text_content()
        tiles.nth(1).click()                     # the same explorer shows the next image
        _wait(lambda: loc("opened").text_content().startswith(f"Image {second} "), "the second image", page)
        _wait(lambda: heat.get_attribute("data-image") == "0" and (heat.get_attribute("data-map") or ""),
              "its map", page)
        assert page.locator(f"{ROOT} .sglrp-explorer").count() == 1

        # 5. export the cluster's ids: a line of Python, and a .csv download
        loc("export").click()
        _wait(lambda: "load_spray" in loc("export-code").text_content(), "the export", page)
        assert f"{sizes[big]} ids of cluster {big + 1}" in loc("export-note").text_content()
        with page.expect_download() as info:
            loc("download-csv").click()
        path = Path(info.value.path())
        lines = path.read_text().splitlines()
        assert lines[0] == "image_id" and len(lines) == sizes[big] + 1
        shot("3-exported")
        assert loc("error").text_content() == ""
        assert not [c for c in console if "sglrp" in c or "dataset_explorer" in c], console
    finally:
        context.close()
