// Draws the report's charts (inline SVG) and runs the loss explorer. No network, no libraries.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("run-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const color = (metric) => DATA.colors.series[metric] || DATA.colors.default;
  const el = (tag, attrs, parent) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (parent) parent.appendChild(e);
    return e;
  };
  const fmt = (v) => {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return Number(v.toPrecision(4)).toString();
  };

  function ticks(lo, hi, n) {
    const span = hi - lo, raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= n) || raw;
    const out = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Math.abs(t) < step * 1e-9 ? 0 : t);
    return out;
  }

  function drawChart(box, chart) {
    const W = 520, H = 250, m = { l: 62, r: 14, t: 16, b: 36 };
    const pts = chart.series.flatMap((s) => s.points);
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const pad = Math.abs(y0) * 0.1 || 1; y0 -= pad; y1 += pad; }
    const ypad = (y1 - y0) * 0.06; y0 -= ypad; y1 += ypad;
    const X = (x) => m.l + ((x - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (y) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": chart.title }, box);
    for (const t of ticks(y0, y1, 5)) {
      el("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid" }, svg);
      el("text", { x: m.l - 6, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, svg).textContent = fmt(t);
    }
    for (const t of ticks(x0, x1, 6).filter((t) => Number.isInteger(t))) {
      el("text", { x: X(t), y: H - m.b + 15, class: "tick", "text-anchor": "middle" }, svg).textContent = t;
    }
    el("text", { x: (m.l + W - m.r) / 2, y: H - 4, class: "axis", "text-anchor": "middle" }, svg).textContent = "step";
    el("text", { x: 12, y: (m.t + H - m.b) / 2, class: "axis", "text-anchor": "middle", transform: `rotate(-90 12 ${(m.t + H - m.b) / 2})` }, svg).textContent = chart.ylabel;
    // diagnostics: a strip at the top over the steps where each fired, a dotted line where it first fired
    Object.entries(DATA.markers).forEach(([kind, steps], k) => {
      const kindColor = DATA.colors.kinds[kind] || DATA.colors.other_kind;
      const w = Math.max(2, (W - m.l - m.r) / Math.max(1, x1 - x0));
      for (const s of steps) el("rect", { x: X(s) - w / 2, y: m.t - 12 + k * 4, width: w, height: 3, fill: kindColor, class: "marker" }, svg);
      if (steps.length) el("line", { x1: X(steps[0]), x2: X(steps[0]), y1: m.t, y2: H - m.b, stroke: kindColor, "stroke-dasharray": "2 3", class: "marker" }, svg);
    });
    for (const s of chart.series) {
      const stroke = color(s.metric);
      const d = s.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      el("path", { d, class: `series ${s.split}`, stroke, "data-label": s.label, "data-points": s.points.length }, svg);
      if (s.split === "eval" || s.points.length === 1) {
        for (const p of s.points) el("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: stroke, class: "dot" }, svg);
      }
    }
    const legend = document.createElement("div");
    legend.className = "legend";
    for (const s of chart.series) {
      const item = document.createElement("span");
      item.className = `key ${s.split}`;
      item.style.setProperty("--c", color(s.metric));
      item.textContent = s.label.replace(/^train /, "train · ").replace(/^eval /, "held-out · ");
      legend.appendChild(item);
    }
    box.appendChild(legend);
    const readout = document.createElement("div");
    readout.className = "readout";
    readout.textContent = "hover for values";
    box.appendChild(readout);
    const guide = el("line", { y1: m.t, y2: H - m.b, class: "guide", visibility: "hidden" }, svg);
    svg.addEventListener("mousemove", (ev) => {
      const r = svg.getBoundingClientRect();
      const sx = ((ev.clientX - r.left) / r.width) * W;
      const step = Math.round(x0 + ((sx - m.l) / (W - m.l - m.r)) * (x1 - x0));
      const parts = [];
      for (const s of chart.series) {
        let best = null;
        for (const p of s.points) if (best === null || Math.abs(p[0] - step) < Math.abs(best[0] - step)) best = p;
        if (best) parts.push(`${s.label} @${best[0]}: ${fmt(best[1])}`);
      }
      guide.setAttribute("x1", X(Math.min(x1, Math.max(x0, step)))); guide.setAttribute("x2", X(Math.min(x1, Math.max(x0, step))));
      guide.setAttribute("visibility", "visible");
      readout.textContent = parts.join(" · ");
    });
    svg.addEventListener("mouseleave", () => guide.setAttribute("visibility", "hidden"));
  }

  function drawCharts() {
    const grid = document.getElementById("charts");
    for (const chart of DATA.charts) {
      const box = document.createElement("figure");
      box.className = "chart";
      box.id = `chart-${chart.id}`;
      const cap = document.createElement("figcaption");
      cap.textContent = chart.title;
      box.appendChild(cap);
      grid.appendChild(box);
      drawChart(box, chart);
    }
  }

  // ---- loss explorer
  function explorer() {
    if (!document.getElementById("explorer")) return; // an SFT page has no loss explorer
    const specs = DATA.explorer.losses;
    const inputs = {};
    for (const input of document.querySelectorAll("#explorer [data-field]")) inputs[input.dataset.field] = input;
    const values = () => ({
      pc: +inputs.pc.value, pr: +inputs.pr.value, rc: +inputs.rc.value, rr: +inputs.rr.value,
      lc: +inputs.lc.value, lr: +inputs.lr.value, z: +inputs.z.value, length_normalize: inputs.length_normalize.checked, reference_free: false,
    });
    const tbody = document.querySelector("#loss-table tbody");
    const cells = {};
    for (const spec of specs) {
      const tr = document.createElement("tr");
      tr.id = `row-${spec.name}`;
      if (spec.name === DATA.explorer.current) tr.className = "current";
      const name = document.createElement("td");
      name.textContent = spec.name + (spec.uses_reference ? "" : " ‡");
      name.title = spec.description;
      tr.appendChild(name);
      cells[spec.name] = {};
      for (const k of ["loss", "chosen_reward", "rejected_reward", "grad_chosen", "grad_rejected"]) {
        const td = document.createElement("td");
        td.className = `num ${k}`;
        td.id = `${k}-${spec.name}`;
        tr.appendChild(td);
        cells[spec.name][k] = td;
      }
      tbody.appendChild(tr);
    }
    function update() {
      const v = values();
      const beta = +inputs.beta.value;
      for (const [k, input] of Object.entries(inputs)) {
        const out = document.getElementById(`val-${k}`);
        if (out) out.textContent = input.type === "checkbox" ? (input.checked ? "on" : "off") : input.value;
      }
      const cl = v.pc - v.rc, rl = v.pr - v.rr, h = cl - rl;
      const set = (id, x) => { const e = document.getElementById(id); e.textContent = fmt(x); e.dataset.value = String(x); };
      set("x-chosen-logratio", cl); set("x-rejected-logratio", rl); set("x-margin", h); set("x-beta-margin", beta * h);
      set("x-sigma", preftuneLosses.sig(beta * h)); set("x-weight", beta * preftuneLosses.sig(-beta * h));
      set("x-dpo-loss", -preftuneLosses.logsig(beta * h));
      const scale = Math.max(10, Math.abs(cl), Math.abs(rl));
      for (const [id, val] of [["bar-chosen", cl], ["bar-rejected", rl]]) {
        const bar = document.getElementById(id);
        bar.style.width = `${(Math.abs(val) / scale) * 50}%`;
        bar.style.left = val >= 0 ? "50%" : `${50 - (Math.abs(val) / scale) * 50}%`;
      }
      for (const spec of specs) {
        const r = preftuneLosses.compute(spec, v, beta);
        for (const [k, td] of Object.entries(cells[spec.name])) { td.textContent = fmt(r[k]); td.dataset.value = String(r[k]); }
      }
    }
    for (const input of Object.values(inputs)) input.addEventListener("input", update);
    update();
  }

  drawCharts();
  explorer();
  document.body.dataset.ready = "true";
})();
