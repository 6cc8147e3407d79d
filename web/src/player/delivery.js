// Verified delivery: the player fetches media playlists, segments and init
// sections from the edges the origin's routing offers (the origin last),
// and checks every segment and init section against the origin's signed
// manifest before hls.js sees a byte. The master playlists (master.m3u8,
// and the DVR one) come from the origin: nothing signs them, and an edge's
// could drop variants or misstate them. An edge that serves something else,
// an old manifest, a playlist naming unlisted objects, an error or nothing
// in time is dropped for the rest of the session, reported to the origin
// (POST /v1/delivery-reports) and the object is fetched from the next
// candidate.
//
// Low-latency HLS: a live media playlist with EXT-X-PART-INF lists parts
// (EXT-X-PART) and a preload hint, and hls.js reloads it with blocking
// requests (index.m3u8?_HLS_msn=N&_HLS_part=P). After such a playlist the
// loader asks for the manifest of exactly the state it shows
// (manifest.txt?_HLS_msn=N&_HLS_part=P of its last part), which the
// origin answers with the manifest of the first playlist that reached that
// state: no cache on the way can answer with an older one. Every part is
// hashed and checked like a segment.
//
// DVR window: a live stream may also have DVR playlists (dvr.m3u8 next to
// master.m3u8 and index.m3u8) listing hours of segments, answered in delta
// updates (EXT-X-SKIP). They are not checked against manifest.txt (which
// lists a few seconds); instead the loader remembers the media sequence
// number, duration and init section of every segment they name, and checks
// each such segment (or init section) against the signed range manifest
// of its hundred, manifest-<floor(msn/100)*100>.txt.
//
// Manifest format: see internal/manifest (Go). The signature covers the
// bytes up to and including the newline before the "sig " line.

const MAGIC = 'shoal-manifest 1';
// A live manifest older than this (on the origin's clock) is stale: an
// edge replaying an old one to hide new segments or freeze the stream.
const MAX_LIVE_AGE_MS = 30000;
const PLAYLIST_TIMEOUT_MS = 5000;
const SEGMENT_TIMEOUT_MS = 10000;
const LIVE_MANIFEST_TTL_MS = 1000;
// A blocking playlist or manifest request (LL-HLS): the origin may hold it
// up to three target durations before it answers (503 past that).
const BLOCKING_TIMEOUT_MIN_MS = 12000;
// Manifests kept per candidate and rendition, by playlist state (a state
// a part: a few seconds of a low-latency stream).
const MAX_STATE_MANIFESTS = 48;
// Range manifests: segments per range, and how many ranges are kept per
// candidate and rendition (a two-hour window of 2 s segments is 36).
const RANGE = 100;
const MAX_RANGE_MANIFESTS = 256;
// What is read of an answer before it is refused, not read further (an
// edge could send without end): an object a manifest lists, its size; a
// playlist or manifest from an edge, MAX_TEXT_BYTES (the longest the
// origin writes: a 24 h DVR window of 0.5 s segments, about 15 MB; a 12 h
// video's manifest of 0.5 s segments, about 9 MB); a hinted part from an
// edge, whose size no manifest gave yet, MAX_PART_BYTES (2.5 s at the
// ladder's highest bitrate, 100 Mbit/s). The origin's playlists,
// manifests and hinted parts are read whole.
const MAX_TEXT_BYTES = 16 << 20;
const MAX_PART_BYTES = 32 << 20;
// The name of the DVR playlists, master and media.
const DVR_PLAYLIST = 'dvr.m3u8';
// A file or rendition name, as Shoal writes them.
const NAME_RE = /^[a-z0-9][a-z0-9.-]*$/;
const RENDITION_RE = /^[a-z0-9][a-z0-9_-]*$/;

// MAX_CREDITED bounds the objects remembered as counted (Delivery.credited).
const MAX_CREDITED = 5000;

// Failure kinds, as the origin's report endpoint names them.
export const KIND = {
  hash: 'hash_mismatch',
  unlisted: 'unlisted',
  badManifest: 'bad_manifest',
  staleManifest: 'stale_manifest',
  http: 'http_error',
  timeout: 'timeout',
};

// The failure kinds that are an object failing its checks (not a fetch
// that failed): what the beacons count as failed.
const VERIFY_KINDS = new Set([KIND.hash, KIND.unlisted, KIND.badManifest, KIND.staleManifest]);

class DeliveryError extends Error {
  constructor(kind, message, extra = {}) {
    super(message);
    this.kind = kind;
    Object.assign(this, extra);
  }
}

function b64urlBytes(s) {
  const b = atob(s.replace(/-/g, '+').replace(/_/g, '/') + '==='.slice((s.length + 3) % 4));
  const out = new Uint8Array(b.length);
  for (let i = 0; i < b.length; i++) out[i] = b.charCodeAt(i);
  return out;
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (x) => x.toString(16).padStart(2, '0')).join('');
}

// routeRequest is the URL the player asks where to play from: the page's
// route_url (relative to href) with the playback token and the session
// token (the origin remembers the nodes it offered a session: its
// beacons' bytes count for those only), when there are.
export function routeRequest(routeURL, href, { token = '', session = '' } = {}) {
  const u = new URL(routeURL, href);
  if (token) u.searchParams.set('token', token);
  if (session) u.searchParams.set('session', session);
  return u.href;
}

// importKeys turns { keyId: base64url } into { keyId: CryptoKey }; null when
// this browser cannot verify (no WebCrypto Ed25519, or an insecure context).
export async function importKeys(keys) {
  if (!keys || !globalThis.crypto || !crypto.subtle) return null;
  const out = {};
  try {
    for (const [id, k] of Object.entries(keys)) {
      out[id] = await crypto.subtle.importKey('raw', b64urlBytes(k), { name: 'Ed25519' }, false, ['verify']);
    }
  } catch {
    return null;
  }
  return Object.keys(out).length ? out : null;
}

// parseManifest reads a manifest's text; it throws on anything malformed.
export function parseManifest(bytes) {
  const text = new TextDecoder().decode(bytes);
  if (!text.endsWith('\n')) throw new Error('manifest must end with a newline');
  const i = text.lastIndexOf('\nsig ', text.length - 2);
  if (i < 0) throw new Error('manifest has no signature');
  const signed = bytes.slice(0, i + 1);
  const sigText = text.slice(i + 5, text.length - 1);
  const lines = text.slice(0, i).split('\n');
  const field = (n, name) => {
    if (!lines[n] || !lines[n].startsWith(name + ' ')) throw new Error(`manifest line ${n + 1} must be ${name}`);
    return lines[n].slice(name.length + 1);
  };
  if (lines[0] !== MAGIC) throw new Error('not a shoal manifest');
  const m = {
    keyId: field(1, 'key'), id: field(2, 'id'), rendition: field(3, 'rendition'),
    seq: Number(field(4, 'seq')), time: Number(field(5, 'time')), ended: field(6, 'ended') === '1',
    entries: new Map(), segments: [], parts: [], signed, sig: null,
  };
  for (const l of lines.slice(7)) {
    const p = l.split(' ');
    if (p[0] === 'gap') {
      // A segment that was never written (EXT-X-GAP): its place and
      // duration, nothing to fetch.
      if (p.length !== 3 || !/^(0|[1-9][0-9]*)$/.test(p[2])) throw new Error('bad manifest entry');
      m.entries.set(p[1], { kind: 'gap', size: 0, sha256: '', ms: Number(p[2]) });
      m.segments.push(p[1]);
      continue;
    }
    const timed = p[0] === 'seg' || p[0] === 'part';
    const ok = ((p.length === 4 && p[0] === 'init') || (p.length === 5 && timed && /^[0-9]+$/.test(p[4]))) &&
      /^[0-9]+$/.test(p[2]) && /^[0-9a-f]{64}$/.test(p[3]);
    if (!ok) throw new Error('bad manifest entry');
    m.entries.set(p[1], { kind: p[0], size: Number(p[2]), sha256: p[3], ms: timed ? Number(p[4]) : 0 });
    if (p[0] === 'seg') m.segments.push(p[1]);
    if (p[0] === 'part') m.parts.push(p[1]);
  }
  // The signature exactly as the origin writes it: atob skips white space,
  // so a padded one would verify, the manifest then more bytes than the
  // origin's (credited to the edge that sent them).
  if (!/^[A-Za-z0-9_-]{86}$/.test(sigText)) throw new Error('the manifest signature is not 86 base64url characters');
  m.sig = b64urlBytes(sigText);
  return m;
}

// Delivery is one playback session's view of where to fetch from.
export class Delivery {
  // opts: { id, candidates: [{url, node_id}], keys: {id: CryptoKey},
  // serverOffset (ms to add to Date.now() for the origin's clock), token,
  // reportURL, onSwitch(candidate), onReport(report), p2p, live (the
  // stream is live: a finished recording signed before it is refused) }.
  constructor(opts) {
    this.id = opts.id;
    this.keys = opts.keys;
    this.offset = opts.serverOffset || 0;
    // liveSince: when (the origin's clock) this session learned the stream
    // is live, 0 for a recording or a video.
    this.liveSince = opts.live ? Date.now() + this.offset : 0;
    this.token = opts.token || '';
    this.reportURL = opts.reportURL;
    this.onSwitch = opts.onSwitch || (() => {});
    this.onReport = opts.onReport || (() => {});
    // p2p: a P2P (p2p.js) that asks peers first for whole segments far
    // enough ahead of the playhead, or null (HTTP only). Settable.
    this.p2p = opts.p2p || null;
    this.candidates = opts.candidates.map((c) => ({ base: new URL(c.url, location.href).origin, node: c.node_id || '', bad: false }));
    // origin: where the master playlists come from, the candidate without a
    // node (routing offers it last), else the page's.
    this.origin = this.candidates.find((c) => !c.node) || { base: new URL(location.href).origin, node: '', bad: false };
    this.active = 0;
    this.manifests = new Map(); // base + rendition -> { at, promise }
    this.stateManifests = new Map(); // base + rendition -> Map(state key -> promise)
    this.seqs = new Map(); // base + rendition -> highest seq of a manifest fetched without a state
    // rendition -> { target (s), names: Map(name -> state) }: what the
    // last media playlists said (target duration; for low-latency ones, the
    // state of the newest playlist that named each file or hinted a part).
    this.renditions = new Map();
    // rendition -> { target (s), names: Map(name -> { kind ('seg' or
    // 'init'), msn, ms }) }: what the DVR playlists said of every segment
    // and init section in their window (an init section's msn: that of the
    // first segment seen to use it).
    this.dvr = new Map();
    this.ranges = new Map(); // base + rendition -> Map(range start -> { at, ended, pending, promise, manifest })
    // What the session accepted, for the viewer's beacons (beacons.js):
    // verified, the objects that passed the checks; failed, those that
    // failed them (segments, parts, init sections, manifests, playlists;
    // bytes from peers that failed too); received, the bytes accepted that
    // the origin signed (verified media, and signed manifests: every byte
    // of one is the origin's), per source: a candidate's node id, '' for
    // the origin, 'p2p' for peers. Playlists are not counted: nothing signs
    // their bytes, and an edge could pad one that passes its checks with
    // comments to be credited for them.
    this.verified = 0;
    this.failed = 0;
    this.received = new Map();
    // credited: "node path" of the objects whose bytes were counted; the
    // page's (opts.credited) when it makes several Deliveries (a new one
    // for each switch of mode or of the DVR), so that none counts again
    // what the browser's cache gives back.
    this.credited = opts.credited || new Set();
    this.failures = [];
    this.delivered = []; // the last objects handed to the player: { path, sha256, node }
  }

  current() {
    return this.candidates[this.active];
  }

  // fail drops candidate c for the session and reports why.
  fail(c, url, err) {
    if (!c.bad) {
      c.bad = true;
      this.failures.push({ node: c.node, kind: err.kind, url, message: err.message });
      if (c.node) this.report(c, url, err);
    }
    const next = this.candidates.findIndex((x) => !x.bad);
    if (next >= 0 && next !== this.active) {
      this.active = next;
      this.onSwitch(this.candidates[next]);
    }
  }

  report(c, url, err) {
    const body = { node_id: c.node, url, kind: err.kind };
    if (err.expected) body.expected_sha256 = err.expected;
    if (err.received) body.received_sha256 = err.received;
    if (err.message) body.detail = String(err.message).slice(0, 300);
    this.onReport(body);
    try {
      fetch(this.reportURL, {
        method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit',
        headers: { 'Content-Type': 'application/json' },
      }).catch(() => {});
    } catch {
      // Reporting is best effort.
    }
  }

  // path checks that url is one of this stream's playback paths (the
  // master playlist or the DVR master, or a file of a rendition) and
  // returns it.
  path(url) {
    const u = new URL(url, location.href);
    const parts = u.pathname.split('/');
    const ok = parts[1] === 'hls' && parts[2] === this.id && !u.pathname.includes('..') &&
      ((parts.length === 4 && (parts[3] === 'master.m3u8' || parts[3] === DVR_PLAYLIST)) || (parts.length === 5 && RENDITION_RE.test(parts[3]) && NAME_RE.test(parts[4])));
    if (!ok) throw new Error('a playlist pointed outside this stream: ' + u.pathname);
    return u.pathname;
  }

  // request is what load fetches for url: its path (see path) and, for a
  // rendition's playlist, the LL-HLS delivery directives hls.js added
  // (_HLS_msn, _HLS_part, _HLS_skip; any other parameter is dropped) as a
  // query string, '' when there are none.
  request(url, kind) {
    const path = this.path(url);
    let query = '';
    if (kind === 'playlist' && path.split('/').length === 5) {
      const q = new URL(url, location.href).searchParams;
      const msn = q.get('_HLS_msn');
      const part = q.get('_HLS_part');
      const skip = q.get('_HLS_skip');
      const dir = [];
      if (msn !== null && /^[0-9]{1,15}$/.test(msn)) {
        dir.push('_HLS_msn=' + msn);
        if (part !== null && /^[0-9]{1,9}$/.test(part)) dir.push('_HLS_part=' + part);
      }
      if (skip === 'YES' || skip === 'v2') dir.push('_HLS_skip=' + skip);
      query = dir.join('&');
    }
    return { path, query };
  }

  withToken(u) {
    if (!this.token) return u;
    return u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(this.token);
  }

  // load fetches url's object from the active candidate, verified, failing
  // over to the next ones (a master playlist: from the origin). kind:
  // 'playlist' or 'media'. It resolves to { data (ArrayBuffer), url,
  // candidate }.
  async load(url, kind, signal) {
    const req = this.request(url, kind);
    if (kind === 'playlist' && req.path.split('/').length === 4) {
      const o = this.origin;
      return { data: await this.loadMaster(o, req.path, signal), url: o.base + req.path, candidate: o };
    }
    for (;;) {
      const c = this.current();
      if (!c || c.bad) throw new DeliveryError(KIND.http, 'no candidate left to fetch from');
      const full = c.base + req.path;
      try {
        const data = kind === 'playlist' ? await this.loadPlaylist(c, req, signal) : await this.loadMedia(c, req.path, signal);
        return { data, url: full, candidate: c };
      } catch (err) {
        if (signal && signal.aborted) throw err;
        if (!(err instanceof DeliveryError)) throw err;
        // An object that failed its checks, counted once (a manifest's
        // failure reaches every load that waited for it).
        if (VERIFY_KINDS.has(err.kind) && !err.soft && !err.counted) {
          err.counted = true;
          this.failed++;
        }
        // The origin is trusted: its failures are errors, not lies. Nor
        // is a soft error a lie (a hinted part that never came).
        if (!c.node || err.soft) throw err;
        this.fail(c, full, err);
      }
    }
  }

  // fetchBytes fetches path (with its query) from c. Playlists and
  // manifests are revalidated; segments may come from the browser's cache
  // (cache 'default'; they are verified all the same). Past max bytes (by
  // default MAX_TEXT_BYTES from an edge, no bound from the origin) it stops
  // reading and throws tooBig(n) (n: the bytes read so far), by default an
  // http error.
  async fetchBytes(c, path, timeout, signal, { cache = 'no-cache', max = c.node ? MAX_TEXT_BYTES : Infinity, tooBig = null } = {}) {
    const ctl = new AbortController();
    const onAbort = () => ctl.abort();
    if (signal) signal.addEventListener('abort', onAbort);
    const timer = setTimeout(() => ctl.abort(), timeout);
    try {
      // An edge must answer itself: a redirect (to the origin, another
      // edge) would have it credited for bytes it did not send.
      const res = await fetch(this.withToken(c.base + path), { credentials: 'omit', cache, signal: ctl.signal, redirect: c.node ? 'error' : 'follow' });
      // Only the origin says whether this viewer may watch: its 403 ends
      // playback (the page says the link expired). An edge's 403 is an
      // edge failing like any other, dropped for the next candidate.
      if (res.status === 403 && !c.node) throw Object.assign(new Error('forbidden'), { code: 403 });
      if (!res.ok) throw new DeliveryError(KIND.http, `HTTP ${res.status}`, { code: res.status });
      return await readAtMost(res, max, tooBig || ((n) => new DeliveryError(KIND.http, `the answer has more than ${max} bytes (${n} read)`)));
    } catch (err) {
      if (signal && signal.aborted) throw err;
      if (err.name === 'AbortError') throw new DeliveryError(KIND.timeout, `no answer within ${timeout} ms`);
      if (err instanceof DeliveryError || err.code === 403) throw err;
      throw new DeliveryError(KIND.http, String(err.message || err));
    } finally {
      clearTimeout(timer);
      if (signal) signal.removeEventListener('abort', onAbort);
    }
  }

  // blockingTimeout is how long to wait for a blocking request of
  // rendition: the origin holds one up to three target durations.
  blockingTimeout(rendition) {
    const r = this.renditions.get(rendition);
    const d = this.dvr.get(rendition);
    const target = Math.max(r && r.target > 0 ? r.target : 0, d && d.target > 0 ? d.target : 0);
    return Math.max(BLOCKING_TIMEOUT_MIN_MS, (3 * target + 3) * 1000);
  }

  async loadPlaylist(c, req, signal) {
    const { path } = req;
    const parts = path.split('/');
    let bytes;
    if (req.query) {
      // A blocking reload. The origin answers 503 when the playlist did
      // not get there in time and 400 when it was asked too far ahead:
      // then (or on any other failure of the blocking request) take the
      // playlist as it is now, which hls.js takes as a missed update.
      try {
        bytes = await this.fetchBytes(c, path + '?' + req.query, this.blockingTimeout(parts[3]), signal);
      } catch (err) {
        if ((signal && signal.aborted) || !(err instanceof DeliveryError)) throw err;
        bytes = await this.fetchBytes(c, path, PLAYLIST_TIMEOUT_MS, signal);
      }
    } else {
      bytes = await this.fetchBytes(c, path, PLAYLIST_TIMEOUT_MS, signal);
    }
    if (parts[4] === DVR_PLAYLIST) {
      // A DVR playlist: far more than manifest.txt lists. Its segments are
      // checked one by one against their range manifests when loaded.
      const pl = parsePlaylist(new TextDecoder().decode(bytes));
      const problem = dvrProblem(pl, this.dvr.get(parts[3]));
      if (problem) throw new DeliveryError(KIND.unlisted, problem);
      this.noteDVR(parts[3], pl);
      await this.checkDVRGaps(c, parts[3], pl, signal);
    } else {
      // A media playlist must follow the signed manifest of the same
      // candidate: its segments a run of the manifest's, in order, at the
      // manifest's sequence numbers, its parts listed there too; nothing
      // else to fetch.
      const pl = parsePlaylist(new TextDecoder().decode(bytes));
      if (pl.bad) throw new DeliveryError(KIND.unlisted, pl.bad);
      const rendition = parts[3];
      const st = playlistState(pl);
      if (st) {
        // Low latency: the manifest of exactly this playlist's state.
        const m = await abortable(this.stateManifest(c, rendition, st), signal);
        const problem = playlistProblem(pl, m);
        if (problem) throw new DeliveryError(KIND.unlisted, problem);
      } else {
        let m = await this.manifest(c, rendition, signal, false);
        let problem = playlistProblem(pl, m);
        if (problem) {
          m = await this.manifest(c, rendition, signal, true);
          problem = playlistProblem(pl, m);
        }
        if (problem) throw new DeliveryError(KIND.unlisted, problem);
      }
      this.notePlaylist(rendition, pl, st);
    }
    return bytes.buffer;
  }

  // loadMaster fetches a master playlist (master.m3u8 or the DVR one) from
  // the origin o: no manifest lists its variants, so none but the origin
  // may say what they are (an edge could drop the best ones, misstate
  // their codecs or name renditions that do not exist). Its failures, a
  // 403 included, are errors for the page. Small, and fetched once per
  // load of the stream.
  async loadMaster(o, path, signal) {
    const bytes = await this.fetchBytes(o, path, PLAYLIST_TIMEOUT_MS, signal);
    // Variants and the audio group only (hls.js would fetch session keys
    // and data past the verifying loaders).
    const bad = /^#EXT-X-(SESSION-KEY|SESSION-DATA|CONTENT-STEERING)\b/m.exec(new TextDecoder().decode(bytes));
    if (bad) throw new DeliveryError(KIND.unlisted, `the master playlist has ${bad[0]}, which Shoal never writes`);
    return bytes.buffer;
  }

  // notePlaylist remembers what a verified media playlist said: its target
  // duration and, when it has a state, the state of every file it names
  // (the newest playlist's wins; those of older ones are kept while their
  // segment is in the window) and of its preload hint.
  notePlaylist(rendition, pl, st) {
    let r = this.renditions.get(rendition);
    if (!r) {
      r = { target: 0, names: new Map() };
      this.renditions.set(rendition, r);
    }
    r.target = pl.target;
    if (!st) {
      r.names.clear();
      return;
    }
    for (const [name, s] of r.names) {
      if (s.msn < pl.seq) r.names.delete(name);
    }
    for (const name of [...pl.inits, ...pl.segments]) r.names.set(name, st);
    for (const p of pl.parts) {
      // A part the state's manifest no longer lists keeps the state of an
      // older playlist that had it, if any.
      if (!p.unlisted) r.names.set(p.name, st);
      else if (!r.names.has(p.name)) r.names.set(p.name, { ...st, unlisted: true });
    }
    if (pl.hint && !r.names.has(pl.hint.name)) r.names.set(pl.hint.name, { msn: pl.hint.msn, part: pl.hint.k, hint: true });
  }

  // noteDVR remembers what a DVR playlist of rendition said of its
  // segments and init sections (those that left its window are dropped).
  noteDVR(rendition, pl) {
    let d = this.dvr.get(rendition);
    if (!d) {
      d = { target: 0, names: new Map(), gapsChecked: new Set() };
      this.dvr.set(rendition, d);
    }
    d.target = pl.target;
    for (const [name, e] of d.names) {
      if (e.kind === 'seg' && e.msn < pl.seq) {
        d.names.delete(name);
        d.gapsChecked.delete(name);
      }
    }
    const first = pl.seq + pl.skipped;
    for (let j = 0; j < pl.segments.length; j++) {
      const msn = first + j;
      d.names.set(pl.segments[j], { kind: 'seg', msn, ms: pl.durations[j], gap: pl.gaps[j] });
      const init = pl.segInits[j];
      if (init) {
        // Its msn: that of the first segment known to use it (the range
        // manifest of any segment lists the init section it uses); last:
        // that of the newest, to forget it once out of the window.
        const e = d.names.get(init);
        if (!e) d.names.set(init, { kind: 'init', msn, last: msn, ms: 0 });
        else e.last = Math.max(e.last, msn);
      }
    }
    for (const [name, e] of d.names) {
      if (e.kind === 'init' && e.last < pl.seq) d.names.delete(name);
    }
  }

  // checkDVRGaps checks each segment DVR playlist pl marks EXT-X-GAP
  // against its range manifest, once: hls.js never loads a gap, so a
  // segment an edge hid as one would otherwise never be checked.
  async checkDVRGaps(c, rendition, pl, signal) {
    const d = this.dvr.get(rendition);
    const first = pl.seq + pl.skipped;
    for (let j = 0; j < pl.segments.length; j++) {
      const name = pl.segments[j];
      if (!pl.gaps[j] || d.gapsChecked.has(name)) continue;
      const named = d.names.get(name);
      const start = rangeStart(first + j);
      let m = await this.rangeManifest(c, rendition, start, signal, false);
      let problem = rangeProblem(m, start, name, named);
      if (problem && !m.ended) {
        m = await this.rangeManifest(c, rendition, start, signal, true);
        problem = rangeProblem(m, start, name, named);
      }
      if (problem) throw new DeliveryError(KIND.unlisted, problem);
      d.gapsChecked.add(name);
    }
  }

  async loadMedia(c, path, signal) {
    const parts = path.split('/');
    const name = parts[4];
    const rendition = parts[3];
    const dvr = this.dvr.get(rendition);
    const named = dvr && dvr.names.get(name);
    if (named) return this.loadDVRMedia(c, path, rendition, name, named, signal);
    const r = this.renditions.get(rendition);
    const st = r && r.names.get(name);
    let e = null;
    if (st) {
      // Low latency: the manifest of the state of the playlist that named
      // it. When that one is not here yet (a hinted part, which the origin
      // holds until it exists, and whose manifest it would hold the same
      // way) the bytes come first, then the manifest.
      const cached = this.cachedStateManifest(c, rendition, st);
      if (cached) e = (await abortable(cached, signal)).entries.get(name);
      if (!e) e = this.knownEntry(c, rendition, name);
      if (!e) {
        let bytes;
        try {
          bytes = await this.fetchBytes(c, path, SEGMENT_TIMEOUT_MS, signal, { cache: 'default', max: c.node ? MAX_PART_BYTES : Infinity });
        } catch (err) {
          // A hinted part may never come (404 once the hint moved on).
          if (st.hint && err instanceof DeliveryError && err.code === 404) err.soft = true;
          throw err;
        }
        const m = await abortable(this.stateManifest(c, rendition, st), signal);
        e = m.entries.get(name) || this.knownEntry(c, rendition, name);
        if (!e) {
          // A part whose manifest had moved past it (see playlistProblem)
          // cannot be checked: an error for hls.js, not a lie of the edge.
          throw new DeliveryError(KIND.unlisted, `${name} is not in the signed manifest of the playlist that names it`, { soft: !!st.unlisted });
        }
        const buf = await this.check(c, path, name, e, bytes);
        this.noteHTTP(c, rendition, name, e, bytes);
        return buf;
      }
    }
    if (!e) {
      let m = await this.manifest(c, rendition, signal, false);
      e = m.entries.get(name);
      if (!e) {
        m = await this.manifest(c, rendition, signal, true);
        e = m.entries.get(name);
      }
    }
    if (!e) throw new DeliveryError(KIND.unlisted, `${name} is not in the signed manifest`);
    if (e.kind === 'gap') throw gapError(name);
    return this.fetchVerified(c, path, rendition, name, e, signal);
  }

  // fetchVerified fetches the object of manifest entry e and checks it. A
  // whole segment far enough ahead of the playhead is asked of peers first
  // (see P2P.budget): their bytes are checked against e like those of HTTP,
  // and a peer whose bytes fail is dropped and reported; then HTTP from c.
  async fetchVerified(c, path, rendition, name, e, signal) {
    const p = this.p2p;
    if (p && e.kind === 'seg') {
      const budget = p.budget(e.ms);
      if (budget > 0) {
        const check = async (b) => {
          const { ok } = await this.digest(e, b);
          if (!ok) this.failed++;
          return ok;
        };
        const bytes = await p.fetch(c.base, rendition, name, e.size, budget, check, signal);
        if (bytes) {
          // Verified: served on to others, even when hls.js gave up on it.
          p.keep(c.base, rendition, name, bytes);
          if (signal && signal.aborted) throw new DOMException('aborted', 'AbortError');
          this.accept(path, e.sha256, 'p2p', bytes.byteLength);
          return bytes.buffer;
        }
      }
    }
    const bytes = await this.fetchBytes(c, path, SEGMENT_TIMEOUT_MS, signal, {
      cache: 'default', max: e.size,
      tooBig: (n) => new DeliveryError(KIND.hash, `${name}: more than ${e.size} bytes (${n} read), the manifest says ${e.size} bytes with ${e.sha256}`,
        { expected: e.sha256 }),
    });
    const buf = await this.check(c, path, name, e, bytes);
    this.noteHTTP(c, rendition, name, e, bytes);
    return buf;
  }

  // noteHTTP counts verified media bytes that came over HTTP and keeps a
  // whole segment to serve to peers.
  noteHTTP(c, rendition, name, e, bytes) {
    const p = this.p2p;
    if (!p) return;
    p.noteHTTP(c.base, rendition, bytes.byteLength);
    if (e.kind === 'seg') p.keep(c.base, rendition, name, bytes);
    if (e.kind === 'part') {
      p.parts.add(rendition, name, bytes);
      this.assembling = this.assembleParts(c, rendition).catch(() => {});
    }
  }

  // assembleParts puts together, from its verified LL-HLS parts, each
  // segment of rendition that a manifest from c now lists whole, checks
  // it against that entry, and gives it to peers (a low-latency player
  // loads parts, never whole segments).
  async assembleParts(c, rendition) {
    const p = this.p2p;
    for (const seg of p.parts.pending(rendition)) {
      const e = this.heldEntry(c, rendition, seg);
      if (!e || e.kind !== 'seg') continue;
      const whole = p.parts.assemble(rendition, seg, e.size);
      if (whole && (await this.digest(e, whole)).ok && this.p2p === p) p.keep(c.base, rendition, seg, whole);
    }
  }

  // loadDVRMedia loads a segment or init section a DVR playlist named
  // (named: what it said of it, see noteDVR): checked against a manifest
  // already at hand that lists it, else against its range manifest, which
  // must list it at its media sequence number. A range still being
  // written that lacks it is asked for again once (a second later).
  async loadDVRMedia(c, path, rendition, name, named, signal) {
    if (named.gap) throw gapError(name);
    let e = this.heldEntry(c, rendition, name);
    if (!e) {
      const start = rangeStart(named.msn);
      let m = await this.rangeManifest(c, rendition, start, signal, false);
      let problem = rangeProblem(m, start, name, named);
      if (problem && !m.ended) {
        m = await this.rangeManifest(c, rendition, start, signal, true);
        problem = rangeProblem(m, start, name, named);
      }
      if (problem) throw new DeliveryError(KIND.unlisted, problem);
      e = m.entries.get(name);
    }
    if (e.kind !== named.kind) throw new DeliveryError(KIND.unlisted, `the DVR playlist names ${name} as a ${named.kind}, the signed manifest lists a ${e.kind}`);
    if (named.kind === 'seg' && Math.abs(named.ms - e.ms) > 1) {
      throw new DeliveryError(KIND.unlisted, `the DVR playlist gives ${name} ${named.ms} ms, the manifest ${e.ms} ms`);
    }
    return this.fetchVerified(c, path, rendition, name, e, signal);
  }

  // heldEntry looks name up in the verified manifests of rendition that c
  // already gave (the live one, those by state, the range ones); null when
  // none lists it. Names are never reused: any of them will do.
  heldEntry(c, rendition, name) {
    const key = c.base + '/' + rendition;
    const live = this.manifests.get(key);
    let e = live && live.manifest && live.manifest.entries.get(name);
    if (e) return e;
    e = this.knownEntry(c, rendition, name);
    if (e) return e;
    const ranges = this.ranges.get(key);
    if (ranges) {
      for (const r of ranges.values()) {
        e = r.manifest && r.manifest.entries.get(name);
        if (e) return e;
      }
    }
    return null;
  }

  // rangeManifest returns the verified range manifest of rendition from c
  // that starts at media sequence start (cached: final ones for good, the
  // one still being written for a second). fresh asks for a newer one than
  // the cached one (see manifest).
  rangeManifest(c, rendition, start, signal, fresh) {
    const key = c.base + '/' + rendition;
    let ranges = this.ranges.get(key);
    if (!ranges) {
      ranges = new Map();
      this.ranges.set(key, ranges);
    }
    const cached = ranges.get(start);
    const now = Date.now();
    if (cached && !fresh && (cached.ended || now - cached.at < LIVE_MANIFEST_TTL_MS)) return abortable(cached.promise, signal);
    if (cached && (cached.ended || (fresh && cached.pending))) return abortable(cached.promise, signal);
    const wait = cached && fresh ? Math.max(0, cached.at + LIVE_MANIFEST_TTL_MS + 100 - now) : 0;
    const entry = { at: now + wait, ended: false, pending: true, manifest: null };
    entry.promise = sleep(wait).then(() => this.fetchManifest(c, rendition, null, start)).then((m) => {
      entry.ended = m.ended;
      entry.pending = false;
      entry.manifest = m;
      return m;
    }, (err) => {
      if (ranges.get(start) === entry) ranges.delete(start);
      throw err;
    });
    ranges.delete(start);
    ranges.set(start, entry);
    while (ranges.size > MAX_RANGE_MANIFESTS) ranges.delete(ranges.keys().next().value);
    return abortable(entry.promise, signal);
  }

  // check verifies bytes against manifest entry e and hands them over.
  async check(c, path, name, e, bytes) {
    const { ok, sum } = await this.digest(e, bytes);
    if (!ok) {
      throw new DeliveryError(KIND.hash, `${name}: ${bytes.byteLength} bytes with SHA-256 ${sum}, the manifest says ${e.size} bytes with ${e.sha256}`,
        { expected: e.sha256, received: sum });
    }
    this.accept(path, sum, c.node, bytes.byteLength);
    return bytes.buffer;
  }

  // digest checks bytes against manifest entry e: { ok, sum (hex SHA-256) }.
  async digest(e, bytes) {
    const sum = hex(await crypto.subtle.digest('SHA-256', bytes));
    return { ok: bytes.byteLength === e.size && sum === e.sha256, sum };
  }

  // accept counts a verified object of size bytes handed to the player
  // (node: where it came from, '' for the origin, 'p2p' for peers).
  accept(path, sum, node, size) {
    this.verified++;
    // An object fetched again (a seek back, hls.js reloading it) most
    // likely came from the browser's cache: the node sent it once, and
    // is credited once.
    const key = node + ' ' + path;
    if (!this.credited.has(key)) {
      this.credited.add(key);
      if (this.credited.size > MAX_CREDITED) this.credited.delete(this.credited.values().next().value);
      this.receive(node, size);
    }
    this.delivered.push({ path, sha256: sum, node });
    if (this.delivered.length > 500) this.delivered.shift();
  }

  // receive counts n bytes accepted from node (see received).
  receive(node, n) {
    if (n > 0) this.received.set(node, (this.received.get(node) || 0) + n);
  }

  // manifest returns the verified manifest of rendition from candidate c
  // (cached: ended ones for good, live ones for a second).
  // fresh asks for a newer one than the cached one: caches on the way
  // (the edge's, a second) may hold the manifest from just before the
  // playlist that names a new segment, so it waits until that one expired.
  manifest(c, rendition, signal, fresh) {
    const key = c.base + '/' + rendition;
    const cached = this.manifests.get(key);
    const now = Date.now();
    if (cached && !fresh && (cached.ended || now - cached.at < LIVE_MANIFEST_TTL_MS)) return abortable(cached.promise, signal);
    if (cached && fresh && cached.pending) return abortable(cached.promise, signal);
    const wait = cached && fresh ? Math.max(0, cached.at + LIVE_MANIFEST_TTL_MS + 100 - now) : 0;
    const entry = { at: now + wait, ended: false, pending: true };
    // Shared by every load that needs it: not tied to the first one's
    // signal (hls.js aborts loads), bounded by the fetch's timeout.
    entry.promise = sleep(wait).then(() => this.fetchManifest(c, rendition, null)).then((m) => {
      entry.ended = m.ended;
      entry.pending = false;
      entry.manifest = m;
      return m;
    }, (err) => {
      if (this.manifests.get(key) === entry) this.manifests.delete(key);
      throw err;
    });
    this.manifests.set(key, entry);
    return abortable(entry.promise, signal);
  }

  // stateManifest returns the verified manifest of rendition from c for
  // playlist state st ({ msn, part }: see playlistState), cached by state.
  stateManifest(c, rendition, st) {
    const key = c.base + '/' + rendition;
    let byState = this.stateManifests.get(key);
    if (!byState) {
      byState = new Map();
      this.stateManifests.set(key, byState);
    }
    const sk = stateQuery(st);
    let p = byState.get(sk);
    if (!p) {
      p = this.fetchManifest(c, rendition, st).then((m) => {
        if (byState.get(sk) === p) p.manifest = m;
        return m;
      }, (err) => {
        if (byState.get(sk) === p) byState.delete(sk);
        throw err;
      });
      byState.set(sk, p);
      while (byState.size > MAX_STATE_MANIFESTS) byState.delete(byState.keys().next().value);
    }
    return p;
  }

  // knownEntry looks name up in the manifests by state of rendition that c
  // already gave (names are never reused: any of them will do), newest
  // first; null when none lists it.
  knownEntry(c, rendition, name) {
    const byState = this.stateManifests.get(c.base + '/' + rendition);
    if (!byState) return null;
    const ps = [...byState.values()];
    for (let i = ps.length - 1; i >= 0; i--) {
      const e = ps[i].manifest && ps[i].manifest.entries.get(name);
      if (e) return e;
    }
    return null;
  }

  cachedStateManifest(c, rendition, st) {
    const byState = this.stateManifests.get(c.base + '/' + rendition);
    return byState && byState.get(stateQuery(st));
  }

  // fetchManifest fetches and verifies a manifest: the newest one, or with
  // st the one of the first playlist that reached state st (a blocking
  // request, like the playlist's), or with range (a multiple of 100) the
  // range manifest of the segments from that media sequence number.
  async fetchManifest(c, rendition, st, range = null) {
    let path = `/hls/${this.id}/${rendition}/manifest.txt`;
    if (range != null) path = rangeManifestPath(this.id, rendition, range);
    else if (st) path += '?' + stateQuery(st);
    const bytes = await this.fetchBytes(c, path, st ? this.blockingTimeout(rendition) : PLAYLIST_TIMEOUT_MS, null);
    const m = await this.checkManifest(c, rendition, st, range, bytes);
    this.receive(c.node, bytes.byteLength);
    return m;
  }

  // checkManifest parses and checks the manifest bytes fetchManifest
  // fetched from c (see there).
  async checkManifest(c, rendition, st, range, bytes) {
    let m;
    try {
      m = parseManifest(bytes);
    } catch (err) {
      throw new DeliveryError(KIND.badManifest, err.message);
    }
    const key = this.keys[m.keyId];
    if (!key) throw new DeliveryError(KIND.badManifest, `signed with unknown key ${m.keyId}`);
    const ok = await crypto.subtle.verify({ name: 'Ed25519' }, key, m.sig, m.signed);
    if (!ok) throw new DeliveryError(KIND.badManifest, 'the manifest signature does not verify');
    if (m.id !== this.id || m.rendition !== rendition) {
      throw new DeliveryError(KIND.badManifest, `the manifest is for ${m.id}/${m.rendition}, not ${this.id}/${rendition}`);
    }
    if (!m.ended) {
      const age = Date.now() + this.offset - m.time;
      if (age > MAX_LIVE_AGE_MS) {
        throw new DeliveryError(KIND.staleManifest, `the live manifest was signed ${Math.round(age / 1000)} s ago`);
      }
    } else if (range == null && c.node && this.liveSince && m.time < this.liveSince - MAX_LIVE_AGE_MS) {
      // An edge replaying an earlier broadcast's finished recording to a
      // live session (a range of the DVR window may be older: it is final
      // once whole; the origin says what it has, the last recording for a
      // moment after a new broadcast connects).
      throw new DeliveryError(KIND.staleManifest,
        `a finished recording signed ${Math.round((this.liveSince - m.time) / 1000)} s before this live session began`);
    }
    if (range != null) {
      // The range asked for: its segments, a hundred at most, from range
      // on (later when the recording starts within the range: a rendition
      // that joined the stream late); seq is the media sequence number
      // after its last one. Its seq grows while it is written, and is no
      // ordering among ranges.
      const from = m.seq - m.segments.length;
      if (from < range || m.seq > range + RANGE || m.segments.length > RANGE) {
        throw new DeliveryError(KIND.badManifest, `the range manifest of ${range} lists ${m.segments.length} segments up to sequence ${m.seq}`);
      }
      return m;
    }
    if (st) {
      // It must have reached the state asked for (seq: the media sequence
      // after its last whole segment); what it lists, the playlist check
      // compares. Manifests of older states come later at times: no
      // ordering among them.
      const want = st.part == null ? st.msn + 1 : st.msn;
      if (m.seq < want && !m.ended) {
        throw new DeliveryError(KIND.staleManifest, `the manifest asked for ${stateQuery(st)} has sequence ${m.seq}, before that state`);
      }
      return m;
    }
    // Sequences only move forward, per candidate: another edge may be a
    // second behind this one without lying.
    const seqKey = c.base + '/' + rendition;
    const seen = this.seqs.get(seqKey) || 0;
    if (m.seq < seen) throw new DeliveryError(KIND.staleManifest, `manifest sequence ${m.seq} is older than ${seen}`);
    this.seqs.set(seqKey, m.seq);
    return m;
  }
}

// readAtMost reads the body of res, at most max bytes: past them it stops
// reading (cancels the body) and throws tooBig(n), n the bytes read. The
// bytes are in an ArrayBuffer of their own.
async function readAtMost(res, max, tooBig) {
  if (!res.body) {
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (bytes.byteLength > max) throw tooBig(bytes.byteLength);
    return bytes;
  }
  const reader = res.body.getReader();
  const chunks = [];
  let n = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
      if (n > max) throw tooBig(n);
      chunks.push(value);
    }
  } catch (err) {
    reader.cancel().catch(() => {});
    throw err;
  }
  if (chunks.length === 1 && chunks[0].byteOffset === 0 && chunks[0].byteLength === chunks[0].buffer.byteLength) return chunks[0];
  const out = new Uint8Array(n);
  let at = 0;
  for (const b of chunks) {
    out.set(b, at);
    at += b.byteLength;
  }
  return out;
}

// gapError is the answer for a segment a playlist marks EXT-X-GAP (hls.js
// never asks for one): nothing is fetched, and no candidate is blamed.
function gapError(name) {
  return new DeliveryError(KIND.http, `${name} is a gap (EXT-X-GAP): there is nothing to fetch`, { code: 404, soft: true });
}

// rangeStart is the first media sequence number of the range manifest that
// lists segment msn.
export function rangeStart(msn) {
  return Math.floor(msn / RANGE) * RANGE;
}

// rangeManifestPath is the path of rendition's range manifest that starts
// at start.
export function rangeManifestPath(id, rendition, start) {
  return `/hls/${id}/${rendition}/manifest-${start}.txt`;
}

// rangeProblem says why range manifest m (of the range from start) does
// not vouch for name as a DVR playlist named it (named: see
// Delivery.noteDVR), or ''. A segment must be listed at its media sequence
// number; an init section, before the segments that use it.
export function rangeProblem(m, start, name, named) {
  const e = m.entries.get(name);
  if (!e) return `${name} is not in the signed range manifest of ${start}`;
  if (named.kind === 'seg') {
    if ((e.kind === 'gap') !== !!named.gap) {
      return `the DVR playlist has ${name} ${named.gap ? 'as a gap' : 'as a segment'}, the signed range manifest of ${start} ${e.kind === 'gap' ? 'as a gap' : 'as a segment'}`;
    }
    const at = m.segments.indexOf(name);
    const from = m.seq - m.segments.length; // the first listed segment's media sequence
    if (at < 0 || from + at !== named.msn) {
      return `the DVR playlist has ${name} at media sequence ${named.msn}, the signed range manifest of ${start} ${at < 0 ? 'not as a segment' : 'at ' + (from + at)}`;
    }
  }
  return '';
}

// dvrProblem says how DVR playlist pl departs from what Shoal writes, or
// from what the earlier DVR playlists of its rendition (d: see
// Delivery.noteDVR) said, or ''.
export function dvrProblem(pl, d) {
  if (pl.bad) return pl.bad;
  if (pl.parts.length || pl.hint) return 'the DVR playlist lists parts, which Shoal never writes';
  const first = pl.seq + pl.skipped;
  for (let j = 0; j < pl.segments.length; j++) {
    if (pl.durations[j] < 0) return `the DVR playlist gives ${pl.segments[j]} no duration`;
    const e = d && d.names.get(pl.segments[j]);
    if (e && (e.kind !== 'seg' || e.msn !== first + j)) {
      return `the DVR playlist has ${pl.segments[j]} at media sequence ${first + j}, an earlier one at ${e.msn}`;
    }
  }
  return '';
}

// stateQuery is the query string that asks for playlist state st.
export function stateQuery(st) {
  return '_HLS_msn=' + st.msn + (st.part == null ? '' : '&_HLS_part=' + st.part);
}

// playlistState is the LL-HLS state a live low-latency media playlist
// shows, as a blocking request would ask for it: { msn, part } of its last
// part when that part's segment is not whole yet, else { msn } of its last
// whole segment. null for other playlists (no EXT-X-PART-INF, ended, empty).
export function playlistState(pl) {
  if (!pl.partTarget || pl.ended) return null;
  const pending = pl.seq + pl.skipped + pl.segments.length;
  const last = pl.parts[pl.parts.length - 1];
  if (last && last.msn === pending) return { msn: pending, part: last.k };
  if (pl.segments.length) return { msn: pending - 1 };
  return null;
}

// abortable settles like promise, or rejects with an AbortError when
// signal aborts first.
function abortable(promise, signal) {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(new DOMException('aborted', 'AbortError'));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(new DOMException('aborted', 'AbortError'));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then((v) => {
      signal.removeEventListener('abort', onAbort);
      resolve(v);
    }, (err) => {
      signal.removeEventListener('abort', onAbort);
      reject(err);
    });
  });
}

function sleep(ms) {
  if (!ms) return Promise.resolve();
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// parseAttrs reads an attribute list (KEY=VALUE,KEY="VALUE",...) into an
// object; null when it is malformed or names an attribute twice.
function parseAttrs(s) {
  const out = {};
  const re = /([A-Z0-9-]+)=("[^"\r\n]*"|[^",\s]*)(,|$)/y;
  let i = 0;
  while (i < s.length) {
    re.lastIndex = i;
    const m = re.exec(s);
    if (!m || Object.prototype.hasOwnProperty.call(out, m[1])) return null;
    out[m[1]] = m[2].startsWith('"') ? m[2].slice(1, -1) : m[2];
    i = re.lastIndex;
    if (m[3] === '' && i < s.length) return null;
  }
  return out;
}

// partName splits a part's name, <segment name without .m4s>-p<k>.m4s,
// into that base and k; null when it is not one.
function partName(name) {
  const m = /^(.+)-p([0-9]{1,6})\.m4s$/.exec(name);
  return m ? { base: m[1], k: Number(m[2]) } : null;
}

// parsePlaylist reads what the checks need of a media playlist: its media
// sequence, segment and init names (query strings dropped), the init
// section of each segment (segInits, '' for none), which segments are gaps
// (gaps: EXT-X-GAP, a segment that was never written), whether it ended, its
// target duration, and the LL-HLS parts (with the media sequence number of
// their segment and their index k in it), preload hint and rendition
// reports; for a delta update (EXT-X-SKIP), skipped: how many segments it
// leaves out before the first it lists (whose media sequence number is then
// seq + skipped); bad says what Shoal's playlists never have (keys, byte
// ranges, files outside the rendition, parts that are not their
// segment's).
export function parsePlaylist(text) {
  const pl = {
    seq: 0, skipped: 0, segments: [], durations: [], inits: [], segInits: [], gaps: [], ended: false, bad: '',
    target: 0, partTarget: 0, canBlockReload: false, canSkipUntil: 0, parts: [], hint: null, reports: [],
  };
  let init = '';
  let skip = false;
  const bad = (why) => { pl.bad = pl.bad || why; };
  let dur = -1;
  let gap = false;
  let pending = []; // the parts listed since the last segment
  // checkParts checks that parts are those of the segment named base, in
  // order; k of the first may be past 0 (older parts drop out first).
  const checkParts = (parts, base) => {
    const p0 = parts.length ? partName(parts[0].name) : null;
    for (let j = 0; j < parts.length; j++) {
      const pn = partName(parts[j].name);
      if (!pn || !p0 || (base != null && pn.base !== base) || pn.base !== p0.base || pn.k !== p0.k + j) {
        bad(`the playlist lists part ${parts[j].name} out of place`);
        return;
      }
    }
  };
  // Lines are read as hls.js reads them only where they end in LF alone:
  // hls.js also ends a line at CR, U+2028 and U+2029, which Shoal never
  // writes, so an edge could hide segments behind them from this check.
  if (/[\r\u2028\u2029]/.test(text)) bad('the playlist has line breaks Shoal never writes (CR, U+2028 or U+2029)');
  // Numbers too: Number() reads 0x14, +20 and 2e1 as 20, hls.js as 0, 0 and 2.
  const integer = (l, v) => {
    if (/^[0-9]{1,15}$/.test(v)) return Number(v);
    bad(`the playlist has a malformed ${l}`);
    return 0;
  };
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (!l) continue;
    const tag = l.startsWith('#') ? l.split(':')[0] : '';
    const value = l.slice(tag.length + 1);
    if (tag === '#EXTINF') {
      const m = /^([0-9]{1,9}(?:\.[0-9]{1,9})?),/.exec(value);
      if (!m) bad(`the playlist has a malformed ${l}`);
      dur = m ? Math.round(Number(m[1]) * 1000) : -1;
    } else if (tag === '#EXT-X-MEDIA-SEQUENCE') {
      pl.seq = integer(l, value);
    } else if (tag === '#EXT-X-TARGETDURATION') {
      pl.target = integer(l, value);
    } else if (tag === '#EXT-X-MAP') {
      const m = /URI="([^"]*)"/.exec(l);
      if (m) {
        init = m[1].split('?')[0];
        if (!pl.inits.includes(init)) pl.inits.push(init);
      }
      if (/BYTERANGE/.test(value)) bad('the playlist has EXT-X-MAP with a byte range, which Shoal never writes');
    } else if (l === '#EXT-X-ENDLIST') {
      pl.ended = true;
    } else if (l === '#EXT-X-GAP') {
      gap = true;
    } else if (tag === '#EXT-X-PART-INF') {
      const a = parseAttrs(value);
      pl.partTarget = a && /^[0-9]+(\.[0-9]+)?$/.test(a['PART-TARGET'] || '') ? Number(a['PART-TARGET']) : 0;
      if (!pl.partTarget) bad(`the playlist has a malformed ${l}`);
    } else if (tag === '#EXT-X-SERVER-CONTROL') {
      const a = parseAttrs(value);
      if (!a) bad(`the playlist has a malformed ${l}`);
      else {
        pl.canBlockReload = a['CAN-BLOCK-RELOAD'] === 'YES';
        if (a['CAN-SKIP-UNTIL'] != null) {
          pl.canSkipUntil = /^[0-9]+(\.[0-9]+)?$/.test(a['CAN-SKIP-UNTIL']) ? Number(a['CAN-SKIP-UNTIL']) : 0;
          if (!pl.canSkipUntil) bad(`the playlist has a malformed ${l}`);
        }
      }
    } else if (tag === '#EXT-X-SKIP') {
      // A delta update: the oldest segments left out, before any listed.
      const a = parseAttrs(value);
      const ok = a && /^[0-9]{1,9}$/.test(a['SKIPPED-SEGMENTS'] || '') &&
        Object.keys(a).every((k) => k === 'SKIPPED-SEGMENTS' || k === 'RECENTLY-REMOVED-DATERANGES');
      if (!ok) bad(`the playlist has a malformed ${l}`);
      else if (skip || pl.segments.length || pending.length) bad(`the playlist has ${l} out of place`);
      else pl.skipped = Number(a['SKIPPED-SEGMENTS']);
      skip = true;
    } else if (tag === '#EXT-X-PART') {
      const a = parseAttrs(value);
      const name = a && a.URI != null ? a.URI.split('?')[0] : '';
      const ok = a && Object.keys(a).every((k) => k === 'URI' || k === 'DURATION' || k === 'INDEPENDENT') &&
        /^[0-9]+(\.[0-9]+)?$/.test(a.DURATION || '') && (a.INDEPENDENT == null || a.INDEPENDENT === 'YES' || a.INDEPENDENT === 'NO');
      if (!ok) {
        bad(`the playlist has ${l}, which Shoal never writes`);
      } else if (!NAME_RE.test(name)) {
        bad(`the playlist names ${name}, not a file of its rendition`);
      } else {
        const pn = partName(name);
        pending.push({ name, ms: Math.round(Number(a.DURATION) * 1000), independent: a.INDEPENDENT === 'YES', k: pn ? pn.k : -1, msn: -1, segment: '' });
      }
    } else if (tag === '#EXT-X-PRELOAD-HINT') {
      const a = parseAttrs(value);
      const name = a && a.URI != null ? a.URI.split('?')[0] : '';
      if (!a || a.TYPE !== 'PART' || !Object.keys(a).every((k) => k === 'TYPE' || k === 'URI') || pl.hint) {
        bad(`the playlist has ${l}, which Shoal never writes`);
      } else if (!NAME_RE.test(name) || !partName(name)) {
        bad(`the playlist hints ${name}, not a part of its rendition`);
      } else {
        pl.hint = { name, k: partName(name).k, msn: -1 };
      }
    } else if (tag === '#EXT-X-RENDITION-REPORT') {
      const a = parseAttrs(value);
      const m = a && /^\.\.\/([a-z0-9][a-z0-9_-]*)\/index\.m3u8$/.exec(a.URI || '');
      if (!m || !/^[0-9]{1,15}$/.test(a['LAST-MSN'] || '') || (a['LAST-PART'] != null && !/^[0-9]{1,9}$/.test(a['LAST-PART']))) {
        bad(`the playlist has ${l}, not a report of another rendition of this stream`);
      } else {
        pl.reports.push({ rendition: m[1], msn: Number(a['LAST-MSN']), part: a['LAST-PART'] == null ? -1 : Number(a['LAST-PART']) });
      }
    } else if (/^#EXT-X-(KEY|SESSION-KEY|BYTERANGE)$/.test(tag)) {
      bad(`the playlist has ${tag.slice(1)}, which Shoal never writes`);
    } else if (!l.startsWith('#')) {
      const name = l.split('?')[0];
      if (!NAME_RE.test(name)) bad(`the playlist names ${name}, not a file of its rendition`);
      if (pending.length) {
        checkParts(pending, name.endsWith('.m4s') ? name.slice(0, -4) : '\0');
        for (const p of pending) {
          p.msn = pl.seq + pl.skipped + pl.segments.length;
          p.segment = name;
        }
        pl.parts.push(...pending);
        pending = [];
      }
      pl.segments.push(name);
      pl.segInits.push(init);
      pl.durations.push(dur);
      pl.gaps.push(gap);
      dur = -1;
      gap = false;
    }
  }
  // The parts of the segment being written, then the hint of its next part
  // (or of the first part of the next segment).
  const next = pl.seq + pl.skipped + pl.segments.length;
  checkParts(pending, null);
  for (const p of pending) p.msn = next;
  pl.parts.push(...pending);
  if (pl.hint) {
    const last = pending[pending.length - 1];
    if (last && (partName(last.name).base !== partName(pl.hint.name).base || pl.hint.k !== last.k + 1)) {
      bad(`the playlist hints ${pl.hint.name}, which does not follow ${last.name}`);
    }
    if (!last && pl.hint.k !== 0) bad(`the playlist hints ${pl.hint.name}, which does not start a segment`);
    pl.hint.msn = next;
  }
  if ((pl.parts.length || pl.hint) && !pl.partTarget) bad('the playlist lists parts without EXT-X-PART-INF');
  return pl;
}

// playlistProblem says how a media playlist departs from manifest m, or ''.
export function playlistProblem(pl, m) {
  if (pl.bad) return pl.bad;
  for (const i of pl.inits) {
    const e = m.entries.get(i);
    if (!e || e.kind !== 'init') return `the playlist names ${i}, which the signed manifest does not list`;
  }
  if (pl.parts.length) {
    // Parts: a run of the manifest's, in order, each with its duration
    // (the manifest's milliseconds; a playlist's DURATION has more digits,
    // hence the millisecond of rounding allowed). A manifest newer than the
    // playlist (the origin answers a blocking request with the state it
    // has when it answers) may no longer list the parts of the oldest
    // segments: those of a segment it lists whole, before the segment of
    // its first part, are let through, marked unlisted (nothing to check
    // their bytes against but an older manifest).
    const firstPart = m.parts.length ? partName(m.parts[0]) : null;
    const partsFrom = firstPart ? m.segments.indexOf(firstPart.base + '.m4s') : -1;
    const listed = [];
    for (const p of pl.parts) {
      p.unlisted = false;
      const seg = p.segment ? m.segments.indexOf(p.segment) : -1;
      if (!m.entries.has(p.name) && seg >= 0 && (partsFrom < 0 || seg < partsFrom)) p.unlisted = true;
      else listed.push(p);
    }
    const first = listed.length ? m.parts.indexOf(listed[0].name) : 0;
    for (let j = 0; j < listed.length; j++) {
      const p = listed[j];
      const e = m.entries.get(p.name);
      if (!e || e.kind !== 'part') return `the playlist names part ${p.name}, which the signed manifest does not list`;
      if (m.parts[first + j] !== p.name) return `the playlist's parts are not the manifest's, in order, from ${listed[0].name} (at ${p.name})`;
      if (Math.abs(p.ms - e.ms) > 1) return `the playlist gives ${p.name} ${p.ms} ms, the manifest ${e.ms} ms`;
    }
  }
  if (!pl.segments.length) return '';
  const first = m.segments.indexOf(pl.segments[0]);
  if (first < 0) return `the playlist names ${pl.segments[0]}, which the signed manifest does not list`;
  for (let j = 0; j < pl.segments.length; j++) {
    if (m.segments[first + j] !== pl.segments[j]) {
      return `the playlist's segments are not the manifest's, in order, from ${pl.segments[0]} (at ${pl.segments[j]})`;
    }
    const gap = m.entries.get(pl.segments[j]).kind === 'gap';
    if (pl.gaps[j] !== gap) {
      return `the playlist has ${pl.segments[j]} as a ${pl.gaps[j] ? 'gap' : 'segment'}, the signed manifest as a ${gap ? 'gap' : 'segment'}`;
    }
    if (pl.durations[j] !== m.entries.get(pl.segments[j]).ms) {
      return `the playlist gives ${pl.segments[j]} ${pl.durations[j]} ms, the manifest ${m.entries.get(pl.segments[j]).ms} ms`;
    }
  }
  const wantSeq = m.seq - m.segments.length + first;
  if (pl.seq + pl.skipped !== wantSeq) return `the playlist's media sequence is ${pl.seq + pl.skipped}, the manifest's ${wantSeq}`;
  if (pl.ended && (!m.ended || first !== 0 || pl.segments.length !== m.segments.length)) {
    return 'the playlist ends, but not with every segment of the signed manifest';
  }
  return '';
}

// loaderClass makes an hls.js loader (pLoader or fLoader) that fetches
// through delivery. kind: 'playlist' or 'media'.
export function loaderClass(delivery, kind) {
  return class VerifyingLoader {
    constructor() {
      this.stats = newStats();
      this.context = null;
      this.ctl = null;
    }

    load(context, _config, callbacks) {
      this.context = context;
      const stats = this.stats;
      stats.loading.start = performance.now();
      this.ctl = new AbortController();
      const signal = this.ctl.signal;
      delivery.load(context.url, kind, signal).then((res) => {
        if (signal.aborted) return;
        const now = performance.now();
        stats.loading.first = Math.max(stats.loading.start, now - 1);
        stats.loading.end = now;
        stats.loaded = stats.total = res.data.byteLength;
        const data = context.responseType === 'arraybuffer' ? res.data : new TextDecoder().decode(res.data);
        callbacks.onSuccess({ url: res.url, data, code: 200 }, stats, context, null);
      }, (err) => {
        if (signal.aborted) return;
        stats.loading.end = performance.now();
        callbacks.onError({ code: err.code || 0, text: err.message || String(err) }, context, null, stats);
      });
    }

    abort() {
      if (this.ctl) this.ctl.abort();
      this.stats.aborted = true;
    }

    destroy() {
      this.abort();
    }

    getCacheAge() {
      return null;
    }

    getResponseHeader() {
      return null;
    }
  };
}

function newStats() {
  return {
    aborted: false, loaded: 0, retry: 0, total: 0, chunkCount: 0, bwEstimate: 0,
    loading: { start: 0, first: 0, end: 0 },
    parsing: { start: 0, end: 0 },
    buffering: { start: 0, first: 0, end: 0 },
  };
}
