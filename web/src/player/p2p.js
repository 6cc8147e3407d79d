// Peer-assisted delivery: viewers' players share whole segments over
// WebRTC data channels, found through the tracker of the node they play
// from (/p2p/ws?swarm=<id>/<rendition>, see p2p/tracker), and speak the
// protocol of the Go peer (p2p/peer) so that browsers and Go peers serve
// each other.
//
// The verifying loader (delivery.js) asks peers first for a segment when
// the buffer ahead of the playhead is long enough (peerBudget): the start
// of playback, playlists, manifests, init sections and LL-HLS parts always
// come over HTTP. Every byte a peer sends is checked against the signed
// manifest's entry before it is played or served on: a peer whose bytes
// fail is dropped, reported to the tracker (bad) and never asked again,
// and the segment comes over HTTP. A player serves only the whole segments
// it verified, from a bounded store.
//
// Tracker protocol (JSON text frames): welcome, have, want/peers, signal,
// gone, bad, stats, ping/pong; see p2p/tracker/message.go. Signal data is
// a session description ({"type":"offer"|"answer","sdp":...}) holding all
// of its ICE candidates (no trickle).
//
// Data-channel protocol: one channel per peer pair, label "shoal-p2p",
// ordered and reliable. {"type":"get","id":n,"segment":name} is answered
// {"type":"data","id":n,"size":bytes} then binary messages of at most 64
// KiB carrying exactly size bytes, or {"type":"none","id":n}.

export const LABEL = 'shoal-p2p';
export const CHUNK_BYTES = 64 << 10;
export const MAX_SEGMENT_BYTES = 64 << 20;
// What a have message may list, and what a peer list may hold.
export const MAX_HAVE = 256;
export const MAX_PEERS_OFFERED = 5;
// The segments a player holds to serve: the last 30, 64 MiB at most.
export const MAX_HELD_SEGMENTS = 30;
export const MAX_HELD_BYTES = 64 << 20;
// Peer connections open at once, and what a player uploads per second.
export const MAX_LINKS = 8;
export const UPLOAD_BYTES_PER_SEC = 4 << 20;
// Peers get at most this long for a segment (connecting included), and
// at most half the buffer ahead: the rest is the HTTP fallback's.
export const MAX_PEER_BUDGET_MS = 5000;
export const MIN_PEER_BUDGET_MS = 500;
// One peer gets at most this long of the budget.
const PEER_TRY_MS = 3000;
// A segment nobody holds yet is asked for again after WANT_AGAIN_MS, MAX_WANTS
// times in all, while MIN_TRY_MS of the budget would be left for a peer.
export const WANT_AGAIN_MS = 600;
export const MAX_WANTS = 3;
export const MIN_TRY_MS = 1000;
// A peer that failed a try (silent, no connection, gone) is not asked
// again for REST_MS; one that answered none (busy, or it let the segment
// go) for REST_NONE_MS. A try cut short by the asker's own budget rests
// nobody.
const REST_MS = 30000;
const REST_NONE_MS = 1000;
const PING_MS = 20000;
const STATS_MS = 10000;
const HAVE_DEBOUNCE_MS = 100;
const GATHER_MS = 3000;
// Pace of messages to the tracker, under its limit (20 a second, a burst
// of 50; over it, it closes the socket).
const SEND_RATE = 15;
const SEND_BURST = 40;
// A data channel's send queue: wait above the high mark until it drains
// below the low one.
const MAX_BUFFERED = 1 << 20;
// STALL_WAITS: a peer whose channel takes nothing for this many looks, 500
// ms apart (10 s), while it is served is dropped.
const STALL_WAITS = 20;
const LOW_BUFFERED = 256 << 10;
// Requests a link queues to serve; past that they are answered none (in
// order: a text message must not cut into an answer's binary messages),
// and past MAX_QUEUED the link ends.
const MAX_SERVE_QUEUE = 16;
const MAX_QUEUED = 64;
// A link the remote peer offered that did not open by then ends; a link
// idle this long may give its place to a new one at the cap.
const ANSWER_MS = 10000;
const IDLE_MS = 10000;
// Swarms (renditions) joined at once: the one playing and the one ABR
// left last.
const MAX_SWARMS = 2;
// A tracker socket that ended is joined again after this long; one that
// never got a welcome (refused, unreachable), after twice as long each time
// in a row, up to MAX_REJOIN_MS.
const REJOIN_MS = 5000;
const MAX_REJOIN_MS = 300000;

const NAME_RE = /^[A-Za-z0-9._-]{1,128}$/;
const ID_RE = /^[a-z0-9]{1,64}$/;

export function validName(s) {
  return typeof s === 'string' && NAME_RE.test(s);
}

export function validPeerID(s) {
  return typeof s === 'string' && ID_RE.test(s);
}

// peerBudget is how long peers may take for a segment of segMs
// milliseconds with aheadS seconds buffered ahead of the playhead: 0 (HTTP
// at once) at start-up or when less than the segment's duration is
// buffered, else half the buffer ahead (the HTTP fallback keeps the other
// half), MAX_PEER_BUDGET_MS at most.
export function peerBudget(aheadS, segMs) {
  const ahead = Number.isFinite(aheadS) ? aheadS * 1000 : 0;
  if (ahead <= 0 || !(ahead >= segMs)) return 0;
  const b = Math.floor(Math.min(MAX_PEER_BUDGET_MS, ahead / 2));
  return b < MIN_PEER_BUDGET_MS ? 0 : b;
}

// bufferAhead is how many seconds video v holds buffered from its
// playhead on (0 when the playhead is outside the buffer).
export function bufferAhead(v) {
  if (!v || !v.buffered) return 0;
  const t = v.currentTime;
  for (let i = 0; i < v.buffered.length; i++) {
    if (v.buffered.start(i) <= t + 0.5 && v.buffered.end(i) > t) return v.buffered.end(i) - t;
  }
  return 0;
}

// wantAgainIn is how long to wait before asking the tracker again for a
// segment nobody offered after want number i (from 0), with leftMs of the
// budget left: WANT_AGAIN_MS while a try of a peer still fits after it
// (MIN_TRY_MS), at most MAX_WANTS wants; 0: HTTP now.
export function wantAgainIn(i, leftMs) {
  if (i + 1 >= MAX_WANTS || leftMs - WANT_AGAIN_MS < MIN_TRY_MS) return 0;
  return WANT_AGAIN_MS;
}

// rejoinAfter is how long after its socket ended a swarm is joined again,
// after n joins in a row that got no welcome (0: the last one had one).
export function rejoinAfter(n) {
  return n > 0 ? Math.min(MAX_REJOIN_MS, REJOIN_MS * 2 ** Math.min(n - 1, 16)) : REJOIN_MS;
}

// chunks splits bytes into views of at most size bytes.
export function chunks(bytes, size = CHUNK_BYTES) {
  const out = [];
  for (let off = 0; off < bytes.byteLength; off += size) out.push(bytes.subarray(off, Math.min(off + size, bytes.byteLength)));
  return out;
}

// Reassembly collects the binary messages of one answer: exactly size
// bytes, in chunks of at most CHUNK_BYTES; push throws on anything else.
export class Reassembly {
  constructor(size) {
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_SEGMENT_BYTES) throw new Error(`bad segment size ${size}`);
    this.buf = new Uint8Array(size);
    this.n = 0;
  }

  get done() {
    return this.n === this.buf.byteLength;
  }

  // push adds a chunk; true once every byte is in.
  push(chunk) {
    const b = chunk instanceof Uint8Array ? chunk : new Uint8Array(chunk);
    if (b.byteLength > CHUNK_BYTES) throw new Error(`a chunk of ${b.byteLength} bytes, over ${CHUNK_BYTES}`);
    if (this.n + b.byteLength > this.buf.byteLength) throw new Error(`more than the ${this.buf.byteLength} bytes announced`);
    this.buf.set(b, this.n);
    this.n += b.byteLength;
    return this.done;
  }
}

function plainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function onlyKeys(o, keys) {
  return Object.keys(o).every((k) => keys.includes(k));
}

// parsePeerMessage reads a text message of the data-channel protocol:
// { type: 'get', id, segment } | { type: 'data', id, size } | { type:
// 'none', id }; null when it is anything else (the link then ends).
export function parsePeerMessage(text) {
  if (typeof text !== 'string' || text.length > 1024) return null;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!plainObject(m) || !Number.isSafeInteger(m.id) || m.id < 0) return null;
  switch (m.type) {
    case 'get':
      return onlyKeys(m, ['type', 'id', 'segment']) && validName(m.segment) ? { type: 'get', id: m.id, segment: m.segment } : null;
    case 'data':
      return onlyKeys(m, ['type', 'id', 'size']) && Number.isSafeInteger(m.size) && m.size >= 0 && m.size <= MAX_SEGMENT_BYTES
        ? { type: 'data', id: m.id, size: m.size } : null;
    case 'none':
      return onlyKeys(m, ['type', 'id']) ? { type: 'none', id: m.id } : null;
  }
  return null;
}

// parseTrackerMessage reads a message of the tracker: welcome, peers,
// signal, gone or pong, with the fields that type carries; null when it
// is anything else.
export function parseTrackerMessage(text) {
  if (typeof text !== 'string' || text.length > 16384) return null;
  let m;
  try {
    m = JSON.parse(text);
  } catch {
    return null;
  }
  if (!plainObject(m)) return null;
  switch (m.type) {
    case 'welcome':
      return validPeerID(m.peer) && typeof m.swarm === 'string' ? { type: 'welcome', peer: m.peer, swarm: m.swarm } : null;
    case 'peers': {
      const peers = m.peers == null ? [] : m.peers;
      if (!validName(m.segment) || !Array.isArray(peers) || peers.length > MAX_PEERS_OFFERED || !peers.every(validPeerID)) return null;
      return { type: 'peers', segment: m.segment, peers };
    }
    case 'signal':
      if (!validPeerID(m.from) || !plainObject(m.data)) return null;
      if ((m.data.type !== 'offer' && m.data.type !== 'answer') || typeof m.data.sdp !== 'string') return null;
      return { type: 'signal', from: m.from, data: { type: m.data.type, sdp: m.data.sdp } };
    case 'gone':
      return validPeerID(m.peer) ? { type: 'gone', peer: m.peer } : null;
    case 'pong':
      return { type: 'pong' };
  }
  return null;
}

// SegmentStore holds the verified segments a player serves: the newest
// maxCount, maxBytes at most in all (the oldest go first).
export class SegmentStore {
  constructor(maxCount = MAX_HELD_SEGMENTS, maxBytes = MAX_HELD_BYTES) {
    this.maxCount = maxCount;
    this.maxBytes = maxBytes;
    this.map = new Map(); // key -> Uint8Array, oldest first
    this.bytes = 0;
  }

  put(key, bytes) {
    if (this.map.has(key) || bytes.byteLength > this.maxBytes) return;
    this.map.set(key, bytes);
    this.bytes += bytes.byteLength;
    while (this.map.size > this.maxCount || this.bytes > this.maxBytes) {
      const [k, b] = this.map.entries().next().value;
      this.map.delete(k);
      this.bytes -= b.byteLength;
    }
  }

  get(key) {
    return this.map.get(key) || null;
  }

  // names lists the names held under prefix (keys are prefix + name),
  // the newest MAX_HAVE at most, oldest first.
  names(prefix) {
    const out = [];
    for (const k of this.map.keys()) if (k.startsWith(prefix)) out.push(k.slice(prefix.length));
    return out.slice(-MAX_HAVE);
  }
}

// partOf reads an LL-HLS part's name, <segment base>-p<k>.m4s: { segment
// (its segment's name), k }, or null.
export function partOf(name) {
  const m = /^(.+)-p([0-9]{1,6})\.m4s$/.exec(name);
  return m ? { segment: m[1] + '.m4s', k: Number(m[2]) } : null;
}

// PartAssembler collects the verified LL-HLS parts of the last few
// segments, so that a player at the live edge (which loads parts, never
// whole segments) can put a whole segment together once a signed manifest
// lists it, verify it, and serve it to peers.
export class PartAssembler {
  constructor(maxSegments = 4, maxBytes = 32 << 20) {
    this.maxSegments = maxSegments;
    this.maxBytes = maxBytes;
    this.segs = new Map(); // rendition + '/' + segment -> { rendition, segment, parts: Map(k -> bytes), bytes }
    this.bytes = 0;
  }

  // add keeps part name's verified bytes (a copy).
  add(rendition, name, bytes) {
    const p = partOf(name);
    if (!p || !validName(p.segment)) return;
    const key = rendition + '/' + p.segment;
    let s = this.segs.get(key);
    if (!s) {
      s = { rendition, segment: p.segment, parts: new Map(), bytes: 0 };
      this.segs.set(key, s);
    }
    if (s.parts.has(p.k)) return;
    const b = copyBytes(bytes);
    s.parts.set(p.k, b);
    s.bytes += b.byteLength;
    this.bytes += b.byteLength;
    while (this.segs.size > this.maxSegments || this.bytes > this.maxBytes) this.drop(this.segs.keys().next().value);
  }

  // pending lists the segments of rendition with parts held.
  pending(rendition) {
    return [...this.segs.values()].filter((s) => s.rendition === rendition).map((s) => s.segment);
  }

  // assemble returns segment's bytes (size of them, as its manifest entry
  // says), its parts 0, 1, ... put together, or null when they are not all
  // there; either way the parts are let go once the size is reached or
  // passed.
  assemble(rendition, segment, size) {
    const key = rendition + '/' + segment;
    const s = this.segs.get(key);
    if (!s) return null;
    if (s.bytes < size) return null;
    this.drop(key);
    const out = new Uint8Array(size);
    let off = 0;
    for (let k = 0; s.parts.has(k); k++) {
      const b = s.parts.get(k);
      if (off + b.byteLength > size) return null;
      out.set(b, off);
      off += b.byteLength;
    }
    return off === size ? out : null;
  }

  drop(key) {
    const s = this.segs.get(key);
    if (!s) return;
    this.segs.delete(key);
    this.bytes -= s.bytes;
  }
}

// TokenBucket paces bytes (or messages): take(n) resolves when n may go.
export class TokenBucket {
  constructor(rate, burst, now = () => performance.now()) {
    this.rate = rate;
    this.burst = burst;
    this.tokens = burst;
    this.now = now;
    this.at = now();
  }

  refill() {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.at) / 1000) * this.rate);
    this.at = t;
  }

  // tryTake takes n now, or returns false.
  tryTake(n = 1) {
    this.refill();
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  // wait is how many ms until n may go (taking them).
  reserve(n) {
    this.refill();
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.rate) * 1000);
  }
}

// copyBytes copies an ArrayBuffer or a view of one, once.
export function copyBytes(b) {
  return b instanceof ArrayBuffer ? new Uint8Array(b.slice(0)) : new Uint8Array(b);
}

function delay(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// P2P is one playback session's peer-assisted delivery.
export class P2P {
  // opts: { id (stream or video id), token, ahead: () => seconds buffered
  // ahead of the playhead, rtc: RTCConfiguration, maxLinks,
  // uploadBytesPerSec, onChange(stats) }.
  constructor(opts) {
    this.id = opts.id;
    this.token = opts.token || '';
    this.ahead = opts.ahead || (() => 0);
    this.rtc = opts.rtc || {};
    this.maxLinks = opts.maxLinks || MAX_LINKS;
    this.upload = new TokenBucket(opts.uploadBytesPerSec || UPLOAD_BYTES_PER_SEC, Math.max(opts.uploadBytesPerSec || UPLOAD_BYTES_PER_SEC, CHUNK_BYTES));
    this.onChange = opts.onChange || (() => {});
    this.store = new SegmentStore();
    this.parts = new PartAssembler();
    this.swarms = new Map(); // base + '/' + rendition -> Swarm, least recently used first
    this.refused = new Map(); // base + '/' + rendition -> joins in a row that got no welcome
    this.closed = false;
    // asked: segments asked of peers; offered: peers the tracker offered
    // for them; failed: tries of a peer that brought nothing (silent, no
    // connection, no such segment).
    this.stats = {
      http_bytes: 0, p2p_bytes: 0, p2p_segments: 0, uploaded_bytes: 0, peers_dropped: 0, peers: 0, bad_reports: 0,
      asked: 0, offered: 0, failed: 0,
    };
  }

  // swarm returns the swarm of rendition on the node at base, joining it
  // (and leaving the least recently used one past MAX_SWARMS).
  swarm(base, rendition) {
    const key = base + '/' + rendition;
    let s = this.swarms.get(key);
    let dead = null;
    if (s && s.dead) {
      const n = s.peer ? 0 : (this.refused.get(key) || 0) + 1;
      if (performance.now() - s.diedAt > rejoinAfter(n)) {
        this.swarms.delete(key);
        if (n) this.refused.set(key, n);
        else this.refused.delete(key);
        if (this.refused.size > 64) this.refused.clear();
        dead = s;
        s = null;
      }
    }
    if (s) {
      this.swarms.delete(key);
      this.swarms.set(key, s);
      return s;
    }
    s = new Swarm(this, base, rendition);
    // What the dead socket never reported (noted while it was down, or
    // since its last stats) goes with the next one's first stats.
    if (dead) s.carry(dead);
    this.swarms.set(key, s);
    while (this.swarms.size > MAX_SWARMS) {
      const [k, old] = this.swarms.entries().next().value;
      this.swarms.delete(k);
      old.close();
    }
    return s;
  }

  // budget is how long peers may take for a segment of segMs ms now.
  budget(segMs) {
    return this.closed ? 0 : peerBudget(this.ahead(), segMs);
  }

  // fetch asks peers for segment name of rendition (size bytes, as the
  // manifest says) within budget ms; verify(bytes) resolves true when
  // they match the manifest. It resolves to the verified bytes, or null
  // (then HTTP). A peer whose bytes fail is dropped and reported.
  async fetch(base, rendition, name, size, budget, verify, signal) {
    if (this.closed || budget <= 0 || size > MAX_SEGMENT_BYTES) return null;
    const s = this.swarm(base, rendition);
    return s.fetch(name, size, budget, verify, signal);
  }

  // noteHTTP counts a segment of rendition that came over HTTP.
  noteHTTP(base, rendition, n) {
    this.stats.http_bytes += n;
    if (!this.closed) this.swarm(base, rendition).httpBytes += n;
    this.onChange(this.stats);
  }

  // keep stores a verified segment to serve, and announces it.
  keep(base, rendition, name, bytes) {
    if (this.closed || !validName(name)) return;
    // A copy: hls.js may hand the buffer it gets to a worker (detaching it).
    this.store.put(rendition + '/' + name, copyBytes(bytes));
    this.swarm(base, rendition).announce();
  }

  held(rendition, name) {
    return this.store.get(rendition + '/' + name);
  }

  countLinks() {
    let n = 0;
    for (const s of this.swarms.values()) n += s.links.size;
    return n;
  }

  // connectingIn counts the links another peer offered that are not open
  // yet.
  connectingIn() {
    let n = 0;
    for (const s of this.swarms.values()) {
      for (const l of s.links.values()) if (!l.isOpen && !l.offerer) n++;
    }
    return n;
  }

  // room says whether a new link may open: under the cap, or by ending
  // the link idle the longest (IDLE_MS at least).
  room() {
    if (this.countLinks() < this.maxLinks) return true;
    let idle = null;
    const now = performance.now();
    for (const s of this.swarms.values()) {
      for (const l of s.links.values()) {
        if (l.isOpen && !l.pending && !l.serving && now - l.used >= IDLE_MS && (!idle || l.used < idle.used)) idle = l;
      }
    }
    if (!idle) return false;
    idle.close();
    return true;
  }

  changed() {
    this.stats.peers = this.countLinks();
    this.onChange(this.stats);
  }

  // close leaves every swarm; the player then fetches over HTTP only.
  close() {
    this.closed = true;
    for (const s of this.swarms.values()) s.close();
    this.swarms.clear();
    this.changed();
  }
}

// Swarm is the membership of one rendition's swarm on one node: its
// tracker socket and peer links.
class Swarm {
  constructor(p2p, base, rendition) {
    this.p2p = p2p;
    this.rendition = rendition;
    this.prefix = rendition + '/';
    this.links = new Map(); // peer id -> Link
    this.banned = new Set();
    this.resting = new Map(); // peer id -> until (performance.now())
    this.wants = new Map(); // segment -> [resolve]
    this.httpBytes = 0;
    this.p2pBytes = 0;
    this.sent = { http: 0, p2p: 0 };
    this.peer = '';
    this.dead = false;
    this.diedAt = 0;
    this.sends = new TokenBucket(SEND_RATE, SEND_BURST);
    this.haveTimer = 0;
    const u = new URL('/p2p/ws', base);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('swarm', p2p.id + '/' + rendition);
    if (p2p.token) u.searchParams.set('token', p2p.token);
    this.welcomed = new Promise((resolve) => { this.onWelcome = resolve; });
    try {
      this.ws = new WebSocket(u.href);
    } catch {
      this.die();
      return;
    }
    this.ws.onmessage = (ev) => this.onMessage(ev.data);
    this.ws.onclose = () => this.die();
    this.ws.onerror = () => this.die();
    this.timers = [
      setInterval(() => this.send({ type: 'ping' }), PING_MS),
      setInterval(() => this.sendStats(), STATS_MS),
    ];
  }

  die() {
    if (this.dead) return;
    this.dead = true;
    this.diedAt = performance.now();
    this.onWelcome(false);
    for (const t of this.timers || []) clearInterval(t);
    clearTimeout(this.haveTimer);
    for (const l of [...this.links.values()]) l.close();
    for (const q of this.wants.values()) for (const r of q) r([]);
    this.wants.clear();
    try {
      this.ws.close();
    } catch {
      // Closed already.
    }
    this.p2p.changed();
  }

  close() {
    if (!this.dead) this.sendStats();
    this.die();
  }

  send(m) {
    if (this.dead || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (!this.sends.tryTake()) return false;
    this.ws.send(JSON.stringify(m));
    return true;
  }

  // carry adds what the dead swarm old counted and never reported to this
  // socket's counters (which start from what it has not reported).
  carry(old) {
    this.httpBytes += Math.max(0, old.httpBytes - old.sent.http);
    this.p2pBytes += Math.max(0, old.p2pBytes - old.sent.p2p);
  }

  sendStats() {
    if (this.sent.http === this.httpBytes && this.sent.p2p === this.p2pBytes) return;
    if (this.send({ type: 'stats', http_bytes: this.httpBytes, p2p_bytes: this.p2pBytes })) {
      this.sent = { http: this.httpBytes, p2p: this.p2pBytes };
    }
  }

  // announce sends the have set (debounced).
  announce() {
    if (this.dead || this.haveTimer) return;
    this.haveTimer = setTimeout(async () => {
      if (!(await this.welcomed)) return;
      this.haveTimer = 0;
      if (!this.send({ type: 'have', segments: this.p2p.store.names(this.prefix) })) this.announce();
    }, HAVE_DEBOUNCE_MS);
  }

  onMessage(data) {
    const m = typeof data === 'string' ? parseTrackerMessage(data) : null;
    if (!m) return;
    switch (m.type) {
      case 'welcome':
        this.peer = m.peer;
        this.onWelcome(true);
        break;
      case 'peers': {
        const q = this.wants.get(m.segment);
        if (q && q.length) {
          q.shift()(m.peers);
          if (!q.length) this.wants.delete(m.segment);
        }
        break;
      }
      case 'signal':
        this.onSignal(m.from, m.data);
        break;
      case 'gone': {
        const l = this.links.get(m.peer);
        if (l) l.close();
        break;
      }
    }
  }

  // want asks the tracker who holds name; [] after ms without an answer.
  want(name, ms) {
    return new Promise((resolve) => {
      let done = false;
      const finish = (peers) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(peers);
      };
      const timer = setTimeout(() => {
        this.unwant(name, finish);
        finish([]);
      }, ms);
      if (!this.wants.has(name)) this.wants.set(name, []);
      this.wants.get(name).push(finish);
      if (!this.send({ type: 'want', segment: name })) {
        // Never asked: no answer is coming for this waiter.
        this.unwant(name, finish);
        finish([]);
      }
    });
  }

  // unwant takes a waiter off the queue of name, so that the next peers
  // answer for name goes to a waiter still asking.
  unwant(name, finish) {
    const q = this.wants.get(name);
    if (!q) return;
    const i = q.indexOf(finish);
    if (i >= 0) q.splice(i, 1);
    if (!q.length) this.wants.delete(name);
  }

  // fetch asks the tracker who holds name and tries them within budget
  // ms. When nobody holds it yet and the budget leaves room, it asks again
  // a moment later (wantsFor): a viewer with buffer to spare waits for one
  // that is fetching the segment over HTTP right now (the live edge).
  async fetch(name, size, budget, verify, signal) {
    const end = performance.now() + budget;
    const left = () => end - performance.now();
    const welcomed = await Promise.race([this.welcomed, delay(Math.max(0, left()))]);
    if (!welcomed || left() <= 0) return null;
    for (let i = 0; ; i++) {
      const peers = await this.want(name, Math.min(1000, left()));
      this.p2p.stats.asked++;
      this.p2p.stats.offered += peers.length;
      if (peers.length) return this.tryPeers(peers, name, size, left, verify, signal);
      const wait = wantAgainIn(i, left());
      if (!wait || this.dead || (signal && signal.aborted)) return null;
      await delay(wait);
    }
  }

  async tryPeers(peers, name, size, left, verify, signal) {
    for (const remote of peers) {
      if (this.dead || (signal && signal.aborted) || left() <= 0) return null;
      if (remote === this.peer || this.banned.has(remote)) continue;
      const until = this.resting.get(remote);
      if (until && performance.now() < until) continue;
      let got;
      const given = Math.min(PEER_TRY_MS, left());
      try {
        got = await this.fromPeer(remote, name, size, given);
      } catch {
        got = null;
      }
      if (got && got.busy) continue;
      if (!got || got.none) {
        this.p2p.stats.failed++;
        // Not for our own budget ending, unless a silent peer had
        // MIN_TRY_MS of it: one that never answers would otherwise take
        // every segment's whole budget and never rest.
        if ((left() > 0 || (!got && given >= MIN_TRY_MS)) && !(signal && signal.aborted)) {
          if (this.resting.size > 1024) this.resting.clear();
          // A peer that answered none (busy, or it let the segment go)
          // is asked again soon; a silent or failed one after a while.
          this.resting.set(remote, performance.now() + (got ? REST_NONE_MS : REST_MS));
        }
        continue;
      }
      if (got.tampered || !(await verify(got.bytes))) {
        this.drop(remote, name);
        continue;
      }
      this.p2pBytes += got.bytes.byteLength;
      const st = this.p2p.stats;
      st.p2p_bytes += got.bytes.byteLength;
      st.p2p_segments++;
      this.p2p.changed();
      return got.bytes;
    }
    return null;
  }

  // drop stops using a peer whose bytes failed verification and reports it.
  drop(remote, name) {
    this.banned.add(remote);
    const l = this.links.get(remote);
    if (l) l.close();
    this.p2p.stats.peers_dropped++;
    if (this.send({ type: 'bad', peer: remote, segment: name })) this.p2p.stats.bad_reports++;
    this.p2p.changed();
  }

  // fromPeer gets name (size bytes) from remote within ms, connecting
  // first when needed: { bytes } (unverified), { tampered } when the peer
  // announced another size, { none } when it does not hold it, or null.
  async fromPeer(remote, name, size, ms) {
    let l = this.links.get(remote);
    const timeout = delay(ms).then(() => 'timeout');
    if (!l) {
      if (!this.p2p.room()) return { busy: true };
      l = new Link(this, remote, true);
      this.links.set(remote, l);
      this.p2p.changed();
      l.offer().catch(() => l.close());
    }
    const open = await Promise.race([l.opened, timeout]);
    if (open !== true) {
      l.close();
      return null;
    }
    const res = await Promise.race([l.request(name, size), timeout]);
    if (res === 'timeout') {
      // Its answer would come for a request no longer pending.
      l.close();
      return null;
    }
    return res;
  }

  onSignal(from, desc) {
    if (this.dead || this.banned.has(from) || from === this.peer) return;
    let l = this.links.get(from);
    if (desc.type === 'answer') {
      if (l) l.onAnswer(desc);
      return;
    }
    if (l) {
      // Connected already (no renegotiation), or an answerer already, or
      // both offered at once and this side's id is the smaller: it keeps
      // its offer, the other side answers it.
      if (l.isOpen || !l.offerer || this.peer < from) return;
    } else {
      // Offers that never connect (renewed as fast as they are dropped)
      // must not take every place: at most half of them wait to connect.
      if (this.p2p.connectingIn() >= Math.max(1, Math.floor(this.p2p.maxLinks / 2)) || !this.p2p.room()) return;
      l = new Link(this, from, false);
      this.links.set(from, l);
      this.p2p.changed();
    }
    l.answer(desc).catch(() => l.close());
    // An offerer that never connects does not hold a place.
    setTimeout(() => {
      if (!l.isOpen) l.close();
    }, ANSWER_MS);
  }
}

// Link is the connection with one other peer: one RTCPeerConnection, one
// data channel.
class Link {
  constructor(swarm, remote, offerer) {
    this.swarm = swarm;
    this.p2p = swarm.p2p;
    this.remote = remote;
    this.offerer = offerer;
    this.pc = null;
    this.dc = null;
    this.isOpen = false;
    this.closed = false;
    this.nextID = 0;
    this.pending = null; // { id, size, asm, resolve }
    this.queue = []; // requests to serve: { id, segment }
    this.serving = false;
    this.used = performance.now();
    this.opened = new Promise((resolve) => { this.onOpened = resolve; });
  }

  newPC() {
    const pc = new RTCPeerConnection(this.p2p.rtc);
    pc.onconnectionstatechange = () => {
      if (this.pc === pc && ['failed', 'closed', 'disconnected'].includes(pc.connectionState)) this.close();
    };
    return pc;
  }

  setupDC(pc, dc) {
    if (this.pc !== pc) return false;
    this.dc = dc;
    dc.binaryType = 'arraybuffer';
    dc.bufferedAmountLowThreshold = LOW_BUFFERED;
    dc.onopen = () => {
      this.isOpen = true;
      this.onOpened(true);
    };
    dc.onclose = () => {
      if (this.dc === dc) this.close();
    };
    dc.onmessage = (ev) => this.onMessage(ev.data);
    if (dc.readyState === 'open') dc.onopen();
    return true;
  }

  // signalDesc sends pc's local description once ICE gathering is
  // complete (every candidate in it: no trickle).
  async signalDesc(pc) {
    if (pc.iceGatheringState !== 'complete') {
      await new Promise((resolve) => {
        const t = setTimeout(resolve, GATHER_MS);
        pc.addEventListener('icegatheringstatechange', () => {
          if (pc.iceGatheringState === 'complete') {
            clearTimeout(t);
            resolve();
          }
        });
      });
    }
    if (this.closed || this.pc !== pc) return;
    const d = pc.localDescription;
    this.swarm.send({ type: 'signal', to: this.remote, data: { type: d.type, sdp: d.sdp } });
  }

  async offer() {
    const pc = this.newPC();
    this.pc = pc;
    const dc = pc.createDataChannel(LABEL, { ordered: true });
    this.setupDC(pc, dc);
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await this.signalDesc(pc);
    } catch (err) {
      // Both offered at once and this side answers (answer closed pc):
      // the link is the answerer's now, not to be closed for this offer.
      if (this.pc === pc) throw err;
    }
  }

  async answer(desc) {
    const old = this.pc;
    const pc = this.newPC();
    this.pc = pc;
    this.offerer = false;
    this.dc = null;
    if (old) old.close();
    pc.ondatachannel = (ev) => {
      if (ev.channel.label !== LABEL || this.dc || !this.setupDC(pc, ev.channel)) ev.channel.close();
    };
    await pc.setRemoteDescription(desc);
    await pc.setLocalDescription(await pc.createAnswer());
    await this.signalDesc(pc);
  }

  onAnswer(desc) {
    const pc = this.pc;
    if (!this.offerer || !pc || pc.signalingState !== 'have-local-offer') return;
    pc.setRemoteDescription(desc).catch(() => this.close());
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.onOpened(false);
    if (this.pending) {
      this.pending.resolve(null);
      this.pending = null;
    }
    this.queue = [];
    if (this.swarm.links.get(this.remote) === this) this.swarm.links.delete(this.remote);
    try {
      if (this.dc) this.dc.close();
      if (this.pc) this.pc.close();
    } catch {
      // Closed already.
    }
    this.p2p.changed();
  }

  sendText(m) {
    if (!this.dc || this.dc.readyState !== 'open') return false;
    this.dc.send(JSON.stringify(m));
    return true;
  }

  // request asks for name: resolves to { bytes } of exactly size bytes,
  // { tampered } when the peer announces another size, { none } when it
  // does not hold it, { busy } while another request waits on this link,
  // or null.
  request(name, size) {
    if (this.pending) return Promise.resolve({ busy: true });
    if (this.closed) return Promise.resolve(null);
    this.used = performance.now();
    return new Promise((resolve) => {
      const id = ++this.nextID;
      this.pending = { id, size, asm: null, resolve };
      if (!this.sendText({ type: 'get', id, segment: name })) {
        this.pending = null;
        resolve(null);
        this.close();
      }
    });
  }

  onMessage(data) {
    if (this.closed) return;
    if (typeof data !== 'string') {
      const r = this.pending;
      if (!r || !r.asm) {
        this.close();
        return;
      }
      let done;
      try {
        done = r.asm.push(data);
      } catch {
        this.close();
        return;
      }
      if (done) {
        this.pending = null;
        r.resolve({ bytes: r.asm.buf });
      }
      return;
    }
    const m = parsePeerMessage(data);
    if (!m) {
      this.close();
      return;
    }
    if (m.type === 'get') {
      if (this.queue.length >= MAX_QUEUED) {
        this.close();
        return;
      }
      this.queue.push(this.queue.length >= MAX_SERVE_QUEUE ? { ...m, none: true } : m);
      this.serve();
      return;
    }
    const r = this.pending;
    if (!r || r.id !== m.id || r.asm) {
      this.close();
      return;
    }
    if (m.type === 'none') {
      this.pending = null;
      r.resolve({ none: true });
      return;
    }
    if (m.size !== r.size) {
      // Not the manifest's size: it fails verification.
      this.pending = null;
      r.resolve({ tampered: true });
      return;
    }
    r.asm = new Reassembly(m.size);
    if (r.asm.done) {
      this.pending = null;
      r.resolve({ bytes: r.asm.buf });
    }
  }

  // serve answers the queued requests, one at a time, within the upload
  // rate and the channel's send queue.
  async serve() {
    if (this.serving) return;
    this.serving = true;
    try {
      while (!this.closed && this.queue.length) {
        const g = this.queue.shift();
        this.used = performance.now();
        const data = g.none ? null : this.p2p.held(this.swarm.rendition, g.segment);
        if (!data) {
          this.sendText({ type: 'none', id: g.id });
          continue;
        }
        if (!this.sendText({ type: 'data', id: g.id, size: data.byteLength })) break;
        for (const c of chunks(data)) {
          const wait = this.p2p.upload.reserve(c.byteLength);
          if (wait) await delay(wait);
          for (let stuck = 0; !this.closed && this.dc.bufferedAmount > MAX_BUFFERED;) {
            // Drained, or look again in a while (a channel closing never
            // drains). A peer that takes nothing for STALL_WAITS looks
            // (its receive window closed) loses the link.
            const before = this.dc.bufferedAmount;
            await Promise.race([new Promise((resolve) => { this.dc.onbufferedamountlow = resolve; }), delay(500)]);
            stuck = this.dc.bufferedAmount < before ? 0 : stuck + 1;
            if (stuck >= STALL_WAITS) {
              this.close();
              return;
            }
          }
          if (this.closed || this.dc.readyState !== 'open') return;
          this.dc.send(c);
          this.p2p.stats.uploaded_bytes += c.byteLength;
        }
        this.p2p.changed();
      }
    } catch {
      this.close();
    } finally {
      this.serving = false;
    }
  }
}
