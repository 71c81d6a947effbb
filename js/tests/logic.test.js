import { describe, expect, it } from "vitest";
import {
  COLORMAPS, colormapNames, isDiverging, makeLUT, toUint8, halfToFloat, decodeHeatmap,
  normalizeHeatmap, positiveOnly, resample, blend, renderOverlay, filterClasses, groupMethods,
  defaultParams, parseParam, heatmapMatchesImage, formatProb,
} from "../widget.js";
import widget from "../widget.js";

describe("module", () => {
  it("has an anywidget render entry point and imports without a DOM", () => {
    expect(typeof widget.render).toBe("function");
  });
});

describe("colormaps", () => {
  it("every colormap gives a 256x3 table that hits its end anchors", () => {
    for (const name of colormapNames()) {
      const lut = makeLUT(name);
      expect(lut.length).toBe(256 * 3);
      const a = COLORMAPS[name].anchors;
      expect(Array.from(lut.slice(0, 3))).toEqual(a[0].slice(1));
      expect(Array.from(lut.slice(255 * 3))).toEqual(a[a.length - 1].slice(1));
    }
  });
  it("bwr is white in the middle, blue at -1, red at +1", () => {
    const lut = makeLUT("bwr");
    expect(Array.from(lut.slice(0, 3))).toEqual([0, 0, 255]);
    expect(Array.from(lut.slice(255 * 3))).toEqual([255, 0, 0]);
    const mid = Array.from(lut.slice(127 * 3, 128 * 3));
    mid.forEach((c) => expect(c).toBeGreaterThan(250));
  });
  it("gray is monotone and unknown names fall back to bwr", () => {
    const g = makeLUT("gray");
    for (let i = 1; i < 256; i++) expect(g[3 * i]).toBeGreaterThanOrEqual(g[3 * (i - 1)]);
    expect(Array.from(makeLUT("nope"))).toEqual(Array.from(makeLUT("bwr")));
    expect(isDiverging("bwr")).toBe(true);
    expect(isDiverging("viridis")).toBe(false);
  });
});

describe("buffers", () => {
  it("toUint8 views DataView / ArrayBuffer / typed arrays without copying", () => {
    const ab = new ArrayBuffer(8);
    const dv = new DataView(ab, 2, 4);
    const u = toUint8(dv);
    expect(u.byteLength).toBe(4);
    expect(u.buffer).toBe(ab);
    expect(u.byteOffset).toBe(2);
    expect(toUint8(ab).byteLength).toBe(8);
    expect(toUint8(new Int8Array([1, -1])).length).toBe(2);
    expect(toUint8(null).length).toBe(0);
  });
  it("half floats decode", () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x0000)).toBe(0);
    expect(halfToFloat(0x7bff)).toBe(65504);
    expect(halfToFloat(0x0001)).toBeCloseTo(5.96e-8, 10);
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });
  it("decodes int8 with a symmetric scale", () => {
    const q = new Int8Array([127, -127, 0, 64]);
    const v = decodeHeatmap(new DataView(q.buffer), { dtype: "int8", width: 2, height: 2, scale: 2.0 });
    expect(Array.from(v)).toEqual([2, -2, 0, expect.closeTo((64 / 127) * 2, 6)]);
  });
  it("decodes uint8 with offset and scale, float16 and float32 (little endian)", () => {
    const u = decodeHeatmap(new Uint8Array([0, 255]), { dtype: "uint8", width: 2, height: 1, scale: 4, offset: -1 });
    expect(Array.from(u)).toEqual([-1, 3]);
    const f16 = new Uint16Array([0x3c00, 0xbc00]);
    expect(Array.from(decodeHeatmap(f16, { dtype: "float16", width: 1, height: 2 }))).toEqual([1, -1]);
    const f32 = new Float32Array([0.5, -0.25, 3]);
    expect(Array.from(decodeHeatmap(f32.buffer, { dtype: "float32", width: 3, height: 1 }))).toEqual([0.5, -0.25, 3]);
  });
  it("rejects a buffer of the wrong size and unknown dtypes", () => {
    expect(() => decodeHeatmap(new Int8Array(3), { dtype: "int8", width: 2, height: 2 })).toThrow(/expected 4/);
    expect(() => decodeHeatmap(new Int8Array(4), { dtype: "int4", width: 2, height: 2 })).toThrow(/dtype/);
  });
});

describe("normalisation and positive-only", () => {
  it("scales by the largest magnitude", () => {
    expect(Array.from(normalizeHeatmap([1, -4, 2]))).toEqual([0.25, -1, 0.5]);
  });
  it("positive-only drops negatives and rescales by the largest positive value", () => {
    expect(Array.from(normalizeHeatmap([1, -4, 2], true))).toEqual([0.5, 0, 1]);
    expect(Array.from(positiveOnly([1, -4, 2]))).toEqual([1, 0, 2]);
  });
  it("all-zero and non-finite maps stay finite", () => {
    expect(Array.from(normalizeHeatmap([0, 0]))).toEqual([0, 0]);
    expect(Array.from(normalizeHeatmap([NaN, Infinity, 2]))).toEqual([0, 0, 1]);
  });
  it("resample keeps constants and is identity for equal sizes", () => {
    const v = new Float32Array([1, 1, 1, 1]);
    expect(resample(v, 2, 2, 2, 2)).toBe(v);
    expect(Array.from(resample(v, 2, 2, 4, 3))).toEqual(new Array(12).fill(1));
  });
});

describe("blending", () => {
  const img = new Uint8ClampedArray([100, 100, 100, 255, 100, 100, 100, 255, 100, 100, 100, 255]);
  const lut = makeLUT("bwr");
  it("opacity 0 leaves the image unchanged", () => {
    expect(Array.from(blend(img, [1, -1, 0], lut, 0))).toEqual(Array.from(img));
  });
  it("opacity 1 paints full colour where |v| = 1 and leaves zero relevance untouched (diverging)", () => {
    const out = Array.from(blend(img, [1, -1, 0], lut, 1));
    expect(out.slice(0, 4)).toEqual([255, 0, 0, 255]);
    expect(out.slice(4, 8)).toEqual([0, 0, 255, 255]);
    expect(out.slice(8, 12)).toEqual([100, 100, 100, 255]);
  });
  it("diverging alpha grows with sqrt(|v|)", () => {
    const out = blend(img, [0.25], lut, 1);
    // alpha = sqrt(0.25) = 0.5 toward the colour at index round(0.625*255)
    const k = 3 * Math.round(0.625 * 255);
    expect(out[0]).toBe(Math.round(100 + 0.5 * (lut[k] - 100)));
  });
  it("intermediate opacity mixes linearly", () => {
    const out = blend(img, [1], lut, 0.5);
    expect(out[0]).toBe(178); // 100 + 0.5*(255-100) = 177.5 -> clamped array rounds to even
    expect(out[1]).toBe(50);
  });
  it("sequential colormaps use constant alpha and (v+1)/2, or v when positive-only", () => {
    const g = makeLUT("gray");
    const signed = blend(null, [-1, 0, 1], g, 1, { diverging: false });
    expect([signed[0], signed[4], signed[8]]).toEqual([0, 128, 255]);
    const pos = blend(null, [0, 0.5, 1], g, 1, { diverging: false, positiveOnly: true });
    expect([pos[0], pos[4], pos[8]]).toEqual([0, 128, 255]);
  });
  it("renderOverlay: changing opacity or positive-only changes the pixels", () => {
    const vals = [2, -2, 0.5];
    const a = renderOverlay(img, vals, { colormap: "bwr", opacity: 0.3 });
    const b = renderOverlay(img, vals, { colormap: "bwr", opacity: 0.9 });
    const c = renderOverlay(img, vals, { colormap: "bwr", opacity: 0.9, positiveOnly: true });
    expect(Array.from(a)).not.toEqual(Array.from(b));
    expect(Array.from(c.slice(4, 8))).toEqual([100, 100, 100, 255]); // negative pixel removed
    expect(Array.from(b.slice(4, 8))).not.toEqual([100, 100, 100, 255]);
  });
});

describe("classes and methods", () => {
  const names = ["tench", "goldfish", "great white shark", "zebra", "African elephant"];
  it("search is case-insensitive, matches an index, and respects the limit", () => {
    expect(filterClasses(names, "SHARK")).toEqual([{ index: 2, name: "great white shark" }]);
    expect(filterClasses(names, "3")[0]).toEqual({ index: 3, name: "zebra" });
    expect(filterClasses(names, "")).toEqual([]);
    expect(filterClasses(names, "e", 2).length).toBe(2);
  });
  it("groups methods by family in registry order", () => {
    const specs = [
      { name: "sglrp", family: "Contrastive LRP" }, { name: "lrp.z", family: "LRP" },
      { name: "clrp", family: "Contrastive LRP" }, { name: "gradient", family: "Gradient" },
    ];
    const g = groupMethods(specs);
    expect(g.map((x) => x.family)).toEqual(["Contrastive LRP", "LRP", "Gradient"]);
    expect(g[0].methods.map((m) => m.name)).toEqual(["sglrp", "clrp"]);
  });
  it("defaults and parameter parsing", () => {
    const spec = { params: [{ name: "epsilon", type: "float", default: 1e-7 }, { name: "relu", type: "bool", default: false }] };
    expect(defaultParams(spec)).toEqual({ epsilon: 1e-7, relu: false });
    expect(parseParam({ type: "float" }, "0.5")).toBe(0.5);
    expect(parseParam({ type: "int" }, "3")).toBe(3);
    expect(parseParam({ type: "float" }, "abc")).toBe("abc"); // passed on; the kernel reports it
    expect(parseParam({ type: "float" }, "")).toBe(null);
    expect(parseParam({ type: "bool" }, true)).toBe(true);
    expect(parseParam({ type: "choice" }, "a")).toBe("a");
    expect(parseParam({ type: "str" }, "")).toBe(null);
    expect(parseParam({ type: "bounds" }, "")).toBe(null);
    expect(parseParam({ type: "bounds" }, "-1.5")).toBe(-1.5);
    expect(parseParam({ type: "bounds" }, "-123.68, -116.78 -103.94")).toEqual([-123.68, -116.78, -103.94]);
    expect(parseParam({ type: "bounds" }, "1, x")).toBe("1, x");
  });
  it("heatmap/image matching and probability formatting", () => {
    expect(heatmapMatchesImage({ index: 1, width: 2, height: 2 }, { index: 1, width: 2, height: 2 })).toBe(true);
    expect(heatmapMatchesImage({ index: 0, width: 2, height: 2 }, { index: 1, width: 2, height: 2 })).toBe(false);
    expect(formatProb(0.5)).toBe("50.0%");
    expect(formatProb(1e-5)).toBe("1.0e-5");
  });
});
