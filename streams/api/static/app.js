/* Segmenter dashboard: polls the HTTP API and draws the charts of charts.js.
 * body[data-ready] turns "1" once segment sizes (2 samples), the migration matrix and the RFM
 * grid have been drawn; data-lines, data-links and data-cells count the SVG elements drawn.
 * SPDX-License-Identifier: Apache-2.0 */
'use strict';

const C = window.SegCharts;
const HISTORY = 300;            // samples kept per segment (10 minutes at 2 s)
const history = new Map();      // segment id -> [[epochMs, size], ...]
let segments = [];              // latest /v1/segments body.segments
let ids = [];
let loaded = { sizes: false, matrix: false, rfm: false };
let lastSizes = '';

function key() { return localStorage.getItem('segmenter.apikey') || ''; }

async function api(path, options) {
  const headers = Object.assign({}, (options || {}).headers);
  if (key()) headers.Authorization = 'Bearer ' + key();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    document.getElementById('keyform').hidden = false;
    throw new Error('this API needs a key (SEGMENTER_API_KEY)');
  }
  return response;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function markReady() {
  const body = document.body;
  body.dataset.sizeSamples = String(Math.max(0, ...[...history.values()].map(h => h.length)));
  if (loaded.sizes && loaded.matrix && loaded.rfm && Number(body.dataset.sizeSamples) >= 2) {
    body.dataset.ready = '1';
  }
}

async function refreshSizes() {
  const meta = document.getElementById('meta');
  try {
    const r = await api('/v1/segments');
    if (!r.ok) { meta.textContent = 'API answered ' + r.status; return; }
    const body = await r.json();
    segments = body.segments;
    ids = segments.map(s => s.id);
    const now = Date.now();
    for (const s of segments) {
      const h = history.get(s.id) || [];
      h.push([now, s.size]);
      if (h.length > HISTORY) h.shift();
      history.set(s.id, h);
    }
    const series = segments.map(s => ({ id: s.id, name: s.name, color: C.colorFor(s.id, ids), points: history.get(s.id) }));
    document.body.dataset.lines = String(C.lineChart(document.getElementById('sizes'), series));
    const rows = [...segments].sort((a, b) => b.size - a.size).map(s =>
      `<tr title="${esc(s.description)}"><td><span class="swatch" style="background:${C.colorFor(s.id, ids)}"></span></td>` +
      `<td>${esc(s.name)} <code>${esc(s.id)}</code></td><td class="num">${s.size.toLocaleString()}</td></tr>`).join('');
    if (rows !== lastSizes) { document.querySelector('#sizetable tbody').innerHTML = rows; lastSizes = rows; }
    meta.textContent = `rules ${body.rule_version} · ${segments.length} segments · updated ${new Date().toLocaleTimeString()}`;
    loaded.sizes = true;
  } catch (e) { meta.textContent = e.message; }
  markReady();
}

async function refreshMatrix() {
  const day = document.getElementById('day').value;
  try {
    const r = await api('/v1/migrations/matrix?day=' + encodeURIComponent(day));
    if (!r.ok) return;
    const body = await r.json();
    const names = Object.fromEntries(segments.map(s => [s.id, s.name]));
    const drawn = C.sankey(document.getElementById('sankey'), body.cells, names, ids);
    document.body.dataset.links = String(drawn);
    document.body.dataset.matrixTotal = String(body.total);
    loaded.matrix = true;
  } catch (e) { /* shown by the size poll */ }
  markReady();
}

async function refreshRfm() {
  try {
    const r = await api('/v1/rfm/grid');
    if (!r.ok) return;
    const body = await r.json();
    document.body.dataset.cells = String(C.heatmap(document.getElementById('rfm'), body.grid));
    document.body.dataset.rfmScored = String(body.scored);
    document.getElementById('rfmmeta').textContent =
      `${body.scored} customers with orders of ${body.sampled} sampled`;
    loaded.rfm = true;
  } catch (e) { /* shown by the size poll */ }
  markReady();
}

async function refreshHistory() {
  const select = document.getElementById('histseg');
  if (!select.options.length && segments.length) {
    for (const s of [...segments].sort((a, b) => b.size - a.size)) select.add(new Option(s.name, s.id));
  }
  const id = select.value;
  if (!id) return;
  try {
    const gran = document.getElementById('histgran').value;
    const r = await api(`/v1/segments/${encodeURIComponent(id)}/history?granularity=${gran}`);
    if (!r.ok) return;
    const body = await r.json();
    const points = body.points.map(p => [Date.parse(p.end), p.size]);
    if (body.points.length) {  // where the first bucket started from
      const first = body.points[0];
      points.unshift([Date.parse(first.start), first.size - first.entered + first.exited]);
    }
    const name = (segments.find(s => s.id === id) || { name: id }).name;
    document.body.dataset.historyPoints = String(points.length);
    C.lineChart(document.getElementById('history'), [{ id, name, color: C.colorFor(id, ids), points }]);
  } catch (e) { /* shown by the size poll */ }
}

async function refreshOverlap() {
  try {
    const r = await api('/v1/segments/overlap');
    if (!r.ok) return;
    const body = await r.json();
    const active = segments.filter(s => s.size > 0).map(s => s.id);
    const shown = body.segments.filter(id => active.includes(id));
    document.body.dataset.overlapCells = String(C.overlapMap(document.getElementById('overlap'), shown, body.pairs));
  } catch (e) { /* shown by the size poll */ }
}

async function refreshPredictions() {
  const select = document.getElementById('predseg');
  if (!select.options.length && segments.length) {
    for (const s of [...segments].sort((a, b) => b.size - a.size)) select.add(new Option(s.name, s.id));
  }
  const id = select.value;
  if (!id) return;
  const meta = document.getElementById('predmeta');
  try {
    const r = await api(`/v1/segments/${encodeURIComponent(id)}/predictions`);
    const body = await r.json();
    if (!r.ok) { meta.textContent = body.error; document.body.dataset.predBars = '0'; return; }
    const labels = body.p_alive_bins.map((_, i) => `${i * 10}-${i * 10 + 10}%`);
    document.body.dataset.predBars = String(C.bars(document.getElementById('predictions'), body.p_alive_bins, labels, C.colorFor(id, ids)));
    document.body.dataset.predCounted = String(body.p_alive_bins.reduce((a, b) => a + b, 0));
    const e = body.expected_orders_90d;
    meta.textContent = `${body.sampled} members sampled, ${body.without_orders} without orders · expected orders in 90 days: ` +
      `mean ${e.mean === null ? '—' : e.mean.toFixed(2)}, median ${e.median === null ? '—' : e.median.toFixed(2)} · model ${body.model_version}`;
  } catch (e) { meta.textContent = e.message; }
}

async function refreshDestinations() {
  try {
    const r = await api('/v1/destinations');
    if (!r.ok) return;
    const body = await r.json();
    const rows = body.destinations.map(d =>
      `<tr><td><code>${esc(d.id)}</code></td><td class="num">${d.delivered.toLocaleString()}</td>` +
      `<td class="num">${d.retried.toLocaleString()}</td>` +
      `<td class="num ${d.dead_lettered ? 'bad' : ''}">${d.dead_lettered.toLocaleString()}</td>` +
      `<td class="num">${d.lag.toLocaleString()}</td>` +
      `<td>${d.updated_at ? new Date(d.updated_at * 1000).toLocaleTimeString() : '—'}</td></tr>`).join('');
    document.querySelector('#desttable tbody').innerHTML = rows;
    document.getElementById('destcard').hidden = body.destinations.length === 0;
    document.body.dataset.destinations = String(body.destinations.length);
  } catch (e) { /* shown by the size poll */ }
}

async function refreshHealth() {
  const pill = document.getElementById('health');
  try {
    const r = await fetch('/healthz');
    pill.textContent = r.ok ? 'healthy' : 'not ready';
    pill.className = 'pill ' + (r.ok ? 'ok' : 'bad');
  } catch (e) { pill.textContent = 'unreachable'; pill.className = 'pill bad'; }
}

async function explain(id) {
  const out = document.getElementById('customer');
  out.innerHTML = '…';
  try {
    const [c, x] = await Promise.all([api('/v1/customers/' + encodeURIComponent(id)), api('/v1/customers/' + encodeURIComponent(id) + '/explain')]);
    if (c.status === 404) { out.innerHTML = `<p class="error">no customer ${esc(id)}</p>`; return; }
    const cust = await c.json(), why = await x.json();
    const f = cust.features;
    const chips = cust.segments.map(s => `<span class="${s === cust.primary_segment ? 'primary' : ''}">${esc(s)}</span>`).join('') || '<em>none</em>';
    const rows = why.segments.map(s =>
      `<tr><td>${esc(s.segment)}</td><td class="${s.member ? 'yes' : 'no'}">${s.member ? 'member' : '—'}</td>` +
      `<td class="${s.holds_now ? 'yes' : 'no'}">${s.holds_now ? 'holds' : 'does not hold'}</td>` +
      `<td>${esc(s.rule)}</td><td><code>${esc(JSON.stringify(s.values))}</code></td></tr>`).join('');
    out.innerHTML =
      `<p class="chips"><strong>${esc(cust.customer_id)}</strong> &nbsp; ${chips}</p>` +
      `<p>${f.orders} orders · revenue ${f.revenue} · AOV ${f.average_order_value ?? '—'} · ${f.events} events · last seen ${esc(f.last_seen || '—')}</p>` +
      `<table><thead><tr><th>segment</th><th>member</th><th>now</th><th>deciding clause</th><th>values</th></tr></thead><tbody>${rows}</tbody></table>`;
    document.body.dataset.explained = esc(id);
  } catch (e) { out.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

function init() {
  const day = document.getElementById('day');
  day.value = new Date().toISOString().slice(0, 10);
  day.addEventListener('change', refreshMatrix);
  document.getElementById('search').addEventListener('submit', ev => {
    ev.preventDefault();
    const id = document.getElementById('cid').value.trim();
    if (id) explain(id);
  });
  document.getElementById('keyform').addEventListener('submit', ev => {
    ev.preventDefault();
    localStorage.setItem('segmenter.apikey', document.getElementById('apikey').value);
    document.getElementById('keyform').hidden = true;
    tick();
  });
  const params = new URLSearchParams(location.search);
  if (params.get('customer')) { document.getElementById('cid').value = params.get('customer'); explain(params.get('customer')); }
  tick();
  setInterval(refreshSizes, 2000);
  setInterval(refreshMatrix, 10000);
  setInterval(refreshRfm, 15000);
  setInterval(refreshHealth, 5000);
  setInterval(refreshDestinations, 5000);
  setInterval(refreshHistory, 15000);
  setInterval(refreshOverlap, 30000);
  setInterval(refreshPredictions, 15000);
  document.getElementById('predseg').addEventListener('change', refreshPredictions);
  document.getElementById('histseg').addEventListener('change', refreshHistory);
  document.getElementById('histgran').addEventListener('change', refreshHistory);
}

async function tick() {
  await refreshSizes();
  await Promise.all([refreshMatrix(), refreshRfm(), refreshHealth(), refreshDestinations(),
    refreshHistory(), refreshOverlap(), refreshPredictions()]);
}

init();
