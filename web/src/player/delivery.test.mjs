// Unit tests of the verifying loader's LL-HLS and DVR rules (node --test;
// `go test ./web/` runs them too, see node_test.go): the playlist and
// manifest parsers, the playlist-against-manifest check, the loader's
// blocking reloads and manifests by playlist state, and DVR segments
// checked against range manifests, against fake servers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Delivery, KIND, dvrProblem, parseManifest, parsePlaylist, playlistProblem, playlistState, rangeManifestPath,
  rangeProblem, rangeStart, routeRequest, stateQuery,
} from './delivery.js';

const ID = 'abc123';
const enc = new TextEncoder();

// An LL-HLS playlist as the origin writes it (see the origin contract):
// segments 10 and 11 whole, the parts of 11, part 0 of 12 and a hint of
// part 1 of 12.
const LL = `#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI="init-s1-0-0.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:00.000Z
#EXTINF:2.000,
s1-0-10.m4s
#EXT-X-PART:DURATION=0.50000,URI="s1-0-11-p0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.50000,URI="s1-0-11-p1.m4s"
#EXT-X-PART:DURATION=0.50000,URI="s1-0-11-p2.m4s"
#EXT-X-PART:DURATION=0.50000,URI="s1-0-11-p3.m4s"
#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:02.000Z
#EXTINF:2.000,
s1-0-11.m4s
#EXT-X-PART:DURATION=0.50000,URI="s1-0-12-p0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1-0-12-p1.m4s"
#EXT-X-RENDITION-REPORT:URI="../240p/index.m3u8",LAST-MSN=12,LAST-PART=0
`;

function bytesOf(name) {
  return enc.encode(`bytes of ${name} `.repeat(8));
}

async function sha256(b) {
  return Buffer.from(await crypto.subtle.digest('SHA-256', b)).toString('hex');
}

function b64url(b) {
  return Buffer.from(b).toString('base64url');
}

const key = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
const KEY_ID = '0123456789abcdef';
const keys = { [KEY_ID]: key.publicKey };

// manifestText signs a manifest of entries: [kind, name, ms?].
async function manifestText({ seq, entries, ended = false, time = Date.now(), rendition = '360p' }) {
  let t = `shoal-manifest 1\nkey ${KEY_ID}\nid ${ID}\nrendition ${rendition}\nseq ${seq}\ntime ${time}\nended ${ended ? 1 : 0}\n`;
  for (const [kind, name, ms] of entries) {
    if (kind === 'gap') {
      t += `gap ${name} ${ms}\n`;
      continue;
    }
    const b = bytesOf(name);
    t += `${kind} ${name} ${b.byteLength} ${await sha256(b)}${kind === 'init' ? '' : ' ' + ms}\n`;
  }
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, enc.encode(t));
  return t + `sig ${b64url(new Uint8Array(sig))}\n`;
}

const ENTRIES_12_0 = [
  ['init', 'init-s1-0-0.mp4'], ['seg', 's1-0-10.m4s', 2000], ['seg', 's1-0-11.m4s', 2000],
  ['part', 's1-0-11-p0.m4s', 500], ['part', 's1-0-11-p1.m4s', 500], ['part', 's1-0-11-p2.m4s', 500],
  ['part', 's1-0-11-p3.m4s', 500], ['part', 's1-0-12-p0.m4s', 500],
];

test('parseManifest reads part entries', async () => {
  const m = parseManifest(enc.encode(await manifestText({ seq: 12, entries: ENTRIES_12_0 })));
  assert.deepEqual(m.parts, ['s1-0-11-p0.m4s', 's1-0-11-p1.m4s', 's1-0-11-p2.m4s', 's1-0-11-p3.m4s', 's1-0-12-p0.m4s']);
  assert.deepEqual(m.segments, ['s1-0-10.m4s', 's1-0-11.m4s']);
  const e = m.entries.get('s1-0-12-p0.m4s');
  assert.equal(e.kind, 'part');
  assert.equal(e.ms, 500);
  assert.equal(e.size, bytesOf('s1-0-12-p0.m4s').byteLength);
  for (const bad of ['part x.m4s 10 ' + 'a'.repeat(64), 'part x.m4s 10 ' + 'a'.repeat(64) + ' 1.5', 'parts x.m4s 10 ' + 'a'.repeat(64) + ' 5']) {
    const text = `shoal-manifest 1\nkey ${KEY_ID}\nid ${ID}\nrendition 360p\nseq 1\ntime 1\nended 0\n${bad}\nsig AAAA\n`;
    assert.throws(() => parseManifest(enc.encode(text)), /bad manifest entry/, bad);
  }
});

test('parsePlaylist accepts the LL-HLS tags Shoal writes', () => {
  const pl = parsePlaylist(LL);
  assert.equal(pl.bad, '');
  assert.equal(pl.seq, 10);
  assert.equal(pl.target, 2);
  assert.equal(pl.partTarget, 0.5);
  assert.equal(pl.canBlockReload, true);
  assert.deepEqual(pl.segments, ['s1-0-10.m4s', 's1-0-11.m4s']);
  assert.deepEqual(pl.parts.map((p) => [p.name, p.msn, p.k, p.ms, p.independent]), [
    ['s1-0-11-p0.m4s', 11, 0, 500, true], ['s1-0-11-p1.m4s', 11, 1, 500, false], ['s1-0-11-p2.m4s', 11, 2, 500, false],
    ['s1-0-11-p3.m4s', 11, 3, 500, false], ['s1-0-12-p0.m4s', 12, 0, 500, true],
  ]);
  assert.deepEqual(pl.hint, { name: 's1-0-12-p1.m4s', msn: 12, k: 1 });
  assert.deepEqual(pl.reports, [{ rendition: '240p', msn: 12, part: 0 }]);
  assert.deepEqual(playlistState(pl), { msn: 12, part: 0 });
  assert.equal(stateQuery(playlistState(pl)), '_HLS_msn=12&_HLS_part=0');
});

test('playlistState', () => {
  // The last part is of a whole segment: the state is that segment.
  const whole = LL.replace(/#EXT-X-PART:[^\n]*s1-0-12-p0[^\n]*\n/, '').replace('s1-0-12-p1.m4s', 's1-0-12-p0.m4s');
  const pl = parsePlaylist(whole);
  assert.equal(pl.bad, '');
  assert.deepEqual(playlistState(pl), { msn: 11 });
  assert.equal(stateQuery(playlistState(pl)), '_HLS_msn=11');
  // No parts: not a low-latency playlist; ended ones neither.
  assert.equal(playlistState(parsePlaylist('#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:2.000,\na.m4s\n')), null);
  const ended = whole.replace(/#EXT-X-(SERVER-CONTROL|PART|PRELOAD-HINT|RENDITION-REPORT)[^\n]*\n/g, '') + '#EXT-X-ENDLIST\n';
  assert.equal(parsePlaylist(ended).bad, '');
  assert.equal(playlistState(parsePlaylist(ended)), null);
});

test('parsePlaylist rejects what Shoal never writes', () => {
  const cases = {
    key: LL + '#EXT-X-KEY:METHOD=AES-128,URI="https://evil.test/key"\n',
    'session key': LL + '#EXT-X-SESSION-KEY:METHOD=AES-128,URI="k"\n',
    byterange: LL.replace('#EXTINF:2.000,\ns1-0-10.m4s', '#EXTINF:2.000,\n#EXT-X-BYTERANGE:100@0\ns1-0-10.m4s'),
    'part byterange': LL.replace('URI="s1-0-12-p0.m4s"', 'URI="s1-0-12-p0.m4s",BYTERANGE="100@0"'),
    'part gap': LL.replace('URI="s1-0-12-p0.m4s"', 'URI="s1-0-12-p0.m4s",GAP=YES'),
    'part without duration': LL.replace('DURATION=0.50000,URI="s1-0-12-p0.m4s"', 'URI="s1-0-12-p0.m4s"'),
    'part elsewhere': LL.replace('URI="s1-0-12-p0.m4s"', 'URI="../240p/s1-0-12-p0.m4s"'),
    'part on another host': LL.replace('URI="s1-0-12-p0.m4s"', 'URI="https://evil.test/s1-0-12-p0.m4s"'),
    'part of another segment': LL.replace('URI="s1-0-11-p3.m4s"', 'URI="s1-0-12-p3.m4s"'),
    'parts out of order': LL.replace('URI="s1-0-11-p1.m4s"', 'URI="s1-0-11-p9.m4s"'),
    'hint byterange': LL.replace('URI="s1-0-12-p1.m4s"', 'URI="s1-0-12-p1.m4s",BYTERANGE-START=0,BYTERANGE-LENGTH=100'),
    'hint of a map': LL.replace('TYPE=PART,URI="s1-0-12-p1.m4s"', 'TYPE=MAP,URI="init-s1-0-1.mp4"'),
    'hint out of place': LL.replace('URI="s1-0-12-p1.m4s"', 'URI="s1-0-12-p3.m4s"'),
    'hint elsewhere': LL.replace('URI="s1-0-12-p1.m4s"', 'URI="/hls/other/360p/s1-0-12-p1.m4s"'),
    'report of another stream': LL.replace('../240p/index.m3u8', '../../other/240p/index.m3u8'),
    'report on another host': LL.replace('../240p/index.m3u8', 'https://evil.test/hls/abc123/240p/index.m3u8'),
    'report of another file': LL.replace('../240p/index.m3u8', '../240p/manifest.txt'),
    'report without msn': LL.replace(',LAST-MSN=12', ''),
    'parts without part-inf': LL.replace(/#EXT-X-PART-INF[^\n]*\n/, ''),
    'map byterange': LL.replace('URI="init-s1-0-0.mp4"', 'URI="init-s1-0-0.mp4",BYTERANGE="800@0"'),
  };
  for (const [name, text] of Object.entries(cases)) {
    assert.notEqual(parsePlaylist(text).bad, '', name);
  }
});

test('playlistProblem checks parts against the manifest', async () => {
  const pl = parsePlaylist(LL);
  const m = parseManifest(enc.encode(await manifestText({ seq: 12, entries: ENTRIES_12_0 })));
  assert.equal(playlistProblem(pl, m), '');
  // A newer manifest (one more part) lists all of them too.
  const newer = parseManifest(enc.encode(await manifestText({ seq: 12, entries: [...ENTRIES_12_0, ['part', 's1-0-12-p1.m4s', 500]] })));
  assert.equal(playlistProblem(pl, newer), '');
  // An older one lacks the playlist's last part.
  const older = parseManifest(enc.encode(await manifestText({ seq: 12, entries: ENTRIES_12_0.slice(0, -1) })));
  assert.match(playlistProblem(pl, older), /s1-0-12-p0\.m4s, which the signed manifest does not list/);
  // A part listed as a segment is not a part.
  const asSeg = ENTRIES_12_0.map((e) => (e[1] === 's1-0-12-p0.m4s' ? ['seg', e[1], 500] : e));
  assert.match(playlistProblem(pl, parseManifest(enc.encode(await manifestText({ seq: 12, entries: asSeg })))), /does not list/);
  // Durations: the manifest's milliseconds, give or take one of rounding.
  const close = ENTRIES_12_0.map((e) => (e[1] === 's1-0-12-p0.m4s' ? ['part', e[1], 501] : e));
  assert.equal(playlistProblem(pl, parseManifest(enc.encode(await manifestText({ seq: 12, entries: close })))), '');
  const off = ENTRIES_12_0.map((e) => (e[1] === 's1-0-12-p0.m4s' ? ['part', e[1], 400] : e));
  assert.match(playlistProblem(pl, parseManifest(enc.encode(await manifestText({ seq: 12, entries: off })))), /gives s1-0-12-p0\.m4s 500 ms, the manifest 400 ms/);
  // Order: the manifest's.
  const swapped = [...ENTRIES_12_0];
  [swapped[4], swapped[5]] = [swapped[5], swapped[4]];
  assert.match(playlistProblem(pl, parseManifest(enc.encode(await manifestText({ seq: 12, entries: swapped })))), /not the manifest's, in order/);
  // Segments as before.
  const noSeg = ENTRIES_12_0.filter((e) => e[1] !== 's1-0-11.m4s');
  assert.match(playlistProblem(pl, parseManifest(enc.encode(await manifestText({ seq: 11, entries: noSeg })))), /segments are not the manifest's/);
});

// ---- the loader, against fake servers ---------------------------------

globalThis.location = { href: 'http://origin.test/watch/' + ID };

// fakeFetch serves files by URL (token dropped); a handler may be a
// function (url, init) returning a Response or a promise of one. It
// records every URL asked for.
function fakeFetch(routes) {
  const calls = [];
  globalThis.fetch = async (url, init = {}) => {
    const u = new URL(url);
    u.searchParams.delete('token');
    const key = u.origin + u.pathname + (u.search ? u.search : '');
    calls.push(key);
    if (init.method === 'POST') return new Response('{}', { status: 202 });
    const h = routes[key];
    if (h === undefined) return new Response('not found', { status: 404 });
    if (typeof h === 'function') return h(url, init);
    return new Response(h, { status: 200 });
  };
  return calls;
}

const EDGE = 'http://edge.test';
const ORIGIN = 'http://origin.test';
const R = `/hls/${ID}/360p`;

function newDelivery() {
  return new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports',
    candidates: [{ url: EDGE, node_id: 'edge-1' }, { url: ORIGIN }],
  });
}

async function routesFor(base, { playlist = LL, entries = ENTRIES_12_0, fileBytes = bytesOf } = {}) {
  const r = {
    [`${base}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`]: playlist,
    [`${base}${R}/index.m3u8`]: playlist,
    [`${base}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`]: await manifestText({ seq: 12, entries }),
    [`${base}${R}/manifest.txt?_HLS_msn=12&_HLS_part=1`]: await manifestText({ seq: 12, entries: [...entries, ['part', 's1-0-12-p1.m4s', 500]] }),
  };
  for (const [, name] of [...entries, ['part', 's1-0-12-p1.m4s']]) r[`${base}${R}/${name}`] = fileBytes(name);
  return r;
}

test('request keeps only the delivery directives, on playlists', () => {
  const d = newDelivery();
  assert.deepEqual(d.request(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=3&token=x&foo=bar`, 'playlist'),
    { path: `${R}/index.m3u8`, query: '_HLS_msn=12&_HLS_part=3' });
  assert.deepEqual(d.request(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_skip=YES`, 'playlist'),
    { path: `${R}/index.m3u8`, query: '_HLS_msn=12&_HLS_skip=YES' });
  // Malformed directives are dropped (and a part without an msn).
  assert.equal(d.request(`${EDGE}${R}/index.m3u8?_HLS_msn=-1&_HLS_part=2`, 'playlist').query, '');
  assert.equal(d.request(`${EDGE}${R}/index.m3u8?_HLS_msn=1e3`, 'playlist').query, '');
  assert.equal(d.request(`${EDGE}${R}/index.m3u8?_HLS_msn=5&_HLS_part=x&_HLS_skip=NO`, 'playlist').query, '_HLS_msn=5');
  // Media and the master playlist: never a query.
  assert.equal(d.request(`${EDGE}${R}/s1-0-12-p0.m4s?_HLS_msn=1`, 'media').query, '');
  assert.equal(d.request(`${EDGE}/hls/${ID}/master.m3u8?_HLS_msn=1`, 'playlist').query, '');
  assert.throws(() => d.request(`${EDGE}/hls/other/360p/index.m3u8`, 'playlist'), /outside this stream/);
});

test('blocking timeouts allow three target durations, at least 12 s', () => {
  const d = newDelivery();
  assert.equal(d.blockingTimeout('360p'), 12000);
  d.renditions.set('360p', { target: 6, names: new Map() });
  assert.ok(d.blockingTimeout('360p') >= 18000);
});

test('a blocking reload is checked against the manifest of its state', async () => {
  const calls = fakeFetch({ ...(await routesFor(EDGE)) });
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.equal(new TextDecoder().decode(res.data), LL);
  assert.equal(res.url, `${EDGE}${R}/index.m3u8`);
  assert.deepEqual(calls, [`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, `${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`]);
  // Its files come with no other manifest: the parts, segments and init.
  calls.length = 0;
  for (const name of ['s1-0-12-p0.m4s', 's1-0-11-p3.m4s', 's1-0-11.m4s', 'init-s1-0-0.mp4']) {
    const r = await d.load(`${EDGE}${R}/${name}`, 'media');
    assert.deepEqual(new Uint8Array(r.data), bytesOf(name));
  }
  assert.deepEqual(calls, ['s1-0-12-p0.m4s', 's1-0-11-p3.m4s', 's1-0-11.m4s', 'init-s1-0-0.mp4'].map((n) => `${EDGE}${R}/${n}`));
  assert.equal(d.verified, 4);
  assert.deepEqual(d.failures, []);
});

test('a hinted part: the bytes first, then the manifest of its state', async () => {
  const routes = await routesFor(EDGE);
  let partServed = false;
  const hinted = routes[`${EDGE}${R}/s1-0-12-p1.m4s`];
  routes[`${EDGE}${R}/s1-0-12-p1.m4s`] = () => {
    partServed = true;
    return new Response(hinted);
  };
  const manifest = routes[`${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=1`];
  routes[`${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=1`] = () => {
    // The origin would hold this one until the part exists.
    assert.ok(partServed, 'the manifest of the hinted state was asked for before the part');
    return new Response(manifest);
  };
  const calls = fakeFetch(routes);
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  calls.length = 0;
  const r = await d.load(`${EDGE}${R}/s1-0-12-p1.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('s1-0-12-p1.m4s'));
  assert.deepEqual(calls, [`${EDGE}${R}/s1-0-12-p1.m4s`, `${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=1`]);
  assert.deepEqual(d.failures, []);
  // A hinted part that never came (404 once the hint moved on) is an
  // error for hls.js, not a lie of the edge.
  routes[`${EDGE}${R}/s1-0-12-p1.m4s`] = undefined;
  const d2 = newDelivery();
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  await assert.rejects(d2.load(`${EDGE}${R}/s1-0-12-p1.m4s`, 'media'), (err) => err.code === 404);
  assert.deepEqual(d2.failures, []);
  assert.equal(d2.current().node, 'edge-1');
});

test('a part altered by the edge is caught and taken from the origin', async () => {
  const edge = await routesFor(EDGE, { fileBytes: (n) => (n === 's1-0-12-p0.m4s' ? enc.encode('x'.repeat(bytesOf(n).byteLength)) : bytesOf(n)) });
  const calls = fakeFetch({ ...edge, ...(await routesFor(ORIGIN)) });
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const r = await d.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('s1-0-12-p0.m4s'));
  assert.equal(d.failures.length, 1);
  assert.equal(d.failures[0].kind, KIND.hash);
  assert.equal(d.current().base, ORIGIN);
  // From the origin: its manifest of the same state, after the bytes.
  assert.deepEqual(calls.slice(-2), [`${ORIGIN}${R}/s1-0-12-p0.m4s`, `${ORIGIN}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`]);
});

test('a playlist naming a part its state manifest lacks is a lie', async () => {
  const edge = await routesFor(EDGE);
  // The edge answers the state's manifest with an older one.
  edge[`${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`] = await manifestText({ seq: 12, entries: ENTRIES_12_0.slice(0, -1) });
  fakeFetch({ ...edge, ...(await routesFor(ORIGIN)) });
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.equal(res.url, `${ORIGIN}${R}/index.m3u8`);
  assert.equal(d.failures.length, 1);
  assert.equal(d.failures[0].kind, KIND.unlisted);
  // A manifest that has not reached the state asked for is stale.
  const edge2 = await routesFor(EDGE);
  edge2[`${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`] = await manifestText({ seq: 11, entries: ENTRIES_12_0.filter((e) => e[1] !== 's1-0-11.m4s') });
  fakeFetch({ ...edge2, ...(await routesFor(ORIGIN)) });
  const d2 = newDelivery();
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.equal(d2.failures[0].kind, KIND.staleManifest);
});

test('a blocking reload the origin could not satisfy falls back to the playlist as it is', async () => {
  const edge = await routesFor(EDGE);
  edge[`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`] = () => new Response('not within 3 target durations', { status: 503 });
  const calls = fakeFetch(edge);
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.equal(res.url, `${EDGE}${R}/index.m3u8`);
  assert.deepEqual(d.failures, []);
  assert.deepEqual(calls, [`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, `${EDGE}${R}/index.m3u8`, `${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`]);
});

test('a plain live playlist keeps the manifest of the last second', async () => {
  const plain = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n#EXTINF:2.000,\ns1-0-10.m4s\n#EXTINF:2.000,\ns1-0-11.m4s\n';
  const calls = fakeFetch({
    [`${EDGE}${R}/index.m3u8`]: plain,
    [`${EDGE}${R}/manifest.txt`]: await manifestText({ seq: 12, entries: ENTRIES_12_0.slice(0, 3) }),
    [`${EDGE}${R}/s1-0-11.m4s`]: bytesOf('s1-0-11.m4s'),
  });
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  await d.load(`${EDGE}${R}/s1-0-11.m4s`, 'media');
  assert.deepEqual(calls, [`${EDGE}${R}/index.m3u8`, `${EDGE}${R}/manifest.txt`, `${EDGE}${R}/s1-0-11.m4s`]);
  assert.deepEqual(d.failures, []);
});

// The manifest after segment 12 closed: parts of 11 no longer listed.
const ENTRIES_13 = [
  ['init', 'init-s1-0-0.mp4'], ['seg', 's1-0-10.m4s', 2000], ['seg', 's1-0-11.m4s', 2000], ['seg', 's1-0-12.m4s', 2000],
  ['part', 's1-0-12-p0.m4s', 500], ['part', 's1-0-12-p1.m4s', 500], ['part', 's1-0-12-p2.m4s', 500], ['part', 's1-0-12-p3.m4s', 500],
];

test('a manifest newer than the playlist may have dropped the oldest parts', async () => {
  const pl = parsePlaylist(LL);
  const m = parseManifest(enc.encode(await manifestText({ seq: 13, entries: ENTRIES_13 })));
  assert.equal(playlistProblem(pl, m), '');
  assert.deepEqual(pl.parts.filter((p) => p.unlisted).map((p) => p.name), ['s1-0-11-p0.m4s', 's1-0-11-p1.m4s', 's1-0-11-p2.m4s', 's1-0-11-p3.m4s']);
  // Not a part of a segment the manifest still has parts of, nor of the
  // segment being written.
  const partial = parseManifest(enc.encode(await manifestText({ seq: 12, entries: ENTRIES_12_0.filter((e) => e[1] !== 's1-0-11-p3.m4s') })));
  assert.match(playlistProblem(parsePlaylist(LL), partial), /s1-0-11-p3\.m4s, which the signed manifest does not list/);
  const extra = parsePlaylist(LL.replace('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1-0-12-p1.m4s"', '#EXT-X-PART:DURATION=0.5,URI="s1-0-12-p1.m4s"'));
  const m12 = parseManifest(enc.encode(await manifestText({ seq: 12, entries: ENTRIES_12_0 })));
  assert.match(playlistProblem(extra, m12), /s1-0-12-p1\.m4s, which the signed manifest does not list/);
});

test('a part only an older manifest listed is checked against it, else an error that is no lie', async () => {
  const edge = await routesFor(EDGE);
  edge[`${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`] = await manifestText({ seq: 13, entries: ENTRIES_13 });
  fakeFetch(edge);
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.deepEqual(d.failures, []);
  await assert.rejects(d.load(`${EDGE}${R}/s1-0-11-p3.m4s`, 'media'), (err) => err.kind === KIND.unlisted && err.soft);
  assert.deepEqual(d.failures, []);
  // With an older manifest known (that of the playlist before, at segment
  // 11 whole), the part is checked against it.
  const before = LL.replace(/#EXT-X-PART:[^\n]*s1-0-12-p0[^\n]*\n/, '').replace('s1-0-12-p1.m4s', 's1-0-12-p0.m4s');
  const d2 = newDelivery();
  fakeFetch({ ...edge, [`${EDGE}${R}/index.m3u8?_HLS_msn=11`]: before,
    [`${EDGE}${R}/manifest.txt?_HLS_msn=11`]: await manifestText({ seq: 12, entries: ENTRIES_12_0.slice(0, -1) }) });
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=11`, 'playlist');
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const r = await d2.load(`${EDGE}${R}/s1-0-11-p3.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('s1-0-11-p3.m4s'));
  assert.deepEqual(d2.failures, []);
});

test('the packager\'s golden LL playlists pass', async () => {
  const { readFile } = await import('node:fs/promises');
  for (const f of ['ll_live.m3u8', 'll_live_next_discontinuity.m3u8']) {
    let text;
    try {
      text = await readFile(new URL(`../../../packager/playlist/testdata/${f}`, import.meta.url), 'utf8');
    } catch {
      continue; // web/ alone
    }
    const pl = parsePlaylist(text);
    assert.equal(pl.bad, '', f);
    assert.ok(pl.parts.length > 0 && pl.hint && playlistState(pl), f);
  }
});

// ---- DVR playlists and range manifests --------------------------------

// A DVR playlist (see the DVR contract): segments 96..103, the init section
// changes at 101; its delta update (_HLS_skip=YES) one segment later
// leaves out the first five.
const DVR_SEGS = [96, 97, 98, 99, 100, 101, 102, 103];
const initOf = (n) => (n >= 101 ? 'init-d-1.mp4' : 'init-d-0.mp4');
function dvrText(seq, list, skipped = 0) {
  let t = '#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12\n' +
    `#EXT-X-MEDIA-SEQUENCE:${seq}\n`;
  if (skipped) t += `#EXT-X-SKIP:SKIPPED-SEGMENTS=${skipped}\n`;
  let init = '';
  for (const n of list) {
    if (initOf(n) !== init) {
      init = initOf(n);
      t += `#EXT-X-MAP:URI="${init}"\n`;
    }
    t += `#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:${String(Math.floor(n * 2 / 60)).padStart(2, '0')}:${String((n * 2) % 60).padStart(2, '0')}.000Z\n`;
    t += `#EXTINF:2.000,\nd-${n}.m4s\n`;
  }
  return t;
}
const DVR = dvrText(96, DVR_SEGS);
const DVR_DELTA = dvrText(97, [102, 103, 104], 5);

// rangeEntries lists the segments from..to (inclusive) of a range, each
// init section before the first segment that uses it.
function rangeEntries(from, to, ms = () => 2000) {
  const out = [];
  let init = '';
  for (let n = from; n <= to; n++) {
    if (initOf(n) !== init) {
      init = initOf(n);
      out.push(['init', init]);
    }
    out.push(['seg', `d-${n}.m4s`, ms(n)]);
  }
  return out;
}

async function rangeText(from, to, opts = {}) {
  return manifestText({ seq: to + 1, entries: rangeEntries(from, to, opts.ms), ended: !!opts.ended, rendition: '360p', ...opts.extra });
}

test('parsePlaylist reads DVR playlists and their delta updates', () => {
  const pl = parsePlaylist(DVR);
  assert.equal(pl.bad, '');
  assert.equal(pl.seq, 96);
  assert.equal(pl.skipped, 0);
  assert.equal(pl.canSkipUntil, 12);
  assert.equal(pl.canBlockReload, true);
  assert.deepEqual(pl.segments, DVR_SEGS.map((n) => `d-${n}.m4s`));
  assert.deepEqual(pl.segInits, DVR_SEGS.map(initOf));
  assert.deepEqual(pl.inits, ['init-d-0.mp4', 'init-d-1.mp4']);
  assert.equal(dvrProblem(pl, null), '');
  // A delta update: the first segment listed is MEDIA-SEQUENCE + SKIPPED.
  const delta = parsePlaylist(DVR_DELTA);
  assert.equal(delta.bad, '');
  assert.equal(delta.seq, 97);
  assert.equal(delta.skipped, 5);
  assert.deepEqual(delta.segments, ['d-102.m4s', 'd-103.m4s', 'd-104.m4s']);
  assert.deepEqual(delta.segInits, ['init-d-1.mp4', 'init-d-1.mp4', 'init-d-1.mp4']);
  // Consistent with what the full playlist said...
  const d = newDelivery();
  d.noteDVR('360p', pl);
  assert.equal(dvrProblem(delta, d.dvr.get('360p')), '');
  d.noteDVR('360p', delta);
  const names = d.dvr.get('360p').names;
  assert.deepEqual(names.get('d-104.m4s'), { kind: 'seg', msn: 104, ms: 2000, gap: false });
  assert.equal(names.get('d-96.m4s'), undefined); // out of the window (MEDIA-SEQUENCE 97)
  assert.equal(names.get('d-97.m4s').msn, 97); // skipped, still in it
  assert.equal(names.get('init-d-0.mp4').msn, 96);
  assert.equal(names.get('init-d-1.mp4').msn, 101);
  // ...and a delta update that numbers a known segment otherwise is a lie.
  const shifted = parsePlaylist(dvrText(97, [102, 103, 104], 4));
  assert.match(dvrProblem(shifted, d.dvr.get('360p')), /d-102\.m4s at media sequence 101, an earlier one at 102/);
  // The packager's golden DVR playlists.
  return (async () => {
    const { readFile } = await import('node:fs/promises');
    for (const [f, skipped, first] of [['dvr_full.m3u8', 0, 'd-0.m4s'], ['dvr_delta.m3u8', 4, 'd-4.m4s']]) {
      let text;
      try {
        text = await readFile(new URL(`../../../packager/playlist/testdata/${f}`, import.meta.url), 'utf8');
      } catch {
        continue; // web/ alone
      }
      const g = parsePlaylist(text);
      assert.equal(g.bad, '', f);
      assert.equal(g.skipped, skipped, f);
      assert.equal(g.segments[0], first, f);
      assert.ok(g.segInits.every((i) => i !== ''), f);
      assert.equal(dvrProblem(g, null), '', f);
    }
  })();
});

test('parsePlaylist rejects EXT-X-SKIP and CAN-SKIP-UNTIL that Shoal never writes', () => {
  const cases = {
    'skip after a segment': DVR.replace('#EXTINF:2.000,\nd-97.m4s', '#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n#EXTINF:2.000,\nd-97.m4s'),
    'skip twice': DVR_DELTA.replace('#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n', '#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n'),
    'skip negative': DVR_DELTA.replace('SKIPPED-SEGMENTS=5', 'SKIPPED-SEGMENTS=-5'),
    'skip without count': DVR_DELTA.replace('SKIPPED-SEGMENTS=5', 'URI="x"'),
    'skip with more': DVR_DELTA.replace('SKIPPED-SEGMENTS=5', 'SKIPPED-SEGMENTS=5,URI="https://evil.test/x"'),
    'can-skip-until malformed': DVR.replace('CAN-SKIP-UNTIL=12', 'CAN-SKIP-UNTIL=soon'),
  };
  for (const [name, text] of Object.entries(cases)) {
    assert.notEqual(parsePlaylist(text).bad, '', name);
  }
  // A DVR playlist has no parts.
  assert.match(dvrProblem(parsePlaylist(LL), null), /parts/);
  // An LL playlist numbered after a skip still matches its manifest.
  const skipped = LL.replace('#EXT-X-MEDIA-SEQUENCE:10\n', '#EXT-X-MEDIA-SEQUENCE:9\n#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n');
  assert.deepEqual(playlistState(parsePlaylist(skipped)), { msn: 12, part: 0 });
});

test('range manifests: the hundred of a media sequence number', () => {
  for (const [msn, start] of [[0, 0], [1, 0], [99, 0], [100, 100], [101, 100], [199, 100], [3699, 3600], [123456, 123400]]) {
    assert.equal(rangeStart(msn), start, String(msn));
  }
  assert.equal(rangeManifestPath(ID, '360p', 3600), `/hls/${ID}/360p/manifest-3600.txt`);
  assert.equal(rangeManifestPath(ID, 'audio', 0), `/hls/${ID}/audio/manifest-0.txt`);
});

test('rangeProblem: a segment at its media sequence number, an init section listed', async () => {
  const m = parseManifest(enc.encode(await rangeText(100, 103)));
  assert.equal(rangeProblem(m, 100, 'd-102.m4s', { kind: 'seg', msn: 102, ms: 2000 }), '');
  assert.equal(rangeProblem(m, 100, 'init-d-1.mp4', { kind: 'init', msn: 101 }), '');
  assert.match(rangeProblem(m, 100, 'd-102.m4s', { kind: 'seg', msn: 101, ms: 2000 }), /at media sequence 101, the signed range manifest of 100 at 102/);
  assert.match(rangeProblem(m, 100, 'd-104.m4s', { kind: 'seg', msn: 104, ms: 2000 }), /not in the signed range manifest of 100/);
  assert.match(rangeProblem(m, 100, 'init-d-1.mp4', { kind: 'seg', msn: 101 }), /not as a segment/);
  // A recording that starts within the range (a rendition that joined the
  // stream late at 137): its segments at their own numbers.
  const late = parseManifest(enc.encode(await rangeText(137, 140)));
  assert.equal(rangeProblem(late, 100, 'd-138.m4s', { kind: 'seg', msn: 138, ms: 2000 }), '');
  assert.match(rangeProblem(late, 100, 'd-138.m4s', { kind: 'seg', msn: 101, ms: 2000 }), /at 138/);
});

// dvrRoutes serves the DVR master and playlists and the range manifests
// 0 (final: 0..99) and 100 (being written: 100..103) from base.
async function dvrRoutes(base, { fileBytes = bytesOf, range100 = null } = {}) {
  const r = {
    [`${base}/hls/${ID}/dvr.m3u8`]: '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/dvr.m3u8\n',
    [`${base}${R}/dvr.m3u8`]: DVR,
    [`${base}${R}/dvr.m3u8?_HLS_msn=104&_HLS_skip=YES`]: DVR_DELTA,
    [`${base}${R}/manifest-0.txt`]: await rangeText(0, 99, { ended: true }),
    [`${base}${R}/manifest-100.txt`]: range100 || await rangeText(100, 103),
  };
  for (let n = 0; n <= 104; n++) r[`${base}${R}/d-${n}.m4s`] = fileBytes(`d-${n}.m4s`);
  for (const i of ['init-d-0.mp4', 'init-d-1.mp4']) r[`${base}${R}/${i}`] = fileBytes(i);
  return r;
}

test('DVR playlists load unchecked against manifest.txt; their segments against range manifests', async () => {
  // The DVR master comes from the origin, the rest from the edge.
  const originDVR = await dvrRoutes(ORIGIN);
  const calls = fakeFetch({ ...(await dvrRoutes(EDGE)), [`${ORIGIN}/hls/${ID}/dvr.m3u8`]: originDVR[`${ORIGIN}/hls/${ID}/dvr.m3u8`] });
  const d = newDelivery();
  assert.deepEqual(d.request(`${EDGE}${R}/dvr.m3u8?_HLS_msn=104&_HLS_skip=YES&x=1`, 'playlist'),
    { path: `${R}/dvr.m3u8`, query: '_HLS_msn=104&_HLS_skip=YES' });
  assert.equal(d.request(`${EDGE}/hls/${ID}/dvr.m3u8?_HLS_skip=YES`, 'playlist').query, '');
  await d.load(`${EDGE}/hls/${ID}/dvr.m3u8`, 'playlist');
  const res = await d.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  assert.equal(new TextDecoder().decode(res.data), DVR);
  assert.deepEqual(calls, [`${ORIGIN}/hls/${ID}/dvr.m3u8`, `${EDGE}${R}/dvr.m3u8`]);
  // Segment 98: range 0 (final); its init section: that of segment 96.
  calls.length = 0;
  for (const name of ['init-d-0.mp4', 'd-98.m4s', 'd-99.m4s']) {
    const r = await d.load(`${EDGE}${R}/${name}`, 'media');
    assert.deepEqual(new Uint8Array(r.data), bytesOf(name));
  }
  assert.deepEqual(calls, [`${EDGE}${R}/manifest-0.txt`, `${EDGE}${R}/init-d-0.mp4`, `${EDGE}${R}/d-98.m4s`, `${EDGE}${R}/d-99.m4s`]);
  // Segments 100..103 and the new init section: range 100.
  calls.length = 0;
  for (const name of ['d-100.m4s', 'init-d-1.mp4', 'd-101.m4s']) await d.load(`${EDGE}${R}/${name}`, 'media');
  assert.deepEqual(calls, [`${EDGE}${R}/manifest-100.txt`, `${EDGE}${R}/d-100.m4s`, `${EDGE}${R}/init-d-1.mp4`, `${EDGE}${R}/d-101.m4s`]);
  // A delta update (blocking, _HLS_skip) numbers its segments after the
  // skipped ones: 104 is in range 100, which (as held, from a moment ago)
  // does not list it yet: it is asked for again, a second after the last
  // time, and then lists it.
  await d.load(`${EDGE}${R}/dvr.m3u8?_HLS_msn=104&_HLS_skip=YES`, 'playlist');
  assert.equal(d.dvr.get('360p').names.get('d-104.m4s').msn, 104);
  const routes = await dvrRoutes(EDGE);
  routes[`${EDGE}${R}/manifest-100.txt`] = await rangeText(100, 104);
  const calls2 = fakeFetch(routes);
  const t0 = Date.now();
  const r = await d.load(`${EDGE}${R}/d-104.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('d-104.m4s'));
  assert.ok(Date.now() - t0 >= 500, 'asked for the range again too soon');
  assert.deepEqual(calls2, [`${EDGE}${R}/manifest-100.txt`, `${EDGE}${R}/d-104.m4s`]);
  assert.equal(d.verified, 7);
  assert.deepEqual(d.failures, []);
});

test('a DVR segment the edge altered, or that its range does not vouch for, is taken from the origin', async () => {
  // Altered bytes: a hash mismatch.
  const edge = await dvrRoutes(EDGE, { fileBytes: (n) => (n === 'd-98.m4s' ? enc.encode('x'.repeat(bytesOf(n).byteLength)) : bytesOf(n)) });
  const calls = fakeFetch({ ...edge, ...(await dvrRoutes(ORIGIN)) });
  const d = newDelivery();
  await d.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  const r = await d.load(`${EDGE}${R}/d-98.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('d-98.m4s'));
  assert.equal(d.failures.length, 1);
  assert.equal(d.failures[0].kind, KIND.hash);
  assert.equal(d.current().base, ORIGIN);
  assert.deepEqual(calls.slice(-2), [`${ORIGIN}${R}/manifest-0.txt`, `${ORIGIN}${R}/d-98.m4s`]);

  // A duration other than the playlist's.
  const d2 = newDelivery();
  fakeFetch({ ...(await dvrRoutes(EDGE, { range100: await rangeText(100, 103, { ms: (n) => (n === 102 ? 1900 : 2000) }) })), ...(await dvrRoutes(ORIGIN)) });
  await d2.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  await d2.load(`${EDGE}${R}/d-102.m4s`, 'media');
  assert.equal(d2.failures.length, 1);
  assert.equal(d2.failures[0].kind, KIND.unlisted);
  assert.match(d2.failures[0].message, /gives d-102\.m4s 2000 ms, the manifest 1900 ms/);

  // A final range that does not list the segment: no second try.
  const d3 = newDelivery();
  const noSeg = await manifestText({ seq: 100, entries: rangeEntries(0, 99).map((e) => (e[1] === 'd-97.m4s' ? ['seg', 'd-x.m4s', 2000] : e)), ended: true });
  const calls3 = fakeFetch({ ...(await dvrRoutes(EDGE)), [`${EDGE}${R}/manifest-0.txt`]: noSeg, ...(await dvrRoutes(ORIGIN)) });
  await d3.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  await d3.load(`${EDGE}${R}/d-97.m4s`, 'media');
  assert.equal(d3.failures[0].kind, KIND.unlisted);
  assert.equal(calls3.filter((u) => u === `${EDGE}${R}/manifest-0.txt`).length, 1);

  // A range manifest of another range, or of another rendition.
  const d4 = newDelivery();
  fakeFetch({ ...(await dvrRoutes(EDGE)), [`${EDGE}${R}/manifest-0.txt`]: await rangeText(100, 103), ...(await dvrRoutes(ORIGIN)) });
  await d4.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  await d4.load(`${EDGE}${R}/d-97.m4s`, 'media');
  assert.equal(d4.failures[0].kind, KIND.badManifest);
  const d5 = newDelivery();
  fakeFetch({ ...(await dvrRoutes(EDGE)), [`${EDGE}${R}/manifest-0.txt`]: await rangeText(0, 99, { ended: true, extra: { rendition: '240p' } }), ...(await dvrRoutes(ORIGIN)) });
  await d5.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  await d5.load(`${EDGE}${R}/d-97.m4s`, 'media');
  assert.equal(d5.failures[0].kind, KIND.badManifest);
  assert.match(d5.failures[0].message, /240p/);

  // The origin is trusted: its range not vouching for a segment is an error.
  const d6 = new Delivery({ id: ID, keys, reportURL: ORIGIN + '/v1/delivery-reports', candidates: [{ url: ORIGIN }] });
  fakeFetch({ ...(await dvrRoutes(ORIGIN)), [`${ORIGIN}${R}/manifest-0.txt`]: noSeg });
  await d6.load(`${ORIGIN}${R}/dvr.m3u8`, 'playlist');
  await assert.rejects(d6.load(`${ORIGIN}${R}/d-97.m4s`, 'media'), (err) => err.kind === KIND.unlisted);
});

// A segment the origin could not write (a full disk): EXT-X-GAP in the
// playlist, a signed gap entry in the manifest at its place.
const GAP_PL = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n' +
  '#EXTINF:2.000,\ns1-0-10.m4s\n#EXT-X-GAP\n#EXTINF:2.000,\ns1-0-11.m4s\n#EXTINF:2.000,\ns1-0-12.m4s\n';
const GAP_ENTRIES = [['init', 'init-s1-0-0.mp4'], ['seg', 's1-0-10.m4s', 2000], ['gap', 's1-0-11.m4s', 2000], ['seg', 's1-0-12.m4s', 2000]];

test('a gap segment: a signed gap entry, checked against EXT-X-GAP', async () => {
  const m = parseManifest(enc.encode(await manifestText({ seq: 13, entries: GAP_ENTRIES })));
  assert.deepEqual(m.segments, ['s1-0-10.m4s', 's1-0-11.m4s', 's1-0-12.m4s']);
  assert.deepEqual(m.entries.get('s1-0-11.m4s'), { kind: 'gap', size: 0, sha256: '', ms: 2000 });
  for (const bad of ['gap x.m4s', 'gap x.m4s 2.5', 'gap x.m4s 10 ' + 'a'.repeat(64) + ' 5', 'gap x.m4s 02000']) {
    const text = `shoal-manifest 1\nkey ${KEY_ID}\nid ${ID}\nrendition 360p\nseq 1\ntime 1\nended 0\n${bad}\nsig AAAA\n`;
    assert.throws(() => parseManifest(enc.encode(text)), /bad manifest entry/, bad);
  }
  const pl = parsePlaylist(GAP_PL);
  assert.equal(pl.bad, '');
  assert.deepEqual(pl.gaps, [false, true, false]);
  assert.equal(playlistProblem(pl, m), '');
  // An edge cannot hide a segment as a gap, nor make a gap a segment.
  const hidden = parsePlaylist(GAP_PL.replace('#EXTINF:2.000,\ns1-0-12', '#EXT-X-GAP\n#EXTINF:2.000,\ns1-0-12'));
  assert.match(playlistProblem(hidden, m), /s1-0-12\.m4s as a gap, the signed manifest as a segment/);
  const filled = parsePlaylist(GAP_PL.replace('#EXT-X-GAP\n', ''));
  assert.match(playlistProblem(filled, m), /s1-0-11\.m4s as a segment, the signed manifest as a gap/);
  // Range manifests (DVR) the same way.
  const range = parseManifest(enc.encode(await manifestText({ seq: 13, entries: GAP_ENTRIES })));
  assert.equal(rangeProblem(range, 0, 's1-0-11.m4s', { kind: 'seg', msn: 11, ms: 2000, gap: true }), '');
  assert.equal(rangeProblem(range, 0, 's1-0-12.m4s', { kind: 'seg', msn: 12, ms: 2000, gap: false }), '');
  assert.match(rangeProblem(range, 0, 's1-0-11.m4s', { kind: 'seg', msn: 11, ms: 2000, gap: false }), /as a segment, the signed range manifest of 0 as a gap/);
});

test('the loader never fetches a gap segment, and blames no edge for it', async () => {
  const routes = (base, playlist) => ({
    [`${base}${R}/index.m3u8`]: playlist,
    [`${base}${R}/manifest.txt`]: null,
    [`${base}${R}/s1-0-12.m4s`]: bytesOf('s1-0-12.m4s'),
  });
  const manifest = await manifestText({ seq: 13, entries: GAP_ENTRIES });
  const edge = routes(EDGE, GAP_PL);
  edge[`${EDGE}${R}/manifest.txt`] = manifest;
  const calls = fakeFetch(edge);
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  await assert.rejects(d.load(`${EDGE}${R}/s1-0-11.m4s`, 'media'), (err) => err.code === 404 && err.soft === true);
  const r = await d.load(`${EDGE}${R}/s1-0-12.m4s`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf('s1-0-12.m4s'));
  assert.ok(!calls.includes(`${EDGE}${R}/s1-0-11.m4s`), 'the gap was fetched');
  assert.deepEqual(d.failures, []);
  assert.equal(d.current().node, 'edge-1');
  // An edge whose playlist hides a segment as a gap is dropped: the
  // playlist comes from the origin.
  const lying = routes(EDGE, GAP_PL.replace('#EXTINF:2.000,\ns1-0-12', '#EXT-X-GAP\n#EXTINF:2.000,\ns1-0-12'));
  lying[`${EDGE}${R}/manifest.txt`] = manifest;
  const origin = routes(ORIGIN, GAP_PL);
  origin[`${ORIGIN}${R}/manifest.txt`] = manifest;
  fakeFetch({ ...lying, ...origin });
  const d2 = newDelivery();
  const res = await d2.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  assert.equal(res.url, `${ORIGIN}${R}/index.m3u8`);
  assert.equal(d2.failures.length, 1);
  assert.equal(d2.failures[0].kind, KIND.unlisted);
  // A gap in a DVR playlist: checked once against its range manifest
  // (hls.js never loads it), never fetched.
  const gapDVR = DVR.replace('#EXTINF:2.000,\nd-99.m4s', '#EXT-X-GAP\n#EXTINF:2.000,\nd-99.m4s');
  const gapRange = await manifestText({ seq: 100, ended: true, rendition: '360p',
    entries: rangeEntries(0, 99).map((e) => (e[1] === 'd-99.m4s' ? ['gap', 'd-99.m4s', 2000] : e)) });
  const dvr = await dvrRoutes(EDGE);
  dvr[`${EDGE}${R}/dvr.m3u8`] = gapDVR;
  dvr[`${EDGE}${R}/manifest-0.txt`] = gapRange;
  const calls3 = fakeFetch(dvr);
  const d3 = newDelivery();
  await d3.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  await d3.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  assert.equal(d3.dvr.get('360p').names.get('d-99.m4s').gap, true);
  await assert.rejects(d3.load(`${EDGE}${R}/d-99.m4s`, 'media'), (err) => err.code === 404 && err.soft === true);
  assert.deepEqual(calls3, [`${EDGE}${R}/dvr.m3u8`, `${EDGE}${R}/manifest-0.txt`, `${EDGE}${R}/dvr.m3u8`]);
  assert.deepEqual(d3.failures, []);
  // An edge whose DVR playlist hides a segment as a gap is dropped: the
  // range manifest lists it as a segment; the playlist comes from the
  // origin.
  const lyingDVR = await dvrRoutes(EDGE);
  lyingDVR[`${EDGE}${R}/dvr.m3u8`] = gapDVR;
  fakeFetch({ ...lyingDVR, ...(await dvrRoutes(ORIGIN)) });
  const d4 = newDelivery();
  const res4 = await d4.load(`${EDGE}${R}/dvr.m3u8`, 'playlist');
  assert.equal(res4.url, `${ORIGIN}${R}/dvr.m3u8`);
  assert.equal(d4.failures.length, 1);
  assert.equal(d4.failures[0].kind, KIND.unlisted);
  assert.match(d4.failures[0].message, /d-99\.m4s as a gap/);
});

test('the route request carries the playback token and the session', () => {
  const page = 'http://origin.test/watch/' + ID;
  assert.equal(routeRequest('/v1/route/' + ID, page), 'http://origin.test/v1/route/' + ID);
  assert.equal(routeRequest('/v1/route/' + ID, page, { token: 'a b', session: 'v1.s-e_s.sig' }),
    'http://origin.test/v1/route/' + ID + '?token=a+b&session=v1.s-e_s.sig');
  assert.equal(routeRequest('/v1/route/' + ID, page, { session: 'tok' }), 'http://origin.test/v1/route/' + ID + '?session=tok');
});

test('an object loaded again is credited to its node once; an edge may not redirect', async () => {
  fakeFetch({ ...(await routesFor(EDGE)), ...(await routesFor(ORIGIN)) });
  const served = globalThis.fetch;
  const redirects = [];
  globalThis.fetch = (url, init = {}) => {
    if (init.method !== 'POST') redirects.push([new URL(url).origin, init.redirect]);
    return served(url, init);
  };
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const before = d.received.get('edge-1');
  await d.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  const once = d.received.get('edge-1');
  assert.equal(once - before, bytesOf('s1-0-12-p0.m4s').byteLength);
  // A seek back: hls.js loads it again (from the browser's cache).
  await d.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  assert.equal(d.received.get('edge-1'), once);
  assert.equal(d.verified, 2);
  // Edges are fetched with redirect: 'error' (a redirect is a failure),
  // the origin with 'follow'.
  assert.ok(redirects.length >= 3);
  for (const [origin, redirect] of redirects) assert.equal(redirect, origin === EDGE ? 'error' : 'follow', origin);
});

test('Deliveries of one page share what they credited', async () => {
  fakeFetch({ ...(await routesFor(EDGE)), ...(await routesFor(ORIGIN)) });
  const credited = new Set();
  const mk = () => new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports', credited,
    candidates: [{ url: EDGE, node_id: 'edge-1' }, { url: ORIGIN }],
  });
  const d1 = mk();
  await d1.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  await d1.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  // A new Delivery (the viewer switched to the DVR) loads it again.
  const d2 = mk();
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const before = d2.received.get('edge-1');
  await d2.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  assert.equal(d2.received.get('edge-1'), before);
  assert.equal(d2.verified, 1);
});

// ---- line breaks and numbers as hls.js reads them ----------------------
//
// hls.js (1.7.4, M3U8Parser.parseLevelPlaylist) ends a line at '\n', '\r',
// U+2028 and U+2029 (its regexps' `.` and `\S`), and reads
// EXT-X-MEDIA-SEQUENCE as the leading digits (/ *(\d+)/). The verifier must
// see the playlist hls.js will play.

// A VOD of three segments, as the origin signs it.
const VOD_ENTRIES = [
  ['init', 'init-s1-0-0.mp4'], ['seg', 's1-0-0.m4s', 2000], ['seg', 's1-0-1.m4s', 2000], ['seg', 's1-0-2.m4s', 2000],
];

test('a playlist whose lines end in a lone CR is checked as hls.js reads it', async () => {
  // What hls.js plays: the last segment first, the first one twice, the
  // middle one dropped, a 10 s duration. Every line ends in '\r' only.
  const tampered = ['#EXTM3U', '#EXT-X-VERSION:7', '#EXT-X-TARGETDURATION:2', '#EXT-X-PLAYLIST-TYPE:VOD',
    '#EXT-X-MEDIA-SEQUENCE:0', '#EXT-X-MAP:URI="init-s1-0-0.mp4"',
    '#EXTINF:2.000,', 's1-0-2.m4s', '#EXTINF:10.000,', 's1-0-0.m4s', '#EXTINF:2.000,', 's1-0-0.m4s',
    '#EXT-X-ENDLIST', ''].join('\r');
  fakeFetch({
    [`${EDGE}${R}/index.m3u8`]: tampered,
    [`${EDGE}${R}/manifest.txt`]: await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true }),
    [`${ORIGIN}${R}/index.m3u8`]: '#EXTM3U\n',
    [`${ORIGIN}${R}/manifest.txt`]: await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true }),
  });
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8`, 'playlist').catch((err) => ({ err }));
  const pl = parsePlaylist(tampered);
  assert.notEqual(res.url, `${EDGE}${R}/index.m3u8`,
    `the edge's reordered playlist was handed to hls.js (the verifier read ${pl.segments.length} segments, bad=${JSON.stringify(pl.bad)})`);
  assert.equal(d.failures.length, 1);
  assert.equal(d.failures[0].kind, KIND.unlisted);
});

test('a segment hidden after a CR, U+2028 or U+2029 in a tag line is seen', async () => {
  const m = parseManifest(enc.encode(await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true })));
  const missed = [];
  for (const sep of ['\r', '\u2028', '\u2029']) {
    // The verifier sees s1-0-0, s1-0-1, s1-0-2; hls.js plays s1-0-0 twice
    // (the second time hidden in the PROGRAM-DATE-TIME line).
    const text = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n' +
      '#EXTINF:2.000,\ns1-0-0.m4s\n' +
      `#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:02.000Z${sep}#EXTINF:2.000,${sep}s1-0-0.m4s\n` +
      '#EXTINF:2.000,\ns1-0-1.m4s\n#EXTINF:2.000,\ns1-0-2.m4s\n#EXT-X-ENDLIST\n';
    if (playlistProblem(parsePlaylist(text), m) === '') missed.push(escape(sep));
  }
  assert.deepEqual(missed, [], 'a repeated segment hidden after these separators passes');
});

test('EXT-X-MEDIA-SEQUENCE is read as hls.js reads it', async () => {
  // The manifest: segments 20 and 21. hls.js reads "0x14" and "+20" as 0,
  // "2e1" as 2: the playlist's numbers are not the manifest's.
  const m = parseManifest(enc.encode(await manifestText({ seq: 22, entries: [['seg', 's1-0-20.m4s', 2000], ['seg', 's1-0-21.m4s', 2000]] })));
  const ok = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:20\n#EXTINF:2.000,\ns1-0-20.m4s\n#EXTINF:2.000,\ns1-0-21.m4s\n';
  assert.equal(playlistProblem(parsePlaylist(ok), m), '');
  const passed = [];
  for (const v of ['0x14', '+20', '2e1']) {
    const pl = parsePlaylist(ok.replace('SEQUENCE:20', 'SEQUENCE:' + v));
    if (playlistProblem(pl, m) === '') passed.push(`${v} (read as ${pl.seq})`);
  }
  assert.deepEqual(passed, [], 'EXT-X-MEDIA-SEQUENCE values hls.js reads as another number pass');
});

test('a live session refuses the previous broadcast\'s finished recording, replayed by an edge', async () => {
  // The stream is live now (broadcast s2); the edge kept the playlist and
  // the manifest of the broadcast that ended two hours ago (s1, final).
  const twoHoursAgo = Date.now() - 2 * 3600 * 1000;
  const oldPlaylist = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n' +
    '#EXTINF:2.000,\ns1-0-0.m4s\n#EXTINF:2.000,\ns1-0-1.m4s\n#EXTINF:2.000,\ns1-0-2.m4s\n#EXT-X-ENDLIST\n';
  const live = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-MAP:URI="init-s2-0-0.mp4"\n#EXTINF:2.000,\ns2-0-5.m4s\n';
  fakeFetch({
    [`${EDGE}${R}/index.m3u8`]: oldPlaylist,
    [`${EDGE}${R}/manifest.txt`]: await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true, time: twoHoursAgo }),
    [`${ORIGIN}${R}/index.m3u8`]: live,
    [`${ORIGIN}${R}/manifest.txt`]: await manifestText({ seq: 6, entries: [['init', 'init-s2-0-0.mp4'], ['seg', 's2-0-5.m4s', 2000]] }),
  });
  // The page knows it plays a live stream (player.load's live) and the
  // origin's time at render (serverOffset).
  const d = new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports', live: true,
    candidates: [{ url: EDGE, node_id: 'edge-1' }, { url: ORIGIN }],
  });
  const res = await d.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  assert.equal(res.url, `${ORIGIN}${R}/index.m3u8`, 'the edge\'s two-hour-old recording was played as the live stream');
});

test('a live session accepts the recording of the broadcast it watched, once it ended', async () => {
  const playlist = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n' +
    '#EXTINF:2.000,\ns1-0-0.m4s\n#EXTINF:2.000,\ns1-0-1.m4s\n#EXTINF:2.000,\ns1-0-2.m4s\n#EXT-X-ENDLIST\n';
  fakeFetch({
    [`${EDGE}${R}/index.m3u8`]: playlist,
    [`${EDGE}${R}/manifest.txt`]: await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true, time: Date.now() + 5000 }),
  });
  const d = new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports', live: true,
    candidates: [{ url: EDGE, node_id: 'edge-1' }, { url: ORIGIN }],
  });
  const res = await d.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  assert.equal(res.url, `${EDGE}${R}/index.m3u8`);
  assert.equal(d.failures.length, 0);
});

test('a live session takes the last recording from the origin, which says what it has', async () => {
  const oldPlaylist = '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI="init-s1-0-0.mp4"\n' +
    '#EXTINF:2.000,\ns1-0-0.m4s\n#EXTINF:2.000,\ns1-0-1.m4s\n#EXTINF:2.000,\ns1-0-2.m4s\n#EXT-X-ENDLIST\n';
  fakeFetch({
    [`${ORIGIN}${R}/index.m3u8`]: oldPlaylist,
    [`${ORIGIN}${R}/manifest.txt`]: await manifestText({ seq: 3, entries: VOD_ENTRIES, ended: true, time: Date.now() - 3600 * 1000 }),
  });
  const d = new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports', live: true, candidates: [{ url: ORIGIN }],
  });
  const res = await d.load(`${ORIGIN}${R}/index.m3u8`, 'playlist');
  assert.equal(res.url, `${ORIGIN}${R}/index.m3u8`);
});

// ---- what an edge may not do to the loader -----------------------------

test('an edge answering 403 does not end playback that the origin would serve', async () => {
  const edge = await routesFor(EDGE);
  const forbidden = () => new Response('forbidden', { status: 403 });
  edge[`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`] = forbidden;
  edge[`${EDGE}${R}/index.m3u8`] = forbidden;
  fakeFetch({ ...edge, ...(await routesFor(ORIGIN)) });
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist').catch((err) => err);
  assert.ok(!(res instanceof Error), `load failed with ${res && res.message} (code ${res && res.code}): the page shows "This playback link has expired"`);
  assert.equal(res.url, `${ORIGIN}${R}/index.m3u8`);
  assert.equal(d.current().base, ORIGIN);
});

test('the origin\'s 403 reaches the page, after the edges that answered 403 are reported', async () => {
  const forbidden = () => new Response('forbidden', { status: 403 });
  const reports = [];
  fakeFetch({ [`${EDGE}${R}/index.m3u8`]: forbidden, [`${ORIGIN}${R}/index.m3u8`]: forbidden });
  const d = new Delivery({
    id: ID, keys, token: 'tok', reportURL: ORIGIN + '/v1/delivery-reports', onReport: (r) => reports.push(r),
    candidates: [{ url: EDGE, node_id: 'edge-1' }, { url: ORIGIN }],
  });
  const err = await d.load(`${EDGE}${R}/index.m3u8`, 'playlist').then(() => null, (e) => e);
  assert.ok(err, 'the origin\'s 403 was not an error');
  assert.equal(err.code, 403);
  assert.deepEqual(reports.map((r) => [r.node_id, r.kind]), [['edge-1', KIND.http]]);
});

const MASTER = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2"
360p/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080,CODECS="avc1.640028,mp4a.40.2"
1080p/index.m3u8
`;

test('a master playlist an edge rewrote is not what the player plays', async () => {
  for (const forged of [
    MASTER.replace(/avc1\.64001e/, 'zzzz.ffffff').split('#EXT-X-STREAM-INF:BANDWIDTH=5000000')[0],
    MASTER.replace('1080p/index.m3u8', 'x9/index.m3u8').replace('360p/index.m3u8', 'x9/index.m3u8'),
  ]) {
    fakeFetch({
      [`${EDGE}/hls/${ID}/master.m3u8`]: forged,
      [`${ORIGIN}/hls/${ID}/master.m3u8`]: MASTER,
      ...(await routesFor(ORIGIN)),
    });
    const d = newDelivery();
    const res = await d.load(`${EDGE}/hls/${ID}/master.m3u8`, 'playlist');
    assert.equal(new TextDecoder().decode(res.data), MASTER,
      `the player was handed the edge's master playlist (unverified), failures: ${JSON.stringify(d.failures)}`);
  }
});

test('the master playlists come from the origin, with the token; the edge stays the one to play from', async () => {
  const DVR_MASTER = '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\n360p/dvr.m3u8\n';
  const calls = fakeFetch({
    [`${EDGE}/hls/${ID}/master.m3u8`]: MASTER.replace('1080p', '720p'),
    [`${EDGE}/hls/${ID}/dvr.m3u8`]: DVR_MASTER.replace('360p', '240p'),
    [`${ORIGIN}/hls/${ID}/master.m3u8`]: MASTER,
    [`${ORIGIN}/hls/${ID}/dvr.m3u8`]: DVR_MASTER,
  });
  const served = globalThis.fetch;
  const asked = [];
  globalThis.fetch = (url, init = {}) => {
    asked.push(url);
    return served(url, init);
  };
  const d = newDelivery();
  const master = await d.load(`${EDGE}/hls/${ID}/master.m3u8`, 'playlist');
  assert.equal(new TextDecoder().decode(master.data), MASTER);
  assert.equal(master.url, `${ORIGIN}/hls/${ID}/master.m3u8`);
  const dvr = await d.load(`${EDGE}/hls/${ID}/dvr.m3u8`, 'playlist');
  assert.equal(new TextDecoder().decode(dvr.data), DVR_MASTER);
  assert.deepEqual(calls, [`${ORIGIN}/hls/${ID}/master.m3u8`, `${ORIGIN}/hls/${ID}/dvr.m3u8`]);
  assert.deepEqual(asked, [`${ORIGIN}/hls/${ID}/master.m3u8?token=tok`, `${ORIGIN}/hls/${ID}/dvr.m3u8?token=tok`]);
  assert.equal(d.current().node, 'edge-1');
  assert.deepEqual(d.failures, []);
  // The origin's failure is the page's: no edge is asked instead.
  fakeFetch({ [`${EDGE}/hls/${ID}/master.m3u8`]: MASTER });
  const err = await newDelivery().load(`${EDGE}/hls/${ID}/master.m3u8`, 'playlist').then(() => null, (e) => e);
  assert.equal(err && err.code, 404);
});

test('a segment body is not read past its signed size', async () => {
  const routes = await routesFor(EDGE);
  const name = 's1-0-12-p0.m4s';
  const size = bytesOf(name).byteLength;
  let pulled = 0;
  routes[`${EDGE}${R}/${name}`] = () => new Response(new ReadableStream({
    pull(ctl) {
      if (pulled >= 256 << 20) { ctl.close(); return; }
      pulled += 1 << 20;
      ctl.enqueue(new Uint8Array(1 << 20));
    },
  }));
  fakeFetch({ ...routes, ...(await routesFor(ORIGIN)) });
  const d = newDelivery();
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const r = await d.load(`${EDGE}${R}/${name}`, 'media');
  assert.deepEqual(new Uint8Array(r.data), bytesOf(name));
  assert.ok(pulled <= 2 << 20, `read ${pulled} bytes from the edge for a ${size}-byte part`);
});

test('a playlist, a manifest or a hinted part from an edge is read up to a bound, then taken from the origin', async () => {
  // An answer of 1 MiB chunks (of '#', a comment for a playlist) without end.
  const endless = (count) => () => new Response(new ReadableStream({
    pull(ctl) {
      if (count.n >= 256 << 20) { ctl.close(); return; }
      count.n += 1 << 20;
      ctl.enqueue(new Uint8Array(1 << 20).fill(35));
    },
  }));
  // The playlist: the blocking request, then the playlist as it is (see
  // loadPlaylist), both without end.
  for (const [what, path, load, bound, reads] of [
    ['playlist', `${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, `${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 16 << 20, 2],
    ['manifest', `${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`, `${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 16 << 20, 1],
    ['hinted part', `${R}/s1-0-12-p1.m4s`, `${R}/s1-0-12-p1.m4s`, 32 << 20, 1],
  ]) {
    const count = { n: 0 };
    const edge = await routesFor(EDGE);
    edge[`${EDGE}${path}`] = endless(count);
    if (what === 'playlist') edge[`${EDGE}${R}/index.m3u8`] = endless(count);
    fakeFetch({ ...edge, ...(await routesFor(ORIGIN)) });
    const d = newDelivery();
    if (what === 'hinted part') await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
    const res = await d.load(`${EDGE}${load}`, what === 'hinted part' ? 'media' : 'playlist');
    assert.equal(res.candidate.base, ORIGIN, what);
    if (what === 'hinted part') assert.deepEqual(new Uint8Array(res.data), bytesOf('s1-0-12-p1.m4s'));
    else assert.equal(new TextDecoder().decode(res.data), LL, what);
    assert.ok(count.n > reads * bound && count.n <= reads * (bound + (2 << 20)), `${what}: read ${count.n} bytes from the edge`);
    assert.deepEqual(d.failures.map((f) => [f.node, f.kind]), [['edge-1', KIND.http]], what);
  }
});

test('an edge is not credited for padding in the playlists it serves', async () => {
  const pad = '#' + 'x'.repeat(4 << 20) + '\n'; // 4 MiB of comment
  const edge = await routesFor(EDGE);
  edge[`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`] = LL + pad;
  edge[`${EDGE}/hls/${ID}/master.m3u8`] = MASTER + pad;
  fakeFetch({ ...edge, ...(await routesFor(ORIGIN)), [`${ORIGIN}/hls/${ID}/master.m3u8`]: MASTER });
  const d = newDelivery();
  await d.load(`${EDGE}/hls/${ID}/master.m3u8`, 'playlist');
  await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const credited = d.received.get('edge-1') || 0;
  assert.ok(credited < 1 << 20, `edge-1 credited ${credited} bytes for two playlists (8 MiB of it comments)`);
});

test('a manifest padded after its signature is refused, and not credited', async () => {
  const edge = await routesFor(EDGE);
  const key = `${EDGE}${R}/manifest.txt?_HLS_msn=12&_HLS_part=0`;
  // White space that atob skips: the signature still verifies.
  edge[key] = edge[key].replace(/\n$/, ' '.repeat(4 << 20) + '\n');
  fakeFetch({ ...edge, ...(await routesFor(ORIGIN)) });
  const d = newDelivery();
  const res = await d.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  assert.equal(res.candidate.base, ORIGIN);
  assert.deepEqual(d.failures.map((f) => [f.node, f.kind]), [['edge-1', KIND.badManifest]]);
  assert.ok((d.received.get('edge-1') || 0) < 1 << 20, `edge-1 credited ${d.received.get('edge-1')} bytes`);
  // Signed manifests and verified media are what is credited.
  const d2 = newDelivery();
  fakeFetch({ ...(await routesFor(EDGE)) });
  await d2.load(`${EDGE}${R}/index.m3u8?_HLS_msn=12&_HLS_part=0`, 'playlist');
  const manifest = enc.encode((await routesFor(EDGE))[key]).byteLength;
  assert.equal(d2.received.get('edge-1'), manifest);
  await d2.load(`${EDGE}${R}/s1-0-12-p0.m4s`, 'media');
  assert.equal(d2.received.get('edge-1'), manifest + bytesOf('s1-0-12-p0.m4s').byteLength);
});
