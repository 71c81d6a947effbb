// @vitest-environment jsdom
// Every view on its own, driven through a fake anywidget model (traits in, messages out).
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import widget, {
  connect, makeEnv, navView, captionView, pictureView, legendView, viewControlsView, methodView, paramsView, classView,
  statusView, metricsView, codeView, actionsView, composeExport, compareView, persistState, writeState,
} from "../widget.js";
import { baseState, fakeModel, grayPng, half, installCanvas } from "./helpers.js";

beforeEach(() => installCanvas());
afterEach(() => { vi.useRealTimers(); document.body.textContent = ""; });

function setup(viewFn, extra = {}, deps = {}) {
  const model = fakeModel(baseState(extra));
  const env = makeEnv(model, { decodePng: grayPng, answerTimeout: 50, ...deps });
  const view = viewFn(env);
  document.body.append(view.el);
  connect(model, env, [view]);
  return { model, env, view, el: view.el, $: (sel) => view.el.querySelector(sel) };
}

const flush = () => new Promise((r) => setTimeout(r, 0));

describe("env", () => {
  it("a request sets the traits and the request id, then sends one message", () => {
    const { model, env } = setup(navView);
    env.request({ target: 1 });
    expect(model.saves.length).toBe(1);
    expect(model.saves[0]).toMatchObject({ target: 1, request_id: 1 });
  });
  it("view settings are only set locally (sent with the next request)", () => {
    const { model, env } = setup(navView);
    const seen = [];
    env.on((w) => seen.push(w));
    env.setView("opacity", "opacity", 0.2);
    expect(model.state.opacity).toBe(0.2);
    expect(model.saves.length).toBe(0);
    expect(seen).toEqual(["view"]);
  });
  it("notices a saved view without a kernel: no comm, or no answer", async () => {
    const { model, env } = setup(statusView);
    model.save_changes = () => { throw new Error("Syncing error: no comm channel defined"); };
    env.request({ target: 0 });
    expect(env.local.noKernel).toBe(true);
    const live = setup(statusView);
    live.env.request({ target: 0 });
    await new Promise((r) => setTimeout(r, 80));
    expect(live.env.local.noKernel).toBe(true);
    expect(live.$("[data-role=no-kernel]").textContent).toMatch(/kernel does not answer/);
    live.model.trigger("comm_count", 1); // the kernel answers
    expect(live.env.local.noKernel).toBe(false);
  });
});

describe("navView", () => {
  it("shows a 1-based position and asks for the next image at its top class", () => {
    const { model, $ } = setup(navView, { index: 2 });
    expect($("[data-role=image-label]").textContent).toBe("image 3 / 3");
    $("[data-role=next]").click();
    expect(model.saves[0]).toMatchObject({ index: 0, target: -1 });
    $("[data-role=prev]").click();
    expect(model.saves[1]).toMatchObject({ index: 2, target: -1 });
  });
});

describe("captionView", () => {
  it("names the class, its probability and the method of the map on screen", () => {
    const { model, $ } = setup(captionView);
    expect($("[data-role=caption]").textContent).toBe("star · 90.0 %");
    expect($("[data-role=caption-method]").textContent).toBe("SGLRP · image 1 / 3");
    model.trigger("heatmap_meta", { ...model.state.heatmap_meta, class_name: "circle", probability: 0.0006 });
    expect($("[data-role=caption]").textContent).toBe("circle · 0.06 %");
  });
});

const CAM_META = { ...baseState().heatmap_meta, method: "grad_cam", label: "Grad-CAM",
  never_negative_why: "Grad-CAM maps are never negative",
  legend: ["no evidence for “star”", "evidence for “star”"], scales: { percentile: [1.5, 1.5], max: [2, 2] } };

describe("pictureView", () => {
  it("draws the overlay when image and map belong together, with boxes; marks what is drawn", async () => {
    const { model, view } = setup(pictureView);
    await flush();
    const canvas = view.el.querySelector("canvas");
    expect(canvas.dataset.map).toBe("0|sglrp|2");
    expect(canvas.dataset.image).toBe("0");
    expect(canvas.width).toBe(400); // a 2x2 image enlarged by a whole factor to the room (jsdom: 400 px)
    const calls = canvas.getContext("2d").calls;
    expect(calls.filter((c) => c[0] === "drawImage").length).toBe(1);
    const strokes = calls.filter((c) => c[0] === "strokeRect");
    expect(strokes.length).toBe(4); // two boxes, dark + light outline
    expect(calls.some((c) => c[0] === "fillText" && c[1] === "star")).toBe(true);
    // a map of another image is not drawn over this one
    model.trigger("heatmap_meta", { ...model.state.heatmap_meta, index: 1 });
    expect(canvas.dataset.map).toBe("");
  });
  it("side by side: image | map | overlay, with captions", async () => {
    const { env, view } = setup(pictureView);
    await flush();
    env.setView("layout", "layout", "side");
    view.update("view");
    const canvas = view.el.querySelector("canvas");
    expect(canvas.getContext("2d").calls.filter((c) => c[0] === "drawImage").length).toBeGreaterThanOrEqual(3);
    expect(view.el.querySelector("[data-role=panel-captions]").textContent).toBe("imagemapoverlay");
  });
  it("dims the old map while a new one computes and after an error", async () => {
    const { model, el } = setup(pictureView);
    model.trigger("task", { kind: "map", label: "SGLRP" });
    expect(el.classList.contains("sglrp-dim")).toBe(true);
    model.trigger("task", {});
    expect(el.classList.contains("sglrp-dim")).toBe(false);
    model.trigger("error", "boom");
    expect(el.classList.contains("sglrp-dim")).toBe(true);
  });
  it("draws a never-negative map (Grad-CAM) from 0 up: a sequential colormap's low end is 0, not -scale", async () => {
    const zeroPixel = async (meta) => {
      const { view, env } = setup(pictureView, { colormap: "gray", heatmap: half([2, 0, 1, 0]), heatmap_meta: meta });
      await flush();
      expect(env.local.positiveOnly).toBe(false); // the user's setting is kept for the next method
      const draw = view.el.querySelector("canvas").getContext("2d").calls.find((c) => c[0] === "drawImage");
      return Array.from(draw[1].getContext("2d").getImageData().data.slice(4, 7)); // pixel 1: value 0
    };
    expect(await zeroPixel(CAM_META)).toEqual([0, 0, 0]);
    // a signed map's 0 is the ramp's middle (the test's two-colour gray ramp rounds it up to white)
    expect(await zeroPixel({ ...CAM_META, never_negative_why: "" })).toEqual([255, 255, 255]);
  });
  it("recolours from the decoded map when a view setting changes (no kernel message)", async () => {
    const { model, env, view } = setup(pictureView);
    await flush();
    const ctx = view.el.querySelector("canvas").getContext("2d");
    const n = ctx.calls.length;
    env.setView("colormap", "colormap", "gray");
    view.update("view");
    expect(ctx.calls.length).toBeGreaterThan(n);
    expect(model.saves.length).toBe(0);
  });
});

describe("legendView", () => {
  it("labels both ends for the class, follows positive-only and the scale choice", () => {
    const { model, env, view, $ } = setup(legendView);
    expect($("[data-role=legend-low]").textContent).toBe("−2");
    expect($("[data-role=legend-high]").textContent).toBe("+2");
    expect($("[data-role=legend-low-words]").textContent).toBe("speaks for the other classes");
    expect($("[data-role=legend-high-words]").textContent).toBe("speaks for “star” over the others");
    env.setView("positiveOnly", "positive_only", true);
    env.setView("norm", "norm", "percentile");
    view.update("view");
    expect($("[data-role=legend-low]").textContent).toBe("0");
    expect($("[data-role=legend-low-words]").textContent).toBe("");
    expect($("[data-role=legend-high]").textContent).toBe("+1");
    model.trigger("heatmap_meta", { ...model.state.heatmap_meta, legend: ["speaks against “circle”", "speaks for “circle”"] });
    expect($("[data-role=legend-high-words]").textContent).toBe("speaks for “circle”");
    expect($("[data-role=legend-note]").textContent).toMatch(/99.5th percentile/);
  });
  it("a never-negative map (Grad-CAM) has a bar from 0 with no 'against' end, positive-only or not", () => {
    const { model, env, view, $ } = setup(legendView, { heatmap_meta: CAM_META });
    const ends = () => ["low", "mid", "high", "low-words", "high-words"].map((r) => $(`[data-role=legend-${r}]`).textContent);
    expect(ends()).toEqual(["0", "", "+2", "", "evidence for “star”"]);
    const ramp = $("[data-role=legend-bar]").getContext("2d").calls.filter((c) => c[0] === "fillRect");
    expect(ramp.length).toBe(256);
    expect([ramp[0][5], ramp[255][5]]).toEqual(["rgb(255,255,255)", "rgb(255,0,0)"]); // white (0) to red
    env.setView("positiveOnly", "positive_only", true);
    view.update("view");
    expect(ends()).toEqual(["0", "", "+2", "", "evidence for “star”"]);
    env.setView("positiveOnly", "positive_only", false);
    model.trigger("heatmap_meta", baseState().heatmap_meta); // back to SGLRP: both ends again
    expect(ends()).toEqual(["−2", "0", "+2", "speaks for the other classes", "speaks for “star” over the others"]);
  });
});

describe("viewControlsView", () => {
  it("offers the colormaps sent by Python and changes only local settings", () => {
    const { model, env, $ } = setup(viewControlsView);
    const names = Array.from($("[data-role=colormap]").options).map((o) => o.value);
    expect(names).toEqual(["bwr", "gray"]);
    const seen = [];
    env.on((w) => seen.push(w));
    const slider = $("[data-role=opacity]");
    slider.value = "0.3";
    slider.dispatchEvent(new Event("input"));
    $("[data-role=norm]").value = "percentile";
    $("[data-role=norm]").dispatchEvent(new Event("change"));
    expect(env.local.opacity).toBe(0.3);
    expect(model.state.norm).toBe("percentile");
    expect(model.saves.length).toBe(0);
    expect(seen).toEqual(["view", "view"]);
    expect($("[data-role=show-boxes]").closest("label").hidden).toBe(false);
  });
  it("positive only is ticked and fixed while the map's method is never negative, and comes back after", () => {
    const { model, env, $ } = setup(viewControlsView);
    const box = $("[data-role=positive-only]");
    expect([box.checked, box.disabled]).toEqual([false, false]);
    model.trigger("heatmap_meta", CAM_META);
    expect([box.checked, box.disabled]).toEqual([true, true]);
    expect(box.closest("label").title).toBe("Grad-CAM maps are never negative, so positive only is always on here");
    expect(env.local.positiveOnly).toBe(false);
    model.trigger("heatmap_meta", baseState().heatmap_meta);
    expect([box.checked, box.disabled, box.closest("label").title]).toEqual([false, false, ""]);
  });
});

describe("methodView", () => {
  it("groups by family, disables methods that cannot explain the model and says why", () => {
    const { model, $ } = setup(methodView);
    const opts = Array.from($("[data-role=method-select]").options);
    expect(opts.map((o) => o.value)).toEqual(["sglrp", "lrp.epsilon", "grad_cam"]);
    expect(opts[2].disabled).toBe(true);
    expect(opts[2].textContent).toMatch(/not for this model/);
    expect($("[data-role=unavailable]").textContent).toMatch(/Grad-CAM: the model has no convolution/);
    expect($("[data-role=method-help]").textContent).toBe("Softmax-gradient LRP.");
    $("[data-role=method-select]").value = "lrp.epsilon";
    $("[data-role=method-select]").dispatchEvent(new Event("change"));
    expect(model.saves[0]).toMatchObject({ method: "lrp.epsilon", params: { epsilon: 1e-7 } });
  });
});

describe("paramsView", () => {
  const param = (el, name) => el.querySelector(`[data-role=param][data-param=${name}]`);
  it("applies a single bound on Enter (once, not again on blur) and shows each help line", () => {
    const { model, el } = setup(paramsView);
    const low = param(el, "low");
    expect(low.placeholder).toBe("auto");
    expect(el.textContent).toMatch(/Lowest input value/);
    low.value = "-1";
    const enter = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
    const outer = vi.fn();
    document.body.addEventListener("keydown", outer);
    low.dispatchEvent(enter);
    expect(outer).not.toHaveBeenCalled(); // the notebook's shortcuts never see it
    expect(enter.defaultPrevented).toBe(true);
    low.dispatchEvent(new Event("change")); // blur after Enter
    expect(model.saves.length).toBe(1);
    expect(model.saves[0].params).toEqual({ low: -1 });
  });
  it("a bad value gets a sentence next to its field and is not sent; a good one clears it", () => {
    const { model, el } = setup(paramsView, { method: "lrp.epsilon" });
    const eps = param(el, "epsilon");
    eps.value = "abc";
    eps.dispatchEvent(new Event("change"));
    const err = el.querySelector("[data-role=field-error][data-param=epsilon]");
    expect(err.textContent).toMatch(/epsilon must be a number.*abc/);
    expect(eps.getAttribute("aria-invalid")).toBe("true");
    expect(eps.value).toBe("abc"); // the typed text stays, to be corrected
    expect(model.saves.length).toBe(0);
    eps.value = "0.5";
    eps.dispatchEvent(new Event("change"));
    expect(err.textContent).toBe("");
    expect(model.saves[0].params).toEqual({ epsilon: 0.5 });
  });
  it("shows the kernel's sentence for a field, then clears it when the kernel accepts a value", () => {
    const { model, el } = setup(paramsView, { method: "lrp.epsilon" });
    model.trigger("field_errors", { epsilon: "Parameter 'epsilon' must be in [0, 1000], got -1." });
    const err = el.querySelector("[data-role=field-error][data-param=epsilon]");
    expect(err.textContent).toMatch(/must be in/);
    model.state.params = { epsilon: 0.5 };
    model.trigger("field_errors", {});
    expect(err.textContent).toBe("");
    expect(param(el, "epsilon").value).toBe("0.5");
  });
  it("rebuilds for another method; a checkbox applies at once", () => {
    const { model, el } = setup(paramsView);
    param(el, "relu").click();
    expect(model.saves[0].params).toEqual({ relu: true });
    model.trigger("method", "lrp.epsilon");
    expect(param(el, "epsilon")).not.toBeNull();
    expect(param(el, "low")).toBeNull();
  });
});

describe("classView", () => {
  it("lists the top predictions as percentages, searches all classes, and requests a class", () => {
    const { model, $ } = setup(classView);
    const select = $("[data-role=class-select]");
    expect(Array.from(select.options).map((o) => o.textContent)).toEqual(["star · 90.0 %", "circle · 10.0 %"]);
    expect(select.value).toBe("2");
    const search = $("[data-role=class-search]");
    search.value = "squ";
    search.dispatchEvent(new Event("input"));
    const opts = Array.from(select.options).map((o) => o.textContent);
    expect(opts[2]).toBe("square (1)");
    select.value = "1";
    select.dispatchEvent(new Event("change"));
    expect(model.saves[0]).toMatchObject({ target: 1 });
  });
});

describe("statusView", () => {
  it("says what is computing and for how long, offers Cancel, then shows the status", () => {
    let now = 1000;
    const { model, $ } = setup(statusView, {}, { now: () => now });
    model.trigger("task", { kind: "map", label: "Integrated Gradients · cat · image 1 / 3" });
    now = 3500;
    model.trigger("comm_count", 2);
    expect($("[data-role=busy]").textContent).toBe("computing Integrated Gradients · cat · image 1 / 3 · 2.5 s");
    expect($("[data-role=cancel]").hidden).toBe(false);
    $("[data-role=cancel]").click();
    expect(model.sent).toEqual([{ type: "cancel", what: "map" }]);
    model.state.status = "cancelled";
    model.trigger("task", {});
    expect($("[data-role=cancel]").hidden).toBe(true);
    expect($("[data-role=status]").textContent).toBe("cancelled");
    model.trigger("error", "Parameter 'epsilon' must be a number.");
    expect($("[data-role=error]").textContent).toMatch(/epsilon/);
  });
});

describe("metricsView", () => {
  it("reports the class's own box, or n/a", () => {
    const { model, el } = setup(metricsView, { metrics: { region: "box of star", mass_in_box: 0.5, pointing_game: true } });
    expect(el.textContent).toBe("relevance in box of star 50.0 % · pointing game hit");
    model.trigger("metrics", { region: "box of circle", note: "n/a: no box of “circle” in this image" });
    expect(el.textContent).toBe("box of circle: n/a: no box of “circle” in this image");
  });
});

describe("codeView", () => {
  it("shows the line and copies it", async () => {
    const { model, el, $ } = setup(codeView);
    expect(el.hidden).toBe(true);
    model.trigger("code", "Explainer(model, 'sglrp')(images[0:1], targets=[2]).heatmap()[0]");
    expect($("[data-role=code]").textContent).toMatch(/^Explainer\(model/);
    const writeText = vi.fn(async () => {});
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    $("[data-role=copy-code]").click();
    await flush();
    expect(writeText).toHaveBeenCalledWith(model.state.code);
    expect($("[data-role=copy-code]").textContent).toBe("Copied");
  });
});

describe("actionsView and the export", () => {
  it("composes a labelled PNG at display size and names it after image, method and class", async () => {
    const { model, env } = setup(pictureView);
    await flush();
    const actions = actionsView(env);
    actions.update("init");
    const canvas = composeExport(env, document.createElement("canvas"));
    expect(canvas.width).toBe(env.pictureCanvas.width);
    expect(canvas.height).toBe(env.pictureCanvas.height + 46 + 52);
    const texts = canvas.getContext("2d").calls.filter((c) => c[0] === "fillText").map((c) => c[1]);
    expect(texts).toContain("star · 90.0 %");
    expect(texts).toContain("SGLRP · image 1 / 3");
    expect(texts).toContain("speaks for “star” over the others +2");
    const clicked = [];
    URL.createObjectURL = () => "blob:x";
    URL.revokeObjectURL = () => {};
    HTMLAnchorElement.prototype.click = function click() { clicked.push(this.download); };
    actions.el.querySelector("[data-role=download]").click();
    expect(clicked).toEqual(["sglrp_image1_sglrp_star.png"]);
    actions.el.querySelector("[data-role=compare]").click();
    expect(model.sent).toEqual([{ type: "compare" }]);
  });
});

describe("compareView", () => {
  const grid = (extra = {}) => ({
    state: "running", index: 0, title: "SGLRP, LRP × top 2 classes · image 1 / 3", done: 1, total: 2,
    image: new Uint8Array([137, 80, 78, 71]),
    width: 2, height: 2, targets: [{ index: 2, name: "star", probability: 0.9 }, { index: 0, name: "circle", probability: 0.1 }],
    rows: [{ method: "sglrp", label: "SGLRP", maps: [half([1, 0, 0, 0]), half([0, -1, 0, 0])],
      scales: [{ percentile: [1, 1], max: [1, 1], max_abs: 2 }, { percentile: [1, 0], max: [1, 0], max_abs: 1 }] }],
    ...extra,
  });
  it("shows its title, k of n with Cancel, labelled rows and columns", () => {
    URL.createObjectURL = () => "blob:grid";
    const { model, $ } = setup(compareView, { compare_grid: grid() });
    expect($("[data-role=compare-title]").textContent).toMatch(/top 2 classes · image 1 \/ 3/);
    expect($("[data-role=compare-progress]").textContent).toBe("computing 2 of 2…");
    $("[data-role=compare-cancel]").click();
    expect(model.sent).toEqual([{ type: "cancel", what: "compare" }]);
    const cells = Array.from($("[data-role=compare-grid]").children).map((c) => c.textContent);
    expect(cells).toEqual(["", "image", "star · 90.0 %", "circle · 10.0 %", "SGLRP", "", "", ""]);
    expect($("[data-role=compare-image]").src).toMatch(/^blob:/); // the grid's own image, first row
    expect($("[data-role=compare-grid]").querySelectorAll("canvas").length).toBe(2);
    model.trigger("compare_grid", grid({ state: "done", done: 2 }));
    expect($("[data-role=compare-cancel]").hidden).toBe(true);
  });
  it("is marked stale when the image changes", () => {
    const { model, el, $ } = setup(compareView, { compare_grid: grid({ state: "done", done: 2 }) });
    model.trigger("index", 1);
    expect(el.classList.contains("sglrp-stale")).toBe(true);
    expect($("[data-role=compare-progress]").textContent).toMatch(/^stale: shows image 1, the selection is image 2/);
  });
  it("carries its colour key: what the ends mean, how the maps were scaled; from 0 when every row is", () => {
    const { model, $ } = setup(compareView, { compare_grid: grid({ state: "done", done: 2 }) });
    expect($("[data-role=compare-key]").hidden).toBe(false);
    expect($("[data-role=compare-key-low]").textContent).toBe("against the column's class");
    expect($("[data-role=compare-key-mid]").textContent).toBe("0");
    expect($("[data-role=compare-key-high]").textContent).toBe("for the column's class");
    expect($("[data-role=compare-key-note]").textContent).toBe("each map on its own scale, ending at the maximum");   // the view's norm
    const cam = { ...grid().rows[0], method: "grad_cam", label: "Grad-CAM", never_negative_why: "Grad-CAM keeps the positive part" };
    model.trigger("compare_grid", grid({ state: "done", done: 2, rows: [cam] }));
    expect($("[data-role=compare-key-low]").textContent).toBe("0");
    expect($("[data-role=compare-key-mid]").textContent).toBe("");
    model.trigger("compare_grid", grid({ state: "done", done: 2, rows: [cam, grid().rows[0]] }));   // a signed row
    expect($("[data-role=compare-key-low]").textContent).toBe("against the column's class");
    model.trigger("compare_grid", grid({ state: "running", done: 0, targets: [], rows: [] }));     // nothing drawn yet
    expect($("[data-role=compare-key]").hidden).toBe(true);
  });
});

describe("persistence", () => {
  function manager(live) {
    const meta = {};
    const slots = [];
    return {
      meta,
      context: {
        saveState: { connect: (fn) => slots.push(fn), disconnect: (fn) => slots.splice(slots.indexOf(fn), 1) },
        model: { getMetadata: (k) => meta[k], setMetadata: (k, v) => { meta[k] = v; } },
        save: () => slots.forEach((fn) => fn(null, "started")),
      },
      slots,
      get_state_sync: () => ({ version_major: 2, version_minor: 0, state: live }),
    };
  }
  const ours = (layout) => ({ model_name: "AnyModel", state: { _anywidget_id: "sglrp_widgets.widget.RelevanceExplorer", layout } });
  it("writes only this widget's models (and what they reference) into the notebook on save", () => {
    const live = { a: ours("IPY_MODEL_l"), l: { model_name: "LayoutModel", state: {} }, other: { model_name: "IntSlider", state: {} } };
    const m = manager(live);
    const model = fakeModel(baseState());
    model.widget_manager = m;
    const off = persistState(model);
    expect(persistState(model)).toBeTypeOf("function"); // a second view does not hook twice
    expect(m.slots.length).toBe(1);
    m.context.save();
    const state = m.meta.widgets["application/vnd.jupyter.widget-state+json"].state;
    expect(Object.keys(state).sort()).toEqual(["a", "l"]);
    off();
    expect(m.slots.length).toBe(0);
  });
  it("keeps other widgets' saved state and drops our models that no longer exist", () => {
    const m = manager({ b: ours(null) });
    m.meta.widgets = { "application/vnd.jupyter.widget-state+json": { state: { old: ours(null), slider: { state: {} } } } };
    writeState(m, m.context.model);
    const state = m.meta.widgets["application/vnd.jupyter.widget-state+json"].state;
    expect(Object.keys(state).sort()).toEqual(["b", "slider"]);
  });
  it("does nothing where there is no document context (VS Code, marimo)", () => {
    expect(persistState(fakeModel({}))).toBeTypeOf("function");
  });
});

describe("render", () => {
  it("builds every view, updates them from traits, and unsubscribes on dispose", async () => {
    const model = fakeModel(baseState());
    const el = document.createElement("div");
    document.body.append(el);
    const dispose = widget.render({ model, el }, { decodePng: grayPng });
    await flush();
    const root = el.querySelector(".sglrp-explorer");
    expect(root.dataset.lmSuppressShortcuts).toBe("true");
    for (const role of ["heatmap", "legend", "method-select", "params", "class-select", "opacity", "status", "compare", "download", "code"]) {
      expect(root.querySelector(`[data-role=${role}]`), role).not.toBeNull();
    }
    expect(root.querySelector("[data-role=heatmap]").dataset.map).toBe("0|sglrp|2");
    model.trigger("status", "SGLRP · star · 12 ms");
    expect(root.querySelector("[data-role=status]").textContent).toBe("SGLRP · star · 12 ms");
    expect(model.listenerCount()).toBeGreaterThan(10);
    dispose();
    expect(model.listenerCount()).toBe(0);
  });
});
