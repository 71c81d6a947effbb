// @vitest-environment jsdom
// DatasetExplorer: every pure helper, and every view driven through a fake anywidget model.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import widget, {
  classLabel, classView, clusterColor, clusterLabel, clustersView, exportFileName, exportView, galleryView, idsCsv,
  kAtX, makeEnv, nearestPoint, noticeView, pageIsCurrent, pageTiles, PALETTE, relevanceView, scatterPositions,
  scatterView, spectrumGeometry, spectrumView, statusView, tilePixels, tileTitle, toUint8,
} from "../dataset_explorer.js";
import { fakeModel, installCanvas } from "./helpers.js";

function installPaths() {
  installCanvas();
  const base = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function getContext() {
    const ctx = base.call(this);
    const rec = (name) => (...args) => { ctx.calls.push([name, ...args]); };
    for (const name of ["beginPath", "moveTo", "lineTo", "stroke", "setTransform"]) ctx[name] ||= rec(name);
    return ctx;
  };
}

beforeEach(() => installPaths());
afterEach(() => { document.body.textContent = ""; });

const OVERVIEW = {
  cls: 4, name: "ring", k: 2, eigengap_k: 2, max_k: 4, eigenvalues: [0, 0.01, 0.4, 0.5, 0.6],
  points: [0, 0, 1, 1, 0.5, 0.5], labels: [0, 1, 0], rows: [10, 11, 12], count: 3,
  clusters: [{ cluster: 0, size: 2, coherence: 0.83 }, { cluster: 1, size: 1, coherence: 0.2 }],
};

function state(extra = {}) {
  return {
    classes: [{ index: 0, name: "circle", count: 8, analysed: false }, { index: 4, name: "ring", count: 3, analysed: true }],
    cls: 4, k: 2, cluster: 0, overview: OVERVIEW, export: {}, opened: {}, relevance: null, can_open: "",
    method_label: "sglrp maps of 48 images", status: "", busy: "", error: "", notice: "", ...extra,
  };
}

function setup(viewFn, extra = {}, ...args) {
  const model = fakeModel(state(extra));
  model.saves = [];
  const el = document.createElement("div");
  document.body.append(el);
  const env = makeEnv(model, el);
  const view = viewFn(env, ...args);
  el.append(view.el);
  for (const key of view.keys) model.on(`change:${key}`, () => view.update(key));
  env.on((what) => { if (view.keys.includes(what)) view.update(what); });
  view.update("init");
  return { model, env, view, el: view.el, $: (sel) => view.el.querySelector(sel) };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("helpers", () => {
  it("tileTitle names the image, its label and its map's own scale", () => {
    expect(tileTitle({ id: 7, label: 3, scale: 2.345e-5 })).toBe("image 7 · label 3 · largest |relevance| 0.000023 · click to open");
    expect(tileTitle({ id: "a.png", label: null, scale: 1.5 })).toBe("image a.png · largest |relevance| 1.5 · click to open");
    expect(tileTitle({ id: 1 })).toBe("image 1 · click to open");
  });

  it("labels classes and clusters for people (1-based clusters, coherence to 2 places)", () => {
    expect(classLabel({ name: "ring", count: 1, analysed: true })).toBe("ring · 1 map");
    expect(classLabel({ name: "star", count: 7, analysed: false })).toBe("star · 7 maps · no SpRAy yet");
    expect(clusterLabel({ cluster: 0, size: 23, coherence: 0.834 })).toBe("Cluster 1 · 23 images · coherence 0.83");
    expect(clusterLabel({ cluster: 2, size: 1, coherence: null })).toBe("Cluster 3 · 1 image · coherence n/a");
  });

  it("cycles the palette, also for negative indices", () => {
    expect(clusterColor(0)).toBe(PALETTE[0]);
    expect(clusterColor(PALETTE.length + 1)).toBe(PALETTE[1]);
    expect(clusterColor(-1)).toBe(PALETTE[PALETTE.length - 1]);
  });

  it("maps a click on the eigenvalue plot to the gap after eigenvalue k", () => {
    const g = spectrumGeometry(10, 400, 200);
    expect(g.x(0)).toBeCloseTo(g.left + g.step / 2);
    expect(kAtX(g.left + 3 * g.step, g, 8)).toBe(3);         // boundary between eigenvalues 3 and 4
    expect(kAtX(g.left + 3.4 * g.step, g, 8)).toBe(3);
    expect(kAtX(g.left + 0.1 * g.step, g, 8)).toBe(1);      // never 0 clusters
    expect(kAtX(g.left + 9.9 * g.step, g, 8)).toBe(8);      // at most the stored clusterings
    expect(kAtX(g.left - 5, g, 8)).toBeNull();
  });

  it("places scatter points (y up) and finds the nearest within reach", () => {
    const pos = scatterPositions([0, 0, 1, 1], 100, 100, 10);
    expect(Array.from(pos)).toEqual([10, 90, 90, 10]);
    expect(nearestPoint(pos, 88, 12)).toBe(1);
    expect(nearestPoint(pos, 50, 50)).toBe(-1);
    expect(nearestPoint(pos, 50, 50, 100)).toBeGreaterThanOrEqual(0);
  });

  it("blends a map over a thumbnail: red for, blue against, none where zero", () => {
    const thumb = new Uint8Array([100, 100, 100, 100, 100, 100, 100, 100, 100]);
    const px = tilePixels(thumb, new Int8Array([127, -127, 0]), 1);
    expect(Array.from(px.slice(0, 4))).toEqual([220, 30, 30, 255]);
    expect(Array.from(px.slice(4, 8))).toEqual([30, 70, 220, 255]);
    expect(Array.from(px.slice(8, 12))).toEqual([100, 100, 100, 255]);
    const half = tilePixels(thumb, new Int8Array([127, 0, 0]), 0.5);
    expect(half[0]).toBe(160);
  });

  it("splits a page's buffers per image and refuses wrong sizes", () => {
    const meta = { items: [{ row: 1 }, { row: 2 }], width: 2, height: 1 };
    const thumbs = new Uint8Array(12).map((_, i) => i);
    const heats = new Int8Array([1, -2, 3, -4]);
    const tiles = pageTiles(meta, [new DataView(thumbs.buffer), new DataView(heats.buffer)]);
    expect(tiles.map((t) => t.item.row)).toEqual([1, 2]);
    expect(Array.from(tiles[1].thumb)).toEqual([6, 7, 8, 9, 10, 11]);
    expect(Array.from(tiles[1].heat)).toEqual([3, -4]);
    expect(() => pageTiles(meta, [thumbs.buffer, new ArrayBuffer(3)])).toThrow(/expected 12 \+ 4/);
    expect(toUint8(null).length).toBe(0);
  });

  it("drops pages of another class, k or cluster", () => {
    const want = { cls: 4, k: 2, cluster: 1 };
    expect(pageIsCurrent({ cls: 4, k: 2, cluster: 1 }, want)).toBe(true);
    expect(pageIsCurrent({ cls: 4, k: 3, cluster: 1 }, want)).toBe(false);
    expect(pageIsCurrent({ cls: 4, k: 2, cluster: 1 }, null)).toBe(false);
  });

  it("writes the ids as CSV with a header and names the file after the cluster", () => {
    const exp = { name: "Ring (big)", k: 3, cluster: 0, ids: [5, 17] };
    expect(idsCsv(exp)).toBe("image_id\n5\n17\n");
    expect(exportFileName(exp)).toBe("ring-big_k3_cluster1_ids.csv");
    expect(exportFileName({ k: 1, cluster: 1 }, "txt")).toBe("class_k1_cluster2_ids.txt");
  });
});

describe("views", () => {
  it("class picker lists classes with counts and sets cls", () => {
    const { model, $ } = setup(classView);
    const options = [...$("select").options].map((o) => o.textContent);
    expect(options).toEqual(["circle · 8 maps · no SpRAy yet", "ring · 3 maps"]);
    expect($("select").value).toBe("4");
    $("select").value = "0";
    $("select").dispatchEvent(new Event("change"));
    expect(model.get("cls")).toBe(0);
    expect(model.saves.length).toBe(1);
  });

  it("notice shows why there is nothing yet and runs SpRAy on request", () => {
    const { model, el, $ } = setup(noticeView, { notice: "SpRAy has not been run for class 0" });
    expect(el.hidden).toBe(false);
    $("button").click();
    expect(model.sent).toEqual([{ type: "spray" }]);
    model.trigger("busy", "Running SpRAy…");
    expect($("button").disabled).toBe(true);
    model.trigger("notice", "");
    expect(el.hidden).toBe(true);
  });

  it("eigengap plot marks k, offers every stored k, and a button or click picks one", () => {
    const { model, el, $ } = setup(spectrumView);
    const canvas = $("canvas");
    expect(canvas.dataset.k).toBe("2");
    const labels = canvas._ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
    expect(labels).toContain("k = 2");
    expect(labels).not.toContain("eigengap");             // k is the eigengap's choice: one mark
    const buttons = [...el.querySelectorAll(".sglrp-k")].map((b) => b.textContent);
    expect(buttons).toEqual(["1", "2*", "3", "4"]);
    el.querySelectorAll(".sglrp-k")[2].click();
    expect(model.get("k")).toBe(3);
    model.trigger("overview", { ...OVERVIEW, k: 3 });
    const again = canvas._ctx.calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
    expect(again).toContain("eigengap");                 // the eigengap's own choice stays marked
    expect(el.querySelector(".sglrp-on").textContent).toBe("3");
    expect(el.textContent).toMatch(/k eigenvalues near 0 followed by a jump mean k groups/);
  });

  it("eigengap plot is hidden without an overview", () => {
    const { el } = setup(spectrumView, { overview: { cls: 0, name: "circle" } });
    expect(el.hidden).toBe(true);
  });

  it("scatter draws one dot per map in its cluster's colour and hovering names the row", () => {
    const { env, $ } = setup(scatterView);
    const canvas = $("canvas");
    expect(canvas.dataset.points).toBe("3");
    const colours = canvas._ctx.calls.filter((c) => c[0] === "fillRect").length;
    expect(colours).toBe(3);
    env.hover = 1;
    env.emit("hover");
    expect($("[data-role=scatter-tip]").textContent).toBe("row 11 · cluster 2");
  });

  it("clusters list ranks clusters with size and coherence and picks the gallery's cluster", () => {
    const { model, el } = setup(clustersView);
    const buttons = [...el.querySelectorAll(".sglrp-cluster")];
    expect(buttons.map((b) => b.textContent)).toEqual(["Cluster 1 · 2 images · coherence 0.83",
      "Cluster 2 · 1 image · coherence 0.20"]);
    expect(buttons[0].getAttribute("aria-pressed")).toBe("true");
    buttons[1].click();
    expect(model.get("cluster")).toBe(1);
    expect(el.textContent).toMatch(/Coherence: how alike a cluster's maps are/);
  });

  it("gallery asks for page 0, draws its tiles, asks for more, drops stale pages, opens on click", async () => {
    const { model, el, view, $ } = setup(galleryView);
    await tick();
    expect(model.sent).toEqual([{ type: "page", cls: 4, k: 2, cluster: 0, page: 0 }]);
    const page = (p, rows) => ({ type: "page", cls: 4, k: 2, cluster: 0, page: p, pages: 2, total: 3, width: 1,
      height: 1, items: rows.map((r, i) => ({ row: r, id: r + 100, position: p * 2 + i, label: "ring" })) });
    view.receive({ ...page(0, [10, 12]), cluster: 1 }, [new Uint8Array(6), new Uint8Array(2)]);   // stale
    expect(el.querySelectorAll("[data-role=tile]").length).toBe(0);
    view.receive(page(0, [10, 12]), [new Uint8Array(6), new Uint8Array(2)]);
    expect(el.querySelectorAll("[data-role=tile]").length).toBe(2);
    expect($("[data-role=gallery-count]").textContent).toBe("2 of 3 shown");
    expect($("canvas")._ctx.calls.some((c) => c[0] === "putImageData")).toBe(true);
    view.receive(page(0, [10, 12]), [new Uint8Array(6), new Uint8Array(2)]);                     // repeated
    expect(el.querySelectorAll("[data-role=tile]").length).toBe(2);
    $("[data-role=more]").click();
    expect(model.sent.at(-1)).toEqual({ type: "page", cls: 4, k: 2, cluster: 0, page: 1 });
    view.receive(page(1, [11]), [new Uint8Array(3), new Uint8Array(1)]);
    expect($("[data-role=more]").hidden).toBe(true);
    el.querySelectorAll("[data-role=tile]")[2].click();
    expect(model.sent.at(-1)).toEqual({ type: "open", row: 11 });
    model.trigger("cluster", 1);                                   // another cluster: a new gallery
    model.trigger("overview", { ...OVERVIEW });
    await tick();
    expect(el.querySelectorAll("[data-role=tile]").length).toBe(0);
    expect(model.sent.filter((m) => m.type === "page" && m.cluster === 1)).toHaveLength(1);   // one reset
  });

  it("gallery says what its colours mean, as the kernel words it, and each tile's scale on hover", async () => {
    const { model, view, $ } = setup(galleryView, { map_legend: "red = speaks for the class, blue = speaks against the class" });
    expect($("[data-role=map-legend]").textContent).toBe("(red = speaks for the class, blue = speaks against the class)");
    model.trigger("map_legend", "red = evidence for the class; Grad-CAM maps are never negative");
    expect($("label").textContent).toBe("maps(red = evidence for the class; Grad-CAM maps are never negative)");   // a gap between in CSS
    model.trigger("map_legend", "");                      // no key from the kernel: no empty brackets
    expect($("[data-role=map-legend]").textContent).toBe("");
    await tick();
    view.receive({ type: "page", cls: 4, k: 2, cluster: 0, page: 0, pages: 1, total: 1, width: 1, height: 1,
      items: [{ row: 10, id: 7, position: 0, label: 3, scale: 0.0123456 }] }, [new Uint8Array(3), new Uint8Array(1)]);
    expect($("[data-role=tile]").title).toBe("image 7 · label 3 · largest |relevance| 0.012 · click to open");
  });

  it("gallery stops waiting when the kernel says a page failed", async () => {
    const { model, view, $ } = setup(galleryView);
    await tick();
    view.receive({ type: "page", failed: true, cls: 4, k: 2, cluster: 0, page: 0 }, []);
    expect($("[data-role=more]").hidden).toBe(true);
    expect(model.sent).toHaveLength(1);
  });

  it("export asks the kernel, then shows the line of Python and offers files", () => {
    const { model, el, $ } = setup(exportView);
    expect(el.querySelector(".sglrp-export-result").hidden).toBe(true);
    $("[data-role=export]").click();
    expect(model.sent).toEqual([{ type: "export" }]);
    model.trigger("export", { cls: 4, name: "ring", k: 2, cluster: 0, ids: [3, 5], code: "ids = ...",
      python: "explorer.selected_ids" });
    expect($("[data-role=export-code]").textContent).toBe("ids = ...");
    expect($("[data-role=export-note]").textContent).toBe("2 ids of cluster 1 (ring, k = 2) are in explorer.selected_ids");
    let clicked = null;
    URL.createObjectURL = () => "blob:x";
    HTMLAnchorElement.prototype.click = function click() { clicked = this.getAttribute("download"); };
    $("[data-role=download-csv]").click();
    expect(clicked).toBe("ring_k2_cluster1_ids.csv");
  });

  it("status shows errors, the busy line and the run", () => {
    const { model, $ } = setup(statusView, { status: "ring: 3 maps" });
    expect($("[data-role=status]").textContent).toBe("sglrp maps of 48 images · ring: 3 maps");
    expect($("[data-role=busy]").hidden).toBe(true);
    model.trigger("error", "cluster must be a whole number in 0..1, got 7.");
    expect($("[data-role=error]").textContent).toMatch(/cluster must be/);
  });

  it("renders the opened RelevanceExplorer through the host, once per widget", async () => {
    const rendered = [];
    const host = { getWidget: async (ref) => ({ render: async ({ el }) => { rendered.push(ref); el.textContent = "RE"; } }) };
    const { model, view, $ } = setup(relevanceView, {}, host, undefined);
    expect($("[data-role=opened]").textContent).toBe("Click an image to explain it below.");
    model.state.opened = { id: 7, name: "ring" };
    model.trigger("relevance", "anywidget:abc");
    await tick();
    expect(rendered).toEqual(["anywidget:abc"]);
    expect($("[data-role=relevance]").textContent).toBe("RE");
    await view.update("opened");
    expect(rendered).toHaveLength(1);
    expect($("[data-role=opened]").textContent).toBe("Image 7 explained for ring");
  });

  it("says what to do when the front end cannot nest widgets or images cannot be opened", async () => {
    const { model, $ } = setup(relevanceView, { can_open: "pass model= (the model that made the store) to open images" }, undefined);
    expect($("[data-role=opened]").textContent).toMatch(/^Opening images: pass model=/);
    model.trigger("relevance", "anywidget:abc");
    await tick();
    expect($("[data-role=relevance]").textContent).toMatch(/explorer\.relevance_explorer/);
  });

  it("render wires every view, routes page messages to the gallery and cleans up", async () => {
    const model = fakeModel(state());
    const el = document.createElement("div");
    document.body.append(el);
    const dispose = widget.render({ model, el, host: undefined, signal: undefined });
    await tick();
    expect(el.querySelector(".sglrp-dataset")).not.toBeNull();
    expect(model.sent[0]).toMatchObject({ type: "page", page: 0 });
    const before = model.listenerCount();
    dispose();
    expect(model.listenerCount()).toBeLessThan(before);
    expect(model.listenerCount()).toBe(0);
  });
});
