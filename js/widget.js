// sglrp_widgets — RelevanceExplorer front end: one plain ES module, no runtime dependencies.
//
// Part 1 holds pure functions (decoding, scaling, blending, parsing, wording); part 2 small views, each
// a function `(env) => {el, keys, update}` that owns one piece of the widget and redraws it when one of
// its `keys` (traits, or "view" for the browser-only view settings) changes; part 3 `render` only wires
// the views together. Everything is exported for the unit tests in js/tests.
//
// Opacity, colormap, positive-only, scale, layout and boxes are applied here, from the last heatmap,
// without asking the kernel (they are only `model.set`, and ride along with the next real request).
// The colormaps' lookup tables come from matplotlib, sent by Python.

// =============================================================================================
// Part 1: pure functions

/** A traitlets `Bytes` (DataView in ipywidgets 8, or an ArrayBuffer / typed array) as a Uint8Array view. */
export function toUint8(buf) {
  if (buf == null) return new Uint8Array(0);
  if (buf instanceof Uint8Array) return buf;
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  if (Array.isArray(buf)) return Uint8Array.from(buf);
  throw new TypeError("unsupported buffer type: " + Object.prototype.toString.call(buf));
}

/** IEEE 754 half precision (as uint16 bits) to a JS number. */
export function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x03ff;
  if (e === 0) return s * Math.pow(2, -14) * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * Math.pow(2, e - 15) * (1 + f / 1024);
}

/**
 * Decode a heatmap buffer into a Float32Array of height*width values (data units).
 * meta: {dtype: "float16"|"int8"|"float32", width, height, scale}
 *   float16: value = f * scale (little endian; what the kernel sends)
 *   int8:    value = q / 127 * scale
 *   float32: value as is
 */
export function decodeHeatmap(buf, meta) {
  const bytes = toUint8(buf);
  const n = (meta.width | 0) * (meta.height | 0);
  const dtype = meta.dtype || "float16";
  const size = { int8: 1, float16: 2, float32: 4 }[dtype];
  if (!size) throw new Error("unknown heatmap dtype " + dtype);
  if (bytes.byteLength !== n * size) {
    throw new Error(`heatmap buffer has ${bytes.byteLength} bytes, expected ${n * size} (${meta.height}x${meta.width} ${dtype})`);
  }
  const scale = meta.scale == null ? 1 : Number(meta.scale);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  if (dtype === "float16") for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true)) * scale;
  else if (dtype === "int8") for (let i = 0; i < n; i++) out[i] = (dv.getInt8(i) / 127) * scale;
  else for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  return out;
}

/** A lookup table sent as hex ("rrggbb" per entry) -> Uint8Array of length 3n. */
export function lutFromHex(hex) {
  const s = String(hex || "");
  const out = new Uint8Array(Math.floor(s.length / 2));
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

const GRAY_LUT = lutFromHex("000000ffffff");

/** The named colormap of the `colormaps` trait: {lut, diverging}; the first one when the name is unknown. */
export function colormapOf(colormaps, name) {
  const all = colormaps || {};
  const entry = all[name] || all[Object.keys(all)[0]];
  if (!entry) return { lut: GRAY_LUT, diverging: false };
  if (!entry._lut) Object.defineProperty(entry, "_lut", { value: lutFromHex(entry.lut), enumerable: false });
  return { lut: entry._lut, diverging: !!entry.diverging };
}

/** The value at the end of the colour scale: scales[norm] = [signed, positive-only] (computed in Python). */
export function mapScale(meta, norm = "percentile", positiveOnly = false) {
  const s = meta && meta.scales && meta.scales[norm];
  const v = s ? Number(s[positiveOnly ? 1 : 0]) : Number(meta && meta.scale);
  return Number.isFinite(v) && v > 0 ? v : 0;
}

/** Values / scale clipped to [-1, 1] ([0, 1] with positiveOnly; negatives become 0). Non-finite -> 0. */
export function normalizeHeatmap(values, scale, positiveOnly = false) {
  const n = values.length;
  const out = new Float32Array(n);
  if (!(scale > 0)) return out;
  for (let i = 0; i < n; i++) {
    let v = values[i] / scale;
    if (!Number.isFinite(v)) v = 0;
    if (positiveOnly && v < 0) v = 0;
    out[i] = v > 1 ? 1 : v < -1 ? -1 : v;
  }
  return out;
}

/** Bilinear resampling of a (h, w) map to (H, W) — used only when image and map sizes differ. */
export function resample(values, w, h, W, H) {
  if (w === W && h === H) return values;
  const out = new Float32Array(W * H);
  for (let y = 0; y < H; y++) {
    const fy = Math.min(h - 1, Math.max(0, ((y + 0.5) * h) / H - 0.5));
    const y0 = Math.floor(fy), y1 = Math.min(h - 1, y0 + 1), dy = fy - y0;
    for (let x = 0; x < W; x++) {
      const fx = Math.min(w - 1, Math.max(0, ((x + 0.5) * w) / W - 0.5));
      const x0 = Math.floor(fx), x1 = Math.min(w - 1, x0 + 1), dx = fx - x0;
      const a = values[y0 * w + x0] * (1 - dx) + values[y0 * w + x1] * dx;
      const b = values[y1 * w + x0] * (1 - dx) + values[y1 * w + x1] * dx;
      out[y * W + x] = a * (1 - dy) + b * dy;
    }
  }
  return out;
}

/** Position in the colormap (0..1) of a normalised value: signed maps and diverging maps centre 0. */
export function colorPosition(v, { diverging = true, positiveOnly = false } = {}) {
  return positiveOnly && !diverging ? v : (v + 1) / 2;
}

function lutIndex(lut, t) {
  const nl = lut.length / 3 - 1;
  return 3 * Math.min(nl, Math.max(0, Math.round(t * nl)));
}

/**
 * Blend a normalised map (values in [-1, 1], or [0, 1] when positive-only) over an RGBA image, as
 * sglrp_widgets.viz.display_overlay does: diverging colormaps fade with opacity * sqrt(|v|) (zero
 * relevance leaves the image), sequential ones blend with a constant opacity. `image` may be null
 * (black). Returns a new Uint8ClampedArray RGBA.
 */
export function blend(image, norm, lut, opacity, opts = {}) {
  const n = norm.length;
  const diverging = opts.diverging !== false;
  const op = Math.min(1, Math.max(0, Number(opacity) || 0));
  const out = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    const v = norm[i];
    const k = lutIndex(lut, colorPosition(v, opts));
    const a = diverging ? op * Math.sqrt(Math.min(1, Math.abs(v))) : op;
    const r0 = image ? image[4 * i] : 0, g0 = image ? image[4 * i + 1] : 0, b0 = image ? image[4 * i + 2] : 0;
    out[4 * i] = r0 + a * (lut[k] - r0);
    out[4 * i + 1] = g0 + a * (lut[k + 1] - g0);
    out[4 * i + 2] = b0 + a * (lut[k + 2] - b0);
    out[4 * i + 3] = 255;
  }
  return out;
}

/** The map alone in its colours (the middle panel of "image | map | overlay"). */
export function colorize(norm, lut, opts = {}) {
  const out = new Uint8ClampedArray(4 * norm.length);
  for (let i = 0; i < norm.length; i++) {
    const k = lutIndex(lut, colorPosition(norm[i], opts));
    out[4 * i] = lut[k];
    out[4 * i + 1] = lut[k + 1];
    out[4 * i + 2] = lut[k + 2];
    out[4 * i + 3] = 255;
  }
  return out;
}

/** The colour bar's colours from its left end to its right end (n steps). */
export function rampColors(lut, opts = {}, n = 64) {
  const lo = opts.positiveOnly ? 0 : -1;
  const out = [];
  for (let i = 0; i < n; i++) {
    const v = lo + ((1 - lo) * i) / (n - 1);
    const k = lutIndex(lut, colorPosition(v, opts));
    out.push([lut[k], lut[k + 1], lut[k + 2]]);
  }
  return out;
}

/** A short number for the colour bar's ends: 0.0012 -> "1.2e-3", 3.4 -> "3.4". */
export function formatNumber(v) {
  if (!Number.isFinite(v) || v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 0.01 && a < 1000) return String(Number(v.toPrecision(2)));
  const [m, e] = v.toExponential(1).split("e");
  return `${m}e${Number(e)}`;
}

/** Whether a map is drawn from 0 up: the positive-only setting, or a map that is never negative (Grad-CAM's,
 * or any with relu on; the meta says so and why), whose colour bar has no negative end to explain. */
export function showsPositiveOnly(meta, local) {
  return !!(local.positiveOnly || (meta && meta.never_negative_why));
}

/** What the colour bar says: the meaning of both ends for the map's class, and the scale. */
export function legendText(meta, { positiveOnly = false, norm = "percentile" } = {}) {
  const words = (meta && meta.legend) || ["against", "for"];
  const s = mapScale(meta, norm, positiveOnly);
  const how = norm === "max" ? "maximum" : "99.5th percentile of |relevance|";
  return {
    low: positiveOnly ? "0" : `−${formatNumber(s)}`,
    mid: positiveOnly ? "" : "0",
    high: `+${formatNumber(s)}`,
    lowWords: positiveOnly ? "" : words[0],
    highWords: words[1],
    note: `colour scale ends at the ${how}${positiveOnly ? " (positive part)" : ""}`,
  };
}

/** The compare grid's colour key (as viz.plot_grid's): what the ends mean for each column's class, and how
 * the maps were scaled (each on its own). ``positiveOnly``: every row is drawn from 0, so there is no low end. */
export function compareKeyText({ positiveOnly = false, norm = "percentile" } = {}) {
  const how = norm === "max" ? "maximum" : "99.5th percentile of |relevance|";
  return {
    low: positiveOnly ? "0" : "against the column's class",
    mid: positiveOnly ? "" : "0",
    high: "for the column's class",
    note: `each map on its own scale, ending at the ${how}`,
  };
}

/** Always a percentage: 97.3 %, 0.2 %, 0.06 %, < 0.01 % (as sglrp_widgets.widget.format_probability). */
export function formatPercent(p) {
  if (p == null || !Number.isFinite(Number(p))) return "";
  const pct = 100 * Number(p);
  if (pct >= 1) return `${pct.toFixed(1)} %`;
  if (pct >= 0.01) return `${Number(pct.toPrecision(2))} %`;
  return "< 0.01 %";
}

/** "0.4 s", "12 s", "2 min 05 s" */
export function formatElapsed(seconds) {
  const s = Math.max(0, Number(seconds) || 0);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${String(Math.round(s - 60 * m)).padStart(2, "0")} s`;
}

/** Display size of one panel: scales with the available width; small images are enlarged by whole
 *  factors (crisp pixels), large ones shrink to fit. */
export function displaySize(available, w, h, panels = 1, preferred = 512) {
  const room = Math.max(64, Math.floor(available / panels) - (panels > 1 ? 6 : 0));
  let pw = Math.min(room, Math.max(w, preferred));
  if (pw >= 2 * w) pw = w * Math.floor(pw / w);
  pw = Math.max(1, Math.round(pw));
  return { width: pw, height: Math.max(1, Math.round((pw * h) / w)), crisp: pw > w };
}

/** Boxes to draw (display pixels): the chosen class's own box highlighted. */
export function boxesToDraw(boxes, target, scale = 1) {
  return (boxes || []).map((b) => {
    const [y0, x0, y1, x1] = b.box;
    return {
      x: x0 * scale, y: y0 * scale, w: (x1 - x0) * scale, h: (y1 - y0) * scale,
      label: b.label || "", highlight: b.class != null && b.class === target,
    };
  });
}

/** True when a heatmap's metadata belongs to the image currently drawn. */
export function heatmapMatchesImage(heatMeta, imageMeta) {
  return !!heatMeta && !!imageMeta && heatMeta.index === imageMeta.index;
}

function slug(s) {
  return String(s).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "x";
}

/** File name of the PNG export: 1-based image number, method and class. */
export function exportFileName(meta) {
  const m = meta || {};
  return `sglrp_image${(m.index ?? 0) + 1}_${slug(m.method || "map")}_${slug(m.class_name ?? m.target ?? "")}.png`;
}

/** Case-insensitive search over all class names; a number matches the class index. */
export function filterClasses(names, query, limit = 50) {
  const q = String(query || "").trim().toLowerCase();
  if (!q) return [];
  const out = [];
  const asIndex = /^\d+$/.test(q) ? Number(q) : -1;
  if (asIndex >= 0 && asIndex < names.length) out.push({ index: asIndex, name: names[asIndex] });
  for (let i = 0; i < names.length && out.length < limit; i++) {
    if (i !== asIndex && String(names[i]).toLowerCase().includes(q)) out.push({ index: i, name: names[i] });
  }
  return out;
}

/** Group method specs by family, keeping the registry's order of first appearance. */
export function groupMethods(specs) {
  const groups = [];
  const byFamily = new Map();
  for (const s of specs || []) {
    const fam = s.family || "Other";
    if (!byFamily.has(fam)) {
      const g = { family: fam, methods: [] };
      byFamily.set(fam, g);
      groups.push(g);
    }
    byFamily.get(fam).methods.push(s);
  }
  return groups;
}

/** Default parameter values of a method spec, as a plain object. */
export function defaultParams(spec) {
  const out = {};
  for (const p of (spec && spec.params) || []) if (p.default !== undefined) out[p.name] = p.default;
  return out;
}

/** A parameter's value as the text of its field ("" for automatic). */
export function paramText(spec, value) {
  if (value == null) return "";
  if (Array.isArray(value)) return value.join(", ");
  return String(value);
}

/**
 * Parse what was typed into a parameter's field, checked against the registry's type and range.
 * Returns {value} or {error: a sentence saying what is wrong and what to type}.
 */
export function parseParam(spec, raw) {
  const t = spec.type;
  const name = spec.name;
  if (t === "bool") return { value: raw === true || raw === "true" || raw === "on" || raw === 1 };
  const s = String(raw == null ? "" : raw).trim();
  if (t === "int" || t === "float") {
    if (s === "") return { error: `${name} needs a number${spec.default != null ? ` (default ${spec.default})` : ""}.` };
    const v = Number(s.replace(/^\+/, ""));
    if (!Number.isFinite(v)) return { error: `${name} must be a number, e.g. ${spec.default ?? 1}; “${s}” is not.` };
    if (t === "int" && !Number.isInteger(v)) return { error: `${name} must be a whole number; got ${s}.` };
    if ((spec.min != null && v < spec.min) || (spec.max != null && v > spec.max)) {
      return { error: `${name} must be between ${spec.min ?? "−∞"} and ${spec.max ?? "∞"}; got ${s}.` };
    }
    return { value: v };
  }
  if (t === "bounds") {
    if (s === "" || s.toLowerCase() === "auto") return { value: null };
    const parts = s.split(/[\s,;]+/).filter((x) => x !== "");
    const nums = parts.map(Number);
    if (nums.some((v) => !Number.isFinite(v))) {
      return { error: `${name} must be one number or one per channel (e.g. 0 or “-1, -1, -1”), or empty for automatic; got “${s}”.` };
    }
    return { value: nums.length === 1 ? nums[0] : nums };
  }
  if (t === "choice") return (spec.choices || []).map(String).includes(s) ? { value: (spec.choices || []).find((c) => String(c) === s) } : { error: `${name} must be one of ${(spec.choices || []).join(", ")}.` };
  return { value: s === "" ? null : s };
}

/** Is the comparison grid still about the current selection? */
export function compareStatus(grid, selection) {
  if (!grid || !grid.state) return { stale: false, text: "" };
  const stale = grid.state === "stale" || (grid.index != null && grid.index !== selection.index);
  const done = grid.done || 0, total = grid.total || 0;
  let text = "";
  if (grid.state === "running") text = total ? `computing ${done + 1 > total ? total : done + 1} of ${total}…` : "starting…";
  else if (grid.state === "cancelled") text = `cancelled after ${done} of ${total}`;
  else if (grid.state === "error") text = `failed: ${grid.error || "unknown error"}`;
  if (stale) text = `stale: shows image ${(grid.index ?? 0) + 1}, the selection is image ${selection.index + 1} — press Compare again`;
  return { stale, text };
}

// =============================================================================================
// Part 2: views

/** Create an element: h("div", {class: "x", role: "status", text: "hi"}, child, ...). */
export function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "role") e.dataset.role = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c != null) e.append(typeof c === "string" ? document.createTextNode(c) : c);
  return e;
}

async function decodePng(bytes, width, height) {
  const u8 = toUint8(bytes);
  if (!u8.byteLength) return null;
  const bmp = await createImageBitmap(new Blob([u8], { type: "image/png" }));
  const c = document.createElement("canvas");
  c.width = width || bmp.width;
  c.height = height || bmp.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(bmp, 0, 0, c.width, c.height);
  return ctx.getImageData(0, 0, c.width, c.height).data;
}

/** Shared state of the views: the model, the browser-only view settings and the decoded data. */
export function makeEnv(model, deps = {}) {
  const listeners = new Set();
  const env = {
    model,
    decodePng: deps.decodePng || decodePng,
    now: deps.now || (() => Date.now()),
    local: {
      opacity: Number(model.get("opacity") ?? 0.6),
      colormap: model.get("colormap") || "bwr",
      positiveOnly: !!model.get("positive_only"),
      norm: model.get("norm") || "percentile",
      layout: model.get("layout") || "overlay",
      showBoxes: model.get("show_boxes") !== false,
      query: "",
      imagePixels: null, imageMeta: null, heat: null, heatMeta: null,
      noKernel: false,
    },
    requestId: Number(model.get("request_id")) || 0,
    pictureCanvas: null,
    /** Send a selection change to the kernel (one message). */
    request(changes) {
      for (const [k, v] of Object.entries(changes)) model.set(k, v);
      model.set("request_id", ++env.requestId);
      try {
        model.save_changes();
      } catch (e) { // a saved view without its kernel has no comm
        env.local.noKernel = true;
        env.emit("kernel");
        return;
      }
      env.expectAnswer();
    },
    /** Change a browser-only view setting: kept in the model state, nothing is sent now. */
    setView(key, trait, value) {
      env.local[key] = value;
      model.set(trait, value);
      env.emit("view");
    },
    on(fn) { listeners.add(fn); return () => listeners.delete(fn); },
    emit(what) { for (const fn of listeners) fn(what); },
    // the kernel counts every message it receives (comm_count): no change soon after a request means
    // that this is a saved view without a kernel
    _answerTimer: null,
    expectAnswer() {
      clearTimeout(env._answerTimer);
      const before = model.get("comm_count");
      env._answerTimer = setTimeout(() => {
        if (model.get("comm_count") === before) { env.local.noKernel = true; env.emit("kernel"); }
      }, deps.answerTimeout ?? 5000);
    },
    answered() {
      clearTimeout(env._answerTimer);
      if (env.local.noKernel) { env.local.noKernel = false; env.emit("kernel"); }
    },
  };
  return env;
}

/** ◀ image k / n ▶ */
export function navView(env) {
  const { model } = env;
  const prev = h("button", { class: "sglrp-btn", role: "prev", title: "previous image", "aria-label": "previous image", text: "◀" });
  const next = h("button", { class: "sglrp-btn", role: "next", title: "next image", "aria-label": "next image", text: "▶" });
  const label = h("span", { class: "sglrp-image-label", role: "image-label" });
  const go = (step) => {
    const n = model.get("n_images"), i = model.get("index");
    env.request({ index: (i + step + n) % n, target: -1 });
  };
  prev.addEventListener("click", () => go(-1));
  next.addEventListener("click", () => go(1));
  const el = h("div", { class: "sglrp-row sglrp-nav" }, prev, label, next);
  function update() {
    const n = model.get("n_images") || 0;
    label.textContent = `image ${(model.get("index") ?? 0) + 1} / ${n}`;
    prev.disabled = next.disabled = n < 2;
  }
  return { el, keys: ["index", "n_images"], update };
}

/** What the picture shows, in words: "cross · 55.5 %  —  SGLRP". */
export function captionView(env) {
  const { model } = env;
  const title = h("div", { class: "sglrp-caption-title", role: "caption" });
  const sub = h("div", { class: "sglrp-caption-sub", role: "caption-method" });
  const el = h("div", { class: "sglrp-caption" }, title, sub);
  function update() {
    const m = model.get("heatmap_meta") || {};
    if (m.class_name == null) { title.textContent = ""; sub.textContent = ""; return; }
    title.textContent = `${m.class_name} · ${formatPercent(m.probability)}`;
    const n = model.get("n_images") || 0;
    sub.textContent = `${m.label || m.method} · image ${(m.index ?? 0) + 1} / ${n}`;
  }
  return { el, keys: ["heatmap_meta", "n_images"], update };
}

function drawBoxes(ctx, boxes, x0 = 0) {
  for (const b of boxes) {
    ctx.save();
    ctx.setLineDash(b.highlight ? [] : [5, 3]);
    ctx.lineWidth = b.highlight ? 3.5 : 2.5;
    ctx.strokeStyle = "rgba(0,0,0,0.85)";
    ctx.strokeRect(x0 + b.x, b.y, b.w, b.h);
    ctx.lineWidth = b.highlight ? 1.6 : 1.1;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(x0 + b.x, b.y, b.w, b.h);
    if (b.label) {
      ctx.font = "11px sans-serif";
      const tw = ctx.measureText(b.label).width + 6;
      const ty = b.y >= 15 ? b.y - 15 : b.y;
      ctx.fillStyle = "rgba(0,0,0,0.7)";
      ctx.fillRect(x0 + b.x, ty, tw, 15);
      ctx.fillStyle = "#ffffff";
      ctx.fillText(b.label, x0 + b.x + 3, ty + 11);
    }
    ctx.restore();
  }
}

/** The picture: overlay, or image | map | overlay; boxes; dimmed while computing or after an error. */
export function pictureView(env) {
  const { model, local } = env;
  const canvas = h("canvas", { class: "sglrp-canvas", role: "heatmap", width: 64, height: 64 });
  const captions = h("div", { class: "sglrp-panel-captions", role: "panel-captions" });
  const el = h("div", { class: "sglrp-picture" }, captions, canvas);
  env.pictureCanvas = canvas;
  let lastWidth = 0;

  function panelsFor() {
    const im = local.imageMeta, hm = local.heatMeta;
    if (!local.imagePixels || !im) return [];
    if (!(local.heat && heatmapMatchesImage(hm, im))) return [{ name: "image", px: local.imagePixels }];
    const values = resample(local.heat, hm.width, hm.height, im.width, im.height);
    const cm = colormapOf(model.get("colormaps"), local.colormap);
    const positiveOnly = showsPositiveOnly(hm, local);
    const opts = { diverging: cm.diverging, positiveOnly };
    const norm = normalizeHeatmap(values, mapScale(hm, local.norm, positiveOnly), positiveOnly);
    const overlay = { name: "overlay", px: blend(local.imagePixels, norm, cm.lut, local.opacity, opts) };
    if (local.layout !== "side") return [overlay];
    return [{ name: "image", px: local.imagePixels }, { name: "map", px: colorize(norm, cm.lut, opts) }, overlay];
  }

  function draw() {
    const im = local.imageMeta, hm = local.heatMeta;
    const panels = panelsFor();
    canvas.dataset.image = local.imagePixels && im ? String(im.index) : "";
    canvas.dataset.map = panels.length && panels[panels.length - 1].name === "overlay" ? `${hm.index}|${hm.method}|${hm.target}` : "";
    if (!panels.length) return;
    const count = local.layout === "side" ? 3 : 1;
    lastWidth = el.clientWidth || lastWidth || 400;
    const size = displaySize(lastWidth, im.width, im.height, count);
    canvas.width = size.width * count + 6 * (count - 1);
    canvas.height = size.height;
    canvas.style.width = `${canvas.width}px`;
    canvas.style.height = `${canvas.height}px`;
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.imageSmoothingEnabled = !size.crisp;
    const off = document.createElement("canvas");
    off.width = im.width;
    off.height = im.height;
    const octx = off.getContext("2d");
    const target = hm ? hm.target : model.get("resolved_target");
    const boxes = local.showBoxes ? boxesToDraw(model.get("boxes"), target, size.width / im.width) : [];
    captions.textContent = "";
    panels.forEach((p, i) => {
      const x = i * (size.width + 6);
      octx.putImageData(new ImageData(p.px, im.width, im.height), 0, 0);
      ctx.drawImage(off, x, 0, size.width, size.height);
      if (p.name !== "map") drawBoxes(ctx, boxes, x);
      if (count > 1) captions.append(h("span", { style: `width:${size.width}px`, text: p.name }));
    });
    captions.hidden = count === 1;
  }

  function loadHeatmap() {
    const meta = model.get("heatmap_meta") || {};
    const buf = model.get("heatmap");
    local.heat = null;
    local.heatMeta = null;
    if (meta.width && buf && toUint8(buf).byteLength) {
      try {
        local.heat = decodeHeatmap(buf, meta);
        local.heatMeta = meta;
      } catch (e) {
        console.error("sglrp_widgets: could not decode the heatmap", e);
      }
    }
  }

  let imageToken = 0;
  async function loadImage() {
    const meta = model.get("image_meta") || {};
    const token = ++imageToken;
    try {
      const px = await env.decodePng(model.get("image"), meta.width, meta.height);
      if (token !== imageToken) return; // a newer image arrived meanwhile
      local.imagePixels = px;
      local.imageMeta = px ? meta : null;
      draw();
    } catch (e) {
      console.error("sglrp_widgets: could not decode the image", e);
    }
  }

  function dim() {
    const task = model.get("task") || {};
    el.classList.toggle("sglrp-dim", task.kind === "map" || !!model.get("error"));
  }

  if (typeof ResizeObserver !== "undefined") {
    const ro = new ResizeObserver(() => { if (el.clientWidth && el.clientWidth !== lastWidth) draw(); });
    ro.observe(el);
    env.on((what) => { if (what === "dispose") ro.disconnect(); });
  }
  let imageKey = null;
  function update(what) {
    if (what === "init" || what === "image" || what === "image_meta") {
      const key = JSON.stringify(model.get("image_meta") || {}); // image and image_meta arrive together
      if (what === "init" || key !== imageKey) {
        imageKey = key;
        loadHeatmap();
        loadImage(); // draws once decoded
      }
    } else if (what === "heatmap" || what === "heatmap_meta") {
      loadHeatmap();
      draw();
    } else if (what === "boxes" || what === "view") {
      draw();
    }
    dim();
  }
  return {
    el, keys: ["image", "image_meta", "heatmap", "heatmap_meta", "boxes", "task", "error", "view"], update,
    draw, loadImage,
  };
}

/** The colour bar: colours and the meaning of both ends for the map's class. */
/** Paint a colour bar's ramp (rampColors) across ``canvas``, one column of pixels per colour. */
function paintRamp(canvas, lut, opts) {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  rampColors(lut, opts, canvas.width).forEach(([r, g, b], i) => {
    ctx.fillStyle = `rgb(${r},${g},${b})`;
    ctx.fillRect(i, 0, 1, canvas.height);
  });
}

export function legendView(env) {
  const { model, local } = env;
  const bar = h("canvas", { class: "sglrp-legend-bar", role: "legend-bar", width: 256, height: 12 });
  const low = h("span", { class: "sglrp-legend-low", role: "legend-low" });
  const mid = h("span", { class: "sglrp-legend-mid", role: "legend-mid" });
  const high = h("span", { class: "sglrp-legend-high", role: "legend-high" });
  const lowWords = h("span", { class: "sglrp-legend-low", role: "legend-low-words" });
  const highWords = h("span", { class: "sglrp-legend-high", role: "legend-high-words" });
  const note = h("div", { class: "sglrp-legend-note", role: "legend-note" });
  const el = h("div", { class: "sglrp-legend", role: "legend" }, bar,
    h("div", { class: "sglrp-legend-labels" }, low, mid, high),
    h("div", { class: "sglrp-legend-labels sglrp-legend-words" }, lowWords, highWords), note);
  function update() {
    const meta = model.get("heatmap_meta") || {};
    el.hidden = meta.class_name == null;
    const cm = colormapOf(model.get("colormaps"), local.colormap);
    const positiveOnly = showsPositiveOnly(meta, local);
    const opts = { diverging: cm.diverging, positiveOnly };
    const text = legendText(meta, { positiveOnly, norm: local.norm });
    low.textContent = text.low;
    mid.textContent = text.mid;
    high.textContent = text.high;
    lowWords.textContent = text.lowWords;
    highWords.textContent = text.highWords;
    note.textContent = text.note;
    paintRamp(bar, cm.lut, opts);
  }
  return { el, keys: ["heatmap_meta", "colormaps", "view"], update };
}

/** Opacity, colormap, positive-only, colour scale, layout, boxes: browser-only settings. */
export function viewControlsView(env) {
  const { model, local } = env;
  const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.01, role: "opacity", class: "sglrp-opacity", "aria-label": "overlay opacity" });
  const cmap = h("select", { role: "colormap", class: "sglrp-input", "aria-label": "colormap" });
  const pos = h("input", { type: "checkbox", role: "positive-only" });
  const posLabel = h("label", { class: "sglrp-check" }, pos, " positive only");
  const norm = h("select", { role: "norm", class: "sglrp-input", "aria-label": "colour scale" },
    h("option", { value: "percentile", text: "99.5th percentile" }), h("option", { value: "max", text: "maximum" }));
  const layout = h("select", { role: "layout", class: "sglrp-input", "aria-label": "layout" },
    h("option", { value: "overlay", text: "overlay" }), h("option", { value: "side", text: "image | map | overlay" }));
  const boxes = h("input", { type: "checkbox", role: "show-boxes" });
  const boxesLabel = h("label", { class: "sglrp-check" }, boxes, " boxes");
  opacity.addEventListener("input", () => env.setView("opacity", "opacity", Number(opacity.value)));
  cmap.addEventListener("change", () => env.setView("colormap", "colormap", cmap.value));
  pos.addEventListener("change", () => env.setView("positiveOnly", "positive_only", pos.checked));
  norm.addEventListener("change", () => env.setView("norm", "norm", norm.value));
  layout.addEventListener("change", () => env.setView("layout", "layout", layout.value));
  boxes.addEventListener("change", () => env.setView("showBoxes", "show_boxes", boxes.checked));
  const el = h("div", { class: "sglrp-view-controls" },
    h("label", { text: "opacity" }), opacity,
    h("label", { text: "colours" }), h("div", { class: "sglrp-row" }, cmap, posLabel),
    h("label", { text: "scale" }), norm,
    h("label", { text: "view" }), h("div", { class: "sglrp-row" }, layout, boxesLabel));
  function update() {
    const names = Object.keys(model.get("colormaps") || {});
    if (cmap.options.length !== names.length) {
      cmap.textContent = "";
      for (const n of names) cmap.append(h("option", { value: n, text: n }));
    }
    opacity.value = String(local.opacity);
    cmap.value = local.colormap;
    // a never-negative map has only a positive part: the box shows that, and keeps the setting for other methods
    const meta = model.get("heatmap_meta") || {};
    pos.checked = showsPositiveOnly(meta, local);
    pos.disabled = !!meta.never_negative_why;
    posLabel.title = meta.never_negative_why ? `${meta.never_negative_why}, so positive only is always on here` : "";
    norm.value = local.norm;
    layout.value = local.layout;
    boxes.checked = local.showBoxes;
    boxesLabel.hidden = !(model.get("boxes") || []).length;
  }
  return { el, keys: ["colormaps", "boxes", "view", "heatmap_meta"], update };
}

/** The method menu, grouped by family; methods that cannot explain this model are disabled, with why. */
export function methodView(env) {
  const { model } = env;
  const select = h("select", { class: "sglrp-input sglrp-method", role: "method-select", "aria-label": "method" });
  const about = h("div", { class: "sglrp-help", role: "method-help" });
  const unavailable = h("details", { class: "sglrp-unavailable", role: "unavailable" });
  select.addEventListener("change", () => {
    const spec = (model.get("method_specs") || []).find((s) => s.name === select.value);
    env.request({ method: select.value, params: defaultParams(spec) });
  });
  const el = h("div", { class: "sglrp-method-box" }, h("div", { class: "sglrp-row" }, h("label", { text: "method" }), select), about, unavailable);
  let built = null;
  function update() {
    const specs = model.get("method_specs") || [];
    if (built !== specs) {
      built = specs;
      select.textContent = "";
      for (const g of groupMethods(specs)) {
        const og = h("optgroup", { label: g.family });
        for (const s of g.methods) {
          og.append(h("option", {
            value: s.name, text: s.unavailable ? `${s.label || s.name} (not for this model)` : s.label || s.name,
            title: s.unavailable || s.description || "", disabled: !!s.unavailable,
          }));
        }
        select.append(og);
      }
      const off = specs.filter((s) => s.unavailable);
      unavailable.textContent = "";
      unavailable.hidden = !off.length;
      if (off.length) {
        unavailable.append(h("summary", { text: `${off.length} method${off.length > 1 ? "s" : ""} cannot explain this model` }));
        for (const s of off) unavailable.append(h("div", { class: "sglrp-help", text: `${s.label || s.name}: ${s.unavailable}` }));
      }
    }
    select.value = model.get("method");
    const spec = specs.find((s) => s.name === model.get("method"));
    about.textContent = spec ? spec.description || "" : "";
  }
  return { el, keys: ["method_specs", "method"], update };
}

/** One field per parameter of the method, with its description and, when a value is wrong, a sentence. */
export function paramsView(env) {
  const { model } = env;
  const el = h("div", { class: "sglrp-params", role: "params" });
  let fields = {}; // name -> {input, error, spec, applied}
  let builtFor = null;

  function apply(name) {
    const f = fields[name];
    const raw = f.spec.type === "bool" ? f.input.checked : f.input.value;
    if (f.spec.type !== "bool" && String(raw) === f.applied) return; // Enter, then blur: once
    const parsed = parseParam(f.spec, raw);
    if (parsed.error) {
      f.error.textContent = parsed.error;
      f.input.setAttribute("aria-invalid", "true");
      return; // nothing is sent: the map on screen still matches the applied values
    }
    f.error.textContent = "";
    f.input.removeAttribute("aria-invalid");
    f.applied = String(raw);
    env.request({ params: { ...(model.get("params") || {}), [name]: parsed.value } });
  }

  function build() {
    const spec = (model.get("method_specs") || []).find((s) => s.name === model.get("method"));
    builtFor = model.get("method");
    el.textContent = "";
    fields = {};
    for (const p of (spec && spec.params) || []) {
      let input;
      if (p.type === "bool") input = h("input", { type: "checkbox" });
      else if (p.type === "choice") {
        input = h("select", { class: "sglrp-input" });
        for (const c of p.choices || []) input.append(h("option", { value: String(c), text: String(c) }));
      } else {
        input = h("input", {
          type: "text", class: "sglrp-input", spellcheck: "false", autocomplete: "off",
          inputmode: p.type === "int" ? "numeric" : p.type === "float" ? "decimal" : null,
          placeholder: p.type === "bounds" || p.type === "str" ? "auto" : null,
        });
      }
      input.dataset.role = "param";
      input.dataset.param = p.name;
      input.setAttribute("aria-label", p.name);
      const error = h("div", { class: "sglrp-field-error", role: "field-error", "data-param": p.name, "aria-live": "polite" });
      fields[p.name] = { input, error, spec: p, applied: null };
      input.addEventListener("change", () => apply(p.name)); // Tab, blur, Enter (where the page lets it through)
      input.addEventListener("keydown", (ev) => {
        ev.stopPropagation(); // the notebook's shortcuts (Enter = edit cell, ...) must not see typing here
        if (ev.key === "Enter") { ev.preventDefault(); apply(p.name); }
      });
      const name = h("label", { class: "sglrp-param-name", text: p.name });
      el.append(h("div", { class: `sglrp-param${p.type === "bool" ? " sglrp-param-bool" : ""}` },
        ...(p.type === "bool" ? [input, name] : [name, input]),
        h("div", { class: "sglrp-help", text: p.help || "" }), error));
    }
  }

  function update() {
    if (builtFor !== model.get("method") || !Object.keys(fields).length) build();
    const values = model.get("params") || {};
    const errors = model.get("field_errors") || {};
    for (const [name, f] of Object.entries(fields)) {
      const v = values[name] !== undefined ? values[name] : f.spec.default;
      if (document.activeElement !== f.input || errors[name]) {
        if (f.spec.type === "bool") f.input.checked = !!v;
        else if (!errors[name]) f.input.value = paramText(f.spec, v);
      }
      f.applied = f.spec.type === "bool" ? null : f.input.value;
      if (errors[name]) {
        f.error.textContent = errors[name];
        f.input.setAttribute("aria-invalid", "true");
      } else if (!f.input.hasAttribute("aria-invalid") || values[name] !== undefined) {
        f.error.textContent = "";
        f.input.removeAttribute("aria-invalid");
      }
    }
  }
  return { el, keys: ["method", "method_specs", "params", "field_errors"], update, apply };
}

/** Search over all class names, the top-k predictions with percentages, and the class shown. */
export function classView(env) {
  const { model, local } = env;
  const search = h("input", { type: "search", class: "sglrp-input sglrp-search", role: "class-search", placeholder: "search all classes…", "aria-label": "search classes" });
  const select = h("select", { class: "sglrp-input sglrp-classes", role: "class-select", size: 7, "aria-label": "class" });
  search.addEventListener("keydown", (ev) => ev.stopPropagation());
  search.addEventListener("input", () => { local.query = search.value; update(); });
  select.addEventListener("change", () => {
    const t = Number(select.value);
    if (Number.isInteger(t)) env.request({ target: t });
  });
  const el = h("div", { class: "sglrp-class-box" }, search, select);
  function update() {
    const names = model.get("class_names") || [];
    const preds = model.get("predictions") || [];
    select.textContent = "";
    const top = h("optgroup", { label: `top ${preds.length} predictions` });
    for (const p of preds) top.append(h("option", { value: String(p.index), text: `${p.name} · ${p.percent || formatPercent(p.prob)}` }));
    select.append(top);
    const matches = filterClasses(names, local.query, 100);
    if (matches.length) {
      const og = h("optgroup", { label: `all classes matching “${local.query}”` });
      for (const m of matches) og.append(h("option", { value: String(m.index), text: `${m.name} (${m.index})` }));
      select.append(og);
    }
    const t = model.get("resolved_target");
    if (t != null && t >= 0) select.value = String(t);
  }
  return { el, keys: ["predictions", "resolved_target", "class_names"], update };
}

/** What is computing and for how long (with Cancel), the last status, errors, and a no-kernel note. */
export function statusView(env) {
  const { model, local } = env;
  const busy = h("span", { class: "sglrp-busy", role: "busy" });
  const cancel = h("button", { class: "sglrp-btn", role: "cancel", text: "Cancel" });
  const status = h("span", { class: "sglrp-status", role: "status" });
  const error = h("div", { class: "sglrp-error", role: "error", "aria-live": "polite" });
  const kernel = h("div", { class: "sglrp-note", role: "no-kernel" });
  const count = h("span", { role: "comm-count", hidden: true });
  cancel.addEventListener("click", () => model.send({ type: "cancel", what: "map" }));
  const el = h("div", { class: "sglrp-statusbox" }, h("div", { class: "sglrp-row sglrp-statusline" }, busy, cancel, status, count), error, kernel);
  let since = null, timer = null;
  function tick() {
    const task = model.get("task") || {};
    busy.textContent = `computing ${task.label || ""} · ${formatElapsed((env.now() - since) / 1000)}`;
  }
  function update(what) {
    if (what === "comm_count") env.answered();
    count.textContent = String(model.get("comm_count"));
    const task = model.get("task") || {};
    const computing = task.kind === "map";
    if (computing && since == null) {
      since = env.now();
      timer = setInterval(tick, 200);
    } else if (!computing && since != null) {
      since = null;
      clearInterval(timer);
    }
    busy.hidden = cancel.hidden = !computing;
    status.hidden = computing;
    if (computing) tick();
    status.textContent = model.get("status") || "";
    error.textContent = model.get("error") || "";
    kernel.textContent = local.noKernel ? "The kernel does not answer: this is the saved view of the last map. Run the cell again to explore." : "";
  }
  env.on((what) => { if (what === "dispose") clearInterval(timer); });
  return { el, keys: ["task", "status", "error", "comm_count", "kernel"], update };
}

/** Share of positive relevance in the class's own box, and the pointing game ("n/a" without a box). */
export function metricsView(env) {
  const { model } = env;
  const el = h("div", { class: "sglrp-metrics", role: "metrics" });
  function update() {
    const m = model.get("metrics") || {};
    if (m.note) { el.textContent = `${m.region}: ${m.note}`; return; }
    const parts = [];
    if (m.mass_in_box != null) parts.push(`relevance in ${m.region || "box"} ${(100 * m.mass_in_box).toFixed(1)} %`);
    if (m.pointing_game != null) parts.push(`pointing game ${m.pointing_game ? "hit" : "miss"}`);
    el.textContent = parts.join(" · ");
  }
  return { el, keys: ["metrics"], update };
}

/** A line of Python that reproduces the map, with a copy button. */
export function codeView(env) {
  const { model } = env;
  const code = h("code", { class: "sglrp-code", role: "code" });
  const copy = h("button", { class: "sglrp-btn", role: "copy-code", text: "Copy code" });
  copy.addEventListener("click", async () => {
    const text = model.get("code") || "";
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = "Copied";
    } catch (e) { // no clipboard (insecure context): select the text for Ctrl+C
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copy.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { copy.textContent = "Copy code"; }, 1500);
  });
  const el = h("div", { class: "sglrp-row sglrp-codebox" }, copy, code);
  function update() {
    code.textContent = model.get("code") || "";
    el.hidden = !model.get("code");
  }
  return { el, keys: ["code"], update };
}

/** Draw the labelled PNG (title, picture, colour bar with its words) on a canvas of the display size. */
export function composeExport(env, canvas, doc = document) {
  const { model, local } = env;
  const meta = model.get("heatmap_meta") || {};
  const pic = env.pictureCanvas;
  const width = Math.max(320, pic ? pic.width : 320);
  const picH = pic ? pic.height : 0;
  const head = 46, foot = 52;
  canvas.width = width;
  canvas.height = head + picH + foot;
  const ctx = canvas.getContext("2d");
  if (!ctx) return canvas;
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#111111";
  ctx.textAlign = "center";
  ctx.font = "bold 15px sans-serif";
  ctx.fillText(`${meta.class_name ?? ""} · ${formatPercent(meta.probability)}`, width / 2, 19);
  ctx.font = "12px sans-serif";
  ctx.fillText(`${meta.label || meta.method || ""} · image ${(meta.index ?? 0) + 1} / ${model.get("n_images")}`, width / 2, 37);
  if (pic) ctx.drawImage(pic, Math.round((width - pic.width) / 2), head);
  const cm = colormapOf(model.get("colormaps"), local.colormap);
  const positiveOnly = showsPositiveOnly(meta, local);
  const colors = rampColors(cm.lut, { diverging: cm.diverging, positiveOnly }, width - 40);
  colors.forEach(([r, g, b], i) => { ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(20 + i, head + picH + 8, 1, 12); });
  const text = legendText(meta, { positiveOnly, norm: local.norm });
  ctx.fillStyle = "#111111";
  ctx.font = "11px sans-serif";
  ctx.textAlign = "left";
  ctx.fillText(`${text.low} ${text.lowWords}`.trim(), 20, head + picH + 34);
  ctx.textAlign = "right";
  ctx.fillText(`${text.highWords} ${text.high}`, width - 20, head + picH + 34);
  if (text.mid) { ctx.textAlign = "center"; ctx.fillText(text.mid, width / 2, head + picH + 34); }
  ctx.textAlign = "center";
  ctx.fillStyle = "#555555";
  ctx.font = "10px sans-serif";
  ctx.fillText(text.note, width / 2, head + picH + 48);
  return canvas;
}

/** Compare and PNG buttons. */
export function actionsView(env) {
  const { model } = env;
  const compare = h("button", { class: "sglrp-btn", role: "compare", text: "Compare methods" });
  const download = h("button", { class: "sglrp-btn", role: "download", text: "Save PNG" });
  compare.addEventListener("click", () => model.send({ type: "compare" }));
  download.addEventListener("click", () => {
    const c = composeExport(env, document.createElement("canvas"));
    c.toBlob((blob) => {
      if (!blob) return;
      const a = document.createElement("a");
      a.download = exportFileName(model.get("heatmap_meta"));
      a.href = URL.createObjectURL(blob);
      a.dataset.role = "download-link";
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, "image/png");
  });
  const el = h("div", { class: "sglrp-row" }, compare, download);
  function update() { download.disabled = !(model.get("heatmap_meta") || {}).class_name; }
  return { el, keys: ["heatmap_meta"], update };
}

/** The comparison grid (methods x classes) drawn here with the current view settings, row by row. */
export function compareView(env) {
  const { model, local } = env;
  const title = h("div", { class: "sglrp-compare-title", role: "compare-title" });
  const progress = h("span", { class: "sglrp-compare-progress", role: "compare-progress" });
  const cancel = h("button", { class: "sglrp-btn", role: "compare-cancel", text: "Cancel" });
  const close = h("button", { class: "sglrp-btn", role: "compare-close", title: "hide the comparison", text: "✕" });
  const grid = h("div", { class: "sglrp-compare-grid", role: "compare-grid" });
  const keyBar = h("canvas", { class: "sglrp-legend-bar", role: "compare-key-bar", width: 256, height: 10 });
  const keyLow = h("span", { class: "sglrp-legend-low", role: "compare-key-low" });
  const keyMid = h("span", { class: "sglrp-legend-mid", role: "compare-key-mid" });
  const keyHigh = h("span", { class: "sglrp-legend-high", role: "compare-key-high" });
  const keyNote = h("div", { class: "sglrp-legend-note", role: "compare-key-note" });
  const key = h("div", { class: "sglrp-legend sglrp-compare-key", role: "compare-key" }, keyBar,
    h("div", { class: "sglrp-legend-labels sglrp-legend-words" }, keyLow, keyMid, keyHigh), keyNote);
  cancel.addEventListener("click", () => model.send({ type: "cancel", what: "compare" }));
  let hidden = false;
  close.addEventListener("click", () => { hidden = true; update(); });
  const el = h("div", { class: "sglrp-compare", role: "compare-view" }, h("div", { class: "sglrp-row" }, title, progress, cancel, close), grid, key);
  let shown = null;
  function sized(node, w, h_) {
    const size = Math.max(96, Math.min(160, w));
    node.style.imageRendering = size > w ? "pixelated" : "auto";
    node.style.width = `${size}px`;
    node.style.height = `${Math.round((size * h_) / w)}px`;
    return node;
  }
  // the maps alone, in the current colours and scale, next to their image (as viz.plot_grid draws them)
  function tile(buf, scales, w, h_, row) {
    const c = h("canvas", { class: "sglrp-tile", width: w, height: h_ });
    const values = decodeHeatmap(buf, { dtype: "float16", width: w, height: h_, scale: scales.max_abs });
    const cm = colormapOf(model.get("colormaps"), local.colormap);
    const positiveOnly = showsPositiveOnly(row, local);
    const opts = { diverging: cm.diverging, positiveOnly };
    const norm = normalizeHeatmap(values, mapScale({ scales }, local.norm, positiveOnly), positiveOnly);
    const ctx = c.getContext("2d");
    if (ctx) ctx.putImageData(new ImageData(colorize(norm, cm.lut, opts), w, h_), 0, 0);
    return sized(c, w, h_);
  }
  function picture(g) {
    const bytes = toUint8(g.image);
    if (!bytes.byteLength) return h("span");
    const img = h("img", { class: "sglrp-tile", role: "compare-image", alt: `image ${(g.index ?? 0) + 1}` });
    img.src = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    return sized(img, g.width, g.height);
  }
  // the colour key under the grid: one bar for every row (from 0 only when every row is drawn from 0)
  function drawKey(rows) {
    key.hidden = !rows.length;
    if (key.hidden) return;
    const cm = colormapOf(model.get("colormaps"), local.colormap);
    const positiveOnly = rows.every((row) => showsPositiveOnly(row, local));
    const text = compareKeyText({ positiveOnly, norm: local.norm });
    keyLow.textContent = text.low;
    keyMid.textContent = text.mid;
    keyHigh.textContent = text.high;
    keyNote.textContent = text.note;
    paintRamp(keyBar, cm.lut, { diverging: cm.diverging, positiveOnly });
  }
  function update(what) {
    const g = model.get("compare_grid") || {};
    if (g !== shown) hidden = false;
    shown = g;
    el.hidden = hidden || !g.state;
    if (el.hidden) return;
    const st = compareStatus(g, { index: model.get("index") });
    el.classList.toggle("sglrp-stale", st.stale);
    title.textContent = g.title || "Compare";
    progress.textContent = st.text || (g.state === "done" ? `${g.done} of ${g.total}` : "");
    cancel.hidden = g.state !== "running";
    if (what === "index" || what === "method" || what === "params") return; // only staleness changed
    grid.textContent = "";
    const targets = g.targets || [];
    drawKey(targets.length ? g.rows || [] : []);
    if (!targets.length) return;
    grid.style.gridTemplateColumns = `auto auto repeat(${targets.length}, auto)`;
    grid.append(h("span"), h("span", { class: "sglrp-compare-col", text: "image" }));
    for (const t of targets) grid.append(h("span", { class: "sglrp-compare-col", text: `${t.name} · ${t.percent || formatPercent(t.probability)}` }));
    (g.rows || []).forEach((row, r) => {
      grid.append(h("span", { class: "sglrp-compare-row", text: row.label }), r === 0 ? picture(g) : h("span"));
      row.maps.forEach((buf, j) => grid.append(tile(buf, row.scales[j], g.width, g.height, row)));
    });
  }
  return { el, keys: ["compare_grid", "index", "view", "image_meta"], update };
}

// =============================================================================================
// Part 3: persistence and render

const STATE_MIME = "application/vnd.jupyter.widget-state+json";
const OUR_ID = "sglrp_widgets.widget.RelevanceExplorer";
const hooked = new WeakSet();

/**
 * Keep this widget's state in the notebook file when it is saved (JupyterLab 4 / Notebook 7 leave widget
 * state out by default, so a reopened notebook would show "model not found" instead of the last map).
 * Only RelevanceExplorer models (and the models they reference) are written; other widgets and the
 * user's own setting for them are left alone.
 */
export function persistState(model) {
  const manager = model && model.widget_manager;
  const context = manager && manager.context;
  if (!context || !context.saveState || !context.model || typeof manager.get_state_sync !== "function") return () => {};
  if (hooked.has(context)) return () => {};
  hooked.add(context);
  const onSave = (_sender, phase) => {
    if (phase !== "started") return;
    try {
      writeState(manager, context.model);
    } catch (e) {
      console.error("sglrp_widgets: could not store the widget state in the notebook", e);
    }
  };
  context.saveState.connect(onSave);
  return () => { context.saveState.disconnect(onSave); hooked.delete(context); };
}

/** Merge the live RelevanceExplorer models' state into the notebook metadata (exported for tests). */
export function writeState(manager, notebookModel) {
  const all = manager.get_state_sync({ drop_defaults: true });
  const live = all.state || {};
  const keep = {};
  const add = (id) => {
    if (keep[id] || !live[id]) return;
    keep[id] = live[id];
    for (const v of Object.values(live[id].state || {})) {
      if (typeof v === "string" && v.startsWith("IPY_MODEL_")) add(v.slice(10));
    }
  };
  for (const [id, s] of Object.entries(live)) if (s.state && s.state._anywidget_id === OUR_ID) add(id);
  const get = notebookModel.getMetadata ? (k) => notebookModel.getMetadata(k) : (k) => notebookModel.metadata.get(k);
  const set = notebookModel.setMetadata ? (k, v) => notebookModel.setMetadata(k, v) : (k, v) => notebookModel.metadata.set(k, v);
  const old = ((get("widgets") || {})[STATE_MIME] || {}).state || {};
  const merged = {};
  for (const [id, s] of Object.entries(old)) {
    const ours = s.state && s.state._anywidget_id === OUR_ID;
    if (!ours || live[id]) merged[id] = s; // drop our models that no longer exist
  }
  Object.assign(merged, keep);
  if (!Object.keys(keep).length && !Object.keys(old).length) return;
  set("widgets", { [STATE_MIME]: { version_major: all.version_major ?? 2, version_minor: all.version_minor ?? 0, state: merged } });
}

/** Subscribe views to their traits (and to the local "view"/"kernel" events); returns the unsubscribe. */
export function connect(model, env, views) {
  const handlers = [];
  for (const view of views) {
    for (const key of view.keys) {
      if (key === "view" || key === "kernel") continue;
      const fn = () => view.update(key);
      model.on(`change:${key}`, fn);
      handlers.push([`change:${key}`, fn]);
    }
  }
  const offLocal = env.on((what) => {
    for (const view of views) if (view.keys.includes(what)) view.update(what);
  });
  for (const view of views) view.update("init");
  return () => {
    for (const [ev, fn] of handlers) model.off(ev, fn);
    offLocal();
  };
}

function render({ model, el }, deps = {}) {
  const env = makeEnv(model, deps);
  const views = {
    nav: navView(env), caption: captionView(env), picture: pictureView(env), legend: legendView(env),
    metrics: metricsView(env), controls: viewControlsView(env), method: methodView(env), params: paramsView(env),
    classes: classView(env), status: statusView(env), code: codeView(env), actions: actionsView(env),
    compare: compareView(env),
  };
  const root = h("div", { class: "sglrp-explorer", "data-lm-suppress-shortcuts": "true" },
    h("div", { class: "sglrp-main" },
      h("div", { class: "sglrp-left" }, views.nav.el, views.caption.el, views.picture.el, views.legend.el, views.metrics.el),
      h("div", { class: "sglrp-right" }, views.method.el, views.params.el, views.classes.el, views.controls.el, views.actions.el)),
    views.status.el, views.code.el, views.compare.el);
  el.append(root);
  const disconnect = connect(model, env, Object.values(views));
  const unpersist = persistState(model);
  return () => {
    disconnect();
    env.emit("dispose");
    unpersist();
  };
}


export default { render };
