/* The MIDAS report page: GET /v1/report, drawn as two tables.
 * body[data-ready] turns "1" once drawn; data-review-rows and data-perf-rows count the rows.
 * SPDX-License-Identifier: Apache-2.0 */
'use strict';

function esc(s) {
  return String(s).replace(/[&<>"']/g, c => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}
function pct(v, digits = 1) { return v === null || v === undefined ? '—' : (v * 100).toFixed(digits) + '%'; }
function signed(v) { return v === null || v === undefined ? '—' : (v >= 0 ? '+' : '') + (v * 100).toFixed(1) + ' pts'; }

async function load() {
  const meta = document.getElementById('meta');
  const headers = {};
  const key = localStorage.getItem('segmenter.apikey');
  if (key) headers.Authorization = 'Bearer ' + key;
  const r = await fetch('/v1/report', { headers });
  if (!r.ok) { meta.textContent = 'API answered ' + r.status; return; }
  const report = await r.json();
  meta.textContent = `${report.customers.toLocaleString()} customers · conversion: ${report.conversion_event} within ${report.window_days} days · ${report.active_primary_segments} active primary segments · rules ${report.rule_version}`;
  const review = report.segments.map(s => {
    const flags = s.flags.map(f => `<div title="${esc(f.reason)}"><strong>${esc(f.flag)}</strong>: ${esc(f.reason)}</div>`).join('');
    const overlap = s.largest_overlap ? `${esc(s.largest_overlap.segment)} (J=${s.largest_overlap.jaccard.toFixed(2)})` : '—';
    return `<tr><td>${esc(s.name)} <code>${esc(s.segment)}</code></td><td class="num">${s.size.toLocaleString()}</td>` +
      `<td class="num">${pct(s.share)}</td><td class="num">${pct(s.revenue_share)}</td>` +
      `<td class="num">${pct(s.growth_7d)}</td><td class="num">${pct(s.growth_30d)}</td><td class="num">${pct(s.reach, 0)}</td>` +
      `<td>${overlap}</td><td class="${s.flags.length ? 'flag' : 'good'}">${flags || 'ok'}</td></tr>`;
  });
  document.querySelector('#review tbody').innerHTML = review.join('');
  document.getElementById('packflags').innerHTML = report.flags.map(f =>
    `<p class="error"><strong>${esc(f.flag)}</strong>: ${esc(f.reason)}</p>`).join('');
  const perf = report.segments.filter(s => s.size > 0).map(s => {
    const p = s.performance;
    const ci = p.ci95 ? `${signed(p.ci95[0])} … ${signed(p.ci95[1])}` : '—';
    const lift = p.lift === null || p.lift === undefined ? '—' : pct(p.lift, 0);
    return `<tr><td><code>${esc(s.segment)}</code></td><td>${esc(p.comparison_group.replace('_', '-'))}</td>` +
      `<td class="num">${pct(p.rate)}</td><td class="num">${pct(p.comparison_rate)}</td><td class="num">${lift}</td>` +
      `<td class="num">${ci}</td><td class="${p.significant ? 'good' : ''}">${p.significant === null ? '—' : p.significant ? 'yes' : 'no'}</td></tr>`;
  });
  document.querySelector('#perf tbody').innerHTML = perf.join('');
  document.getElementById('perfmeta').textContent = `members against their holdout group, or against non-members (two-proportion z-test)`;
  document.body.dataset.reviewRows = String(review.length);
  document.body.dataset.perfRows = String(perf.length);
  document.body.dataset.ready = '1';
}

load();
