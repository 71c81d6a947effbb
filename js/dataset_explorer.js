// DatasetExplorer front end (anywidget ES module): class picker, eigengap plot, embedding scatter, clusters
// ranked by coherence, a lazily loaded gallery of images with their maps, export of a cluster's ids, and the
// RelevanceExplorer of an opened image (rendered through anywidget's host). Small views over pure helpers;
// the helpers are unit-tested in js/tests/dataset_explorer.test.js.
//
// anywidget loads one module string (no relative imports), so the two tiny DOM helpers of widget.js
// (toUint8, h) are repeated here.

/** ArrayBuffer / DataView / typed array -> Uint8Array view (no copy). */
export function toUint8(buf) {
  if (buf == null) return new Uint8Array(0);
  if (buf instanceof Uint8Array) return buf;
  if (buf instanceof ArrayBuffer) return new Uint8Array(buf);
  if (ArrayBuffer.isView(buf)) return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  throw new TypeError("unsupported buffer type: " + Object.prototype.toString.call(buf));
}

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

// ---- pure helpers --------------------------------------------------------------------------------------

/** Colour-blind-safe cluster colours (Okabe-Ito, then Tableau), cycled. */
export const PALETTE = ["#e69f00", "#0072b2", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#8c564b", "#7f7f7f",
  "#bcbd22", "#17becf"];
export function clusterColor(c) {
  return PALETTE[((c % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

/** "ring · 42 maps" (+ "· no SpRAy yet"). */
export function classLabel(c) {
  return `${c.name} · ${c.count} map${c.count === 1 ? "" : "s"}${c.analysed ? "" : " · no SpRAy yet"}`;
}

/** "Cluster 1 · 23 images · coherence 0.83" (clusters are 1-based for people). */
export function clusterLabel(c) {
  const coh = c.coherence == null ? "n/a" : c.coherence.toFixed(2);
  return `Cluster ${c.cluster + 1} · ${c.size} image${c.size === 1 ? "" : "s"} · coherence ${coh}`;
}

/** Where the eigengap plot puts things: plot box and the x of eigenvalue i (0-based). */
export function spectrumGeometry(n, width, height) {
  const left = 34, right = 8, top = 8, bottom = 20;
  const w = Math.max(1, width - left - right), hgt = Math.max(1, height - top - bottom);
  const step = w / Math.max(1, n);
  return { left, top, width: w, height: hgt, step, x: (i) => left + step * (i + 0.5), n };
}

/** The number of clusters k picked by a click at x: the gap after eigenvalue k (1..maxK), or null. */
export function kAtX(x, geom, maxK) {
  if (x < geom.left || x > geom.left + geom.width) return null;
  const k = Math.round((x - geom.left) / geom.step);   // the boundary between eigenvalue k and k + 1
  return Math.min(maxK, Math.max(1, k));
}

/** Scatter points (flat [x0, y0, x1, y1, ...] in 0..1) -> canvas pixel positions with a margin. */
export function scatterPositions(points, width, height, pad = 8) {
  const out = new Float32Array(points.length);
  for (let i = 0; i < points.length; i += 2) {
    out[i] = pad + points[i] * (width - 2 * pad);
    out[i + 1] = height - pad - points[i + 1] * (height - 2 * pad);
  }
  return out;
}

/** Index of the point nearest to (x, y) within maxDist pixels, else -1. */
export function nearestPoint(pos, x, y, maxDist = 8) {
  let best = -1, bestD = maxDist * maxDist;
  for (let i = 0; i < pos.length / 2; i++) {
    const dx = pos[2 * i] - x, dy = pos[2 * i + 1] - y, d = dx * dx + dy * dy;
    if (d <= bestD) { best = i; bestD = d; }
  }
  return best;
}

/**
 * One gallery tile: the thumbnail (RGB uint8) with its int8 map blended on top, as RGBA.
 * Positive relevance red, negative blue (the store's bwr convention), alpha = opacity * |map| / 127.
 */
export function tilePixels(thumb, heat, opacity = 0.6) {
  const n = heat.length;
  const out = new Uint8ClampedArray(4 * n);
  for (let i = 0; i < n; i++) {
    const q = heat[i] / 127;
    const a = Math.min(1, Math.abs(q)) * opacity;
    const c = q >= 0 ? [220, 30, 30] : [30, 70, 220];
    for (let ch = 0; ch < 3; ch++) out[4 * i + ch] = thumb[3 * i + ch] * (1 - a) + c[ch] * a;
    out[4 * i + 3] = 255;
  }
  return out;
}

/** A tile's tooltip: "image 7 · label 3 · largest |relevance| 0.012 · click to open" (its map's own scale). */
export function tileTitle(item) {
  const parts = [`image ${item.id}`];
  if (item.label != null) parts.push(`label ${item.label}`);
  if (Number.isFinite(item.scale)) parts.push(`largest |relevance| ${Number(item.scale.toPrecision(2))}`);
  return [...parts, "click to open"].join(" · ");
}

/** Split a page's two buffers into per-item (thumb, heat) views; throws on a size mismatch. */
export function pageTiles(meta, buffers) {
  const thumbs = toUint8(buffers[0]);
  const heats = toUint8(buffers[1]);
  const n = meta.items.length, px = meta.width * meta.height;
  if (thumbs.length !== n * px * 3 || heats.length !== n * px) {
    throw new Error(`page buffers have ${thumbs.length} + ${heats.length} bytes, expected ${n * px * 3} + ${n * px}`);
  }
  const signed = new Int8Array(heats.buffer, heats.byteOffset, heats.byteLength);
  return meta.items.map((item, i) => ({
    item, thumb: thumbs.subarray(3 * px * i, 3 * px * (i + 1)), heat: signed.subarray(px * i, px * (i + 1)),
  }));
}

/** Does a page answer the gallery's current request? (stale pages are dropped) */
export function pageIsCurrent(meta, want) {
  return !!want && meta.cls === want.cls && meta.k === want.k && meta.cluster === want.cluster;
}

/** CSV of an export: header, then one id per line. */
export function idsCsv(exp) {
  return ["image_id", ...(exp.ids || []).map(String)].join("\n") + "\n";
}

export function exportFileName(exp, ext = "csv") {
  const slug = String(exp.name || "class").toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  return `${slug || "class"}_k${exp.k}_cluster${exp.cluster + 1}_ids.${ext}`;
}

/** Theme colours for canvases, read from the rendered root (so they follow light/dark). */
export function themeColors(el) {
  const cs = getComputedStyle(el);
  return { fg: cs.color || "#222", grid: cs.borderTopColor || "#999" };
}

// ---- views -------------------------------------------------------------------------------------------

function fitCanvas(canvas, width, height) {
  const ratio = globalThis.devicePixelRatio || 1;
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  if (ctx.setTransform) ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return ctx;
}

export function makeEnv(model, el) {
  const listeners = new Set();
  return {
    model, el,
    hover: -1,            // point index (in the class's rows) under the pointer, -1 = none
    width: 600,
    on(fn) { listeners.add(fn); return () => listeners.delete(fn); },
    emit(what) { for (const fn of listeners) fn(what); },
    send(msg) { model.send(msg); },
    set(changes) {
      for (const [k, v] of Object.entries(changes)) model.set(k, v);
      model.save_changes();
    },
  };
}

/** Class picker: one option per class with its number of maps. */
export function classView(env) {
  const select = h("select", { class: "sglrp-input", role: "class", "aria-label": "class" });
  select.addEventListener("change", () => env.set({ cls: Number(select.value) }));
  const el = h("label", { class: "sglrp-row" }, "Class ", select);
  return {
    el, keys: ["classes", "cls"],
    update() {
      const classes = env.model.get("classes") || [];
      select.replaceChildren(...classes.map((c) => h("option", { value: String(c.index), text: classLabel(c) })));
      select.value = String(env.model.get("cls"));
    },
  };
}

/** Notice when the class has no SpRAy results, with a button that runs it. */
export function noticeView(env) {
  const text = h("div", { class: "sglrp-note-text", role: "notice" });
  const button = h("button", { class: "sglrp-btn", role: "run-spray", type: "button", text: "Run SpRAy" });
  button.addEventListener("click", () => env.send({ type: "spray" }));
  const el = h("div", { class: "sglrp-notice" }, text, button);
  return {
    el, keys: ["notice", "busy"],
    update() {
      const notice = env.model.get("notice") || "";
      text.textContent = notice;
      el.hidden = !notice;
      button.disabled = !!env.model.get("busy");
    },
  };
}

/** Eigengap plot: the smallest eigenvalues, the chosen k marked; a click or a k button picks another k. */
export function spectrumView(env) {
  const canvas = h("canvas", { class: "sglrp-canvas", role: "eigengap", "aria-label": "eigenvalue plot" });
  const buttons = h("div", { class: "sglrp-row sglrp-kbuttons", role: "k-buttons" });
  const help = h("div", { class: "sglrp-help", text:
    "Eigengap: k eigenvalues near 0 followed by a jump mean k groups of maps (k strategies). " +
    "The marked k is the eigengap's choice; click the plot or a number to use another k." });
  const el = h("div", { class: "sglrp-spectrum" }, h("div", { class: "sglrp-title", text: "Eigenvalues" }),
    canvas, h("div", { class: "sglrp-row" }, "Clusters ", buttons), help);
  let geom = null;
  canvas.addEventListener("click", (ev) => {
    const ov = env.model.get("overview") || {};
    if (!geom || !ov.max_k) return;
    const rect = canvas.getBoundingClientRect();
    const k = kAtX(ev.clientX - rect.left, geom, ov.max_k);
    if (k != null && k !== ov.k) env.set({ k });
  });
  function draw() {
    const ov = env.model.get("overview") || {};
    const values = ov.eigenvalues || [];
    el.hidden = !values.length;
    if (!values.length) return;
    const width = Math.max(200, Math.min(env.width * 0.5, 440)), height = Math.round(width * 0.5);
    el.style.width = `${width}px`;            // the help text wraps to the plot's width
    const ctx = fitCanvas(canvas, width, height);
    geom = spectrumGeometry(values.length, width, height);
    const { fg, grid } = themeColors(env.el);
    const top = Math.max(1e-9, ...values);
    const y = (v) => geom.top + geom.height * (1 - v / top);
    ctx.clearRect(0, 0, width, height);
    ctx.strokeStyle = grid; ctx.lineWidth = 1;
    ctx.strokeRect(geom.left, geom.top, geom.width, geom.height);
    ctx.fillStyle = fg; ctx.font = "11px sans-serif"; ctx.textAlign = "right";
    ctx.fillText(top.toFixed(2), geom.left - 3, geom.top + 9);
    ctx.fillText("0", geom.left - 3, geom.top + geom.height);
    ctx.textAlign = "center";
    for (let i = 0; i < values.length; i++) {
      const x = geom.x(i);
      ctx.fillStyle = i < ov.k ? clusterColor(i) : fg;
      ctx.fillRect(x - 3, y(values[i]) - 3, 6, 6);
      if (values.length <= 20 || i % 2 === 0) { ctx.fillStyle = fg; ctx.fillText(String(i + 1), x, height - 6); }
    }
    const mark = (k, dash, label, row) => {
      const x = geom.left + geom.step * k;
      ctx.strokeStyle = fg; ctx.setLineDash(dash); ctx.beginPath();
      ctx.moveTo(x, geom.top); ctx.lineTo(x, geom.top + geom.height); ctx.stroke();
      ctx.setLineDash([]);
      ctx.fillStyle = fg; ctx.textAlign = "left"; ctx.fillText(label, x + 3, geom.top + 12 + 14 * row);
    };
    mark(ov.k, [], `k = ${ov.k}`, 0);
    if (ov.eigengap_k !== ov.k) mark(ov.eigengap_k, [3, 3], "eigengap", 1);
    canvas.dataset.k = String(ov.k);
  }
  function update() {
    const ov = env.model.get("overview") || {};
    buttons.replaceChildren(...Array.from({ length: ov.max_k || 0 }, (_, j) => {
      const k = j + 1;
      const b = h("button", { class: "sglrp-btn sglrp-k" + (k === ov.k ? " sglrp-on" : ""), type: "button",
        "aria-pressed": String(k === ov.k), title: k === ov.eigengap_k ? "the eigengap's choice" : null,
        text: k === ov.eigengap_k ? `${k}*` : String(k) });
      b.addEventListener("click", () => env.set({ k }));
      return b;
    }));
    draw();
  }
  return { el, keys: ["overview", "resize"], update };
}

/** 2-D embedding, one dot per map, coloured by cluster; hover names the image, click picks its cluster. */
export function scatterView(env) {
  const canvas = h("canvas", { class: "sglrp-canvas", role: "scatter", "aria-label": "embedding of the maps" });
  const tip = h("div", { class: "sglrp-help", role: "scatter-tip", text: "\u00a0" });
  const el = h("div", { class: "sglrp-scatter" },
    h("div", { class: "sglrp-title", text: "Maps in 2-D (t-SNE): near = similar maps" }), canvas, tip);
  let pos = null;
  const pointAt = (ev) => {
    const rect = canvas.getBoundingClientRect();
    return pos ? nearestPoint(pos, ev.clientX - rect.left, ev.clientY - rect.top) : -1;
  };
  canvas.addEventListener("mousemove", (ev) => {
    const i = pointAt(ev);
    if (i !== env.hover) { env.hover = i; env.emit("hover"); }
  });
  canvas.addEventListener("mouseleave", () => { env.hover = -1; env.emit("hover"); });
  canvas.addEventListener("click", (ev) => {
    const ov = env.model.get("overview") || {};
    const i = pointAt(ev);
    if (i >= 0 && ov.labels && ov.labels[i] !== env.model.get("cluster")) env.set({ cluster: ov.labels[i] });
  });
  function draw() {
    const ov = env.model.get("overview") || {};
    const pts = ov.points || [];
    el.hidden = !pts.length;
    if (!pts.length) return;
    const size = Math.max(200, Math.min(env.width * 0.4, 360));
    el.style.width = `${size}px`;
    const ctx = fitCanvas(canvas, size, size);
    pos = scatterPositions(pts, size, size);
    const { grid, fg } = themeColors(env.el);
    const current = env.model.get("cluster");
    ctx.clearRect(0, 0, size, size);
    ctx.strokeStyle = grid; ctx.strokeRect(0, 0, size, size);
    for (let pass = 0; pass < 2; pass++) {           // the gallery's cluster on top
      for (let i = 0; i < pts.length / 2; i++) {
        const mine = ov.labels[i] === current;
        if ((pass === 1) !== mine) continue;
        ctx.globalAlpha = mine ? 1 : 0.45;
        ctx.fillStyle = clusterColor(ov.labels[i]);
        ctx.fillRect(pos[2 * i] - 3, pos[2 * i + 1] - 3, 6, 6);
      }
    }
    ctx.globalAlpha = 1;
    if (env.hover >= 0 && env.hover < pts.length / 2) {
      ctx.strokeStyle = fg; ctx.lineWidth = 2;
      ctx.strokeRect(pos[2 * env.hover] - 6, pos[2 * env.hover + 1] - 6, 12, 12);
      ctx.lineWidth = 1;
    }
    canvas.dataset.points = String(pts.length / 2);
  }
  function update(what) {
    const ov = env.model.get("overview") || {};
    if (what === "hover") {
      const i = env.hover;
      tip.textContent = i >= 0 && ov.rows ? `row ${ov.rows[i]} · cluster ${ov.labels[i] + 1}` : "\u00a0";
    }
    draw();
  }
  return { el, keys: ["overview", "cluster", "hover", "resize"], update };
}

/** Clusters ranked by coherence, each a button that shows it in the gallery. */
export function clustersView(env) {
  const list = h("div", { class: "sglrp-clusters", role: "clusters" });
  const el = h("div", {}, h("div", { class: "sglrp-title", text: "Clusters, most coherent first" }), list,
    h("div", { class: "sglrp-help", text:
      "Coherence: how alike a cluster's maps are (1 = the same pixels every time, 0 = no shared pattern). " +
      "A very coherent cluster is one strategy; look there first for artifacts such as watermarks." }));
  return {
    el, keys: ["overview", "cluster"],
    update() {
      const ov = env.model.get("overview") || {};
      el.hidden = !(ov.clusters || []).length;
      const current = env.model.get("cluster");
      list.replaceChildren(...(ov.clusters || []).map((c) => {
        const b = h("button", { class: "sglrp-btn sglrp-cluster" + (c.cluster === current ? " sglrp-on" : ""),
          type: "button", "aria-pressed": String(c.cluster === current), "data-cluster": String(c.cluster) },
        h("span", { class: "sglrp-swatch", style: `background:${clusterColor(c.cluster)}` }), clusterLabel(c));
        b.addEventListener("click", () => env.set({ cluster: c.cluster }));
        return b;
      }));
    },
  };
}

/** The gallery of one cluster: pages requested as the list scrolls; a click opens the image below. */
export function galleryView(env) {
  const grid = h("div", { class: "sglrp-gallery-grid", role: "gallery" });
  const more = h("button", { class: "sglrp-btn", role: "more", type: "button", text: "Load more" });
  const count = h("div", { class: "sglrp-help", role: "gallery-count" });
  const scroller = h("div", { class: "sglrp-gallery-scroll" }, grid, more);
  const maps = h("input", { type: "checkbox", checked: true, role: "show-maps" });
  const legend = h("span", { role: "map-legend" });
  const el = h("div", { class: "sglrp-gallery" },
    h("div", { class: "sglrp-row" }, h("span", { class: "sglrp-title", role: "gallery-title" }), count,
      h("label", { class: "sglrp-check" }, maps, "maps", legend)),
    scroller);
  const showLegend = () => {
    const key = env.model.get("map_legend");
    legend.textContent = key ? `(${key})` : "";
  };
  let want = null, loaded = 0, pages = 1, loading = false;
  const tiles = new Map();       // position in the class -> {canvas, thumb, heat, item}
  function drawTile(t) {
    const ctx = t.canvas.getContext("2d");
    const px = maps.checked ? tilePixels(t.thumb, t.heat) : tilePixels(t.thumb, new Int8Array(t.heat.length), 0);
    ctx.putImageData(new ImageData(px, t.canvas.width, t.canvas.height), 0, 0);
  }
  maps.addEventListener("change", () => tiles.forEach(drawTile));
  function request() {
    if (!want || loading || loaded >= pages) return;
    loading = true;
    env.send({ type: "page", ...want, page: loaded });
  }
  more.addEventListener("click", request);
  const observer = typeof IntersectionObserver !== "undefined"
    ? new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) request(); },
      { root: scroller, rootMargin: "120px" })
    : null;
  if (observer) observer.observe(more);
  function reset() {
    const ov = env.model.get("overview") || {};
    const cluster = env.model.get("cluster");
    el.hidden = !(ov.clusters || []).length;
    if (el.hidden) { want = null; return; }
    want = { cls: ov.cls, k: ov.k, cluster };
    loaded = 0; pages = 1; loading = false;
    tiles.clear();
    grid.replaceChildren();
    el.querySelector("[data-role=gallery-title]").textContent = `Cluster ${cluster + 1} of ${ov.name}`;
    count.textContent = "";
    more.hidden = false;
    request();
  }
  function receive(meta, buffers) {
    if (!pageIsCurrent(meta, want) || meta.page !== loaded) return;   // stale or repeated page
    loading = false;
    if (meta.failed) { more.hidden = true; return; }
    for (const t of pageTiles(meta, buffers)) {
      const canvas = h("canvas", { class: "sglrp-thumb", width: meta.width, height: meta.height });
      const tile = h("button", { class: "sglrp-tile-btn", type: "button", role: "tile",
        "data-row": String(t.item.row), "data-position": String(t.item.position),
        title: tileTitle(t.item) },
      canvas, h("span", { class: "sglrp-tile-id", text: String(t.item.id) }));
      tile.addEventListener("click", () => env.send({ type: "open", row: t.item.row }));
      tile.addEventListener("mouseenter", () => { env.hover = t.item.position; env.emit("hover"); });
      tile.addEventListener("mouseleave", () => { env.hover = -1; env.emit("hover"); });
      const entry = { canvas, ...t };
      tiles.set(t.item.position, entry);
      drawTile(entry);
      grid.append(tile);
    }
    loaded = meta.page + 1; pages = meta.pages;
    count.textContent = `${tiles.size} of ${meta.total} shown`;
    more.hidden = loaded >= pages;
    grid.dataset.loaded = String(tiles.size);
    // keep filling while the end of the list is still in view (observe() reports the current state)
    if (!more.hidden && observer) { observer.unobserve(more); observer.observe(more); }
  }
  function highlight() {
    for (const [pos, t] of tiles) t.canvas.parentElement.classList.toggle("sglrp-hover", pos === env.hover);
  }
  let pending = false;         // one reset for the several traits a class change sets at once
  return {
    el, keys: ["overview", "cluster", "hover", "map_legend"], receive,
    update(what) {
      if (what === "hover") { highlight(); return; }
      if (what === "map_legend") { showLegend(); return; }
      if (what === "init") showLegend();
      if (pending) return;
      pending = true;
      queueMicrotask(() => { pending = false; reset(); });
    },
    dispose() { if (observer) observer.disconnect(); },
  };
}

/** Export the gallery's cluster: ids to Python (explorer.selected_ids), the clipboard, or a file. */
export function exportView(env) {
  const button = h("button", { class: "sglrp-btn", role: "export", type: "button", text: "Export ids" });
  const code = h("code", { class: "sglrp-code", role: "export-code" });
  const copy = h("button", { class: "sglrp-btn", role: "copy", type: "button", text: "Copy" });
  const csv = h("button", { class: "sglrp-btn", role: "download-csv", type: "button", text: ".csv" });
  const txt = h("button", { class: "sglrp-btn", role: "download-txt", type: "button", text: ".txt" });
  const result = h("div", { class: "sglrp-row sglrp-export-result" }, code, copy, csv, txt);
  const el = h("div", { class: "sglrp-export" },
    h("div", { class: "sglrp-row" }, button, h("span", { class: "sglrp-help", role: "export-note" })), result);
  button.addEventListener("click", () => env.send({ type: "export" }));
  copy.addEventListener("click", () => {
    const text = code.textContent;
    if (globalThis.navigator?.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    copy.textContent = "Copied";
    setTimeout(() => { copy.textContent = "Copy"; }, 1200);
  });
  const download = (ext) => {
    const exp = env.model.get("export") || {};
    const text = ext === "csv" ? idsCsv(exp) : (exp.ids || []).join("\n") + "\n";
    const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "text/plain" })),
      download: exportFileName(exp, ext) });
    document.body.append(a); a.click(); a.remove();
  };
  csv.addEventListener("click", () => download("csv"));
  txt.addEventListener("click", () => download("txt"));
  return {
    el, keys: ["export", "overview"],
    update() {
      const ov = env.model.get("overview") || {};
      el.hidden = !(ov.clusters || []).length;
      const exp = env.model.get("export") || {};
      result.hidden = !exp.ids;
      code.textContent = exp.code || "";
      el.querySelector("[data-role=export-note]").textContent = exp.ids
        ? `${exp.ids.length} ids of cluster ${exp.cluster + 1} (${exp.name}, k = ${exp.k}) are in ${exp.python}`
        : "puts the ids of the gallery's cluster in explorer.selected_ids";
    },
  };
}

export function statusView(env) {
  const busy = h("div", { class: "sglrp-busy", role: "busy" });
  const status = h("div", { class: "sglrp-status", role: "status" });
  const error = h("div", { class: "sglrp-error", role: "error" });
  const el = h("div", { class: "sglrp-statusbox" }, busy, error, status);
  return {
    el, keys: ["status", "busy", "error", "method_label"],
    update() {
      busy.textContent = env.model.get("busy") || "";
      busy.hidden = !busy.textContent;
      error.textContent = env.model.get("error") || "";
      const label = env.model.get("method_label");
      status.textContent = [label, env.model.get("status")].filter(Boolean).join(" · ");
    },
  };
}

/** The RelevanceExplorer of the opened image, rendered through anywidget's host (one, reused). */
export function relevanceView(env, host, signal) {
  const title = h("div", { class: "sglrp-title", role: "opened" });
  const slot = h("div", { class: "sglrp-relevance-slot", role: "relevance" });
  const el = h("div", { class: "sglrp-relevance" }, title, slot);
  let shown = null;
  return {
    el, keys: ["relevance", "opened", "can_open"],
    async update() {
      const reason = env.model.get("can_open");
      const opened = env.model.get("opened") || {};
      title.textContent = reason ? `Opening images: ${reason}.`
        : opened.id != null ? `Image ${opened.id} explained for ${opened.name}` : "Click an image to explain it below.";
      const ref = env.model.get("relevance");
      if (!ref || ref === shown) return;
      shown = ref;
      if (!host || !host.getWidget) {
        slot.textContent = "This front end cannot show a widget inside another: run `explorer.relevance_explorer` in a cell.";
        return;
      }
      try {
        const widget = await host.getWidget(ref);
        slot.replaceChildren();
        await widget.render({ el: slot, signal });
      } catch (e) {
        slot.textContent = `Could not show the RelevanceExplorer here (${e.message}): run explorer.relevance_explorer in a cell.`;
      }
    },
  };
}

function render({ model, el, host, signal }) {
  const root = h("div", { class: "sglrp-explorer sglrp-dataset", "data-lm-suppress-shortcuts": "true" });
  el.append(root);
  const env = makeEnv(model, root);
  env.width = root.clientWidth || 720;
  const views = {
    classes: classView(env), notice: noticeView(env), spectrum: spectrumView(env), scatter: scatterView(env),
    clusters: clustersView(env), gallery: galleryView(env), export: exportView(env), status: statusView(env),
    relevance: relevanceView(env, host, signal),
  };
  root.append(
    h("div", { class: "sglrp-row" }, views.classes.el),
    views.notice.el,
    h("div", { class: "sglrp-dataset-top" }, views.spectrum.el, views.scatter.el),
    views.clusters.el, views.gallery.el, views.export.el, views.status.el, views.relevance.el);
  const handlers = [];
  for (const view of Object.values(views)) {
    for (const key of view.keys) {
      const fn = () => view.update(key);
      model.on(`change:${key}`, fn);
      handlers.push([`change:${key}`, fn]);
    }
  }
  const offLocal = env.on((what) => { for (const v of Object.values(views)) if (v.keys.includes(what)) v.update(what); });
  const onMsg = (msg, buffers) => {
    if (msg && msg.type === "page") {
      try { views.gallery.receive(msg, buffers || []); } catch (e) { model.set("error", String(e.message)); }
    }
  };
  model.on("msg:custom", onMsg);
  let resize = null;
  if (typeof ResizeObserver !== "undefined") {
    let last = env.width;
    resize = new ResizeObserver(() => {
      const w = root.clientWidth;
      if (w && Math.abs(w - last) > 8) { last = w; env.width = w; env.emit("resize"); }
    });
    resize.observe(root);
  }
  for (const view of Object.values(views)) view.update("init");
  return () => {
    for (const [ev, fn] of handlers) model.off(ev, fn);
    model.off("msg:custom", onMsg);
    offLocal();
    views.gallery.dispose();
    if (resize) resize.disconnect();
  };
}

export default { render };
