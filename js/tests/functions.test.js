import { describe, expect, it } from "vitest";
import widget, {
  toUint8, halfToFloat, decodeHeatmap, lutFromHex, colormapOf, mapScale, normalizeHeatmap, resample, colorPosition,
  blend, colorize, rampColors, formatNumber, legendText, formatPercent, formatElapsed, displaySize, boxesToDraw,
  heatmapMatchesImage, exportFileName, filterClasses, groupMethods, defaultParams, paramText, parseParam, compareStatus,
  compareKeyText,
} from "../widget.js";
import { BWR_HEX, half } from "./helpers.js";

describe("module", () => {
  it("has an anywidget render entry point and imports without a DOM", () => {
    expect(typeof widget.render).toBe("function");
  });
});

describe("buffers", () => {
  it("toUint8 views DataView / ArrayBuffer / typed arrays without copying", () => {
    const ab = new ArrayBuffer(8);
    const u = toUint8(new DataView(ab, 2, 4));
    expect([u.byteLength, u.buffer === ab, u.byteOffset]).toEqual([4, true, 2]);
    expect(toUint8(ab).byteLength).toBe(8);
    expect(toUint8(null).length).toBe(0);
    expect(() => toUint8({})).toThrow(/unsupported/);
  });
  it("half floats decode", () => {
    expect([halfToFloat(0x3c00), halfToFloat(0xc000), halfToFloat(0), halfToFloat(0x7bff)]).toEqual([1, -2, 0, 65504]);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });
  it("decodes float16 times the scale (what the kernel sends), int8 and float32", () => {
    const v = decodeHeatmap(half([1, -1, 0.5, 0]), { dtype: "float16", width: 2, height: 2, scale: 2 });
    expect(Array.from(v)).toEqual([2, -2, 1, 0]);
    const q = new Int8Array([127, -127]);
    expect(Array.from(decodeHeatmap(q, { dtype: "int8", width: 2, height: 1, scale: 3 }))).toEqual([3, -3]);
    const f = new Float32Array([0.5, -0.25]);
    expect(Array.from(decodeHeatmap(f.buffer, { dtype: "float32", width: 1, height: 2 }))).toEqual([0.5, -0.25]);
  });
  it("rejects a buffer of the wrong size and unknown dtypes", () => {
    expect(() => decodeHeatmap(new Uint8Array(6), { dtype: "float16", width: 2, height: 2 })).toThrow(/expected 8/);
    expect(() => decodeHeatmap(new Uint8Array(4), { dtype: "int4", width: 2, height: 2 })).toThrow(/dtype/);
  });
});

describe("colours", () => {
  it("reads matplotlib's table from hex; unknown names fall back to the first colormap", () => {
    const lut = lutFromHex(BWR_HEX);
    expect(lut.length).toBe(257 * 3);
    expect(Array.from(lut.slice(0, 3))).toEqual([0, 0, 255]);
    expect(Array.from(lut.slice(128 * 3, 129 * 3))).toEqual([255, 255, 255]);
    const maps = { bwr: { lut: BWR_HEX, diverging: true }, gray: { lut: "000000ffffff", diverging: false } };
    expect(colormapOf(maps, "gray").diverging).toBe(false);
    expect(colormapOf(maps, "nope").lut).toBe(colormapOf(maps, "bwr").lut); // decoded once, cached
    expect(colormapOf({}, "x").lut.length).toBe(6);
  });
  it("takes the scale Python computed for the chosen normalisation", () => {
    const meta = { scale: 4, scales: { percentile: [1.5, 1.0], max: [4, 3] } };
    expect([mapScale(meta, "percentile"), mapScale(meta, "percentile", true), mapScale(meta, "max", true)]).toEqual([1.5, 1, 3]);
    expect(mapScale({ scale: 2 }, "percentile")).toBe(2);
    expect(mapScale({}, "max")).toBe(0);
  });
  it("normalises and clips to [-1, 1], positive-only to [0, 1]", () => {
    expect(Array.from(normalizeHeatmap([3, -1, 0.5, NaN], 1))).toEqual([1, -1, 0.5, 0]);
    expect(Array.from(normalizeHeatmap([3, -1, 0.5], 2, true))).toEqual([1, 0, 0.25]);
    expect(Array.from(normalizeHeatmap([3, -1], 0))).toEqual([0, 0]);
  });
  it("resamples bilinearly only when sizes differ", () => {
    const v = new Float32Array([0, 1]);
    expect(resample(v, 2, 1, 2, 1)).toBe(v);
    expect(Array.from(resample(v, 2, 1, 4, 1))).toEqual([0, 0.25, 0.75, 1]);
  });
  it("blends like viz.display_overlay: diverging fades with sqrt|v|, sequential with a constant opacity", () => {
    const lut = lutFromHex(BWR_HEX);
    const img = new Uint8ClampedArray([100, 100, 100, 255, 100, 100, 100, 255, 100, 100, 100, 255]);
    const out = blend(img, new Float32Array([1, 0, -0.25]), lut, 1, { diverging: true });
    expect(Array.from(out.slice(0, 4))).toEqual([255, 0, 0, 255]); // full red
    expect(Array.from(out.slice(4, 8))).toEqual([100, 100, 100, 255]); // zero: the image
    expect(out[10]).toBeGreaterThan(100); // -0.25: half-way (sqrt) towards light blue
    const seq = blend(img, new Float32Array([-1, 0, 1]), lutFromHex("000000808080ffffff"), 0.5, { diverging: false });
    expect([seq[0], seq[4], seq[8]]).toEqual([50, 114, 178]); // constant opacity, (v+1)/2 position
    expect(colorPosition(0.5, { diverging: false, positiveOnly: true })).toBe(0.5);
    expect(colorPosition(0.5, { diverging: true, positiveOnly: true })).toBe(0.75);
  });
  it("colours the map alone and the colour bar from its left to its right end", () => {
    const lut = lutFromHex(BWR_HEX);
    expect(Array.from(colorize(new Float32Array([-1]), lut))).toEqual([0, 0, 255, 255]);
    const ramp = rampColors(lut, { diverging: true }, 3);
    expect(ramp).toEqual([[0, 0, 255], [255, 255, 255], [255, 0, 0]]);
    const pos = rampColors(lut, { diverging: true, positiveOnly: true }, 2);
    expect(pos).toEqual([[255, 255, 255], [255, 0, 0]]);
  });
});

describe("words and numbers", () => {
  it("says what both ends of the colour bar mean, and where the scale ends", () => {
    const meta = { legend: ["against “cat”", "for “cat”"], scales: { percentile: [0.0012, 0.001], max: [5, 5] } };
    expect(legendText(meta)).toEqual({ low: "−1.2e-3", mid: "0", high: "+1.2e-3", lowWords: "against “cat”",
      highWords: "for “cat”", note: "colour scale ends at the 99.5th percentile of |relevance|" });
    const pos = legendText(meta, { positiveOnly: true, norm: "max" });
    expect([pos.low, pos.mid, pos.high, pos.lowWords, pos.highWords]).toEqual(["0", "", "+5", "", "for “cat”"]);
    expect(pos.note).toMatch(/maximum \(positive part\)/);
    expect([formatNumber(0), formatNumber(3.456), formatNumber(12345)]).toEqual(["0", "3.5", "1.2e4"]);
  });
  it("shows probabilities always as percentages", () => {
    expect([0.973, 0.002, 0.0006, 1e-7, 1].map(formatPercent)).toEqual(["97.3 %", "0.2 %", "0.06 %", "< 0.01 %", "100.0 %"]);
    expect(formatPercent(undefined)).toBe("");
  });
  it("formats elapsed time", () => {
    expect([formatElapsed(0.42), formatElapsed(12.4), formatElapsed(125)]).toEqual(["0.4 s", "12 s", "2 min 05 s"]);
  });
  it("names exports with 1-based image numbers, method and class", () => {
    expect(exportFileName({ index: 1, method: "lrp.epsilon", class_name: "African elephant" }))
      .toBe("sglrp_image2_lrp-epsilon_african-elephant.png");
    expect(exportFileName(null)).toBe("sglrp_image1_map_x.png");
  });
});

describe("layout", () => {
  it("enlarges small images by whole factors and shrinks large ones to the room", () => {
    expect(displaySize(800, 64, 64)).toEqual({ width: 512, height: 512, crisp: true });
    expect(displaySize(420, 64, 64)).toEqual({ width: 384, height: 384, crisp: true });
    expect(displaySize(300, 64, 32)).toEqual({ width: 256, height: 128, crisp: true });
    expect(displaySize(1000, 224, 224)).toEqual({ width: 448, height: 448, crisp: true });
    expect(displaySize(200, 224, 224)).toEqual({ width: 200, height: 200, crisp: false });
    const side = displaySize(900, 64, 64, 3);
    expect(side.width * 3 + 12).toBeLessThanOrEqual(900);
  });
  it("draws boxes in display pixels, the chosen class's own box highlighted", () => {
    const b = boxesToDraw([{ box: [1, 2, 3, 6], class: 4, label: "star" }, { box: [0, 0, 1, 1], class: null }], 4, 2);
    expect(b[0]).toEqual({ x: 4, y: 2, w: 8, h: 4, label: "star", highlight: true });
    expect(b[1].highlight).toBe(false);
    expect(heatmapMatchesImage({ index: 1 }, { index: 1 })).toBe(true);
    expect(heatmapMatchesImage({ index: 1 }, { index: 2 })).toBe(false);
  });
});

describe("classes, methods, parameters", () => {
  it("searches all class names; a number finds that index", () => {
    const names = ["tench", "goldfish", "great white shark", "tiger shark"];
    expect(filterClasses(names, "shark").map((m) => m.index)).toEqual([2, 3]);
    expect(filterClasses(names, "1")[0]).toEqual({ index: 1, name: "goldfish" });
    expect(filterClasses(names, "  ")).toEqual([]);
  });
  it("groups methods by family in registry order, with their default parameters", () => {
    const g = groupMethods([{ name: "a", family: "X" }, { name: "b", family: "Y" }, { name: "c", family: "X" }]);
    expect(g.map((x) => [x.family, x.methods.map((m) => m.name)])).toEqual([["X", ["a", "c"]], ["Y", ["b"]]]);
    expect(defaultParams({ params: [{ name: "e", default: 0.1 }, { name: "r", default: false }] })).toEqual({ e: 0.1, r: false });
    expect(paramText({}, [1, 2, 3])).toBe("1, 2, 3");
    expect(paramText({}, null)).toBe("");
  });
  it("parses every value the registry allows and says what is wrong otherwise", () => {
    const eps = { name: "epsilon", type: "float", default: 1e-7, min: 0, max: 1000 };
    expect(parseParam(eps, " 0.25 ")).toEqual({ value: 0.25 });
    expect(parseParam(eps, "1e-3")).toEqual({ value: 0.001 });
    expect(parseParam(eps, "abc").error).toMatch(/epsilon must be a number.*“abc” is not/);
    expect(parseParam(eps, "-1").error).toMatch(/between 0 and 1000; got -1/);
    expect(parseParam(eps, "").error).toMatch(/needs a number/);
    const n = { name: "n", type: "int", default: 32, min: 1, max: 1024 };
    expect(parseParam(n, "8")).toEqual({ value: 8 });
    expect(parseParam(n, "2.5").error).toMatch(/whole number/);
    const low = { name: "low", type: "bounds", default: null };
    expect(parseParam(low, "")).toEqual({ value: null });
    expect(parseParam(low, "auto")).toEqual({ value: null });
    expect(parseParam(low, "-1")).toEqual({ value: -1 });
    expect(parseParam(low, "-1, 0; 2")).toEqual({ value: [-1, 0, 2] });
    expect(parseParam(low, "1, x").error).toMatch(/one number or one per channel/);
    expect(parseParam({ name: "relu", type: "bool" }, true)).toEqual({ value: true });
    expect(parseParam({ name: "layer", type: "str" }, "")).toEqual({ value: null });
    expect(parseParam({ name: "layer", type: "str" }, "conv2")).toEqual({ value: "conv2" });
    const choice = { name: "mode", type: "choice", choices: ["a", 2] };
    expect(parseParam(choice, "2")).toEqual({ value: 2 });
    expect(parseParam(choice, "z").error).toMatch(/one of a, 2/);
  });
});

describe("compare key", () => {
  it("names both ends, or only the high one from 0, and the scale", () => {
    expect(compareKeyText()).toEqual({ low: "against the column's class", mid: "0", high: "for the column's class",
      note: "each map on its own scale, ending at the 99.5th percentile of |relevance|" });
    expect(compareKeyText({ positiveOnly: true, norm: "max" })).toEqual({ low: "0", mid: "", high: "for the column's class",
      note: "each map on its own scale, ending at the maximum" });
  });
});

describe("compare status", () => {
  it("reports k of n, and staleness when the image changed", () => {
    expect(compareStatus({}, { index: 0 })).toEqual({ stale: false, text: "" });
    expect(compareStatus({ state: "running", index: 0, done: 1, total: 4 }, { index: 0 })).toEqual({ stale: false, text: "computing 2 of 4…" });
    expect(compareStatus({ state: "cancelled", index: 0, done: 1, total: 4 }, { index: 0 }).text).toBe("cancelled after 1 of 4");
    const st = compareStatus({ state: "done", index: 0, done: 4, total: 4 }, { index: 2 });
    expect(st.stale).toBe(true);
    expect(st.text).toMatch(/stale: shows image 1, the selection is image 3/);
    expect(compareStatus({ state: "error", error: "boom" }, { index: 0 }).text).toBe("failed: boom");
  });
});
