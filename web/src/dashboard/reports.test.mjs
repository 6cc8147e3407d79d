// Unit tests of what the operator and analytics views make of the API's
// answers (canned JSON in the shapes of issue 18's contract; node --test,
// `go test ./web/` runs them too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  analyticsPath, analyticsSeries, breakdownRows, confirmedBytes, epochCSVPath, epochLabel, epochRows, epochSpan, formatMs,
  formatRatio, formatWatch, itemKind, regionError, watchUnit, joinCommand, joinEnv, notAvailable, shellQuote, usageChart, usageRows,
} from './reports.js';

test('the join command runs an edge joined to this origin with the token', () => {
  const cmd = joinCommand({ origin: 'https://video.example.com/', token: 'nt_abcdefghijklmnopqrstuvwxyz012345' });
  assert.equal(cmd, 'SHOAL_ORIGIN_URL=https://video.example.com SHOAL_NODE_TOKEN=nt_abcdefghijklmnopqrstuvwxyz012345 ' +
    'SHOAL_PUBLIC_URL=http://EDGE-HOST:8081 SHOAL_EDGE_ADDR=:8081 SHOAL_DATA_DIR=./edge-data shoal edge');
  const env = Object.fromEntries(joinEnv({ origin: 'http://o:8080', token: 't', region: 'eu-west' }));
  assert.equal(env.SHOAL_REGION, 'eu-west');
  assert.match(joinCommand({ origin: 'http://o:8080', token: 't', region: 'eu-west' }), / SHOAL_REGION=eu-west SHOAL_PUBLIC_URL=/);
});

test('a region is checked as the origin checks it on join', () => {
  assert.equal(regionError(''), '');
  assert.equal(regionError('eu-west_1'), '');
  assert.equal(regionError('EU-West'), '');
  assert.match(regionError('eu west'), /only letters, digits/);
  assert.match(regionError('x;rm'), /only letters, digits/);
  assert.match(regionError('é'), /only letters, digits/);
  assert.equal(regionError('a'.repeat(64)), '');
  assert.match(regionError('a'.repeat(65)), /at most 64/);
});

test('shellQuote quotes what a shell would split or expand', () => {
  assert.equal(shellQuote('eu-west_1'), 'eu-west_1');
  assert.equal(shellQuote('a b'), "'a b'");
  assert.equal(shellQuote("it's $HOME"), `'it'\\''s $HOME'`);
  assert.equal(shellQuote(''), "''");
  assert.match(joinCommand({ origin: 'http://o', token: 't', region: 'x;rm -rf /' }), /SHOAL_REGION='x;rm -rf \/'/);
});

test('notAvailable is true for an endpoint that is not there', () => {
  assert.equal(notAvailable({ status: 404 }), true);
  assert.equal(notAvailable({ status: 405 }), true);
  assert.equal(notAvailable({ status: 503 }), true);
  assert.equal(notAvailable({ status: 500 }), false);
  assert.equal(notAvailable({ status: 0 }), false);
  assert.equal(notAvailable(null), false);
});

test('epoch ids and times are labelled in UTC', () => {
  assert.equal(epochLabel('20261205T070000Z'), '12-05 07:00');
  assert.equal(epochLabel('2026-12-05T08:00:00Z'), '12-05 08:00');
  assert.equal(epochLabel('nonsense'), 'nonsense');
  // Short epochs (accounting.epoch under a minute) keep their seconds.
  assert.equal(epochLabel('20261205T075520Z'), '12-05 07:55:20');
  assert.equal(epochLabel('2026-12-05T07:55:40Z'), '12-05 07:55:40');
  assert.equal(epochSpan({ epoch: '20261205T070000Z', end: '2026-12-05T08:00:00Z' }), '12-05 07:00 – 08:00');
  assert.equal(epochSpan({ epoch: '20261205T230000Z', end: '2026-12-06T00:00:00Z' }), '12-05 23:00 – 12-06 00:00');
  assert.equal(epochSpan({ epoch: '20261205T075520Z', end: '2026-12-05T07:55:40Z' }), '12-05 07:55:20 – 07:55:40');
  assert.equal(epochSpan({ epoch: '20261205T070000Z' }), '12-05 07:00');
});

// An epoch report as GET /v1/operators/epochs/{epoch} answers it.
const report = {
  epoch: '20261205T070000Z', start: '2026-12-05T07:00:00Z', end: '2026-12-05T08:00:00Z', final: true,
  generated_at: '2026-12-05T08:05:00Z', reward_pool: 1000, key_id: 'k1',
  nodes: [
    { node: 'bbbbbbbbbbbbbbbbbbbb', region: 'eu', role: 'edge', state: 'active', claimed_bytes: 3000, viewer_bytes: 900, audit_bytes: 100,
      credited_bytes: 1000, audits_passed: 4, audits_failed: 0, audit_pass_rate: 1, uptime_seconds: 3600, quarantine_seconds: 0,
      verification_failures: 0, reward_points: 250 },
    { node: 'aaaaaaaaaaaaaaaaaaaa', region: 'us', claimed_bytes: 3000, viewer_bytes: 2800, audit_bytes: 200, credited_bytes: 3000,
      audits_passed: 9, audits_failed: 0, audit_pass_rate: 1, uptime_seconds: 3600, quarantine_seconds: 0, verification_failures: 0, reward_points: 750 },
    { node: 'cccccccccccccccccccc', claimed_bytes: 9000, viewer_bytes: 0, audit_bytes: 0, credited_bytes: 0, audits_passed: 0,
      audits_failed: 5, audit_pass_rate: 0, uptime_seconds: 1800, quarantine_seconds: 1800, verification_failures: 3, reward_points: 0 },
  ],
};

test('epoch rows: most points first; confirmed bytes are viewers plus audits', () => {
  const rows = epochRows(report);
  assert.deepEqual(rows.map((r) => r.node), ['aaaaaaaaaaaaaaaaaaaa', 'bbbbbbbbbbbbbbbbbbbb', 'cccccccccccccccccccc']);
  assert.equal(confirmedBytes(rows[1]), 1000);
  assert.equal(confirmedBytes({}), 0);
  assert.deepEqual(epochRows({}), []);
  assert.deepEqual(epochRows(null), []);
  assert.equal(epochCSVPath('20261205T070000Z'), '/v1/operators/epochs/20261205T070000Z?format=csv');
});

test('a node usage answer becomes credited and claimed bytes per epoch, oldest first', () => {
  const rows = [
    { epoch: '20261205T080000Z', start: '2026-12-05T08:00:00Z', claimed_bytes: 50, credited_bytes: 40 },
    { epoch: '20261205T070000Z', start: '2026-12-05T07:00:00Z', claimed_bytes: 30, credited_bytes: 10 },
  ];
  for (const usage of [{ node: 'x', epochs: rows }, { data: rows }, rows]) {
    const c = usageChart(usage);
    assert.deepEqual(c.labels, ['12-05 07:00', '12-05 08:00']);
    assert.deepEqual(c.series.map((s) => [s.name, s.values]), [['Credited', [10, 40]], ['Claimed', [30, 50]]]);
  }
  assert.deepEqual(usageRows({}), []);
  assert.deepEqual(usageRows(null), []);
  assert.deepEqual(usageChart({ epochs: [] }).labels, []);
});

test('analytics paths name the item, the range and the bucket', () => {
  const now = Date.parse('2026-12-05T09:00:00Z');
  assert.equal(analyticsPath('all', '', '24h', now), '/v1/analytics?from=2026-12-04T09%3A00%3A00Z&to=2026-12-05T09%3A00%3A00Z&bucket=hour');
  assert.equal(analyticsPath('video', 'v 1', '7d', now), '/v1/analytics/videos/v%201?from=2026-11-28T09%3A00%3A00Z&to=2026-12-05T09%3A00%3A00Z&bucket=day');
  assert.match(analyticsPath('live_stream', 'ls1', '24h', now), /^\/v1\/analytics\/live-streams\/ls1\?/);
  assert.match(analyticsPath('node', 'n1', 'bogus', now), /^\/v1\/analytics\/nodes\/n1\?.*bucket=hour$/);
  assert.equal(itemKind('live-stream'), 'live_stream');
  assert.equal(itemKind('live_stream'), 'live_stream');
  assert.equal(itemKind('video'), 'video');
});

// An analytics answer as GET /v1/analytics/videos/{id} gives it.
const analytics = {
  id: 'v1', kind: 'video', from: '2026-12-04T23:00:00Z', to: '2026-12-05T02:00:00Z', bucket: 'hour',
  totals: { views: 12, unique_viewers: 9, watch_seconds: 3720, startup_ms: { p50: 640, p95: 1900 }, rebuffer_ratio: { p50: 0, p95: 0.031 },
    rebuffers: 3, rebuffer_seconds: 4.5, errors: 0, switches: 7, verified: 400, failed: 0 },
  series: [
    { start: '2026-12-04T23:00:00Z', views: 2, unique_viewers: 2, watch_seconds: 600, startup_ms: { p50: 700, p95: 1500 }, rebuffer_ratio: { p50: 0, p95: 0.01 } },
    { start: '2026-12-05T00:00:00Z', views: 0, unique_viewers: 0, watch_seconds: 0, startup_ms: { p50: null, p95: null }, rebuffer_ratio: null },
    { start: '2026-12-05T01:00:00Z', views: 10, unique_viewers: 7, watch_seconds: 3120, startup_ms: { p50: 600, p95: 1900 }, rebuffer_ratio: { p50: 0.002, p95: 0.031 } },
  ],
  breakdown: {
    country: [{ value: 'FR', views: 3, watch_seconds: 100 }, { value: 'unknown', views: 1, watch_seconds: 20 }, { value: 'DE', views: 8, watch_seconds: 3600 }],
    device: [{ value: 'desktop', views: 12, watch_seconds: 3720 }],
  },
};

test('analytics series: views, watch time and percentiles per bucket; empty buckets have no percentile', () => {
  const s = analyticsSeries(analytics, true);
  assert.deepEqual(s.labels, ['12-04 23:00', '12-05 00:00', '12-05 01:00']); // the period crosses midnight: dates shown
  assert.deepEqual(s.views, [2, 0, 10]);
  assert.deepEqual(s.unique, [2, 0, 7]);
  assert.deepEqual(s.watchSeconds, [600, 0, 3120]);
  assert.deepEqual(s.startupP50, [700, null, 600]);
  assert.deepEqual(s.startupP95, [1500, null, 1900]);
  assert.deepEqual(s.rebufferP95, [0.01, null, 0.031]);
  const day = analyticsSeries({ bucket: 'day', series: [{ start: '2026-12-04T00:00:00Z' }] }, true);
  assert.deepEqual(day.labels, ['12-04']);
  assert.deepEqual(day.startupP50, [null]);
  assert.deepEqual(analyticsSeries({}).labels, []);
  assert.deepEqual(analyticsSeries(null).views, []);
});

test('breakdown rows: most views first, with their share', () => {
  const rows = breakdownRows(analytics, 'country');
  assert.deepEqual(rows.map((r) => [r.value, r.views]), [['DE', 8], ['FR', 3], ['unknown', 1]]);
  assert.equal(rows[0].share, 8 / 12);
  assert.deepEqual(breakdownRows(analytics, 'os'), []);
  assert.deepEqual(breakdownRows({}, 'device'), []);
});

test('watch time is charted in seconds, minutes or hours by its maximum', () => {
  assert.equal(watchUnit(90).div, 1);
  assert.equal(watchUnit(90).format(45), '45 s');
  assert.equal(watchUnit(3000).div, 60);
  assert.equal(watchUnit(3000).format(2760 / 60), '46 min');
  assert.equal(watchUnit(8000).div, 3600);
  assert.equal(watchUnit(8000).format(1.5), '1.5 h');
  assert.equal(watchUnit(0).div, 1);
});

test('formats', () => {
  assert.equal(formatWatch(45), '45 s');
  assert.equal(formatWatch(3720), '1 h 2 min');
  assert.equal(formatWatch(125), '2 min 5 s');
  assert.equal(formatMs(640), '640 ms');
  assert.equal(formatMs(1900), '1.90 s');
  assert.equal(formatMs(null), '—');
  assert.equal(formatRatio(0.031), '3.1%');
  assert.equal(formatRatio(0.002), '0.20%');
  assert.equal(formatRatio(0), '0%');
  assert.equal(formatRatio(undefined), '—');
});
