// sglrp_widgets — RelevanceExplorer front end (plain ES module, no runtime dependencies).
//
// The pure functions below (colormaps, buffer decoding, normalisation, blending, class search,
// method grouping) are exported for the unit tests in js/tests; `render` wires them to the DOM.
// Opacity, colormap and positive-only are applied here, from the last heatmap, without asking
// the kernel. Only what needs the model (image, method, parameters, target) is saved to Python.

// ---------------------------------------------------------------------------------------------
// Colormaps: anchor points [t, r, g, b] interpolated linearly into a 256-entry lookup table.
// `diverging` maps are centred on 0 (signed relevance); the others run from low to high.
export const COLORMAPS = {
  bwr: { diverging: true, anchors: [[0, 0, 0, 255], [0.5, 255, 255, 255], [1, 255, 0, 0]] },
  seismic: {
    diverging: true,
    anchors: [[0, 0, 0, 77], [0.25, 0, 0, 255], [0.5, 255, 255, 255], [0.75, 255, 0, 0], [1, 128, 0, 0]],
  },
  coolwarm: {
    diverging: true,
    anchors: [[0, 59, 76, 192], [0.5, 221, 221, 221], [1, 180, 4, 38]],
  },
  jet: {
    diverging: false,
    anchors: [[0, 0, 0, 128], [0.11, 0, 0, 255], [0.36, 0, 255, 255], [0.62, 255, 255, 0], [0.87, 255, 0, 0], [1, 128, 0, 0]],
  },
  inferno: {
    diverging: false,
    anchors: [[0, 0, 0, 4], [0.25, 87, 16, 110], [0.5, 188, 55, 84], [0.75, 249, 142, 9], [1, 252, 255, 164]],
  },
  viridis: {
    diverging: false,
    anchors: [[0, 68, 1, 84], [0.25, 59, 82, 139], [0.5, 33, 145, 140], [0.75, 94, 201, 98], [1, 253, 231, 37]],
  },
  hot: { diverging: false, anchors: [[0, 11, 0, 0], [0.375, 255, 0, 0], [0.75, 255, 255, 0], [1, 255, 255, 255]] },
  gray: { diverging: false, anchors: [[0, 0, 0, 0], [1, 255, 255, 255]] },
};

export function colormapNames() {
  return Object.keys(COLORMAPS);
}

export function isDiverging(name) {
  const cm = COLORMAPS[name];
  return cm ? cm.diverging : true;
}

/** 256-entry RGB lookup table (Uint8Array of length n*3) for a named colormap. */
export function makeLUT(name, n = 256) {
  const cm = COLORMAPS[name] || COLORMAPS.bwr;
  const a = cm.anchors;
  const lut = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const t = n === 1 ? 0 : i / (n - 1);
    let k = 0;
    while (k < a.length - 2 && t > a[k + 1][0]) k++;
    const [t0, r0, g0, b0] = a[k];
    const [t1, r1, g1, b1] = a[k + 1];
    const u = t1 > t0 ? Math.min(1, Math.max(0, (t - t0) / (t1 - t0))) : 0;
    lut[3 * i] = Math.round(r0 + u * (r1 - r0));
    lut[3 * i + 1] = Math.round(g0 + u * (g1 - g0));
    lut[3 * i + 2] = Math.round(b0 + u * (b1 - b0));
  }
  return lut;
}

// ---------------------------------------------------------------------------------------------
// Binary buffers. A traitlets `Bytes` arrives as a DataView (ipywidgets 8); tests pass
// ArrayBuffers or typed arrays. All are normalised to a Uint8Array view without copying.
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
 * meta: {dtype: "int8"|"uint8"|"float16"|"float32", width, height, scale, offset}
 *   int8:    value = q / 127 * scale           (symmetric, keeps the sign)
 *   uint8:   value = offset + q / 255 * scale
 *   float16 / float32: little endian, as is.
 */
export function decodeHeatmap(buf, meta) {
  const bytes = toUint8(buf);
  const n = (meta.width | 0) * (meta.height | 0);
  const dtype = meta.dtype || "int8";
  const out = new Float32Array(n);
  const size = { int8: 1, uint8: 1, float16: 2, float32: 4 }[dtype];
  if (!size) throw new Error("unknown heatmap dtype " + dtype);
  if (bytes.byteLength !== n * size) {
    throw new Error(`heatmap buffer has ${bytes.byteLength} bytes, expected ${n * size} (${meta.height}x${meta.width} ${dtype})`);
  }
  const scale = meta.scale == null ? 1 : Number(meta.scale);
  const offset = meta.offset == null ? 0 : Number(meta.offset);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === "int8") {
    for (let i = 0; i < n; i++) out[i] = (dv.getInt8(i) / 127) * scale;
  } else if (dtype === "uint8") {
    for (let i = 0; i < n; i++) out[i] = offset + (bytes[i] / 255) * scale;
  } else if (dtype === "float16") {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(dv.getUint16(2 * i, true));
  } else {
    for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
  }
  return out;
}

/**
 * Scale a heatmap to [-1, 1] by its largest magnitude. With positiveOnly, negative values become 0
 * and the result lies in [0, 1] (scaled by the largest positive value). Non-finite values become 0.
 */
export function normalizeHeatmap(values, positiveOnly = false) {
  const n = values.length;
  const out = new Float32Array(n);
  let m = 0;
  for (let i = 0; i < n; i++) {
    let v = values[i];
    if (!Number.isFinite(v)) v = 0;
    if (positiveOnly && v < 0) v = 0;
    out[i] = v;
    const a = Math.abs(v);
    if (a > m) m = a;
  }
  if (m > 0) for (let i = 0; i < n; i++) out[i] /= m;
  return out;
}

/** Keep the positive part only (a copy; the input is not modified). */
export function positiveOnly(values) {
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i] > 0 ? values[i] : 0;
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

/**
 * Blend a normalised heatmap (values in [-1, 1], or [0, 1] when positive-only) over an RGBA image.
 * Diverging colormaps: colour index (v+1)/2, alpha = opacity * sqrt(|v|) (zero relevance leaves the
 * image; the square root keeps moderate relevance visible).
 * Sequential colormaps: colour index (v+1)/2 for signed maps, v for positive-only; alpha = opacity.
 * image: Uint8ClampedArray/Uint8Array RGBA (length 4n) or null (black background).
 * Returns a new Uint8ClampedArray RGBA of length 4n.
 */
export function blend(image, norm, lut, opacity, opts = {}) {
  const n = norm.length;
  const diverging = opts.diverging !== false;
  const pos = !!opts.positiveOnly;
  const op = Math.min(1, Math.max(0, Number(opacity) || 0));
  const nl = lut.length / 3 - 1;
  const out = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    const v = norm[i];
    const t = pos && !diverging ? v : (v + 1) / 2;
    const k = 3 * Math.min(nl, Math.max(0, Math.round(t * nl)));
    const a = diverging ? op * Math.sqrt(Math.min(1, Math.abs(v))) : op;
    const r0 = image ? image[4 * i] : 0;
    const g0 = image ? image[4 * i + 1] : 0;
    const b0 = image ? image[4 * i + 2] : 0;
    out[4 * i] = r0 + a * (lut[k] - r0);
    out[4 * i + 1] = g0 + a * (lut[k + 1] - g0);
    out[4 * i + 2] = b0 + a * (lut[k + 2] - b0);
    out[4 * i + 3] = 255;
  }
  return out;
}

/** Full browser-side pipeline: decoded map -> RGBA overlay for the current view settings. */
export function renderOverlay(image, values, { colormap = "bwr", opacity = 0.6, positiveOnly: pos = false } = {}) {
  const norm = normalizeHeatmap(values, pos);
  return blend(image, norm, makeLUT(colormap), opacity, { diverging: isDiverging(colormap), positiveOnly: pos });
}

// ---------------------------------------------------------------------------------------------
// Classes and methods.

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

/** Parse a control's raw value for a parameter spec. Invalid numbers are passed on as text
 *  so that the kernel's validation reports them (the widget shows the error). */
export function parseParam(spec, raw) {
  const t = spec.type;
  if (t === "bool") return raw === true || raw === "true" || raw === "on" || raw === 1;
  if (t === "int" || t === "float") {
    const s = String(raw).trim();
    if (s === "") return null;
    const v = Number(s);
    if (!Number.isFinite(v)) return s;
    return t === "int" && Number.isInteger(v) ? v : v;
  }
  if (t === "bounds") {
    // per-channel bounds: empty -> null (automatic), "a" -> a, "a, b, c" -> [a, b, c]
    const s = String(raw == null ? "" : raw).trim();
    if (s === "") return null;
    const parts = s.split(/[\s,;]+/).filter((x) => x !== "");
    const nums = parts.map(Number);
    if (nums.some((v) => !Number.isFinite(v))) return s;
    return nums.length === 1 ? nums[0] : nums;
  }
  if (t === "choice" || t === "str") return raw == null || raw === "" ? null : String(raw);
  return raw;
}

export function formatProb(p) {
  if (p == null || !Number.isFinite(p)) return "";
  if (p >= 0.995) return (100 * p).toFixed(1) + "%";
  if (p >= 0.001) return (100 * p).toFixed(1) + "%";
  return p.toExponential(1);
}

/** True when a heatmap's metadata belongs to the image currently drawn. */
export function heatmapMatchesImage(heatMeta, imageMeta) {
  return !!heatMeta && !!imageMeta && heatMeta.index === imageMeta.index &&
    heatMeta.width === imageMeta.width && heatMeta.height === imageMeta.height;
}

// ---------------------------------------------------------------------------------------------
// DOM.

function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k === "role") e.dataset.role = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function decodeImage(bytes, width, height) {
  const u8 = toUint8(bytes);
  if (!u8.byteLength) return null;
  const blob = new Blob([u8], { type: "image/png" });
  const bmp = await createImageBitmap(blob);
  const c = document.createElement("canvas");
  c.width = width || bmp.width;
  c.height = height || bmp.height;
  const ctx = c.getContext("2d");
  ctx.drawImage(bmp, 0, 0, c.width, c.height);
  return ctx.getImageData(0, 0, c.width, c.height).data;
}

function render({ model, el }) {
  const local = {
    opacity: Number(model.get("opacity")),
    colormap: model.get("colormap") || "bwr",
    positiveOnly: !!model.get("positive_only"),
    imagePixels: null,
    imageMeta: null,
    heat: null,
    heatMeta: null,
    query: "",
  };

  // --- layout ---
  const canvas = h("canvas", { class: "sglrp-canvas", role: "heatmap", width: 64, height: 64 });
  const prev = h("button", { class: "sglrp-btn", role: "prev", title: "previous image", text: "◀" });
  const next = h("button", { class: "sglrp-btn", role: "next", title: "next image", text: "▶" });
  const imageLabel = h("span", { class: "sglrp-image-label", role: "image-label" });
  const methodSelect = h("select", { class: "sglrp-method", role: "method-select" });
  const paramsBox = h("div", { class: "sglrp-params", role: "params" });
  const search = h("input", { type: "search", class: "sglrp-search", role: "class-search", placeholder: "search classes…" });
  const classSelect = h("select", { class: "sglrp-classes", role: "class-select", size: 8 });
  const opacity = h("input", { type: "range", min: 0, max: 1, step: 0.01, role: "opacity", class: "sglrp-opacity" });
  const cmapSelect = h("select", { role: "colormap", class: "sglrp-cmap" });
  for (const name of colormapNames()) cmapSelect.append(h("option", { value: name, text: name }));
  const posToggle = h("input", { type: "checkbox", role: "positive-only" });
  const compareBtn = h("button", { class: "sglrp-btn", role: "compare", text: "Compare" });
  const downloadBtn = h("button", { class: "sglrp-btn", role: "download", text: "PNG" });
  const status = h("div", { class: "sglrp-status", role: "status" });
  const metrics = h("span", { class: "sglrp-metrics", role: "metrics" });
  const error = h("div", { class: "sglrp-error", role: "error" });
  const compareBox = h("div", { class: "sglrp-compare", role: "compare-view" });
  const commCount = h("span", { class: "sglrp-comm-count", role: "comm-count", hidden: "" });

  const left = h("div", { class: "sglrp-left" },
    canvas,
    h("div", { class: "sglrp-row" }, prev, imageLabel, next),
    h("div", { class: "sglrp-row" }, h("label", { text: "overlay " }), opacity),
    h("div", { class: "sglrp-row" }, h("label", { text: "colormap " }), cmapSelect,
      h("label", { class: "sglrp-pos" }, posToggle, document.createTextNode(" positive only"))),
  );
  const right = h("div", { class: "sglrp-right" },
    h("div", { class: "sglrp-row" }, h("label", { text: "method " }), methodSelect),
    paramsBox,
    search,
    classSelect,
    h("div", { class: "sglrp-row" }, compareBtn, downloadBtn),
  );
  const root = h("div", { class: "sglrp-explorer" },
    h("div", { class: "sglrp-main" }, left, right),
    h("div", { class: "sglrp-row sglrp-statusline" }, status, metrics, commCount),
    error,
    compareBox,
  );
  el.append(root);

  // --- drawing (browser only: no kernel round trip) ---
  function draw() {
    const im = local.imageMeta;
    const hm = local.heatMeta;
    const W = (im && im.width) || (hm && hm.width) || 64;
    const H = (im && im.height) || (hm && hm.height) || 64;
    if (canvas.width !== W) canvas.width = W;
    if (canvas.height !== H) canvas.height = H;
    const disp = Math.max(256, Math.min(512, W));
    canvas.style.width = disp + "px";
    canvas.style.height = Math.round((disp * H) / W) + "px";
    canvas.style.imageRendering = W < 128 ? "pixelated" : "auto";
    const ctx = canvas.getContext("2d");
    canvas.dataset.image = local.imagePixels && im ? String(im.index) : "";
    let rgba;
    if (local.heat && hm && (!im || heatmapMatchesImage(hm, im))) {
      const vals = resample(local.heat, hm.width, hm.height, W, H);
      rgba = renderOverlay(local.imagePixels, vals, local);
      canvas.dataset.map = `${hm.index}|${hm.method}|${hm.target}`; // test hook: what is drawn
    } else if (local.imagePixels) {
      rgba = new Uint8ClampedArray(local.imagePixels);
      canvas.dataset.map = "";
    } else {
      return;
    }
    ctx.putImageData(new ImageData(rgba, W, H), 0, 0);
  }

  function loadHeatmap() {
    const meta = model.get("heatmap_meta") || {};
    const buf = model.get("heatmap");
    if (!meta.width || !buf || !toUint8(buf).byteLength) {
      local.heat = null;
      local.heatMeta = null;
    } else {
      try {
        local.heat = decodeHeatmap(buf, meta);
        local.heatMeta = meta;
      } catch (e) {
        error.textContent = "could not decode heatmap: " + e.message;
        local.heat = null;
      }
    }
    draw();
  }

  let imageToken = 0;
  async function loadImage() {
    const meta = model.get("image_meta") || {};
    const token = ++imageToken;
    try {
      const px = await decodeImage(model.get("image"), meta.width, meta.height);
      if (token !== imageToken) return; // a newer image arrived meanwhile
      local.imagePixels = px;
      local.imageMeta = meta;
      imageLabel.textContent = `image ${meta.index + 1} / ${model.get("n_images")}`;
      draw();
    } catch (e) {
      error.textContent = "could not decode image: " + e.message;
    }
  }

  // --- controls ---
  function specFor(name) {
    return (model.get("method_specs") || []).find((s) => s.name === name);
  }

  function buildMethods() {
    methodSelect.textContent = "";
    for (const g of groupMethods(model.get("method_specs"))) {
      const og = h("optgroup", { label: g.family });
      for (const s of g.methods) og.append(h("option", { value: s.name, text: s.label || s.name, title: s.description || "" }));
      methodSelect.append(og);
    }
    methodSelect.value = model.get("method");
  }

  function buildParams() {
    paramsBox.textContent = "";
    const spec = specFor(model.get("method"));
    const values = model.get("params") || {};
    for (const p of (spec && spec.params) || []) {
      const v = values[p.name] !== undefined ? values[p.name] : p.default;
      let input;
      if (p.type === "bool") {
        input = h("input", { type: "checkbox" });
        input.checked = !!v;
      } else if (p.type === "choice") {
        input = h("select");
        for (const c of p.choices || []) input.append(h("option", { value: String(c), text: String(c) }));
        input.value = v == null ? "" : String(v);
      } else if (p.type === "int" || p.type === "float") {
        input = h("input", { type: "number", step: p.type === "int" ? 1 : "any" });
        if (p.min != null) input.setAttribute("min", p.min);
        if (p.max != null) input.setAttribute("max", p.max);
        input.value = v == null ? "" : String(v);
      } else {
        input = h("input", { type: "text", placeholder: v == null ? "auto" : "" });
        input.value = v == null ? "" : Array.isArray(v) ? v.join(", ") : String(v);
      }
      input.dataset.role = "param";
      input.dataset.param = p.name;
      input.title = p.help || "";
      input.addEventListener("change", () => {
        const raw = p.type === "bool" ? input.checked : input.value;
        const params = { ...(model.get("params") || {}), [p.name]: parseParam(p, raw) };
        request({ params });
      });
      paramsBox.append(h("label", { class: "sglrp-param", title: p.help || "" }, document.createTextNode(p.name + " "), input));
    }
  }

  function buildClasses() {
    const names = model.get("class_names") || [];
    const preds = model.get("predictions") || [];
    const target = model.get("resolved_target");
    classSelect.textContent = "";
    const top = h("optgroup", { label: `top ${preds.length} predictions` });
    for (const p of preds) {
      top.append(h("option", { value: String(p.index), text: `${p.name}  ${formatProb(p.prob)}` }));
    }
    classSelect.append(top);
    const matches = filterClasses(names, local.query, 100);
    if (matches.length) {
      const og = h("optgroup", { label: `matches for “${local.query}”` });
      for (const m of matches) og.append(h("option", { value: String(m.index), text: `${m.index}: ${m.name}` }));
      classSelect.append(og);
    }
    if (target != null && target >= 0) classSelect.value = String(target);
  }

  let requestId = Number(model.get("request_id")) || 0;
  function request(changes) {
    for (const [k, v] of Object.entries(changes)) model.set(k, v);
    model.set("request_id", ++requestId);
    error.textContent = "";
    model.save_changes();
  }

  methodSelect.addEventListener("change", () => {
    const spec = specFor(methodSelect.value);
    request({ method: methodSelect.value, params: defaultParams(spec) });
  });
  classSelect.addEventListener("change", () => {
    const t = Number(classSelect.value);
    if (Number.isInteger(t)) request({ target: t });
  });
  search.addEventListener("input", () => {
    local.query = search.value;
    buildClasses();
  });
  prev.addEventListener("click", () => {
    const n = model.get("n_images"), i = model.get("index");
    request({ index: (i - 1 + n) % n, target: -1 });
  });
  next.addEventListener("click", () => {
    const n = model.get("n_images"), i = model.get("index");
    request({ index: (i + 1) % n, target: -1 });
  });
  // View settings: local only. model.set (no save) keeps the value for the next real request,
  // so the kernel's static PNG fallback eventually follows, but nothing is sent now.
  opacity.value = String(local.opacity);
  opacity.addEventListener("input", () => {
    local.opacity = Number(opacity.value);
    model.set("opacity", local.opacity);
    draw();
  });
  cmapSelect.value = local.colormap;
  cmapSelect.addEventListener("change", () => {
    local.colormap = cmapSelect.value;
    model.set("colormap", local.colormap);
    draw();
  });
  posToggle.checked = local.positiveOnly;
  posToggle.addEventListener("change", () => {
    local.positiveOnly = posToggle.checked;
    model.set("positive_only", local.positiveOnly);
    draw();
  });
  compareBtn.addEventListener("click", () => {
    compareBox.textContent = "computing comparison…";
    model.send({ type: "compare" });
  });
  downloadBtn.addEventListener("click", () => {
    canvas.toBlob((blob) => {
      if (!blob) return;
      const a = document.createElement("a");
      const m = local.heatMeta || {};
      a.download = `sglrp_${m.method || "map"}_img${m.index ?? 0}_class${m.target ?? ""}.png`;
      a.href = URL.createObjectURL(blob);
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 1000);
    }, "image/png");
  });

  function showStatus() {
    status.textContent = model.get("status") || "";
    root.classList.toggle("sglrp-busy", !!model.get("busy"));
  }
  function showError() {
    error.textContent = model.get("error") || "";
  }
  function showMetrics() {
    const m = model.get("metrics") || {};
    const parts = [];
    if (m.mass_in_box != null) parts.push(`mass in box ${(100 * m.mass_in_box).toFixed(1)}%`);
    if (m.pointing_game != null) parts.push(`pointing game ${m.pointing_game ? "hit" : "miss"}`);
    metrics.textContent = parts.join(" · ");
  }
  function showCompare() {
    const bytes = toUint8(model.get("compare_png"));
    compareBox.textContent = "";
    if (!bytes.byteLength) return;
    const img = h("img", { role: "compare-image", class: "sglrp-compare-img" });
    img.src = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    compareBox.append(img);
  }

  const handlers = {
    "change:heatmap": loadHeatmap,
    "change:heatmap_meta": loadHeatmap,
    "change:image": loadImage,
    "change:image_meta": loadImage,
    "change:method_specs": () => { buildMethods(); buildParams(); },
    "change:method": () => { methodSelect.value = model.get("method"); buildParams(); },
    "change:params": buildParams,
    "change:predictions": buildClasses,
    "change:resolved_target": buildClasses,
    "change:class_names": buildClasses,
    "change:status": showStatus,
    "change:busy": showStatus,
    "change:error": showError,
    "change:metrics": showMetrics,
    "change:compare_png": showCompare,
    "change:comm_count": () => { commCount.textContent = String(model.get("comm_count")); },
  };
  for (const [ev, fn] of Object.entries(handlers)) model.on(ev, fn);
  const onCustom = (msg) => {
    if (msg && msg.type === "compare_error") compareBox.textContent = msg.message;
  };
  model.on("msg:custom", onCustom);

  buildMethods();
  buildParams();
  buildClasses();
  showStatus();
  showError();
  showMetrics();
  showCompare();
  commCount.textContent = String(model.get("comm_count"));
  loadImage();
  loadHeatmap();

  return () => {
    for (const [ev, fn] of Object.entries(handlers)) model.off(ev, fn);
    model.off("msg:custom", onCustom);
  };
}

export default { render };
