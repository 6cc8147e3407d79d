// What the operator and analytics views make of the API's JSON, with no
// DOM: the edge's join command, epoch reports, a node's usage and QoE,
// analytics series and breakdowns. Tested with canned answers
// (reports.test.mjs).

// EDGE_URL_PLACEHOLDER stands in the join command for the URL viewers will
// reach the new edge at: only its operator knows it.
export const EDGE_URL_PLACEHOLDER = 'http://EDGE-HOST:8081';

// shellQuote quotes a value for a POSIX shell when it needs it.
export function shellQuote(v) {
  v = String(v);
  if (/^[A-Za-z0-9_.:/@%+=,-]+$/.test(v)) return v;
  return `'${v.replace(/'/g, `'\\''`)}'`;
}

// regionError says what is wrong with a node region as the origin checks
// it on join (letters, digits, '-' and '_', at most 64; case is ignored),
// or '' when it is fine (empty: no region).
export function regionError(region) {
  const r = String(region || '').trim();
  if (r.length > 64) return 'The region must be at most 64 characters.';
  if (!/^[A-Za-z0-9_-]*$/.test(r)) return 'The region may hold only letters, digits, “-” and “_” (e.g. eu-west).';
  return '';
}

// joinEnv lists the environment of `shoal edge` for a new edge, in order:
// the origin it joins, the token, its region (when given), the URL viewers
// reach it at (a placeholder), its listen address and its data directory
// (its node key and disk cache).
export function joinEnv({ origin, token, region }) {
  const env = [['SHOAL_ORIGIN_URL', origin.replace(/\/+$/, '')], ['SHOAL_NODE_TOKEN', token]];
  if (region) env.push(['SHOAL_REGION', region]);
  env.push(['SHOAL_PUBLIC_URL', EDGE_URL_PLACEHOLDER], ['SHOAL_EDGE_ADDR', ':8081'], ['SHOAL_DATA_DIR', './edge-data']);
  return env;
}

// joinCommand is the one command that runs an edge joined with token.
export function joinCommand(opts) {
  return joinEnv(opts).map(([k, v]) => `${k}=${shellQuote(v)}`).join(' ') + ' shoal edge';
}

// notAvailable tells whether an API error means the endpoint (or the
// figures asked for) is not there: this server does not have it (yet), or
// has it turned off (503, e.g. delivery accounting without a signing key).
export function notAvailable(err) {
  return !!err && [404, 405, 501, 503].includes(err.status);
}

// epochLabel formats an epoch id ("20261205T070000Z") or an RFC 3339 time
// as "12-05 07:00" (UTC), with the seconds when not 0 (short epochs).
export function epochLabel(v) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v || '');
  if (m) return `${m[2]}-${m[3]} ${m[4]}:${m[5]}${m[6] === '00' ? '' : ':' + m[6]}`;
  const t = new Date(v);
  if (Number.isFinite(t.getTime()) && t.getUTCSeconds()) return `${timeLabel(v, 'hour', true, true)}:${String(t.getUTCSeconds()).padStart(2, '0')}`;
  return timeLabel(v, 'hour', true, true);
}

// epochSpan labels an epoch with its start and end ("12-05 07:00 – 08:00";
// the end's date when it is another day's).
export function epochSpan(e) {
  const a = epochLabel(e.epoch || e.start);
  const b = e.end ? epochLabel(e.end) : '';
  if (!b) return a;
  return `${a} – ${a.slice(0, 5) === b.slice(0, 5) ? b.slice(6) : b}`;
}

// timeLabel formats the start of a bucket: "07:00" for hours ("12-05 07:00"
// when long), "12-05" for days; in UTC or the browser's time zone.
export function timeLabel(iso, bucket = 'hour', utc = false, long = false) {
  const t = new Date(iso);
  if (!Number.isFinite(t.getTime())) return String(iso || '');
  const p = (n) => String(n).padStart(2, '0');
  const [mo, d, hh, mm] = utc
    ? [t.getUTCMonth() + 1, t.getUTCDate(), t.getUTCHours(), t.getUTCMinutes()]
    : [t.getMonth() + 1, t.getDate(), t.getHours(), t.getMinutes()];
  const day = `${p(mo)}-${p(d)}`;
  if (bucket === 'day') return day;
  return long ? `${day} ${p(hh)}:${p(mm)}` : `${p(hh)}:${p(mm)}`;
}

const num = (v) => (Number.isFinite(v) ? v : 0);

// confirmedBytes is what viewers and audits confirmed of a node's bytes.
export function confirmedBytes(row) {
  return num(row.viewer_bytes) + num(row.audit_bytes);
}

// epochRows sorts an epoch report's node rows: most points first, then
// most credited bytes, then by id.
export function epochRows(report) {
  const rows = (report && Array.isArray(report.nodes) ? report.nodes : []).slice();
  rows.sort((a, b) => num(b.reward_points) - num(a.reward_points) || num(b.credited_bytes) - num(a.credited_bytes) ||
    String(a.node || a.id).localeCompare(String(b.node || b.id)));
  return rows;
}

// rowNode is a report row's node id (the contract names it "node"; "id"
// and "node_id" are accepted too).
export function rowNode(row) {
  return row.node || row.node_id || row.id || '';
}

// epochCSVPath is where an epoch's report is as CSV.
export function epochCSVPath(epoch) {
  return `/v1/operators/epochs/${encodeURIComponent(epoch)}?format=csv`;
}

// usageRows returns a node's per-epoch rows (GET /v1/nodes/{id}/usage),
// oldest first, whichever list the answer holds them in.
export function usageRows(usage) {
  let rows = [];
  if (Array.isArray(usage)) rows = usage;
  else if (usage) rows = [usage.epochs, usage.data, usage.rows, usage.usage].find(Array.isArray) || [];
  rows = rows.filter((r) => r && (r.epoch || r.start));
  return rows.slice().sort((a, b) => String(a.start || a.epoch).localeCompare(String(b.start || b.epoch)));
}

// usageChart is the credited (and claimed) bytes per epoch of a node.
export function usageChart(usage) {
  const rows = usageRows(usage);
  return {
    labels: rows.map((r) => epochLabel(r.epoch || r.start)),
    series: [
      { name: 'Credited', values: rows.map((r) => num(r.credited_bytes)) },
      { name: 'Claimed', values: rows.map((r) => num(r.claimed_bytes)) },
    ],
    rows,
  };
}

// RANGES are the periods the analytics view offers.
export const RANGES = {
  '24h': { label: 'Last 24 hours', ms: 24 * 3600e3, bucket: 'hour' },
  '7d': { label: 'Last 7 days', ms: 7 * 24 * 3600e3, bucket: 'day' },
  '30d': { label: 'Last 30 days', ms: 30 * 24 * 3600e3, bucket: 'day' },
};

// analyticsPath is the analytics endpoint of an item over a range:
// kind "all", "video", "live_stream" or "node".
export function analyticsPath(kind, id, range = '24h', now = Date.now()) {
  const r = RANGES[range] || RANGES['24h'];
  const q = new URLSearchParams({
    from: new Date(now - r.ms).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    to: new Date(now).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    bucket: r.bucket,
  });
  const base = {
    all: '/v1/analytics',
    video: `/v1/analytics/videos/${encodeURIComponent(id)}`,
    live_stream: `/v1/analytics/live-streams/${encodeURIComponent(id)}`,
    node: `/v1/analytics/nodes/${encodeURIComponent(id)}`,
  }[itemKind(kind)];
  return `${base}?${q}`;
}

// itemKind normalizes an item's kind ("video", "live_stream", "all",
// "node") from the spellings an answer may use.
export function itemKind(kind) {
  const k = String(kind || '').toLowerCase();
  if (k === 'all' || k === '') return 'all';
  if (k.startsWith('node')) return 'node';
  if (k.includes('live') || k.includes('stream')) return 'live_stream';
  return 'video';
}

const pct = (o, k) => (o && Number.isFinite(o[k]) ? o[k] : null);

// analyticsSeries turns an analytics answer's series into chart columns.
export function analyticsSeries(a, utc = false) {
  const s = a && Array.isArray(a.series) ? a.series : [];
  const bucket = (a && a.bucket) || 'hour';
  const long = bucket === 'hour' && s.length > 0 && timeLabel(s[0].start, 'day', utc) !== timeLabel(s[s.length - 1].start, 'day', utc);
  return {
    labels: s.map((p) => timeLabel(p.start, bucket, utc, long)),
    views: s.map((p) => num(p.views)),
    unique: s.map((p) => num(p.unique_viewers)),
    watchSeconds: s.map((p) => num(p.watch_seconds)),
    startupP50: s.map((p) => pct(p.startup_ms, 'p50')),
    startupP95: s.map((p) => pct(p.startup_ms, 'p95')),
    rebufferP50: s.map((p) => pct(p.rebuffer_ratio, 'p50')),
    rebufferP95: s.map((p) => pct(p.rebuffer_ratio, 'p95')),
  };
}

export const BREAKDOWNS = [['country', 'Country'], ['device', 'Device'], ['os', 'OS'], ['browser', 'Browser']];

// breakdownRows sorts a breakdown (most views first) and adds each value's
// share of the views.
export function breakdownRows(a, dim) {
  const rows = (a && a.breakdown && Array.isArray(a.breakdown[dim]) ? a.breakdown[dim] : []).slice();
  const total = rows.reduce((s, r) => s + num(r.views), 0);
  rows.sort((x, y) => num(y.views) - num(x.views) || String(x.value).localeCompare(String(y.value)));
  return rows.map((r) => ({ value: r.value === '' || r.value == null ? 'unknown' : String(r.value), views: num(r.views), watch_seconds: num(r.watch_seconds), share: total ? num(r.views) / total : 0 }));
}

// formatWatch formats seconds of watch time ("3 h 20 min", "45 s").
export function formatWatch(sec) {
  sec = Math.round(num(sec));
  if (sec < 60) return `${sec} s`;
  const m = Math.floor(sec / 60);
  if (m < 60) return `${m} min${sec % 60 ? ` ${sec % 60} s` : ''}`;
  const h = Math.floor(m / 60);
  return `${h} h${m % 60 ? ` ${m % 60} min` : ''}`;
}

// watchUnit picks the unit that charts watch times up to max seconds:
// {div, format} where values are divided by div and formatted.
export function watchUnit(max) {
  const fmt = (unit) => (v) => `${+v.toFixed(2)} ${unit}`;
  if (max >= 2 * 3600) return { div: 3600, name: 'hours', format: fmt('h') };
  if (max >= 120) return { div: 60, name: 'minutes', format: fmt('min') };
  return { div: 1, name: 'seconds', format: fmt('s') };
}

// formatMs formats milliseconds ("850 ms", "1.25 s"); null is "—".
export function formatMs(ms) {
  if (!Number.isFinite(ms)) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

// formatRatio formats a ratio as a percentage ("0.4%"); null is "—".
export function formatRatio(v) {
  if (!Number.isFinite(v)) return '—';
  const p = v * 100;
  return `${p >= 10 || p === 0 ? Math.round(p) : p.toFixed(p < 1 ? 2 : 1)}%`;
}

// formatCount formats a count with the locale's grouping.
export function formatCount(v) {
  return Math.round(num(v)).toLocaleString('en-US');
}
