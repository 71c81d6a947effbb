// Test doubles: an anywidget model, a recording 2D canvas context, ImageData (jsdom has no canvas).

export function fakeModel(state = {}) {
  const listeners = {};
  const model = {
    state,
    sent: [],
    saves: [],
    get: (k) => state[k],
    set: (k, v) => { state[k] = v; },
    on: (ev, fn) => { (listeners[ev] ||= []).push(fn); },
    off: (ev, fn) => { listeners[ev] = (listeners[ev] || []).filter((f) => f !== fn); },
    save_changes() { model.saves.push({ ...state }); },
    send: (msg) => model.sent.push(msg),
    /** The kernel changes a trait: set it and fire change:key like ipywidgets does. */
    trigger(k, v) {
      state[k] = v;
      for (const fn of listeners[`change:${k}`] || []) fn();
    },
    listenerCount: () => Object.values(listeners).reduce((n, l) => n + l.length, 0),
  };
  return model;
}

export function installCanvas() {
  if (typeof globalThis.ImageData === "undefined") {
    globalThis.ImageData = class ImageData {
      constructor(data, width, height) { Object.assign(this, { data, width, height }); }
    };
  }
  HTMLCanvasElement.prototype.getContext = function getContext() {
    if (!this._ctx) {
      const calls = [];
      const rec = (name) => (...args) => { calls.push([name, ...args]); };
      this._ctx = {
        calls,
        canvas: this,
        font: "", fillStyle: "", strokeStyle: "", lineWidth: 1, textAlign: "left", imageSmoothingEnabled: true,
        clearRect: rec("clearRect"), strokeRect: rec("strokeRect"),
        fillRect: (...args) => { calls.push(["fillRect", ...args, this._ctx.fillStyle]); }, // with its colour
        fillText: rec("fillText"), drawImage: rec("drawImage"), setLineDash: rec("setLineDash"),
        save: rec("save"), restore: rec("restore"),
        putImageData: (img, x, y) => { calls.push(["putImageData", img, x, y]); this._last = img; },
        measureText: (t) => ({ width: 6 * String(t).length }),
        getImageData: () => this._last || new ImageData(new Uint8ClampedArray(4), 1, 1),
      };
    }
    return this._ctx;
  };
  HTMLCanvasElement.prototype.toBlob = function toBlob(cb) { cb(new Blob(["png"], { type: "image/png" })); };
}

/** A float16 buffer (little endian) from numbers in [-1, 1] (exact for multiples of 1/1024). */
export function half(values) {
  const out = new Uint16Array(values.length);
  values.forEach((v, i) => {
    if (v === 0) { out[i] = 0; return; }
    const s = v < 0 ? 0x8000 : 0;
    const a = Math.abs(v);
    const e = Math.floor(Math.log2(a));
    const f = Math.round((a / Math.pow(2, e) - 1) * 1024);
    out[i] = s | ((e + 15) << 10) | f;
  });
  return new DataView(out.buffer);
}

export const BWR_HEX = (() => {
  // 257 entries like viz.colormap_lut("bwr"): blue -> white -> red
  let s = "";
  for (let i = 0; i < 257; i++) {
    const t = i / 256;
    const r = t < 0.5 ? Math.round(510 * t) : 255;
    const b = t > 0.5 ? Math.round(510 * (1 - t)) : 255;
    const g = t < 0.5 ? r : b;
    s += [r, g, b].map((c) => c.toString(16).padStart(2, "0")).join("");
  }
  return s;
})();

export function baseState(extra = {}) {
  return {
    index: 0, method: "sglrp", params: {}, target: -1, request_id: 0,
    opacity: 1, colormap: "bwr", positive_only: false, norm: "max", layout: "overlay", show_boxes: true,
    n_images: 3, top_k: 2, class_names: ["circle", "square", "star"],
    colormaps: { bwr: { lut: BWR_HEX, diverging: true }, gray: { lut: "000000ffffff", diverging: false } },
    method_specs: [
      { name: "sglrp", label: "SGLRP", family: "Contrastive LRP", description: "Softmax-gradient LRP.", unavailable: null,
        params: [{ name: "low", type: "bounds", default: null, help: "Lowest input value." },
          { name: "relu", type: "bool", default: false, help: "Keep the positive part." }] },
      { name: "lrp.epsilon", label: "LRP-ε", family: "LRP", description: "The epsilon rule.", unavailable: null,
        params: [{ name: "epsilon", type: "float", default: 1e-7, min: 0, max: 1000, help: "Stabiliser." }] },
      { name: "grad_cam", label: "Grad-CAM", family: "CAM", description: "CAM.", unavailable: "the model has no convolution", params: [] },
    ],
    predictions: [{ index: 2, name: "star", prob: 0.9, percent: "90.0 %" }, { index: 0, name: "circle", prob: 0.1, percent: "10.0 %" }],
    resolved_target: 2,
    image: new Uint8Array([1]), image_meta: { index: 0, width: 2, height: 2 },
    boxes: [{ box: [0, 0, 1, 1], class: 2, label: "star" }, { box: [1, 1, 2, 2], class: 0, label: "circle" }],
    heatmap: half([1, -1, 0.5, 0]),
    heatmap_meta: { index: 0, method: "sglrp", label: "SGLRP", target: 2, class_name: "star", probability: 0.9,
      dtype: "float16", scale: 2, width: 2, height: 2, legend: ["speaks for the other classes", "speaks for “star” over the others"],
      scales: { percentile: [1.5, 1.0], max: [2, 2] }, request_id: 0 },
    metrics: {}, code: "", status: "", task: {}, error: "", field_errors: {}, compare_grid: {}, comm_count: 0,
    ...extra,
  };
}

/** decodePng stand-in: a grey 2x2 (or w x h) RGBA image. */
export async function grayPng(_bytes, w = 2, h = 2) {
  return new Uint8ClampedArray(4 * w * h).fill(100).map((v, i) => (i % 4 === 3 ? 255 : v));
}
