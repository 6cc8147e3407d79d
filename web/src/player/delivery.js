// Verified delivery: the player fetches playlists, segments and init
// sections from the edges the origin's routing offers (the origin last),
// and checks every segment and init section against the origin's signed
// manifest before hls.js sees a byte. An edge that serves something else,
// an old manifest, a playlist naming unlisted objects, an error or nothing
// in time is dropped for the rest of the session, reported to the origin
// (POST /v1/delivery-reports) and the object is fetched from the next
// candidate.
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

// Failure kinds, as the origin's report endpoint names them.
export const KIND = {
  hash: 'hash_mismatch',
  unlisted: 'unlisted',
  badManifest: 'bad_manifest',
  staleManifest: 'stale_manifest',
  http: 'http_error',
  timeout: 'timeout',
};

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
  const sig = b64urlBytes(text.slice(i + 5, text.length - 1));
  const lines = text.slice(0, i).split('\n');
  const field = (n, name) => {
    if (!lines[n] || !lines[n].startsWith(name + ' ')) throw new Error(`manifest line ${n + 1} must be ${name}`);
    return lines[n].slice(name.length + 1);
  };
  if (lines[0] !== MAGIC) throw new Error('not a shoal manifest');
  const m = {
    keyId: field(1, 'key'), id: field(2, 'id'), rendition: field(3, 'rendition'),
    seq: Number(field(4, 'seq')), time: Number(field(5, 'time')), ended: field(6, 'ended') === '1',
    entries: new Map(), segments: [], signed, sig,
  };
  for (const l of lines.slice(7)) {
    const p = l.split(' ');
    const ok = ((p.length === 4 && p[0] === 'init') || (p.length === 5 && p[0] === 'seg' && /^[0-9]+$/.test(p[4]))) &&
      /^[0-9a-f]{64}$/.test(p[3]);
    if (!ok) throw new Error('bad manifest entry');
    m.entries.set(p[1], { kind: p[0], size: Number(p[2]), sha256: p[3], ms: p[0] === 'seg' ? Number(p[4]) : 0 });
    if (p[0] === 'seg') m.segments.push(p[1]);
  }
  return m;
}

// Delivery is one playback session's view of where to fetch from.
export class Delivery {
  // opts: { id, candidates: [{url, node_id}], keys: {id: CryptoKey},
  // serverOffset (ms to add to Date.now() for the origin's clock), token,
  // reportURL, onSwitch(candidate), onReport(report) }.
  constructor(opts) {
    this.id = opts.id;
    this.keys = opts.keys;
    this.offset = opts.serverOffset || 0;
    this.token = opts.token || '';
    this.reportURL = opts.reportURL;
    this.onSwitch = opts.onSwitch || (() => {});
    this.onReport = opts.onReport || (() => {});
    this.candidates = opts.candidates.map((c) => ({ base: new URL(c.url, location.href).origin, node: c.node_id || '', bad: false }));
    this.active = 0;
    this.manifests = new Map(); // base + rendition -> { at, promise }
    this.seqs = new Map(); // rendition -> highest seq verified
    this.verified = 0;
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
  // master playlist, or a file of a rendition) and returns it.
  path(url) {
    const u = new URL(url, location.href);
    const parts = u.pathname.split('/');
    const ok = parts[1] === 'hls' && parts[2] === this.id && !u.pathname.includes('..') &&
      ((parts.length === 4 && parts[3] === 'master.m3u8') || (parts.length === 5 && /^[a-z0-9][a-z0-9_-]*$/.test(parts[3]) && /^[a-z0-9][a-z0-9.-]*$/.test(parts[4])));
    if (!ok) throw new Error('a playlist pointed outside this stream: ' + u.pathname);
    return u.pathname;
  }

  withToken(u) {
    if (!this.token) return u;
    return u + (u.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(this.token);
  }

  // load fetches url's object from the active candidate, verified, failing
  // over to the next ones. kind: 'playlist' or 'media'. It resolves to
  // { data (ArrayBuffer), url, candidate }.
  async load(url, kind, signal) {
    const path = this.path(url);
    for (;;) {
      const c = this.current();
      if (!c || c.bad) throw new DeliveryError(KIND.http, 'no candidate left to fetch from');
      const full = c.base + path;
      try {
        const data = kind === 'playlist' ? await this.loadPlaylist(c, path, signal) : await this.loadMedia(c, path, signal);
        return { data, url: full, candidate: c };
      } catch (err) {
        if (signal && signal.aborted) throw err;
        if (!(err instanceof DeliveryError)) throw err;
        // The origin is trusted: its failures are errors, not lies.
        if (!c.node) throw err;
        this.fail(c, full, err);
      }
    }
  }

  // fetchBytes fetches path from c. Playlists and manifests are
  // revalidated; segments may come from the browser's cache (they are
  // verified all the same).
  async fetchBytes(c, path, timeout, signal, cache = 'no-cache') {
    const ctl = new AbortController();
    const onAbort = () => ctl.abort();
    if (signal) signal.addEventListener('abort', onAbort);
    const timer = setTimeout(() => ctl.abort(), timeout);
    try {
      const res = await fetch(this.withToken(c.base + path), { credentials: 'omit', cache, signal: ctl.signal });
      if (res.status === 403) throw Object.assign(new Error('forbidden'), { code: 403 });
      if (!res.ok) throw new DeliveryError(KIND.http, `HTTP ${res.status}`, { code: res.status });
      return new Uint8Array(await res.arrayBuffer());
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

  async loadPlaylist(c, path, signal) {
    const bytes = await this.fetchBytes(c, path, PLAYLIST_TIMEOUT_MS, signal);
    const parts = path.split('/');
    if (parts.length === 4) {
      // The master playlist: variants and the audio group only (hls.js
      // would fetch session keys and data past the verifying loaders).
      const bad = /^#EXT-X-(SESSION-KEY|SESSION-DATA|CONTENT-STEERING)\b/m.exec(new TextDecoder().decode(bytes));
      if (bad) throw new DeliveryError(KIND.unlisted, `the master playlist has ${bad[0]}, which Shoal never writes`);
    }
    if (parts.length === 5) {
      // A media playlist must follow the signed manifest of the same
      // candidate: its segments a run of the manifest's, in order, at the
      // manifest's sequence numbers; nothing else to fetch.
      const pl = parsePlaylist(new TextDecoder().decode(bytes));
      const rendition = parts[3];
      let m = await this.manifest(c, rendition, signal, false);
      let problem = playlistProblem(pl, m);
      if (problem) {
        m = await this.manifest(c, rendition, signal, true);
        problem = playlistProblem(pl, m);
      }
      if (problem) throw new DeliveryError(KIND.unlisted, problem);
    }
    return bytes.buffer;
  }

  async loadMedia(c, path, signal) {
    const parts = path.split('/');
    const name = parts[4];
    const rendition = parts[3];
    let m = await this.manifest(c, rendition, signal, false);
    let e = m.entries.get(name);
    if (!e) {
      m = await this.manifest(c, rendition, signal, true);
      e = m.entries.get(name);
    }
    if (!e) throw new DeliveryError(KIND.unlisted, `${name} is not in the signed manifest`);
    const bytes = await this.fetchBytes(c, path, SEGMENT_TIMEOUT_MS, signal, 'default');
    const sum = hex(await crypto.subtle.digest('SHA-256', bytes));
    if (bytes.byteLength !== e.size || sum !== e.sha256) {
      throw new DeliveryError(KIND.hash, `${name}: ${bytes.byteLength} bytes with SHA-256 ${sum}, the manifest says ${e.size} bytes with ${e.sha256}`,
        { expected: e.sha256, received: sum });
    }
    this.verified++;
    this.delivered.push({ path, sha256: sum, node: c.node });
    if (this.delivered.length > 500) this.delivered.shift();
    return bytes.buffer;
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
    if (cached && !fresh && (cached.ended || now - cached.at < LIVE_MANIFEST_TTL_MS)) return cached.promise;
    if (cached && fresh && cached.pending) return cached.promise;
    const wait = cached && fresh ? Math.max(0, cached.at + LIVE_MANIFEST_TTL_MS + 100 - now) : 0;
    const entry = { at: now + wait, ended: false, pending: true };
    entry.promise = sleep(wait, signal).then(() => this.fetchManifest(c, rendition, signal)).then((m) => {
      entry.ended = m.ended;
      entry.pending = false;
      return m;
    }, (err) => {
      this.manifests.delete(key);
      throw err;
    });
    this.manifests.set(key, entry);
    return entry.promise;
  }

  async fetchManifest(c, rendition, signal) {
    const path = `/hls/${this.id}/${rendition}/manifest.txt`;
    const bytes = await this.fetchBytes(c, path, PLAYLIST_TIMEOUT_MS, signal);
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

function sleep(ms, signal) {
  if (!ms) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// parsePlaylist reads what the checks need of a media playlist: its media
// sequence, segment and init names (query strings dropped), whether it
// ended, and tags or URIs Shoal's playlists never have.
export function parsePlaylist(text) {
  const pl = { seq: 0, segments: [], durations: [], inits: [], ended: false, bad: '' };
  let dur = -1;
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    if (!l) continue;
    if (l.startsWith('#EXTINF:')) {
      dur = Math.round(parseFloat(l.slice(8)) * 1000);
    } else if (l.startsWith('#EXT-X-MEDIA-SEQUENCE:')) {
      pl.seq = Number(l.slice(22));
    } else if (l.startsWith('#EXT-X-MAP:')) {
      const m = /URI="([^"]*)"/.exec(l);
      if (m) pl.inits.push(m[1].split('?')[0]);
    } else if (l === '#EXT-X-ENDLIST') {
      pl.ended = true;
    } else if (/^#EXT-X-(KEY|SESSION-KEY|BYTERANGE|PART|PRELOAD-HINT|RENDITION-REPORT)\b/.test(l)) {
      pl.bad = pl.bad || `the playlist has ${l.split(':')[0]}, which Shoal never writes`;
    } else if (!l.startsWith('#')) {
      const name = l.split('?')[0];
      if (!/^[a-z0-9][a-z0-9.-]*$/.test(name)) pl.bad = pl.bad || `the playlist names ${name}, not a file of its rendition`;
      pl.segments.push(name);
      pl.durations.push(dur);
      dur = -1;
    }
  }
  return pl;
}

// playlistProblem says how a media playlist departs from manifest m, or ''.
export function playlistProblem(pl, m) {
  if (pl.bad) return pl.bad;
  for (const i of pl.inits) {
    const e = m.entries.get(i);
    if (!e || e.kind !== 'init') return `the playlist names ${i}, which the signed manifest does not list`;
  }
  if (!pl.segments.length) return '';
  const first = m.segments.indexOf(pl.segments[0]);
  if (first < 0) return `the playlist names ${pl.segments[0]}, which the signed manifest does not list`;
  for (let j = 0; j < pl.segments.length; j++) {
    if (m.segments[first + j] !== pl.segments[j]) {
      return `the playlist's segments are not the manifest's, in order, from ${pl.segments[0]} (at ${pl.segments[j]})`;
    }
    if (pl.durations[j] !== m.entries.get(pl.segments[j]).ms) {
      return `the playlist gives ${pl.segments[j]} ${pl.durations[j]} ms, the manifest ${m.entries.get(pl.segments[j]).ms} ms`;
    }
  }
  const wantSeq = m.seq - m.segments.length + first;
  if (pl.seq !== wantSeq) return `the playlist's media sequence is ${pl.seq}, the manifest's ${wantSeq}`;
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
