// The operator's parts of the nodes view: "Join as an edge" (issues a node
// token and shows the one command that runs an edge with it), a node's
// page (state, region, credited bytes per epoch, audits, the QoE of the
// viewers it served) and the reward report per epoch.

import { h, icon, replaceChildren, copyButton, toast } from '../common/dom.js';
import { chart } from './chart.js';
import {
  analyticsPath, confirmedBytes, epochCSVPath, epochLabel, epochRows, epochSpan, formatMs, formatRatio, formatWatch, formatCount,
  joinCommand, notAvailable, regionError, rowNode, usageChart, EDGE_URL_PLACEHOLDER,
} from './reports.js';
import { formatBytes, formatDate, timeAgo } from './ui.js';

// unavailable is the plain message shown where an endpoint is not there.
// On a 404 the endpoint is not there; otherwise the server's message says
// why.
export function unavailable(what, err) {
  const why = err && err.status !== 404 && err.message ? `: ${err.message}` : '.';
  return h('p', { class: 'muted unavailable', dataset: { status: String(err && err.status) }, text: `${what} not available on this server${why}` });
}

// failed is the message shown where loading something failed otherwise.
function failed(what, err) {
  return h('p', { class: 'form-error load-error', role: 'alert', text: `${what} could not be loaded: ${err.message}` });
}

// JoinPanel issues a node token with a name (and an optional region for the
// command) and shows the command to run an edge with it, once.
export class JoinPanel {
  constructor(api) {
    this.api = api;
    const name = h('input', { id: 'join-name', name: 'name', required: true, maxlength: 100, autocomplete: 'off', placeholder: 'edges eu-west' });
    const region = h('input', { id: 'join-region', name: 'region', maxlength: 64, autocomplete: 'off', placeholder: 'optional, e.g. eu-west', 'aria-describedby': 'join-region-help' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'join-submit' }, icon('plus'), 'Issue a node token');
    this.error = h('p', { class: 'form-error', id: 'join-error', role: 'alert', hidden: true });
    this.result = h('div', { class: 'join-result', id: 'join-result', hidden: true });
    const form = h('form', { class: 'create-form', id: 'join-form', novalidate: true },
      h('div', { class: 'form-row' },
        h('div', { class: 'field grow' }, h('label', { for: 'join-name', text: 'Token name' }), name),
        h('div', { class: 'field' }, h('label', { for: 'join-region', text: 'Region of the edge' }), region),
        submit),
      h('p', { class: 'muted small', id: 'join-region-help' },
        'The region lets viewers of that region be routed to the edge (', h('code', { text: 'SHOAL_REGION' }), '); leave it empty for none.'),
      this.error);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      this.error.hidden = true;
      const n = name.value.trim();
      if (!n) {
        this.showError('Name the token (e.g. who runs the edges it is for).');
        name.focus();
        return;
      }
      const bad = regionError(region.value);
      if (bad) {
        this.showError(bad);
        region.focus();
        return;
      }
      submit.disabled = true;
      try {
        const tok = await this.api.post('/v1/node-tokens', { name: n });
        name.value = '';
        this.show(tok, region.value.trim().toLowerCase());
      } catch (err) {
        this.showError(err.status === 403 ? 'Issuing node tokens needs the admin key (sign in with SHOAL_ADMIN_KEY).' : err.message);
      } finally {
        submit.disabled = false;
      }
    });
    this.el = h('section', { class: 'card join-edge', id: 'join-edge', 'aria-labelledby': 'join-edge-title' },
      h('h3', { id: 'join-edge-title', text: 'Join as an edge' }),
      h('p', { class: 'muted' }, 'Anyone can run an edge: a cache near viewers that joins this origin with a node token and serves the same ',
        h('code', { text: '/hls/' }), ' paths. Issue a token here, then run the command it gives on the edge machine.'),
      form, this.result);
  }

  showError(msg) {
    this.error.textContent = msg;
    this.error.hidden = false;
  }

  // show displays a token just issued and the command that uses it. The
  // token is kept nowhere else: it goes when the panel is closed.
  show(tok, region) {
    const cmd = joinCommand({ origin: location.origin, token: tok.token, region });
    const close = h('button', { type: 'button', class: 'btn btn-sm btn-ghost', id: 'join-done', text: 'Done, hide it' });
    close.addEventListener('click', () => {
      replaceChildren(this.result);
      this.result.hidden = true;
    });
    const copy = copyButton('Copy the command', () => cmd, { class: 'btn-primary', done: 'Command copied', ariaLabel: 'Copy the command to run an edge' });
    replaceChildren(this.result,
      h('p', {}, h('strong', { text: `Node token “${tok.name}” issued. ` }), 'Run this on the edge machine:'),
      h('pre', { class: 'cmd' }, h('code', { id: 'join-command', dataset: { tokenId: tok.id }, text: cmd })),
      h('div', { class: 'card-actions' }, copy, close),
      h('ul', { class: 'muted small join-notes' },
        h('li', {}, 'Replace ', h('code', { text: EDGE_URL_PLACEHOLDER }), ' with the URL viewers reach the edge at (', h('code', { text: 'SHOAL_PUBLIC_URL' }),
          '); the edge listens on ', h('code', { text: 'SHOAL_EDGE_ADDR' }), ' and keeps its node key and disk cache in ', h('code', { text: 'SHOAL_DATA_DIR' }), '.'),
        h('li', {}, h('code', { text: 'shoal' }), ' is the Shoal binary (', h('code', { text: 'bin/shoal' }), ' in a source build). The edge appears in the table below within seconds of starting.'),
        h('li', {}, 'Revoke the token with ', h('code', { text: `DELETE /v1/node-tokens/${tok.id}` }), ': its edges leave within 7 seconds.')),
      h('p', { class: 'key-once', role: 'status', text: 'The token is shown only this once: copy the command now. Only its hash is stored.' }));
    this.result.hidden = false;
    copy.focus();
  }
}

const stat = (label, value, id) => h('div', { class: 'stat card', dataset: id ? { stat: id } : undefined },
  h('span', { class: 'stat-value', text: value }), h('span', { class: 'stat-label', text: label }));

// NodeDetail is one node's page, opened from the nodes table.
export class NodeDetail {
  constructor(api, onClose) {
    this.api = api;
    this.el = h('section', { class: 'card node-detail', id: 'node-detail', hidden: true, 'aria-labelledby': 'node-detail-title' });
    this.onClose = onClose;
  }

  // open shows the node with id (node: its entry in GET /v1/nodes).
  async open(id, node) {
    this.id = id;
    this.node = node;
    this.heading = h('h3', { id: 'node-detail-title', tabindex: '-1' }, 'Node ', h('code', { text: id }));
    const close = h('button', { type: 'button', class: 'btn btn-sm btn-ghost', 'aria-label': 'Close the node page' }, icon('close'), 'Close');
    close.addEventListener('click', () => this.close());
    const reload = h('button', { type: 'button', class: 'btn btn-sm', id: 'node-detail-reload' }, icon('refresh'), 'Reload');
    reload.addEventListener('click', () => this.load());
    this.info = h('div', { class: 'node-info' });
    this.usage = h('div', { class: 'node-usage', id: 'node-usage', 'aria-busy': 'true' });
    this.qoe = h('div', { class: 'node-qoe', id: 'node-qoe', 'aria-busy': 'true' });
    replaceChildren(this.el,
      h('div', { class: 'card-head' }, this.heading, h('span', { class: 'spacer' }), reload, close),
      this.info,
      h('h4', { text: 'Credited bytes per epoch' }),
      h('p', { class: 'muted small', text: 'Credited bytes are the bytes viewers and audits confirmed, never more than the node claimed.' }),
      this.usage,
      h('h4', { text: 'Viewers it served (last 24 hours)' }),
      this.qoe);
    this.el.hidden = false;
    this.renderInfo();
    this.heading.focus({ preventScroll: true });
    this.el.scrollIntoView({ block: 'nearest' });
    await this.load();
  }

  close() {
    this.id = null;
    this.el.hidden = true;
    replaceChildren(this.el);
    if (this.onClose) this.onClose();
  }

  // update takes the node's latest entry in GET /v1/nodes (undefined: it
  // left the registry) and reloads the figures now and then.
  update(nodes) {
    if (!this.id) return;
    this.node = nodes.find((n) => n.id === this.id);
    this.renderInfo();
    if (Date.now() - (this.loadedAt || 0) > 60000) this.load();
  }

  renderInfo() {
    const n = this.node;
    if (!n) {
      replaceChildren(this.info, h('p', { class: 'muted', dataset: { state: 'gone' }, text: 'This node is not in the registry now (it stopped or left). Its past epochs are below.' }));
      return;
    }
    const a = n.audits;
    const audits = a
      ? [`${a.passed} passed, ${a.failed} failed` + (a.errors ? `, ${a.errors} errors` : ''),
        h('span', { class: 'muted small', text: `latest: ${a.last_result}${a.last_result === 'error' ? '' : `, first byte in ${a.ttfb_ms} ms`} — ${a.last_finding || ''}` })]
      : h('span', { class: 'muted', text: 'no audit yet' });
    const state = n.state === 'quarantined'
      ? [h('span', { class: 'badge badge-bad', text: 'quarantined' }), h('span', { class: 'muted small', text: n.quarantine_reason || '' })]
      : h('span', { class: 'badge badge-ok', text: n.state || 'active' });
    replaceChildren(this.info, h('dl', { class: 'kv', dataset: { state: n.state || 'active' } },
      h('dt', { text: 'State' }), h('dd', { class: 'node-state-value' }, state),
      h('dt', { text: 'Region' }), h('dd', { class: 'node-region', text: n.region || '—' }),
      h('dt', { text: 'Role' }), h('dd', { text: n.role || 'edge' }),
      h('dt', { text: 'Public URL' }), h('dd', {}, h('a', { href: n.public_url, target: '_blank', rel: 'noopener', text: n.public_url })),
      h('dt', { text: 'Joined' }), h('dd', { text: n.joined_at ? formatDate(n.joined_at) : '—' }),
      h('dt', { text: 'Last heartbeat' }), h('dd', { text: timeAgo(n.last_heartbeat) }),
      h('dt', { text: 'Served (claimed)' }), h('dd', { text: formatBytes(n.bytes_served) }),
      h('dt', { text: 'Audits' }), h('dd', { class: 'node-audits' }, audits)));
  }

  async load() {
    const id = this.id;
    if (!id) return;
    this.loadedAt = Date.now();
    const enc = encodeURIComponent(id);
    const [usage, qoe] = await Promise.allSettled([this.api.get(`/v1/nodes/${enc}/usage`), this.api.get(analyticsPath('node', id, '24h'))]);
    if (this.id !== id) return;
    this.renderUsage(usage);
    this.renderQoE(qoe);
  }

  renderUsage(res) {
    this.usage.removeAttribute('aria-busy');
    if (res.status === 'rejected') {
      replaceChildren(this.usage, notAvailable(res.reason) ? unavailable('Per-epoch usage is', res.reason) : failed('Usage', res.reason));
      return;
    }
    const c = usageChart(res.value);
    const rows = c.rows.slice().reverse();
    replaceChildren(this.usage,
      h('figure', { class: 'chart-card svg-chart' },
        chart({ kind: 'bar', title: `Credited and claimed bytes per epoch of node ${this.id.slice(0, 8)}`, desc: 'Epochs are in UTC.', labels: c.labels, series: c.series, format: formatBytes })),
      rows.length
        ? h('div', { class: 'table-scroll' }, h('table', { class: 'nodes-table usage-table' },
          h('caption', { class: 'visually-hidden', text: 'The node\'s figures per epoch, newest first' }),
          h('thead', {}, h('tr', {}, ['Epoch (UTC)', 'Claimed', 'Confirmed', 'Credited', 'Audit pass rate', 'Uptime', 'Points']
            .map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })))),
          h('tbody', {}, rows.map((r) => h('tr', { dataset: { epoch: r.epoch || '' } },
            h('td', { 'data-label': 'Epoch' }, epochLabel(r.epoch || r.start), r.final === false ? h('span', { class: 'badge badge-warn', text: 'open' }) : null),
            h('td', { 'data-label': 'Claimed', class: 'num', text: formatBytes(r.claimed_bytes) }),
            h('td', { 'data-label': 'Confirmed', class: 'num', text: formatBytes(confirmedBytes(r)) }),
            h('td', { 'data-label': 'Credited', class: 'num credited', text: formatBytes(r.credited_bytes) }),
            h('td', { 'data-label': 'Audit pass rate', class: 'num', text: formatRatio(r.audit_pass_rate) }),
            h('td', { 'data-label': 'Uptime', class: 'num', text: formatWatch(r.uptime_seconds) }),
            h('td', { 'data-label': 'Points', class: 'num', text: formatCount(r.reward_points) }))))))
        : h('p', { class: 'muted', text: 'No epochs with figures for this node yet.' }));
  }

  renderQoE(res) {
    this.qoe.removeAttribute('aria-busy');
    if (res.status === 'rejected') {
      replaceChildren(this.qoe, notAvailable(res.reason) ? unavailable('Viewer analytics are', res.reason) : failed('Viewer analytics', res.reason));
      return;
    }
    const t = res.value.totals || {};
    replaceChildren(this.qoe, h('div', { class: 'stat-row' },
      stat('Sessions', formatCount(t.views), 'views'),
      stat('Watch time', formatWatch(t.watch_seconds), 'watch'),
      stat('Startup p50 / p95', `${formatMs(t.startup_ms && t.startup_ms.p50)} / ${formatMs(t.startup_ms && t.startup_ms.p95)}`, 'startup'),
      stat('Rebuffer ratio p50 / p95', `${formatRatio(t.rebuffer_ratio && t.rebuffer_ratio.p50)} / ${formatRatio(t.rebuffer_ratio && t.rebuffer_ratio.p95)}`, 'rebuffer')));
  }
}

// EpochsPanel lists the reward epochs and shows one's report per node.
export class EpochsPanel {
  constructor(api, nameOf) {
    this.api = api;
    this.nameOf = nameOf || ((id) => id.slice(0, 8));
    this.list = h('div', { class: 'epochs-list', id: 'epochs-list' });
    this.report = h('div', { class: 'epoch-report', id: 'epoch-report' });
    // Folded until opened: the reports are loaded only while it is open.
    this.el = h('details', { class: 'card epochs', id: 'epochs' },
      h('summary', {}, h('h3', { id: 'epochs-title', text: 'Rewards per epoch' })),
      h('p', { class: 'muted' }, 'Per epoch and node: the bytes it claimed, those viewers and audits confirmed, those credited, and its share of the reward pool (points, weighted by its audit pass rate). Each report is signed by this origin (',
        h('code', { text: 'Shoal-Signature' }), ', key in ', h('code', { text: '/v1/keys' }), ').'),
      this.list, this.report);
    this.el.addEventListener('toggle', () => {
      if (this.el.open) this.refresh(true);
    });
  }

  async refresh(force) {
    if (!this.el.open) return;
    if (!force && Date.now() - (this.loadedAt || 0) < 60000) return;
    this.loadedAt = Date.now();
    let epochs;
    try {
      epochs = await this.api.get('/v1/operators/epochs');
    } catch (err) {
      replaceChildren(this.list, notAvailable(err) ? unavailable('Epoch reports are', err) : failed('Epochs', err));
      return;
    }
    epochs = (epochs && epochs.data) || [];
    if (!epochs.length) {
      replaceChildren(this.list, h('p', { class: 'muted', text: 'No epochs yet.' }));
      return;
    }
    replaceChildren(this.list, h('div', { class: 'table-scroll' }, h('table', { class: 'nodes-table epochs-table' },
      h('caption', { class: 'visually-hidden', text: 'Reward epochs, newest first' }),
      h('thead', {}, h('tr', {}, ['Epoch (UTC)', 'Status', 'Nodes', 'Credited'].map((t, i) => h('th', { scope: 'col', class: i === 2 || i === 3 ? 'num' : null, text: t })),
        h('th', { scope: 'col' }, h('span', { class: 'visually-hidden', text: 'Report' })))),
      h('tbody', {}, epochs.map((e) => {
        const btn = h('button', { type: 'button', class: 'btn btn-sm epoch-open', 'aria-label': `Show the report of epoch ${epochLabel(e.epoch)}`, text: 'Report' });
        btn.addEventListener('click', () => this.open(e.epoch));
        return h('tr', { dataset: { epoch: e.epoch } },
          h('td', { 'data-label': 'Epoch', title: `${e.start} to ${e.end}`, text: epochSpan(e) }),
          h('td', { 'data-label': 'Status' }, e.final ? h('span', { class: 'badge badge-ok', text: 'final' }) : h('span', { class: 'badge badge-warn', text: 'open' })),
          h('td', { 'data-label': 'Nodes', class: 'num', text: String(e.nodes || 0) }),
          h('td', { 'data-label': 'Credited', class: 'num', text: formatBytes(e.credited_bytes) }),
          h('td', {}, btn));
      })))));
  }

  async open(epoch) {
    replaceChildren(this.report, h('p', { class: 'muted', text: 'Loading…' }));
    let rep;
    try {
      rep = await this.api.get(`/v1/operators/epochs/${encodeURIComponent(epoch)}`);
    } catch (err) {
      replaceChildren(this.report, notAvailable(err) ? unavailable('This epoch\'s report is', err) : failed('The report', err));
      return;
    }
    const csv = h('button', { type: 'button', class: 'btn btn-sm', id: 'epoch-csv', text: 'Download CSV' });
    csv.addEventListener('click', () => this.download(epoch, csv));
    const rows = epochRows(rep);
    replaceChildren(this.report,
      h('div', { class: 'card-head' },
        h('h4', { id: 'epoch-report-title', text: `Epoch ${epochLabel(rep.epoch)} UTC` }),
        rep.final ? h('span', { class: 'badge badge-ok', text: 'final' }) : h('span', { class: 'badge badge-warn', title: 'Still counting: figures may grow until the epoch is sealed', text: 'open' }),
        h('span', { class: 'spacer' }), csv),
      h('p', { class: 'muted small', text: `Reward pool ${formatCount(rep.reward_pool)} points` + (rep.generated_at ? ` · generated ${formatDate(rep.generated_at)}` : '') + (rep.key_id ? ` · signed with key ${rep.key_id}` : '') }),
      rows.length
        ? h('div', { class: 'table-scroll' }, h('table', { class: 'nodes-table epoch-rows', 'aria-labelledby': 'epoch-report-title' },
          h('thead', {}, h('tr', {}, ['Node', 'Region', 'State', 'Claimed', 'Confirmed', 'Credited', 'Audits', 'Uptime', 'Points']
            .map((t, i) => h('th', { scope: 'col', class: i >= 3 ? 'num' : null, text: t })))),
          h('tbody', {}, rows.map((r) => h('tr', { dataset: { node: rowNode(r) } },
            h('td', { 'data-label': 'Node' }, h('code', { title: rowNode(r), text: this.nameOf(rowNode(r)) })),
            h('td', { 'data-label': 'Region', text: r.region || '—' }),
            h('td', { 'data-label': 'State', text: r.state || '—' }),
            h('td', { 'data-label': 'Claimed', class: 'num', text: formatBytes(r.claimed_bytes) }),
            h('td', { 'data-label': 'Confirmed', class: 'num', title: `viewers ${formatBytes(r.viewer_bytes)}, audits ${formatBytes(r.audit_bytes)}`, text: formatBytes(confirmedBytes(r)) }),
            h('td', { 'data-label': 'Credited', class: 'num', text: formatBytes(r.credited_bytes) }),
            h('td', { 'data-label': 'Audits', class: 'num', title: `${r.audits_passed || 0} passed, ${r.audits_failed || 0} failed`, text: formatRatio(r.audit_pass_rate) }),
            h('td', { 'data-label': 'Uptime', class: 'num', text: formatWatch(r.uptime_seconds) }),
            h('td', { 'data-label': 'Points', class: 'num points', text: formatCount(r.reward_points) }))))))
        : h('p', { class: 'muted', text: 'No node served in this epoch.' }));
  }

  // download fetches the CSV with the API key (a link could not carry it)
  // and saves it.
  async download(epoch, btn) {
    btn.disabled = true;
    try {
      const text = await this.api.text(epochCSVPath(epoch));
      const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
      const a = h('a', { href: url, download: `shoal-epoch-${epoch}.csv`, hidden: true });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      toast(notAvailable(err) ? 'CSV reports are not available on this server.' : err.message, 'error');
    } finally {
      btn.disabled = false;
    }
  }
}
