// Unit tests of the viewer's beacons (node --test; `go test ./web -run
// TestPlayerUnit` runs them too): the counters from simulated media and
// hls.js events on an injected clock, when beacons go and with which seq,
// the bytes per source from a real Delivery against fake servers, the
// bound on byte keys, and the final beacon through navigator.sendBeacon.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Beacons, INTERVAL_MS, KEEPALIVE_MS, viewerId } from './beacons.js';
import { Delivery } from './delivery.js';

const URL_ = 'http://origin.test/v1/beacons';
const SESSION = 'sess.tok-1_x';
const VIEWER = 'AAAAAAAAAAAAAAAAAAAAAA';
const NODE = (c) => c.repeat(20); // a node id: 20 characters a-z2-7

class FakeVideo extends EventTarget {
  constructor() {
    super();
    this.paused = true;
    this.currentTime = 0;
    this.readyState = 0;
    this.playbackRate = 1;
  }

  fire(name) {
    this.dispatchEvent(new Event(name));
  }
}

class FakeHls {
  constructor() {
    this.handlers = new Map();
  }

  on(ev, f) {
    if (!this.handlers.has(ev)) this.handlers.set(ev, []);
    this.handlers.get(ev).push(f);
  }

  emit(ev, data) {
    for (const f of this.handlers.get(ev) || []) f(ev, data);
  }
}

const Events = {
  LEVEL_SWITCHED: 'hlsLevelSwitched', ERROR: 'hlsError', DESTROYING: 'hlsDestroying', FRAG_LOADED: 'hlsFragLoaded',
  MANIFEST_LOADED: 'hlsManifestLoaded', LEVEL_LOADED: 'hlsLevelLoaded', AUDIO_TRACK_LOADED: 'hlsAudioTrackLoaded',
  SUBTITLE_TRACK_LOADED: 'hlsSubtitleTrackLoaded',
};

// setup makes Beacons on a fake clock, video, page and transport. fetches
// answer at once (202) unless hold is set: then each waits for release().
function setup({ hold = false, status = 202, beaconOK = true, onRefused = null } = {}) {
  const answer = { status };
  const clock = { t: 0 };
  const sent = []; // { via: 'fetch'|'beacon', body, init|blob }
  const pending = [];
  const timers = [];
  const doc = new EventTarget();
  doc.visibilityState = 'visible';
  const win = new EventTarget();
  const b = new Beacons({
    url: URL_, session: SESSION, viewer: VIEWER, now: () => clock.t,
    fetch: (url, init) => {
      assert.equal(url, URL_);
      sent.push({ via: 'fetch', body: JSON.parse(init.body), init });
      const res = { ok: answer.status >= 200 && answer.status < 300, status: answer.status };
      if (!hold) return Promise.resolve(res);
      return new Promise((resolve) => pending.push(() => resolve(res)));
    },
    sendBeacon: (url, blob) => {
      assert.equal(url, URL_);
      sent.push({ via: 'beacon', blob });
      return beaconOK;
    },
    setInterval: (f, ms) => {
      timers.push({ f, ms });
      return timers.length;
    },
    clearInterval: () => {},
    doc, win, onRefused,
  });
  const video = new FakeVideo();
  b.watchVideo(video);
  b.start();
  // play: a play request at the clock's time; frame: the first frame
  // after ms.
  const play = () => {
    video.paused = false;
    video.fire('play');
  };
  const advance = (ms, media = ms) => {
    clock.t += ms;
    video.currentTime += media / 1000;
    video.fire('timeupdate');
  };
  const release = async () => {
    pending.shift()();
    await settle();
  };
  return { answer, b, clock, sent, timers, doc, win, video, play, advance, release };
}

// settle lets the promise callbacks of answered beacons run.
async function settle() {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

async function blobBody(blob) {
  assert.equal(blob.type, 'text/plain');
  return JSON.parse(await blob.text());
}

test('watch time, start-up and rebuffers follow the media events', async () => {
  const { b, clock, sent, video, play, advance } = setup();
  clock.t = 1000;
  play();
  video.fire('waiting'); // the initial load: no rebuffer
  clock.t = 1850;
  video.fire('playing');
  let s = b.snapshot();
  assert.equal(s.startup_ms, 850);
  assert.equal(s.rebuffers, 0);
  assert.equal(s.watch_ms, 0);
  // The first frame sent the first beacon.
  await settle();
  assert.equal(sent.length, 1);
  assert.equal(sent[0].body.seq, 1);
  assert.equal(sent[0].body.startup_ms, 850);

  advance(10000);
  assert.equal(b.snapshot().watch_ms, 10000);

  // A stall of 400 ms.
  clock.t += 100;
  video.fire('waiting');
  assert.equal(b.snapshot().watch_ms, 10000, 'the picture did not move since the last timeupdate');
  clock.t += 300;
  s = b.snapshot();
  assert.equal(s.rebuffers, 1);
  assert.equal(s.rebuffer_ms, 300, 'a stall going on counts up to now');
  clock.t += 100;
  video.fire('playing');
  advance(5000);
  s = b.snapshot();
  assert.equal(s.rebuffers, 1);
  assert.equal(s.rebuffer_ms, 400);
  assert.equal(s.watch_ms, 15000);

  // A seek: its waiting is no rebuffer, and the jump is no watch time.
  video.fire('seeking');
  video.currentTime = 120;
  video.fire('waiting');
  clock.t += 700;
  video.fire('seeked');
  video.fire('playing');
  advance(2000);
  s = b.snapshot();
  assert.equal(s.rebuffers, 1);
  assert.equal(s.rebuffer_ms, 400);
  assert.equal(s.watch_ms, 17000);

  // A picture frozen without a 'waiting': no watch time.
  clock.t += 3000;
  video.fire('timeupdate');
  assert.equal(b.snapshot().watch_ms, 17000);
  // Faster than real time (live catch-up): wall-clock time.
  video.playbackRate = 1.25;
  video.fire('ratechange');
  advance(4000, 5000);
  assert.equal(b.snapshot().watch_ms, 21000);
  video.playbackRate = 1;
  video.fire('ratechange');

  // Paused (and hidden): nothing counts; a stall while paused is none.
  const before = sent.length;
  video.paused = true;
  video.fire('pause');
  clock.t += 60000;
  video.fire('waiting');
  clock.t += 60000;
  s = b.snapshot();
  assert.equal(s.watch_ms, 21000);
  assert.equal(s.rebuffers, 1);
  await settle();
  assert.equal(sent.length, before + 1, 'a pause sends a beacon');
  assert.equal(sent.at(-1).body.watch_ms, 21000);

  // A play request after the start is no start-up.
  play();
  clock.t += 200;
  video.fire('playing');
  advance(1000);
  s = b.snapshot();
  assert.equal(s.startup_ms, 850);
  assert.equal(s.watch_ms, 22000);

  // A stall, then a seek out of it: the stall ends at the seek.
  video.fire('waiting');
  clock.t += 250;
  video.fire('seeking');
  clock.t += 5000;
  video.fire('playing');
  s = b.snapshot();
  assert.equal(s.rebuffers, 2);
  assert.equal(s.rebuffer_ms, 650);

  // A new source (back to live, the next broadcast): its load is no
  // rebuffer either.
  video.fire('emptied');
  video.fire('loadstart');
  video.fire('waiting');
  clock.t += 1500;
  video.fire('playing');
  s = b.snapshot();
  assert.equal(s.rebuffers, 2);
  assert.equal(s.rebuffer_ms, 650);
});

test('start-up runs from the latest play request before the first frame', () => {
  const { b, clock, video, play } = setup();
  play();
  clock.t = 500;
  video.paused = true;
  video.fire('pause');
  clock.t = 10000;
  play();
  clock.t = 10300;
  video.fire('playing');
  assert.equal(b.snapshot().startup_ms, 300);
  // Before any frame: 0.
  assert.equal(setup().b.snapshot().startup_ms, 0);
});

test('switches and errors from hls.js', () => {
  const { b, video } = setup();
  const hls = new FakeHls();
  b.watchHls(hls, Events, null);
  hls.emit(Events.LEVEL_SWITCHED, { level: 2 }); // the start
  hls.emit(Events.LEVEL_SWITCHED, { level: 2 });
  hls.emit(Events.LEVEL_SWITCHED, { level: 1 });
  hls.emit(Events.LEVEL_SWITCHED, { level: 3 });
  hls.emit(Events.ERROR, { fatal: false, details: 'bufferStalledError' });
  hls.emit(Events.ERROR, { fatal: true, details: 'bufferAppendError' });
  video.fire('error'); // hls.js plays: its error counted already
  let s = b.snapshot();
  assert.equal(s.switches, 2);
  assert.equal(s.errors, 1);
  // A new instance: its first switch is its start.
  hls.emit(Events.DESTROYING, {});
  const next = new FakeHls();
  b.watchHls(next, Events, null);
  next.emit(Events.LEVEL_SWITCHED, { level: 0 });
  s = b.snapshot();
  assert.equal(s.switches, 2);
  // Native playback (no hls.js): media element errors count.
  next.emit(Events.DESTROYING, {});
  video.fire('error');
  assert.equal(b.snapshot().errors, 2);
});

test('without a Delivery, what hls.js loaded counts as the origin', () => {
  const { b } = setup();
  const hls = new FakeHls();
  b.watchHls(hls, Events, null);
  hls.emit(Events.MANIFEST_LOADED, { stats: { loaded: 300 } });
  hls.emit(Events.LEVEL_LOADED, { stats: { loaded: 700 } });
  const initSegment = { data: new Uint8Array(800) };
  hls.emit(Events.FRAG_LOADED, { frag: { initSegment }, payload: new ArrayBuffer(5000) });
  hls.emit(Events.FRAG_LOADED, { frag: { initSegment }, payload: new ArrayBuffer(4000) });
  hls.emit(Events.AUDIO_TRACK_LOADED, { stats: { loaded: 100 } });
  assert.deepEqual(b.snapshot().bytes, { origin: 300 + 700 + 800 + 5000 + 4000 + 100 });
});

test('one beacon in flight; seq grows by one per beacon sent', async () => {
  const { b, clock, sent, video, play, advance, release, timers } = setup({ hold: true });
  play();
  clock.t = 100;
  video.fire('playing'); // seq 1, in flight
  advance(1000);
  const p2 = b.flush();
  const p3 = b.flush();
  assert.equal(sent.length, 1, 'a flush waits for the beacon in flight');
  // The periodic beacon does not pile up either.
  assert.equal(timers.length, 1);
  assert.equal(timers[0].ms, INTERVAL_MS);
  timers[0].f();
  assert.equal(sent.length, 1);
  // A final beacon goes at once.
  video.paused = true;
  video.fire('pause'); // queued too
  b.win.dispatchEvent(new Event('pagehide'));
  assert.equal(sent.length, 2);
  assert.equal(sent[1].via, 'beacon');
  const fin = await blobBody(sent[1].blob);
  assert.equal(fin.seq, 2);
  assert.equal(fin.final, true);
  // Once the first is answered, one beacon with the figures of then.
  clock.t += 5000; // paused: no watch time
  await release();
  assert.equal(sent.length, 3);
  assert.equal(sent[2].body.seq, 3);
  assert.equal(sent[2].body.final, false);
  assert.equal(sent[2].body.watch_ms, 1000);
  await release();
  assert.equal(await p2, true);
  assert.equal(await p3, true);
  assert.equal(sent.length, 3);
  for (const s of sent.filter((x) => x.via === 'fetch')) {
    assert.equal(s.init.method, 'POST');
    assert.equal(s.init.keepalive, true);
    assert.equal(s.init.headers['Content-Type'], 'application/json');
    assert.equal(s.body.session, SESSION);
    assert.equal(s.body.viewer, VIEWER);
  }
});

test('the periodic beacon goes when something changed, else every 5 minutes', async () => {
  const { b, clock, sent, timers, video, play, advance, doc } = setup();
  const tick = async () => {
    timers[0].f();
    await settle();
  };
  // Nothing happened yet: no beacon at all.
  await tick();
  await b.flush();
  doc.visibilityState = 'hidden';
  doc.dispatchEvent(new Event('visibilitychange'));
  doc.visibilityState = 'visible';
  b.win.dispatchEvent(new Event('pagehide'));
  assert.equal(sent.length, 0);

  play();
  video.fire('playing');
  await settle();
  assert.equal(sent.length, 1);
  advance(INTERVAL_MS);
  await tick();
  assert.equal(sent.length, 2);
  assert.equal(sent[1].body.seq, 2);
  assert.equal(sent[1].body.watch_ms, INTERVAL_MS);
  video.paused = true;
  video.fire('pause');
  await settle();
  assert.equal(sent.length, 3);
  // Paused: nothing changes, nothing is sent...
  for (let i = 0; i < 9; i++) {
    clock.t += INTERVAL_MS;
    await tick();
  }
  assert.equal(sent.length, 3);
  // ...until the keep-alive.
  clock.t += KEEPALIVE_MS - 9 * INTERVAL_MS;
  await tick();
  assert.equal(sent.length, 4);
  assert.equal(sent[3].body.seq, 4);
  assert.deepEqual({ ...sent[3].body, seq: 3 }, sent[2].body);
  // Hidden: a beacon.
  doc.visibilityState = 'hidden';
  doc.dispatchEvent(new Event('visibilitychange'));
  await settle();
  assert.equal(sent.length, 5);
});

test('the final beacon goes by sendBeacon as text/plain, else by fetch', async () => {
  const { b, sent, video, play, advance, win } = setup();
  play();
  video.fire('playing');
  advance(3000);
  await settle();
  assert.equal(sent.length, 1);
  win.dispatchEvent(new Event('pagehide'));
  assert.equal(sent.length, 2);
  assert.equal(sent[1].via, 'beacon');
  const body = await blobBody(sent[1].blob);
  assert.deepEqual(body, { ...b.snapshot(), seq: 2, final: true });
  assert.equal(body.watch_ms, 3000);
  // Nothing new: no second final one.
  win.dispatchEvent(new Event('pagehide'));
  assert.equal(sent.length, 2);
  // The end of the media sends a final one too.
  advance(1000);
  video.fire('ended');
  assert.equal(sent.length, 3);
  assert.equal((await blobBody(sent[2].blob)).seq, 3);

  // sendBeacon refused: fetch with keepalive.
  const r = setup({ beaconOK: false });
  r.play();
  r.video.fire('playing');
  await settle();
  r.win.dispatchEvent(new Event('pagehide'));
  assert.equal(r.sent.length, 3);
  assert.equal(r.sent[1].via, 'beacon');
  assert.equal(r.sent[2].via, 'fetch');
  assert.equal(r.sent[2].body.final, true);
  assert.equal(r.sent[2].body.seq, 2);
  assert.equal(r.sent[2].init.keepalive, true);
  assert.equal(r.sent[2].init.headers['Content-Type'], 'text/plain');
});

test('a session the origin refuses ends the beacons', async () => {
  const { b, sent, video, play, advance, timers, win } = setup({ status: 403 });
  play();
  video.fire('playing');
  await settle();
  assert.equal(sent.length, 1);
  advance(1000);
  assert.equal(await b.flush(), false);
  timers[0].f();
  win.dispatchEvent(new Event('pagehide'));
  assert.equal(sent.length, 1);
});

test('a refused session is renewed: it counts from the last beacon the origin took, from seq 1', async () => {
  let refused = 0;
  const { b, sent, video, play, advance, answer } = setup({ onRefused: () => { refused++; } });
  const d = { verified: 3, failed: 0, received: new Map([[NODE('a'), 1000]]) };
  b.useDelivery(d);
  play();
  advance(200, 0);
  video.fire('playing');
  advance(4000);
  await settle();
  assert.equal(sent.length, 1); // the first frame's, taken
  // An hour later the session is over: the next beacon is refused.
  answer.status = 403;
  advance(3000);
  d.received.set(NODE('a'), 1200);
  assert.equal(await b.flush(), false);
  assert.equal(refused, 1);
  answer.status = 202;
  b.renew('s1.renewed');
  advance(2000);
  d.received.set(NODE('a'), 1500);
  assert.equal(await b.flush(), true);
  const body = sent[2].body;
  assert.equal(body.session, 's1.renewed');
  assert.equal(body.seq, 1);
  // The beacon taken was the first frame's (watch time 0): what the
  // refused one carried counts in the new session.
  assert.equal(body.watch_ms, 9000);
  assert.equal(body.startup_ms, 0);
  assert.equal(body.verified, 0);
  assert.deepEqual(body.bytes, { [NODE('a')]: 500 });
  // Refused before anything was taken: the new session has it all.
  const r = setup({ status: 403, onRefused: () => { refused++; } });
  r.play();
  r.advance(150, 0);
  r.video.fire('playing');
  r.advance(1000);
  await settle();
  assert.equal(refused, 2);
  r.answer.status = 202;
  r.b.renew('s1.again');
  assert.equal(await r.b.flush(), true);
  assert.equal(r.sent[1].body.startup_ms, 150);
  assert.equal(r.sent[1].body.watch_ms, 1000);
  // A body too large is never renewed.
  const big = setup({ status: 413, onRefused: () => { refused++; } });
  big.play();
  big.video.fire('playing');
  await settle();
  assert.equal(refused, 2);
});

test('at most 8 byte keys, each for good', () => {
  const { b } = setup();
  const nodes = 'abcdefghij'.split('').map(NODE);
  const d = { verified: 5, failed: 1, received: new Map([['', 10], ['p2p', 20]]) };
  b.useDelivery(d);
  for (let i = 0; i < 4; i++) d.received.set(nodes[i], 100 + i);
  let s = b.snapshot();
  assert.deepEqual(s.bytes, { origin: 10, p2p: 20, [nodes[0]]: 100, [nodes[1]]: 101, [nodes[2]]: 102, [nodes[3]]: 103 });
  assert.equal(s.verified, 5);
  assert.equal(s.failed, 1);
  // Four more nodes and a malformed id: the first two new ones get keys,
  // the rest counts as the origin.
  for (let i = 4; i < 8; i++) d.received.set(nodes[i], 1000 * i);
  d.received.set('Not-A-Node', 7);
  s = b.snapshot();
  assert.equal(Object.keys(s.bytes).length, 8);
  assert.equal(s.bytes[nodes[4]], 4000);
  assert.equal(s.bytes[nodes[5]], 5000);
  assert.equal(s.bytes[nodes[6]], undefined);
  assert.equal(s.bytes.origin, 10 + 6000 + 7000 + 7);
  // A later Delivery (the next broadcast): the keys stay those of the
  // page, the figures add up.
  const d2 = { verified: 2, failed: 0, received: new Map([[nodes[9], 50], [nodes[0], 1]]) };
  b.useDelivery(d2);
  s = b.snapshot();
  assert.equal(Object.keys(s.bytes).length, 8);
  assert.equal(s.bytes[nodes[0]], 101);
  assert.equal(s.bytes.origin, 10 + 6000 + 7000 + 7 + 50);
  assert.equal(s.verified, 7);
  assert.equal(s.failed, 1);
});

test('viewer ids are kept in storage, per page when it fails', () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const id = viewerId(storage);
  assert.match(id, /^[A-Za-z0-9_-]{22}$/);
  assert.equal(store.get('shoal.viewer'), id);
  assert.equal(viewerId(storage), id);
  store.set('shoal.viewer', 'bad id!');
  const next = viewerId(storage);
  assert.match(next, /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(next, id);
  const broken = { getItem: () => { throw new Error('SecurityError'); }, setItem: () => {} };
  assert.match(viewerId(broken), /^[A-Za-z0-9_-]{22}$/);
  assert.match(viewerId(null), /^[A-Za-z0-9_-]{22}$/);
  assert.notEqual(viewerId(null), viewerId(null));
});

// ---- bytes from a real Delivery against fake servers --------------------

const ID = 'vid123';
const enc = new TextEncoder();
const key = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
const KEY_ID = '0123456789abcdef';
const EDGE = 'http://edge.test';
const ORIGIN = 'http://origin.test';
const R = `/hls/${ID}/360p`;
const EDGE_NODE = NODE('e');

function bytesOf(name) {
  return enc.encode(`bytes of ${name} `.repeat(50));
}

async function manifestText(entries) {
  let t = `shoal-manifest 1\nkey ${KEY_ID}\nid ${ID}\nrendition 360p\nseq 2\ntime ${Date.now()}\nended 1\n`;
  for (const [kind, name, ms] of entries) {
    const b = bytesOf(name);
    const sum = Buffer.from(await crypto.subtle.digest('SHA-256', b)).toString('hex');
    t += `${kind} ${name} ${b.byteLength} ${sum}${kind === 'init' ? '' : ' ' + ms}\n`;
  }
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, enc.encode(t));
  return t + `sig ${Buffer.from(new Uint8Array(sig)).toString('base64url')}\n`;
}

const PLAYLIST = `#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="init-0.mp4"
#EXTINF:2.000,
s-0.m4s
#EXTINF:2.000,
s-1.m4s
#EXT-X-ENDLIST
`;

test('bytes per source are what a Delivery accepted', async () => {
  globalThis.location = { href: `${ORIGIN}/watch/${ID}` };
  const manifest = await manifestText([['init', 'init-0.mp4'], ['seg', 's-0.m4s', 2000], ['seg', 's-1.m4s', 2000]]);
  const files = {};
  for (const base of [EDGE, ORIGIN]) {
    files[`${base}${R}/index.m3u8`] = PLAYLIST;
    files[`${base}${R}/manifest.txt`] = manifest;
    for (const n of ['init-0.mp4', 's-0.m4s', 's-1.m4s']) files[`${base}${R}/${n}`] = bytesOf(n);
  }
  // The edge tampers with s-1.m4s.
  files[`${EDGE}${R}/s-1.m4s`] = bytesOf('something else');
  globalThis.fetch = async (url, init = {}) => {
    if (init.method === 'POST') return new Response('{}', { status: 202 });
    const u = new URL(url);
    const body = files[u.origin + u.pathname];
    return body === undefined ? new Response('no', { status: 404 }) : new Response(body, { status: 200 });
  };
  const d = new Delivery({
    id: ID, keys: { [KEY_ID]: key.publicKey }, token: '', reportURL: `${ORIGIN}/v1/delivery-reports`,
    candidates: [{ url: EDGE, node_id: EDGE_NODE }, { url: ORIGIN }],
  });
  const { b } = setup();
  b.watchHls(new FakeHls(), Events, d);
  await d.load(`${EDGE}${R}/index.m3u8`, 'playlist');
  await d.load(`${EDGE}${R}/init-0.mp4`, 'media');
  await d.load(`${EDGE}${R}/s-0.m4s`, 'media');
  await d.load(`${EDGE}${R}/s-1.m4s`, 'media'); // fails on the edge, comes from the origin
  const len = (s) => enc.encode(s).byteLength;
  const s = b.snapshot();
  // What the origin signed: playlists are not counted.
  assert.deepEqual(s.bytes, {
    [EDGE_NODE]: len(manifest) + bytesOf('init-0.mp4').byteLength + bytesOf('s-0.m4s').byteLength,
    origin: len(manifest) + bytesOf('s-1.m4s').byteLength,
  });
  assert.equal(s.verified, 3);
  assert.equal(s.failed, 1);
});

test('what the origin took only moves forward, whatever order the answers come in', async () => {
  const { b, sent, video, play, advance, release } = setup({ hold: true });
  play();
  video.fire('playing');
  advance(2000);
  b.flush(false); // seq 1 (or 2), held
  await settle();
  const inFlight = sent.length;
  advance(3000);
  b.flush(true); // the final one goes at once, by sendBeacon: taken
  assert.equal(sent[sent.length - 1].via, 'beacon');
  const finalSeq = b.seq;
  await release(); // the older answer comes late
  assert.ok(inFlight >= 1);
  assert.equal(b.acceptedSeq, finalSeq);
  assert.equal(b.accepted.watch_ms, 5000);
});
