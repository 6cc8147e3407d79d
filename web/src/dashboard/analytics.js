// Analytics: what viewers' players reported (GET /v1/analytics, per video
// and live stream): views, unique viewers, watch time, startup time and
// rebuffer ratio percentiles over time, and breakdowns by country, device,
// OS and browser.

import { h, replaceChildren } from '../common/dom.js';
import { chart } from './chart.js';
import { unavailable } from './operator.js';
import {
  analyticsPath, analyticsSeries, breakdownRows, formatCount, formatMs, formatRatio, formatWatch, itemKind, notAvailable, watchUnit, BREAKDOWNS, RANGES,
} from './reports.js';

const stat = (label, value, id) => h('div', { class: 'stat card', dataset: { stat: id } },
  h('span', { class: 'stat-value', text: value }), h('span', { class: 'stat-label', text: label }));

// shareBar is a small bar of a share of the views (set through the CSSOM:
// the pages' CSP allows no style attributes).
function shareBar(share) {
  const el = h('span', { class: 'share', title: `${formatRatio(share)} of views`, 'aria-hidden': 'true' });
  el.style.setProperty('--share', `${(share * 100).toFixed(1)}%`);
  return el;
}

export class AnalyticsSection {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.item = { kind: 'all', id: '' };
    this.range = '24h';
    this.titles = new Map(); // id -> title or name
    this.render();
  }

  render() {
    this.itemSelect = h('select', { id: 'analytics-item' }, h('option', { value: 'all:', text: 'All videos and live streams' }));
    this.rangeSelect = h('select', { id: 'analytics-range' }, Object.entries(RANGES).map(([k, r]) => h('option', { value: k, text: r.label })));
    this.itemSelect.addEventListener('change', () => {
      const [kind, id] = this.itemSelect.value.split(/:(.*)/s);
      this.select(kind, id);
      this.refresh();
    });
    this.rangeSelect.addEventListener('change', () => {
      this.range = this.rangeSelect.value;
      this.refresh();
    });
    this.body = h('div', { id: 'analytics-body', 'aria-live': 'polite', 'aria-busy': 'true' });
    replaceChildren(this.root,
      h('div', { class: 'panel-head' },
        h('h2', { text: 'Analytics' }),
        h('p', { class: 'muted', text: 'What the watch and embed players report: views, unique viewers, watch time, startup time and rebuffering. Countries come from the region header of the front proxy ("unknown" without one).' })),
      h('div', { class: 'form-row analytics-controls' },
        h('div', { class: 'field grow' }, h('label', { for: 'analytics-item', text: 'Video or live stream' }), this.itemSelect),
        h('div', { class: 'field' }, h('label', { for: 'analytics-range', text: 'Period' }), this.rangeSelect)),
      this.body);
  }

  // select shows an item ("all", or a video's or live stream's) and keeps
  // it in the address (#analytics/video/<id>), so that it can be linked to.
  select(kind, id) {
    this.item = kind === 'all' || !id ? { kind: 'all', id: '' } : { kind, id };
    const hash = this.item.kind === 'all' ? '#analytics' : `#analytics/${this.item.kind}/${encodeURIComponent(this.item.id)}`;
    if (location.hash !== hash) history.replaceState(null, '', hash);
  }

  // fromHash selects the item an address names (see select).
  fromHash(hash) {
    // Ids are letters and digits: anything else (a malformed address)
    // shows everything.
    const m = /^#analytics\/(video|live_stream)\/([a-z0-9]{1,64})$/.exec(hash);
    const item = m ? { kind: m[1], id: m[2] } : { kind: 'all', id: '' };
    if (item.kind !== this.item.kind || item.id !== this.item.id) this.item = item;
  }

  async refresh() {
    const item = this.item;
    const range = this.range;
    const path = analyticsPath(item.kind, item.id, range);
    let a;
    let all;
    try {
      [a, all] = await Promise.all([
        this.api.get(path),
        item.kind === 'all' ? null : this.api.get(analyticsPath('all', '', range)).catch(() => null),
        this.loadTitles(),
      ]);
    } catch (err) {
      if (item !== this.item || range !== this.range) return;
      this.body.removeAttribute('aria-busy');
      this.renderItems({ items: this.items || [] }); // the menu still names the item shown
      if (notAvailable(err)) {
        replaceChildren(this.body, unavailable(item.kind === 'all' ? 'Analytics are' : 'Analytics of this item are', err));
        return;
      }
      throw err;
    }
    if (item !== this.item || range !== this.range) return;
    this.renderItems((item.kind === 'all' ? a : all) || {});
    this.renderBody(a);
  }

  // loadTitles names the items with the titles of videos and names of
  // live streams (best effort).
  async loadTitles() {
    if (Date.now() - (this.titlesAt || 0) < 60000) return;
    this.titlesAt = Date.now();
    const [v, l] = await Promise.allSettled([this.api.get('/v1/videos'), this.api.get('/v1/live-streams')]);
    if (v.status === 'fulfilled') for (const x of (v.value && v.value.data) || []) this.titles.set(x.id, x.title || 'Untitled video');
    if (l.status === 'fulfilled') for (const x of (l.value && l.value.data) || []) this.titles.set(x.id, x.name);
  }

  label(it) {
    const kind = itemKind(it.kind) === 'live_stream' ? 'Live stream' : 'Video';
    const t = this.titles.get(it.id);
    return t ? `${kind}: ${t}` : `${kind} ${it.id}`;
  }

  // renderItems fills the item menu from the top items of the period.
  renderItems(all) {
    const items = Array.isArray(all.items) ? all.items : [];
    const current = `${this.item.kind}:${this.item.id}`;
    const opts = [h('option', { value: 'all:', text: 'All videos and live streams' })];
    const seen = new Set(['all:']);
    for (const it of items) {
      const v = `${itemKind(it.kind)}:${it.id}`;
      if (seen.has(v)) continue;
      seen.add(v);
      opts.push(h('option', { value: v, text: `${this.label(it)} (${formatCount(it.views)} views)` }));
    }
    if (!seen.has(current)) opts.push(h('option', { value: current, text: this.label(this.item) }));
    replaceChildren(this.itemSelect, opts);
    this.itemSelect.value = current;
    this.items = items;
  }

  renderBody(a) {
    this.body.removeAttribute('aria-busy');
    const t = a.totals || {};
    const s = analyticsSeries(a);
    const what = this.item.kind === 'all' ? 'all videos and live streams' : this.label(this.item);
    const fig = (caption, c) => h('figure', { class: 'card chart-card svg-chart' }, h('figcaption', {}, h('strong', { text: caption })), c);
    const unit = a.bucket === 'day' ? 'day' : 'hour';
    const wu = watchUnit(Math.max(0, ...s.watchSeconds));
    replaceChildren(this.body,
      h('div', { class: 'stat-row', id: 'analytics-totals' },
        stat('Views', formatCount(t.views), 'views'),
        stat('Unique viewers', formatCount(t.unique_viewers), 'unique'),
        stat('Watch time', formatWatch(t.watch_seconds), 'watch'),
        stat('Startup p50 / p95', `${formatMs(t.startup_ms && t.startup_ms.p50)} / ${formatMs(t.startup_ms && t.startup_ms.p95)}`, 'startup'),
        stat('Rebuffer ratio p50 / p95', `${formatRatio(t.rebuffer_ratio && t.rebuffer_ratio.p50)} / ${formatRatio(t.rebuffer_ratio && t.rebuffer_ratio.p95)}`, 'rebuffer'),
        stat('Rebuffers', `${formatCount(t.rebuffers)} · ${formatWatch(t.rebuffer_seconds)}`, 'rebuffers'),
        stat('Errors', formatCount(t.errors), 'errors'),
        stat('Objects verified / failed', `${formatCount(t.verified)} / ${formatCount(t.failed)}`, 'verified')),
      h('div', { class: 'charts analytics-charts' },
        fig(`Views per ${unit}`, chart({ kind: 'bar', title: `Views and unique viewers per ${unit}, ${what}`, labels: s.labels,
          series: [{ name: 'Views', values: s.views }, { name: 'Unique viewers', values: s.unique }], format: formatCount, integer: true })),
        fig(`Watch time per ${unit}`, chart({ kind: 'bar', title: `Watch time per ${unit} in ${wu.name}, ${what}`, labels: s.labels,
          series: [{ name: 'Watch time', values: s.watchSeconds.map((v) => v / wu.div) }], format: wu.format })),
        fig('Startup time', chart({ kind: 'line', title: `Startup time p50 and p95 per ${unit}, ${what}`, desc: 'From the play request to the first frame.', labels: s.labels,
          series: [{ name: 'p50', values: s.startupP50 }, { name: 'p95', values: s.startupP95 }], format: formatMs })),
        fig('Rebuffer ratio', chart({ kind: 'line', title: `Rebuffer ratio p50 and p95 per ${unit}, ${what}`, desc: 'Time stalled over time watched, per session.', labels: s.labels,
          series: [{ name: 'p50', values: s.rebufferP50 }, { name: 'p95', values: s.rebufferP95 }], format: formatRatio }))),
      h('div', { class: 'breakdowns' }, BREAKDOWNS.map(([dim, title]) => this.breakdown(a, dim, title))),
      this.item.kind === 'all' ? this.topItems() : null);
  }

  breakdown(a, dim, title) {
    const rows = breakdownRows(a, dim);
    return h('section', { class: 'card breakdown', dataset: { dim } },
      h('h3', { text: title }),
      rows.length
        ? h('table', { class: 'mini-table breakdown-table' },
          h('caption', { class: 'visually-hidden', text: `Views and watch time by ${dim === 'os' ? 'OS' : title.toLowerCase()}` }),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: title }), h('th', { scope: 'col', class: 'num', text: 'Views' }), h('th', { scope: 'col', class: 'num', text: 'Watch time' }))),
          h('tbody', {}, rows.slice(0, 10).map((r) => h('tr', { dataset: { value: r.value } },
            h('td', {}, shareBar(r.share), r.value),
            h('td', { class: 'num', text: formatCount(r.views) }),
            h('td', { class: 'num', text: formatWatch(r.watch_seconds) })))))
        : h('p', { class: 'muted', text: 'No views in this period.' }));
  }

  topItems() {
    const items = this.items || [];
    return h('section', { class: 'card top-items' },
      h('h3', { text: 'Most viewed' }),
      items.length
        ? h('table', { class: 'mini-table' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Video or live stream' }), h('th', { scope: 'col', class: 'num', text: 'Views' }), h('th', { scope: 'col', class: 'num', text: 'Watch time' }))),
          h('tbody', {}, items.map((it) => {
            const btn = h('button', { type: 'button', class: 'link-btn', text: this.label(it) });
            btn.addEventListener('click', () => {
              this.select(itemKind(it.kind), it.id);
              this.refresh();
            });
            return h('tr', { dataset: { id: it.id } }, h('td', {}, btn),
              h('td', { class: 'num', text: formatCount(it.views) }), h('td', { class: 'num', text: formatWatch(it.watch_seconds) }));
          })))
        : h('p', { class: 'muted', text: 'Nothing was watched in this period.' }));
  }
}
