// Unit tests of the player's peer-assisted delivery (node --test; `go test
// ./web/` runs them too): chunking and reassembly of the data-channel
// protocol, message validation, the bounded store and have set, the "peers
// or HTTP" decision, the upload pacing, how the verifying loader treats
// what peers send, and the session's tracker waiters, offer/answer glare,
// peer rests and stats carried across tracker rejoins (with stand-ins for
// the browser's WebSocket and RTCPeerConnection). The browsers-and-Go-peers end to end test is
// internal/app's TestP2PBrowser.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHUNK_BYTES, LABEL, P2P, copyBytes, MAX_HAVE, MAX_SEGMENT_BYTES, MAX_PEER_BUDGET_MS, Reassembly, SegmentStore, TokenBucket, bufferAhead, chunks,
  MAX_WANTS, MIN_TRY_MS, PartAssembler, WANT_AGAIN_MS, partOf, parsePeerMessage, parseTrackerMessage, peerBudget, rejoinAfter, wantAgainIn,
} from './p2p.js';
import { Delivery } from './delivery.js';

test('chunks: at most 64 KiB each, in order, the whole', () => {
  const b = new Uint8Array(300 * 1024 + 7).map((_, i) => i % 251);
  const cs = chunks(b);
  assert.equal(cs.length, 5);
  assert.ok(cs.every((c) => c.byteLength <= CHUNK_BYTES));
  assert.equal(cs[4].byteLength, 300 * 1024 + 7 - 4 * CHUNK_BYTES);
  const r = new Reassembly(b.byteLength);
  cs.forEach((c, i) => assert.equal(r.push(c.slice().buffer), i === cs.length - 1));
  assert.deepEqual(r.buf, b);
  assert.deepEqual(chunks(new Uint8Array(0)), []);
  assert.ok(new Reassembly(0).done);
  assert.equal(chunks(new Uint8Array(CHUNK_BYTES)).length, 1);
});

test('Reassembly refuses more bytes than announced, oversize chunks and sizes', () => {
  const r = new Reassembly(10);
  r.push(new Uint8Array(6));
  assert.throws(() => r.push(new Uint8Array(5)), /more than the 10 bytes/);
  assert.throws(() => new Reassembly(100 * CHUNK_BYTES).push(new Uint8Array(CHUNK_BYTES + 1)), /over 65536/);
  assert.throws(() => new Reassembly(MAX_SEGMENT_BYTES + 1), /bad segment size/);
  assert.throws(() => new Reassembly(-1), /bad segment size/);
  assert.throws(() => new Reassembly(1.5), /bad segment size/);
});

test('parsePeerMessage: get, data, none with their fields only', () => {
  assert.deepEqual(parsePeerMessage('{"type":"get","id":3,"segment":"s1-0-12.m4s"}'), { type: 'get', id: 3, segment: 's1-0-12.m4s' });
  assert.deepEqual(parsePeerMessage('{"type":"data","id":3,"size":300000}'), { type: 'data', id: 3, size: 300000 });
  assert.deepEqual(parsePeerMessage('{"type":"none","id":0}'), { type: 'none', id: 0 });
  for (const bad of [
    '', 'x', '[]', 'null', '{"type":"get","id":1}', '{"type":"get","id":1,"segment":"../x"}',
    '{"type":"get","id":-1,"segment":"a"}', '{"type":"get","id":1.5,"segment":"a"}', '{"type":"get","id":"1","segment":"a"}',
    '{"type":"data","id":1,"size":-1}', `{"type":"data","id":1,"size":${MAX_SEGMENT_BYTES + 1}}`, '{"type":"data","id":1}',
    '{"type":"none","id":1,"extra":true}', '{"type":"hello","id":1}', `{"type":"get","id":1,"segment":"${'a'.repeat(129)}"}`,
    `{"type":"none","id":1,"pad":"${'x'.repeat(1100)}"}`,
  ]) {
    assert.equal(parsePeerMessage(bad), null, bad);
  }
});

test('parseTrackerMessage: what the tracker sends, checked', () => {
  assert.deepEqual(parseTrackerMessage('{"type":"welcome","peer":"abc123","swarm":"v1/360p"}'), { type: 'welcome', peer: 'abc123', swarm: 'v1/360p' });
  assert.deepEqual(parseTrackerMessage('{"type":"peers","segment":"s1.m4s","peers":["a1","b2"]}'), { type: 'peers', segment: 's1.m4s', peers: ['a1', 'b2'] });
  assert.deepEqual(parseTrackerMessage('{"type":"peers","segment":"s1.m4s"}'), { type: 'peers', segment: 's1.m4s', peers: [] });
  assert.deepEqual(parseTrackerMessage('{"type":"signal","from":"a1","data":{"type":"offer","sdp":"v=0"}}'),
    { type: 'signal', from: 'a1', data: { type: 'offer', sdp: 'v=0' } });
  assert.deepEqual(parseTrackerMessage('{"type":"gone","peer":"a1"}'), { type: 'gone', peer: 'a1' });
  assert.deepEqual(parseTrackerMessage('{"type":"pong"}'), { type: 'pong' });
  for (const bad of [
    'x', '{"type":"welcome","peer":"A B"}', '{"type":"peers","segment":"s","peers":["a","b","c","d","e","f"]}',
    '{"type":"peers","segment":"s","peers":["../x"]}', '{"type":"signal","from":"a1","data":"offer"}',
    '{"type":"signal","from":"a1","data":{"type":"pranswer","sdp":"v=0"}}', '{"type":"signal","from":"a1","data":{"type":"offer"}}',
    '{"type":"gone"}', '{"type":"have","segments":[]}',
  ]) {
    assert.equal(parseTrackerMessage(bad), null, bad);
  }
});

test('SegmentStore keeps the newest segments within its count and bytes; have lists at most 256', () => {
  const s = new SegmentStore(3, 100);
  for (let i = 0; i < 5; i++) s.put(`r/s${i}`, new Uint8Array(10));
  assert.deepEqual(s.names('r/'), ['s2', 's3', 's4']);
  assert.equal(s.get('r/s1'), null);
  s.put('r/big', new Uint8Array(95));
  assert.deepEqual(s.names('r/'), ['big']);
  assert.equal(s.bytes, 95);
  s.put('r/huge', new Uint8Array(101)); // over the whole bound: not held
  assert.deepEqual(s.names('r/'), ['big']);
  s.put('q/x', new Uint8Array(1));
  assert.deepEqual(s.names('q/'), ['x']);
  const many = new SegmentStore(1000, 1 << 20);
  for (let i = 0; i < 300; i++) many.put(`r/s${i}`, new Uint8Array(1));
  const names = many.names('r/');
  assert.equal(names.length, MAX_HAVE);
  assert.equal(names[0], 's44');
  assert.equal(names[MAX_HAVE - 1], 's299');
});

test('peerBudget: HTTP at start-up and on a short buffer, peers within half the buffer ahead', () => {
  assert.equal(peerBudget(0, 2000), 0); // start-up: nothing buffered
  assert.equal(peerBudget(1.5, 2000), 0); // less than a segment ahead
  assert.equal(peerBudget(NaN, 2000), 0);
  assert.equal(peerBudget(-1, 2000), 0);
  assert.equal(peerBudget(2, NaN), 0);
  assert.equal(peerBudget(2, 2000), 1000); // a segment ahead: half of it for peers
  assert.equal(peerBudget(6, 2000), 3000);
  assert.equal(peerBudget(30, 2000), MAX_PEER_BUDGET_MS);
  assert.equal(peerBudget(0.8, 500), 0); // under the least budget worth a try
  assert.equal(peerBudget(1.2, 500), 600);
});

test('wantAgainIn: ask again while a peer could still be tried, a few times at most', () => {
  assert.equal(wantAgainIn(0, 5000), WANT_AGAIN_MS);
  assert.equal(wantAgainIn(1, 5000), WANT_AGAIN_MS);
  assert.equal(wantAgainIn(MAX_WANTS - 1, 5000), 0);
  assert.equal(wantAgainIn(0, MIN_TRY_MS + WANT_AGAIN_MS), WANT_AGAIN_MS);
  assert.equal(wantAgainIn(0, MIN_TRY_MS + WANT_AGAIN_MS - 1), 0); // no time left for a peer after it: HTTP now
  assert.equal(wantAgainIn(0, 0), 0);
});

test('rejoinAfter: 5 s after a socket that was welcomed, doubling after refusals, 5 min at most', () => {
  assert.deepEqual([0, 1, 2, 3, 7, 100].map(rejoinAfter), [5000, 5000, 10000, 20000, 300000, 300000]);
});

test('bufferAhead reads the range around the playhead', () => {
  const ranges = (list) => ({ length: list.length, start: (i) => list[i][0], end: (i) => list[i][1] });
  assert.equal(bufferAhead({ currentTime: 3, buffered: ranges([[0, 8]]) }), 5);
  assert.equal(bufferAhead({ currentTime: 3, buffered: ranges([[0, 2], [10, 20]]) }), 0);
  assert.equal(bufferAhead({ currentTime: 9.7, buffered: ranges([[0, 2], [10, 20]]) }), 20 - 9.7);
  assert.equal(bufferAhead(null), 0);
});

test('TokenBucket paces uploads at its rate after the burst', () => {
  let now = 0;
  const b = new TokenBucket(1000, 1000, () => now);
  assert.equal(b.reserve(1000), 0);
  assert.equal(b.reserve(500), 500);
  now = 500;
  assert.equal(b.reserve(500), 500);
  now = 2000;
  assert.ok(b.tryTake(1000));
  assert.ok(!b.tryTake(1));
});

test('PartAssembler: a segment from its parts 0, 1, ... of exactly its size; bounded', () => {
  assert.deepEqual(partOf('s1-0-12-p3.m4s'), { segment: 's1-0-12.m4s', k: 3 });
  assert.equal(partOf('s1-0-12.m4s'), null);
  const a = new PartAssembler(2, 1000);
  a.add('360p', 's1-0-1-p0.m4s', new Uint8Array([1, 2]));
  a.add('360p', 's1-0-1-p1.m4s', new Uint8Array([3]));
  a.add('360p', 's1-0-1.m4s', new Uint8Array([9])); // not a part
  assert.deepEqual(a.pending('360p'), ['s1-0-1.m4s']);
  assert.equal(a.assemble('360p', 's1-0-1.m4s', 4), null, 'short of the size: wait for more parts');
  assert.deepEqual(a.assemble('360p', 's1-0-1.m4s', 3), new Uint8Array([1, 2, 3]));
  assert.deepEqual(a.pending('360p'), []);
  // Started mid-segment (no part 0): never a whole segment.
  a.add('360p', 's1-0-2-p1.m4s', new Uint8Array([1, 2, 3]));
  assert.equal(a.assemble('360p', 's1-0-2.m4s', 3), null);
  assert.deepEqual(a.pending('360p'), []);
  // At most 2 segments, 1000 bytes.
  for (const seg of ['a', 'b', 'c']) a.add('360p', `${seg}-p0.m4s`, new Uint8Array(10));
  assert.deepEqual(a.pending('360p'), ['b.m4s', 'c.m4s']);
  a.add('720p', 'd-p0.m4s', new Uint8Array(995));
  assert.deepEqual(a.pending('360p'), []);
  assert.deepEqual(a.pending('720p'), ['d.m4s']);
  assert.equal(a.bytes, 995);
});

// ---- the verifying loader with peers ---------------------------------------

const enc = new TextEncoder();
const ID = 'vid1';
const R = `/hls/${ID}/360p`;
const ORIGIN = 'http://origin.test';
globalThis.location = { href: `${ORIGIN}/watch/${ID}` };
const key = await crypto.subtle.generateKey({ name: 'Ed25519' }, true, ['sign', 'verify']);
const SEG = enc.encode('the bytes of s1-0-3.m4s '.repeat(100));

async function manifest() {
  const sum = Buffer.from(await crypto.subtle.digest('SHA-256', SEG)).toString('hex');
  const t = `shoal-manifest 1\nkey k1\nid ${ID}\nrendition 360p\nseq 4\ntime ${Date.now()}\nended 1\nseg s1-0-3.m4s ${SEG.byteLength} ${sum} 2000\n`;
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, enc.encode(t));
  return t + `sig ${Buffer.from(new Uint8Array(sig)).toString('base64url')}\n`;
}

// peers stands for a P2P session (p2p.js): it hands the loader's verify
// callback what its peers "sent" and records what the loader did.
function peers(sent, budget = 1000) {
  const p = { calls: [], kept: [], http: 0, dropped: 0 };
  p.budget = () => budget;
  p.fetch = async (base, rendition, name, size, b, verify) => {
    p.calls.push({ base, rendition, name, size, b });
    for (const bytes of sent) {
      if (await verify(bytes)) return bytes;
      p.dropped++;
    }
    return null;
  };
  p.keep = (base, rendition, name, bytes) => p.kept.push([rendition, name, bytes.byteLength]);
  p.noteHTTP = (base, rendition, n) => { p.http += n; };
  return p;
}

async function loader(p, segmentFetches) {
  const m = await manifest();
  globalThis.fetch = async (url) => {
    const u = new URL(url);
    if (u.pathname === `${R}/manifest.txt`) return new Response(m);
    if (u.pathname === `${R}/s1-0-3.m4s`) {
      segmentFetches.n++;
      return new Response(SEG);
    }
    return new Response('not found', { status: 404 });
  };
  return new Delivery({ id: ID, keys: { k1: key.publicKey }, candidates: [{ url: ORIGIN }], p2p: p });
}

test('the loader takes a segment from peers only when their bytes match the signed manifest', async () => {
  const bad = SEG.slice();
  bad[7] ^= 1;
  const fetches = { n: 0 };
  const p = peers([bad, SEG.slice(0, 10), SEG.slice()]);
  const d = await loader(p, fetches);
  const res = await d.load(`${ORIGIN}${R}/s1-0-3.m4s`, 'media');
  assert.deepEqual(new Uint8Array(res.data), SEG);
  assert.equal(p.dropped, 2, 'a flipped byte and a short answer both fail');
  assert.equal(fetches.n, 0, 'no HTTP fetch once a peer delivered');
  assert.deepEqual(p.calls.map((c) => [c.rendition, c.name, c.size]), [['360p', 's1-0-3.m4s', SEG.byteLength]]);
  assert.deepEqual(p.kept, [['360p', 's1-0-3.m4s', SEG.byteLength]]);
  assert.equal(d.delivered.at(-1).node, 'p2p');
  assert.equal(d.failures.length, 0, 'peers are no candidate edges');
  // For the beacons: the peers' bytes that failed count as failed, the
  // segment's as accepted from p2p (the manifest's, from the origin).
  assert.equal(d.failed, 2);
  assert.equal(d.verified, 1);
  assert.equal(d.received.get('p2p'), SEG.byteLength);
  assert.equal(d.received.get(''), enc.encode(await manifest()).byteLength);
});

test('tampered bytes from every peer: the segment comes over HTTP, verified', async () => {
  const bad = SEG.slice();
  bad[SEG.byteLength - 1] ^= 0x80;
  const fetches = { n: 0 };
  const p = peers([bad]);
  const d = await loader(p, fetches);
  const res = await d.load(`${ORIGIN}${R}/s1-0-3.m4s`, 'media');
  assert.deepEqual(new Uint8Array(res.data), SEG);
  assert.equal(p.dropped, 1);
  assert.equal(fetches.n, 1);
  assert.equal(p.http, SEG.byteLength);
  assert.deepEqual(p.kept, [['360p', 's1-0-3.m4s', SEG.byteLength]]);
});

test('no budget (start-up, short buffer): HTTP without asking peers', async () => {
  const fetches = { n: 0 };
  const p = peers([SEG.slice()], 0);
  const d = await loader(p, fetches);
  await d.load(`${ORIGIN}${R}/s1-0-3.m4s`, 'media');
  assert.equal(p.calls.length, 0);
  assert.equal(fetches.n, 1);
});

test('a low-latency player puts a segment together from its verified parts and serves it once a manifest lists it', async () => {
  const P0 = enc.encode('part zero '.repeat(30));
  const P1 = enc.encode('part one '.repeat(20));
  const whole = new Uint8Array([...P0, ...P1]);
  const sha = async (b) => Buffer.from(await crypto.subtle.digest('SHA-256', b)).toString('hex');
  let t = `shoal-manifest 1\nkey k1\nid ${ID}\nrendition 360p\nseq 5\ntime ${Date.now()}\nended 0\n`;
  t += `seg s1-0-4.m4s ${whole.byteLength} ${await sha(whole)} 1000\n`;
  t += `seg s1-0-5.m4s ${P0.byteLength} ${await sha(P0)} 1000\n`; // not what its parts make
  const sig = await crypto.subtle.sign({ name: 'Ed25519' }, key.privateKey, enc.encode(t));
  const text = t + `sig ${Buffer.from(new Uint8Array(sig)).toString('base64url')}\n`;
  globalThis.fetch = async () => new Response(text);
  const p = peers([]);
  p.parts = new PartAssembler();
  const d = new Delivery({ id: ID, keys: { k1: key.publicKey }, candidates: [{ url: ORIGIN }], p2p: p });
  const c = d.current();
  await d.manifest(c, '360p', null, false);
  const part = { kind: 'part' };
  d.noteHTTP(c, '360p', 's1-0-4-p0.m4s', part, P0);
  await d.assembling;
  assert.deepEqual(p.kept, [], 'part 1 missing: nothing to serve yet');
  d.noteHTTP(c, '360p', 's1-0-4-p1.m4s', part, P1);
  await d.assembling;
  assert.deepEqual(p.kept, [['360p', 's1-0-4.m4s', whole.byteLength]]);
  d.noteHTTP(c, '360p', 's1-0-5-p0.m4s', part, P1.slice(0, 10));
  d.noteHTTP(c, '360p', 's1-0-5-p1.m4s', part, P0.slice(10));
  await d.assembling;
  assert.deepEqual(p.kept.map((k) => k[1]), ['s1-0-4.m4s'], 'parts that do not make the signed segment are never served');
  assert.equal(p.http, P0.byteLength + P1.byteLength + 10 + P0.byteLength - 10);
});

// ---- the P2P session with a tracker socket and peer connections ------------
//
// Node has neither WebSocket nor RTCPeerConnection: FakeWS and FakePC stand
// for the browser's, the tracker and the remote peer are played by the test.

class FakeWS {
  static OPEN = 1;
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 1;
    this.sent = [];
    FakeWS.last = this;
  }
  send(text) { this.sent.push(JSON.parse(text)); }
  close() { this.readyState = 3; }
  receive(m) { this.onmessage({ data: JSON.stringify(m) }); }
}

// FakeDC is an open data channel to a remote peer whose answers to our
// messages are onSend(message, dc).
class FakeDC {
  constructor(onSend) {
    this.label = LABEL;
    this.readyState = 'open';
    this.bufferedAmount = 0;
    this.sent = [];
    this.onSend = onSend;
  }
  send(m) {
    this.sent.push(m);
    queueMicrotask(() => this.onSend(m, this));
  }
  close() { this.readyState = 'closed'; }
}

// FakePC: createOffer waits until the test settles it, and closing the
// connection rejects it (as browsers do).
class FakePC {
  static all = [];
  constructor() {
    this.signalingState = 'stable';
    this.connectionState = 'new';
    this.iceGatheringState = 'complete';
    this.closed = false;
    this.offers = [];
    FakePC.all.push(this);
  }
  createDataChannel(label) { return { label, readyState: 'connecting', close() {} }; }
  createOffer() { return new Promise((resolve, reject) => this.offers.push({ resolve, reject })); }
  async createAnswer() { return { type: 'answer', sdp: 'v=0 answer' }; }
  async setLocalDescription(d) {
    if (this.closed) throw new Error('closed');
    this.localDescription = d;
    this.signalingState = d.type === 'offer' ? 'have-local-offer' : 'stable';
  }
  async setRemoteDescription(d) {
    if (this.closed) throw new Error('closed');
    this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
  }
  addEventListener() {}
  close() {
    this.closed = true;
    this.signalingState = 'closed';
    for (const o of this.offers) o.reject(new Error('InvalidStateError: closed'));
  }
}

globalThis.WebSocket = FakeWS;
globalThis.RTCPeerConnection = FakePC;

const settle = () => new Promise((resolve) => setImmediate(resolve));

// joined is a P2P session in the swarm of 360p, welcomed as peer me.
function joined(me = 'mm1') {
  const p = new P2P({ id: ID });
  const s = p.swarm(ORIGIN, '360p');
  const ws = FakeWS.last;
  ws.receive({ type: 'welcome', peer: me, swarm: `${ID}/360p` });
  return { p, s, ws };
}

// linked opens an answerer's link from remote (it offered) whose data
// channel answers with onSend.
async function linked(s, remote, onSend) {
  s.onSignal(remote, { type: 'offer', sdp: 'v=0 offer' });
  const l = s.links.get(remote);
  l.pc.ondatachannel({ channel: new FakeDC(onSend) });
  await settle();
  assert.ok(l.isOpen);
  return l;
}

test('a want the tracker pacer refused leaves no waiter: the next peers answer goes to the one asking', async () => {
  const { p, s, ws } = joined();
  let now = 0;
  s.sends = new TokenBucket(15, 40, () => now);
  while (s.sends.tryTake());
  assert.deepEqual(await s.want('s1-0-3.m4s', 60000), [], 'refused by the pacer: nobody');
  assert.equal(s.wants.size, 0, 'no waiter left behind for a name never asked');
  now += 1000;
  const asking = s.want('s1-0-3.m4s', 2000);
  assert.deepEqual(ws.sent.at(-1), { type: 'want', segment: 's1-0-3.m4s' });
  ws.receive({ type: 'peers', segment: 's1-0-3.m4s', peers: ['bb2'] });
  assert.deepEqual(await asking, ['bb2']);
  assert.equal(s.wants.size, 0);
  p.close();
});

test('glare: the link that answers is not closed by its own offer failing', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { p, s, ws } = joined('zz9');
  const trying = s.fromPeer('ab1', 's1-0-3.m4s', 100, 3000);
  const l = s.links.get('ab1');
  assert.ok(l.offerer);
  await settle();
  assert.equal(l.pc.offers.length, 1, 'createOffer pending');
  // Both offered at once; this side's id is the larger: it answers.
  s.onSignal('ab1', { type: 'offer', sdp: 'v=0 offer' });
  await settle();
  assert.equal(FakePC.all.at(-2).closed, true, 'the offer connection is closed');
  assert.equal(l.closed, false, 'the link stays, the answerer now');
  assert.equal(s.links.get('ab1'), l);
  assert.equal(l.offerer, false);
  assert.deepEqual(ws.sent.at(-1), { type: 'signal', to: 'ab1', data: { type: 'answer', sdp: 'v=0 answer' } });
  p.close();
  assert.equal(await trying, null);
});

test('rests: 1 s after none, 30 s after silence, none when the asker\'s own budget was too short for a try', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { p, s } = joined();
  let budget = 2000;
  const left = () => budget;
  const verify = async () => true;
  const none = (m, dc) => {
    const g = JSON.parse(m);
    dc.onmessage({ data: JSON.stringify({ type: 'none', id: g.id }) });
  };
  await linked(s, 'nn1', none);
  assert.equal(await s.tryPeers(['nn1'], 's1-0-3.m4s', 100, left, verify), null);
  const restNone = s.resting.get('nn1') - performance.now();
  assert.ok(restNone > 0 && restNone <= 1000, `rest after none: ${restNone} ms`);

  await linked(s, 'ss1', () => {});
  let trying = s.tryPeers(['ss1'], 's1-0-3.m4s', 100, left, verify);
  await settle();
  t.mock.timers.tick(2000);
  assert.equal(await trying, null);
  const restSilent = s.resting.get('ss1') - performance.now();
  assert.ok(restSilent > 25000 && restSilent <= 30000, `rest after silence: ${restSilent} ms`);

  budget = 500; // under MIN_TRY_MS: the peer is not given its try
  await linked(s, 'ss2', () => { budget = 0; }); // silent while our budget runs out
  trying = s.tryPeers(['ss2'], 's1-0-3.m4s', 100, left, verify);
  await settle();
  t.mock.timers.tick(500);
  assert.equal(await trying, null);
  assert.equal(s.resting.has('ss2'), false, 'cut short by our budget: no rest');
  assert.equal(p.stats.failed, 3);
  p.close();
});

test('HTTP bytes noted while the tracker socket is down are reported by the next one', () => {
  const { p, s, ws } = joined();
  p.noteHTTP(ORIGIN, '360p', 1000);
  s.sendStats();
  assert.deepEqual(ws.sent.at(-1), { type: 'stats', http_bytes: 1000, p2p_bytes: 0 });
  p.noteHTTP(ORIGIN, '360p', 300); // never reported: the socket closes
  ws.onclose();
  assert.ok(s.dead);
  p.noteHTTP(ORIGIN, '360p', 500); // during the rejoin backoff
  assert.equal(p.swarm(ORIGIN, '360p'), s, 'still backing off');
  s.diedAt = performance.now() - rejoinAfter(0) - 1; // as if the backoff had passed
  p.noteHTTP(ORIGIN, '360p', 200);
  const s2 = p.swarm(ORIGIN, '360p');
  assert.notEqual(s2, s, 'rejoined');
  const ws2 = FakeWS.last;
  ws2.receive({ type: 'welcome', peer: 'mm2', swarm: `${ID}/360p` });
  s2.sendStats();
  assert.deepEqual(ws2.sent.at(-1), { type: 'stats', http_bytes: 1000, p2p_bytes: 0 }, '300 + 500 carried over, 200 its own');
  p.noteHTTP(ORIGIN, '360p', 50);
  s2.sendStats();
  assert.deepEqual(ws2.sent.at(-1), { type: 'stats', http_bytes: 1050, p2p_bytes: 0 });
  assert.equal(p.stats.http_bytes, 2050);
  p.close();
});

test('keep stores its own copy of a segment, from an ArrayBuffer or a view', () => {
  const { p } = joined();
  const a = new Uint8Array([1, 2, 3, 4, 5]);
  p.keep(ORIGIN, '360p', 's1-0-1.m4s', a.subarray(1, 4));
  const b = new Uint8Array([9, 8, 7]);
  p.keep(ORIGIN, '360p', 's1-0-2.m4s', b.buffer);
  a.fill(0);
  b.fill(0);
  assert.deepEqual(p.held('360p', 's1-0-1.m4s'), new Uint8Array([2, 3, 4]));
  assert.deepEqual(p.held('360p', 's1-0-2.m4s'), new Uint8Array([9, 8, 7]));
  assert.deepEqual(copyBytes(new Uint16Array([0x0102]).subarray(0, 1)), new Uint8Array([2]));
  p.close();
});

// ---- hostile peers against the session's budget and link slots -------------

test('a peer that is always silent is rested, not tried for every segment\'s whole peer budget', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  const { p, s } = joined();
  t.after(() => p.close());
  const verify = async () => true;
  await linked(s, 'ss3', () => {}); // connects, then never answers a get (nor a later offer)
  let wasted = 0;
  for (let seg = 10; seg < 15; seg++) {
    // 4 s buffered ahead of 2 s segments: peerBudget gives peers 2 s.
    const budget = peerBudget(4, 2000);
    const end = Date.now() + budget;
    const left = () => end - Date.now();
    const trying = s.tryPeers(['ss3'], `s1-0-${seg}.m4s`, 100, left, verify); // the tracker offers ss3 each time
    await settle();
    t.mock.timers.tick(budget);
    assert.equal(await trying, null);
    wasted += budget;
  }
  assert.ok(s.resting.has('ss3') || s.banned.has('ss3'),
    `silent for ${p.stats.failed} tries in a row (${wasted} ms of peer budget, every segment's all of it), still not resting`);
});

test('offers that never connect, renewed every ANSWER_MS, leave the player room for its own peers', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const { p, s } = joined('mm1');
  t.after(() => p.close());
  // 8 tracker sockets from one address (the tracker's MaxPeersPerAddr) each send a
  // (valid, never connecting) offer, and again each time the player drops it.
  const sybils = Array.from({ length: 8 }, (_, i) => `zz${i}`);
  for (let round = 0; round < 7; round++) {
    for (const id of sybils) s.onSignal(id, { type: 'offer', sdp: 'v=0 offer' });
    await settle();
    if (round < 6) t.mock.timers.tick(10000);
  }
  // A minute on: the tracker offers an honest holder of the next segment.
  const asking = s.fromPeer('hh1', 's1-0-3.m4s', 100, 3000);
  await settle();
  assert.ok(s.links.has('hh1'), 'the player did not connect to the honest peer');
  t.mock.timers.tick(3000); // (it does not answer here: only the room matters)
  const got = await asking;
  assert.notDeepEqual(got, { busy: true },
    `no room for any peer: the ${s.links.size} links are the sybils' (open: ${[...s.links.values()].filter((l) => l.isOpen).length})`);
});

test('a peer that stops reading loses its link, and no listener piles up', async (t) => {
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const p = new P2P({ id: ID, maxLinks: 1 });
  t.after(() => p.close());
  const s = p.swarm(ORIGIN, '360p');
  FakeWS.last.receive({ type: 'welcome', peer: 'mm1', swarm: `${ID}/360p` });
  p.keep(ORIGIN, '360p', 's1-0-1.m4s', new Uint8Array(2 << 20)); // a verified 2 MiB segment
  // The remote's SCTP window closes: nothing it is sent leaves our queue.
  class StuckDC extends FakeDC {
    constructor() { super(() => {}); this.listeners = 0; }
    send(m) { this.sent.push(m); if (typeof m !== 'string') this.bufferedAmount += m.byteLength; }
    addEventListener() { this.listeners++; }
  }
  s.onSignal('rr1', { type: 'offer', sdp: 'v=0 offer' });
  const l = s.links.get('rr1');
  const dc = new StuckDC();
  l.pc.ondatachannel({ channel: dc });
  await settle();
  assert.ok(l.isOpen);
  dc.onmessage({ data: JSON.stringify({ type: 'get', id: 1, segment: 's1-0-1.m4s' }) });
  for (let i = 0; i < 7200; i++) { // an hour
    t.mock.timers.tick(500);
    await settle();
  }
  const room = p.room();
  assert.ok(!s.links.has('rr1') && room,
    `after an hour without taking a byte: link held ${s.links.has('rr1')}, serving ${l.serving}, room for another peer ${room}, ` +
    `${dc.listeners} bufferedamountlow listeners added`);
});
