/* Segmenter dashboard charts: plain SVG, no dependency, no network.
 * Each function clears the <svg> it is given and draws into it; sizes come from its viewBox.
 * SPDX-License-Identifier: Apache-2.0 */
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1',
  '#ff9da7', '#9c755f', '#bab0ac', '#1f77b4', '#17becf', '#8c564b', '#bcbd22', '#7f7f7f'];

function el(name, attrs, parent, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function clear(svg) { while (svg.firstChild) svg.removeChild(svg.firstChild); }

function box(svg) {
  const vb = svg.viewBox.baseVal;
  return { w: vb && vb.width ? vb.width : 600, h: vb && vb.height ? vb.height : 300 };
}

function colorFor(id, ids) {
  const i = ids.indexOf(id);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function niceMax(v) {
  // four whole-number grid steps: 1, 2, 5 x 10^k each
  const step = Math.max(1, v / 4);
  const p = Math.pow(10, Math.floor(Math.log10(step)));
  for (const m of [1, 2, 5, 10]) if (m * p >= step) return 4 * m * p;
  return 40 * p;
}

function empty(svg, message) {
  const { w, h } = box(svg);
  el('text', { x: w / 2, y: h / 2, 'text-anchor': 'middle', class: 'empty' }, svg, message);
}

/** Lines over time. series: [{id, name, color, points: [[epochMs, value], ...]}]. */
function lineChart(svg, series) {
  clear(svg);
  const { w, h } = box(svg);
  const m = { l: 48, r: 12, t: 10, b: 24 };
  const all = series.flatMap(s => s.points);
  if (!all.length) { empty(svg, 'waiting for data…'); return 0; }
  const t0 = Math.min(...all.map(p => p[0]));
  const t1 = Math.max(t0 + 1000, ...all.map(p => p[0]));
  const ymax = niceMax(Math.max(...all.map(p => p[1])));
  const x = t => m.l + (w - m.l - m.r) * (t - t0) / (t1 - t0);
  const y = v => h - m.b - (h - m.t - m.b) * v / ymax;
  const axis = el('g', { class: 'axis' }, svg);
  for (let i = 0; i <= 4; i++) {
    const v = ymax * i / 4;
    el('line', { x1: m.l, x2: w - m.r, y1: y(v), y2: y(v), class: 'grid' }, axis);
    el('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, axis, Math.round(v));
  }
  for (let i = 0; i <= 3; i++) {
    const t = t0 + (t1 - t0) * i / 3;
    const long = t1 - t0 > 2 * 86400e3;
    const label = long
      ? new Date(t).toLocaleDateString([], { month: 'short', day: 'numeric' })
      : new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    el('text', { x: x(t), y: h - 6, 'text-anchor': i === 0 ? 'start' : i === 3 ? 'end' : 'middle' }, axis, label);
  }
  let drawn = 0;
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join('');
    const path = el('path', { d, class: 'series', stroke: s.color, 'data-segment': s.id }, svg);
    el('title', {}, path, `${s.name}: ${s.points[s.points.length - 1][1]}`);
    drawn++;
  }
  return drawn;
}

/** A two-column Sankey: sources on the left, targets on the right.
 * links: [{from, to, count}], names: {id: label}. '-' is "no segment". */
function sankey(svg, links, names, ids) {
  clear(svg);
  const { w, h } = box(svg);
  if (!links.length) { empty(svg, 'no migrations recorded for this day'); return 0; }
  const label = id => id === '-' ? '(none)' : (names[id] || id);
  const side = key => {
    const totals = new Map();
    for (const l of links) totals.set(l[key], (totals.get(l[key]) || 0) + l.count);
    return [...totals.entries()].sort((a, b) => b[1] - a[1]);
  };
  const left = side('from'), right = side('to');
  const total = links.reduce((s, l) => s + l.count, 0);
  const pad = 8, top = 6, nodeW = 12, lx = 150, rx = w - 150 - nodeW;
  const usable = h - 2 * top;
  const k = Math.min((usable - pad * (left.length - 1)) / total, (usable - pad * (right.length - 1)) / total);
  const place = nodes => {
    const pos = new Map(); let y = top;
    for (const [id, v] of nodes) { pos.set(id, { y, h: Math.max(1, v * k), out: 0 }); y += v * k + pad; }
    return pos;
  };
  const L = place(left), R = place(right);
  const linksG = el('g', { class: 'links' }, svg);
  let drawn = 0;
  const sorted = [...links].sort((a, b) => b.count - a.count);
  for (const l of sorted) {
    const s = L.get(l.from), t = R.get(l.to);
    const th = Math.max(1, l.count * k);
    const y0 = s.y + s.out + th / 2, y1 = t.y + t.out + th / 2;
    s.out += l.count * k; t.out += l.count * k;
    const x0 = lx + nodeW, x1 = rx, xm = (x0 + x1) / 2;
    const path = el('path', {
      d: `M${x0},${y0.toFixed(1)}C${xm},${y0.toFixed(1)} ${xm},${y1.toFixed(1)} ${x1},${y1.toFixed(1)}`,
      'stroke-width': th.toFixed(1), stroke: l.from === '-' ? '#9aa5b1' : colorFor(l.from, ids),
      class: 'link',
    }, linksG);
    el('title', {}, path, `${label(l.from)} → ${label(l.to)}: ${l.count}`);
    drawn++;
  }
  const nodes = (pos, x, anchor, dx) => {
    let lastLabel = -Infinity;
    for (const [id, p] of pos) {
      el('rect', { x, y: p.y, width: nodeW, height: p.h, rx: 2, class: 'node',
        fill: id === '-' ? '#9aa5b1' : colorFor(id, ids) }, svg);
      const ly = p.y + p.h / 2 + 4;
      if (ly - lastLabel < 11) continue;  // too close to the previous label: tooltip only
      lastLabel = ly;
      el('text', { x: x + dx, y: ly, 'text-anchor': anchor, class: 'label' }, svg,
        `${label(id)} (${Math.round(p.h / k)})`);
    }
  };
  nodes(L, lx, 'end', -6);
  nodes(R, rx, 'start', nodeW + 6);
  return drawn;
}

/** A 5x5 heatmap: grid[r-1][f-1]; recency 5 at the top, frequency 5 on the right. */
function heatmap(svg, grid) {
  clear(svg);
  const { w, h } = box(svg);
  const m = { l: 70, r: 10, t: 10, b: 40 };
  const cw = (w - m.l - m.r) / 5, ch = (h - m.t - m.b) / 5;
  const max = Math.max(1, ...grid.flat());
  let cells = 0;
  for (let r = 5; r >= 1; r--) {
    const row = 5 - r;
    el('text', { x: m.l - 8, y: m.t + row * ch + ch / 2 + 4, 'text-anchor': 'end', class: 'label' }, svg, `R${r}`);
    for (let f = 1; f <= 5; f++) {
      const v = grid[r - 1][f - 1];
      const a = v / max;
      const fill = `rgba(78, 121, 167, ${(0.06 + 0.94 * a).toFixed(3)})`;
      const rect = el('rect', { x: m.l + (f - 1) * cw + 1, y: m.t + row * ch + 1, width: cw - 2, height: ch - 2, rx: 3, fill, class: 'cell' }, svg);
      el('title', {}, rect, `R${r} F${f}: ${v} customers`);
      el('text', { x: m.l + (f - 0.5) * cw, y: m.t + (row + 0.5) * ch + 4, 'text-anchor': 'middle',
        class: a > 0.55 ? 'count light' : 'count' }, svg, v);
      cells++;
    }
  }
  for (let f = 1; f <= 5; f++) {
    el('text', { x: m.l + (f - 0.5) * cw, y: h - m.b + 18, 'text-anchor': 'middle', class: 'label' }, svg, `F${f}`);
  }
  el('text', { x: m.l + (w - m.l - m.r) / 2, y: h - 4, 'text-anchor': 'middle', class: 'axis-title' }, svg, 'frequency (orders) →');
  el('text', { x: 12, y: m.t + (h - m.t - m.b) / 2, 'text-anchor': 'middle', class: 'axis-title',
    transform: `rotate(-90 12 ${m.t + (h - m.t - m.b) / 2})` }, svg, 'recency →');
  return cells;
}

/** An n x n map of the Jaccard index between segments (1 on the diagonal).
 * pairs: [{a, b, both, jaccard}] for every pair once. Returns the cells drawn. */
function overlapMap(svg, ids, pairs) {
  clear(svg);
  const { w, h } = box(svg);
  if (ids.length < 2) { empty(svg, 'fewer than two segments'); return 0; }
  const m = { l: 150, r: 10, t: 10, b: 10 };
  const n = ids.length;
  const cw = (w - m.l - m.r) / n, ch = (h - m.t - m.b) / n;
  const at = new Map();
  for (const p of pairs) { at.set(p.a + '|' + p.b, p); at.set(p.b + '|' + p.a, p); }
  let cells = 0;
  ids.forEach((a, r) => {
    el('text', { x: m.l - 6, y: m.t + r * ch + ch / 2 + 4, 'text-anchor': 'end', class: 'label' }, svg, a);
    ids.forEach((b, c) => {
      const p = a === b ? { jaccard: 1, both: null } : (at.get(a + '|' + b) || { jaccard: 0, both: 0 });
      const fill = a === b ? '#d8dde6' : `rgba(225, 87, 89, ${(0.04 + 0.96 * p.jaccard).toFixed(3)})`;
      const rect = el('rect', { x: m.l + c * cw + 0.5, y: m.t + r * ch + 0.5, width: cw - 1, height: ch - 1, fill, class: 'cell' }, svg);
      el('title', {}, rect, a === b ? a : `${a} & ${b}: ${p.both} in both, Jaccard ${p.jaccard.toFixed(2)}`);
      cells++;
    });
  });
  return cells;
}

/** Bars of counts with labels under them. Returns the bars drawn. */
function bars(svg, counts, labels, color) {
  clear(svg);
  const { w, h } = box(svg);
  const m = { l: 40, r: 10, t: 10, b: 28 };
  const max = niceMax(Math.max(1, ...counts));
  const bw = (w - m.l - m.r) / counts.length;
  for (let i = 0; i <= 4; i++) {
    const v = max * i / 4, y = h - m.b - (h - m.t - m.b) * v / max;
    el('line', { x1: m.l, x2: w - m.r, y1: y, y2: y, class: 'grid' }, svg);
    el('text', { x: m.l - 6, y: y + 4, 'text-anchor': 'end', class: 'label' }, svg, Math.round(v));
  }
  counts.forEach((v, i) => {
    const bh = (h - m.t - m.b) * v / max;
    const rect = el('rect', { x: m.l + i * bw + 2, y: h - m.b - bh, width: bw - 4, height: Math.max(bh, 0.5), fill: color, class: 'bar' }, svg);
    el('title', {}, rect, `${labels[i]}: ${v}`);
    el('text', { x: m.l + (i + 0.5) * bw, y: h - 10, 'text-anchor': 'middle', class: 'label' }, svg, labels[i]);
  });
  return counts.length;
}

window.SegCharts = { lineChart, sankey, heatmap, overlapMap, bars, colorFor, PALETTE };
