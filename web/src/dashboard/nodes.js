// Nodes: the edges in the registry (GET /v1/nodes) and charts of their
// egress and cache hit ratio over time. The API gives only the current
// figures, so the charts are sampled here, in the browser, while the
// dashboard is open: they start empty and cover this session only. The
// origins and workers GET /v1/nodes lists after the edges have a table of
// their own (what they transcode with); they are never in the edges'
// table, totals or charts.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h, replaceChildren } from '../common/dom.js';
import { formatBitrate, formatBytes, timeAgo } from './ui.js';
import { EpochsPanel, JoinPanel, NodeDetail } from './operator.js';

const MAX_SAMPLES = 720; // an hour at 5 s
const COLORS = ['#2dd4bf', '#60a5fa', '#f472b6', '#fbbf24', '#a78bfa', '#34d399', '#fb7185', '#38bdf8', '#facc15', '#c084fc'];

// compactBits formats an axis value in bits per second ("20 Mb/s").
function compactBits(v) {
  if (v == null) return '';
  const units = ['b/s', 'kb/s', 'Mb/s', 'Gb/s'];
  let i = 0;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}

// clock formats a Unix time (seconds) as a wall-clock time.
function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

export class NodesSection {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.samples = []; // {t (s), nodes: Map(id -> {egress, hit})}
    this.names = new Map(); // id -> label
    this.charts = {};
    this.render();
  }

  render() {
    this.detail = new NodeDetail(this.api, () => this.markSelected());
    this.join = new JoinPanel(this.api);
    this.epochs = new EpochsPanel(this.api, (id) => this.names.get(id) || id.slice(0, 8));
    this.tbody = h('tbody', {});
    this.table = h('table', { class: 'nodes-table', id: 'nodes-table' },
      h('caption', { class: 'visually-hidden', text: 'Edge nodes in the registry' }),
      h('thead', {}, h('tr', {},
        ['Node', 'State', 'Region', 'Public URL', 'Viewers', 'Egress', 'Cache', 'Hit ratio', 'Origin fetches', 'Audits', 'Last heartbeat']
          .map((t, i) => h('th', { scope: 'col', class: i >= 4 && i <= 8 ? 'num' : null, text: t })))),
      this.tbody);
    this.empty = h('div', { class: 'empty', hidden: true },
      h('p', {}, h('strong', { text: 'No edge nodes have joined.' }), ' The origin serves every viewer itself until edges join.'),
      h('p', { class: 'muted' }, 'Start one with ', h('code', { text: 'SHOAL_ORIGIN_URL=… SHOAL_NODE_TOKEN=… shoal edge' }),
        ': “Join as an edge” below issues the token and gives the whole command.'));
    this.serversBody = h('tbody', {});
    this.servers = h('section', { class: 'card table-card servers', id: 'servers', 'aria-labelledby': 'servers-title', hidden: true },
      h('div', { class: 'card-head' }, h('h3', { id: 'servers-title', text: 'Origins and workers' })),
      h('p', { class: 'muted small', text: 'This deployment\'s own processes (they share its Redis and are never routed to): what each transcodes with, as its hardware probe and self-benchmark found.' }),
      h('div', { class: 'table-scroll' }, h('table', { class: 'nodes-table', id: 'servers-table' },
        h('caption', { class: 'visually-hidden', text: 'Origins and workers' }),
        h('thead', {}, h('tr', {},
          ['Node', 'Role', 'Region', 'Public URL', 'Encoder', 'Decode', 'GPUs', 'Ladders', 'Last seen']
            .map((t, i) => h('th', { scope: 'col', class: i === 7 ? 'num' : null, text: t })))),
        this.serversBody)));
    this.egressBox = h('div', { class: 'chart', id: 'chart-egress', role: 'img', 'aria-label': 'Egress by node over time' });
    this.hitBox = h('div', { class: 'chart', id: 'chart-hits', role: 'img', 'aria-label': 'Cache hit ratio by node over time' });
    this.totals = h('div', { class: 'stat-row', id: 'node-totals' });
    replaceChildren(this.root,
      h('div', { class: 'panel-head' },
        h('h2', { text: 'Nodes and traffic' }),
        h('p', { class: 'muted', text: 'Edges join the origin, heartbeat every 2 s, and leave the list 7 s after their last heartbeat. Origins and workers are listed below the edges.' })),
      this.totals,
      h('div', { class: 'charts' },
        h('figure', { class: 'card chart-card' },
          h('figcaption', {}, h('strong', { text: 'Egress by node' }), h('span', { class: 'muted', text: ' · bits per second' })),
          this.egressBox),
        h('figure', { class: 'card chart-card' },
          h('figcaption', {}, h('strong', { text: 'Cache hit ratio by node' }), h('span', { class: 'muted', text: ' · share of requests served from cache' })),
          this.hitBox)),
      h('p', { class: 'muted small chart-note' },
        'Charts are sampled every 5 s by this page from ', h('code', { text: 'GET /v1/nodes' }),
        ' while it is open; they are not stored.'),
      h('div', { class: 'notice', id: 'no-viewer-data' },
        h('strong', { text: 'What these figures are. ' }),
        'Viewers, egress and cache are what each edge reports (viewers: distinct addresses in the last 30 s). Audits are the origin\'s own: it fetches a random segment from each edge as a viewer would and compares it with what it published. What viewers share with each other (P2P) is per stream and video: ',
        h('code', { text: 'p2p_stats' }), ' in the API.'),
      h('div', { class: 'card table-card' }, this.empty, h('div', { class: 'table-scroll' }, this.table)),
      this.detail.el,
      this.servers,
      this.join.el,
      this.epochs.el);
    const ro = new ResizeObserver(() => this.resize());
    ro.observe(this.egressBox);
  }

  async refresh() {
    const data = await this.api.get('/v1/nodes');
    // Edges (joined nodes); origins and workers apart.
    const nodes = data.data.filter((n) => isEdge(n));
    this.renderServers(data.data.filter((n) => !isEdge(n)));
    this.renderTable(nodes);
    this.detail.update(nodes);
    this.epochs.refresh();
    this.sample(nodes);
    this.renderTotals(nodes);
    this.renderCharts();
  }

  renderTable(nodes) {
    this.empty.hidden = nodes.length > 0;
    this.table.hidden = nodes.length === 0;
    const rows = nodes.map((n) => h('tr', { dataset: { id: n.id, state: n.state || 'active' }, class: n.id === this.detail.id ? 'selected' : null },
      h('td', { 'data-label': 'Node' }, this.openButton(n)),
      h('td', { 'data-label': 'State' }, this.stateCell(n)),
      h('td', { 'data-label': 'Region', text: n.region || '—' }),
      h('td', { 'data-label': 'Public URL' }, h('a', { href: n.public_url, target: '_blank', rel: 'noopener', text: n.public_url })),
      h('td', { 'data-label': 'Viewers', class: 'num', text: String(n.viewers || 0) }),
      h('td', { 'data-label': 'Egress', class: 'num', text: formatBitrate(n.egress_bytes_per_sec) }),
      h('td', { 'data-label': 'Cache', class: 'num', text: formatBytes(n.cache_bytes) }),
      h('td', { 'data-label': 'Hit ratio', class: 'num', text: `${(n.hit_ratio * 100).toFixed(1)}%` }),
      h('td', { 'data-label': 'Origin fetches', class: 'num', text: String(n.origin_fetches) }),
      h('td', { 'data-label': 'Audits', class: 'audits' }, auditCell(n.audits)),
      h('td', { 'data-label': 'Last heartbeat', title: n.last_heartbeat, text: timeAgo(n.last_heartbeat) })));
    replaceChildren(this.tbody, rows);
  }

  // renderServers lists the origins and workers with what they transcode
  // with.
  renderServers(list) {
    this.servers.hidden = list.length === 0;
    replaceChildren(this.serversBody, list.map((n) => {
      const tc = n.transcode;
      const gpus = tc && tc.gpus && tc.gpus.length
        ? tc.gpus.map((g) => `${g.name}${g.nvenc ? ` (NVENC ×${g.nvenc_sessions})` : ' (no NVENC)'}`).join(', ')
        : '—';
      const ladders = tc ? `${tc.ladders} (${tc.ladders_from})` : '—';
      return h('tr', { dataset: { id: n.id, role: n.role } },
        h('td', { 'data-label': 'Node' }, h('code', { title: n.id, text: n.id })),
        h('td', { 'data-label': 'Role', text: n.role }),
        h('td', { 'data-label': 'Region', text: n.region || '—' }),
        h('td', { 'data-label': 'Public URL' }, n.public_url
          ? h('a', { href: n.public_url, target: '_blank', rel: 'noopener', text: n.public_url })
          : h('span', { class: 'muted', text: '—' })),
        h('td', { 'data-label': 'Encoder', class: 'transcode-encoder', title: tc ? tc.summary : 'does not transcode', text: tc ? tc.encoder : 'does not transcode' }),
        h('td', { 'data-label': 'Decode', text: tc ? tc.decode : '—' }),
        h('td', { 'data-label': 'GPUs', text: gpus }),
        h('td', { 'data-label': 'Ladders', class: 'num transcode-ladders', text: ladders }),
        h('td', { 'data-label': 'Last seen', title: n.last_heartbeat, text: timeAgo(n.last_heartbeat) }));
    }));
  }

  // openButton opens the node's page.
  openButton(n) {
    const btn = h('button', { type: 'button', class: 'link-btn node-open', title: n.id, 'aria-label': `Open node ${n.id}`, 'aria-controls': 'node-detail' },
      h('code', { text: n.id.slice(0, 8) }));
    btn.addEventListener('click', () => {
      this.detail.open(n.id, n);
      this.markSelected();
    });
    return btn;
  }

  markSelected() {
    for (const tr of this.tbody.querySelectorAll('tr')) tr.classList.toggle('selected', tr.dataset.id === this.detail.id);
  }

  // stateCell shows whether the node is routed to; a quarantined one has
  // its reason and a button that releases it.
  stateCell(n) {
    if (n.state !== 'quarantined') {
      const reports = (n.delivery_reports || []).length;
      return h('span', { class: 'badge badge-muted', title: reports ? `${reports} recent delivery reports` : 'no delivery reports', text: 'active' });
    }
    const btn = h('button', { type: 'button', class: 'btn btn-small', text: 'Release' });
    btn.addEventListener('click', async () => {
      btn.disabled = true;
      try {
        await this.api.post(`/v1/nodes/${encodeURIComponent(n.id)}/release`);
        await this.refresh();
      } catch {
        btn.disabled = false;
      }
    });
    return h('span', { class: 'node-state' },
      h('span', { class: 'badge badge-bad', title: n.quarantine_reason || '', text: 'quarantined' }), ' ', btn,
      h('span', { class: 'muted small quarantine-reason', text: n.quarantine_reason || '' }));
  }

  renderTotals(nodes) {
    const egress = nodes.reduce((s, n) => s + (n.egress_bytes_per_sec || 0), 0);
    const conns = nodes.reduce((s, n) => s + (n.connections || 0), 0);
    const served = nodes.reduce((s, n) => s + (n.bytes_served || 0), 0);
    const stat = (label, value) => h('div', { class: 'stat card' }, h('span', { class: 'stat-value', text: value }), h('span', { class: 'stat-label', text: label }));
    replaceChildren(this.totals,
      stat('Edge nodes', String(nodes.length)),
      stat('Edge egress now', formatBitrate(egress)),
      stat('Connections', String(conns)),
      stat('Served by edges', formatBytes(served)));
  }

  sample(nodes) {
    const m = new Map();
    for (const n of nodes) {
      m.set(n.id, { egress: (n.egress_bytes_per_sec || 0) * 8, hit: n.hit_ratio });
      this.names.set(n.id, `${n.id.slice(0, 8)}${n.region ? ' (' + n.region + ')' : ''}`);
    }
    this.samples.push({ t: Date.now() / 1000, nodes: m });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
  }

  // series returns the node ids seen in the samples kept.
  seriesIDs() {
    const ids = [];
    const seen = new Set();
    for (const s of this.samples) {
      for (const id of s.nodes.keys()) {
        if (!seen.has(id)) {
          seen.add(id);
          ids.push(id);
        }
      }
    }
    return ids;
  }

  renderCharts() {
    const ids = this.seriesIDs();
    const xs = this.samples.map((s) => s.t);
    const col = (key) => ids.map((id) => this.samples.map((s) => (s.nodes.has(id) ? s.nodes.get(id)[key] : null)));
    this.drawChart('egress', this.egressBox, ids, [xs, ...col('egress')], (v) => (v == null ? '' : formatBitrate(v / 8)), null, compactBits);
    this.drawChart('hit', this.hitBox, ids, [xs, ...col('hit')], (v) => (v == null ? '' : `${Math.round(v * 100)}%`), [0, 1]);
  }

  drawChart(name, box, ids, data, fmt, range, axisFmt) {
    const key = ids.join(',');
    let c = this.charts[name];
    if (c && c.key !== key) {
      c.plot.destroy();
      c = null;
    }
    if (!c) {
      box.textContent = '';
      const width = Math.max(240, box.clientWidth || 600);
      const axisColor = '#9aa6b2';
      const grid = { stroke: 'rgba(255,255,255,.07)', width: 1 };
      const opts = {
        width,
        height: 220,
        cursor: { drag: { x: false, y: false } },
        legend: { show: ids.length > 0, live: false },
        scales: {
          // At least the last minute, so that the time axis reads well from the first samples.
          x: { time: true, range: (_u, min, max) => [Math.min(min, max - 60), max] },
          y: range ? { range: () => range } : { range: (_u, _min, max) => [0, Math.max(1e6, max * 1.15)] },
        },
        axes: [
          { stroke: axisColor, grid, ticks: grid, space: 70, values: (_u, vals) => vals.map(clock) },
          { stroke: axisColor, grid, ticks: grid, size: 84, values: (_u, vals) => vals.map(axisFmt || fmt) },
        ],
        series: [{}, ...ids.map((id, i) => ({
          label: this.names.get(id) || id.slice(0, 8),
          stroke: COLORS[i % COLORS.length],
          width: 2,
          spanGaps: false,
          points: { show: false },
          value: (_u, v) => fmt(v),
        }))],
      };
      const plot = new uPlot(opts, data, box);
      c = { plot, key };
      this.charts[name] = c;
      box.classList.toggle('is-empty', ids.length === 0);
      if (ids.length === 0) {
        box.append(h('p', { class: 'chart-empty', text: 'No edge nodes yet: nothing to chart.' }));
      }
      return;
    }
    c.plot.setData(data);
  }

  resize() {
    for (const name of Object.keys(this.charts)) {
      const box = name === 'egress' ? this.egressBox : this.hitBox;
      const w = box.clientWidth;
      if (w > 0) this.charts[name].plot.setSize({ width: w, height: 220 });
    }
  }
}

// isEdge tells a joined edge from the origins and workers GET /v1/nodes
// lists after the edges.
function isEdge(n) {
  return !n.role || n.role === 'edge';
}

// auditCell shows what the origin's audits of an edge found: passed and
// failed counts, the latest finding as the title.
export function auditCell(a) {
  if (!a) return h('span', { class: 'muted', text: 'not yet' });
  const text = `${a.passed} passed` + (a.failed ? ` · ${a.failed} failed` : '') + (a.errors ? ` · ${a.errors} errors` : '');
  const ttfb = a.last_result === 'error' ? '' : `, first byte in ${a.ttfb_ms} ms`;
  return h('span', { class: a.failed ? 'audit-failed' : null, title: `latest (${a.last_result}${ttfb}): ${a.last_finding}`, text });
}
