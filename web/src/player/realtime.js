// Real-time playback over WebRTC (WHEP, RFC 9725): the page POSTs an SDP
// offer (receive-only video and audio) to the stream's /v1/whep/<id>, with
// the page's playback token as the bearer for signed streams, and plays the
// MediaStream it gets in the <video>. The server sends every candidate in
// its answer (no trickle); DELETE on the session's Location ends it.

import { closeAfter } from '../common/rtc.js';

// How long to wait for the browser's ICE candidates before sending the
// offer with what it has (the server's own candidates are enough on most
// networks: the browser connects to them).
const GATHER_MS = 1500;
// A session that has not connected, or shows no picture, within this long
// has failed.
const CONNECT_MS = 12000;
const PICTURE_MS = 12000;
// A connection disconnected this long is given up.
const DISCONNECTED_MS = 5000;

export class WHEPError extends Error {
  constructor(message, status = 0, code = '') {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// supported tells whether this browser can play over WebRTC at all.
export function supported() {
  return typeof RTCPeerConnection === 'function' && typeof MediaStream === 'function';
}

// WHEPSession is one viewer session. opts: { url (the WHEP endpoint),
// token (bearer, '' for none), onEnd(err) (the session failed or the
// server ended it after it started; not called after stop()) }.
export class WHEPSession {
  constructor(opts) {
    this.url = new URL(opts.url, location.href).href;
    this.token = opts.token || '';
    this.onEnd = opts.onEnd || (() => {});
    this.pc = null;
    this.location = '';
    this.stopped = false;
    this.connected = false;
    this.stream = new MediaStream();
  }

  headers(extra) {
    const h = Object.assign({}, extra);
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  // start negotiates the session and resolves to its MediaStream once the
  // connection is up; it rejects with a WHEPError (status set for HTTP
  // refusals) otherwise.
  async start() {
    if (!supported()) throw new WHEPError('this browser does not support WebRTC');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.addEventListener('track', (e) => {
      if (!this.stream.getTracks().includes(e.track)) this.stream.addTrack(e.track);
    });
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    await gathered(pc, GATHER_MS);
    if (this.stopped) throw new WHEPError('stopped');

    // The offer's answer gets as long as the connection does; release
    // (stop) aborts it.
    const abort = new AbortController();
    this.abortOffer = () => abort.abort();
    const timer = setTimeout(() => abort.abort(), CONNECT_MS);
    let res;
    let answer;
    try {
      res = await fetch(this.url, {
        method: 'POST', cache: 'no-store', credentials: 'omit', signal: abort.signal,
        headers: this.headers({ 'Content-Type': 'application/sdp' }),
        body: pc.localDescription.sdp,
      });
      if (res.status === 201 || res.status === 200) {
        const loc = res.headers.get('Location');
        if (loc) this.location = new URL(loc, this.url).href;
        answer = await res.text();
      }
    } catch {
      throw new WHEPError(this.stopped ? 'stopped' : 'the server did not answer');
    } finally {
      clearTimeout(timer);
      this.abortOffer = null;
    }
    if (res.status !== 201 && res.status !== 200) throw await httpError(res);
    if (this.stopped) {
      this.release(false);
      throw new WHEPError('stopped');
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    await this.connect();
    return this.stream;
  }

  // connect waits for the connection, then watches it.
  connect() {
    const pc = this.pc;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new WHEPError('the WebRTC connection did not come up (blocked UDP?)')), CONNECT_MS);
      const done = (err) => {
        clearTimeout(timer);
        this.cancelConnect = null;
        pc.removeEventListener('connectionstatechange', check);
        if (err) reject(err);
        else resolve();
      };
      const check = () => {
        const s = pc.connectionState;
        if (s === 'connected') {
          this.connected = true;
          done();
        } else if (s === 'failed' || s === 'closed') {
          done(new WHEPError('the WebRTC connection failed'));
        }
      };
      pc.addEventListener('connectionstatechange', check);
      // stop() closes the connection, which fires no event.
      this.cancelConnect = () => done(new WHEPError('stopped'));
      check();
    }).then(() => {
      let lost = 0;
      pc.addEventListener('connectionstatechange', () => {
        if (this.stopped) return;
        const s = pc.connectionState;
        clearTimeout(lost);
        if (s === 'failed' || s === 'closed') this.end(new WHEPError('the real-time connection ended'));
        // Disconnected may recover by itself; not for long.
        if (s === 'disconnected') lost = setTimeout(() => this.end(new WHEPError('the real-time connection was lost')), DISCONNECTED_MS);
      });
      // The server ends its sessions when the broadcast ends: the tracks
      // end (or the transport closes, above).
      for (const t of this.stream.getTracks()) {
        t.addEventListener('ended', () => { if (!this.stopped) this.end(new WHEPError('the real-time stream ended')); });
      }
    });
  }

  // watchPicture fails the session when video has shown no frame within
  // PICTURE_MS.
  watchPicture(video) {
    const t = setTimeout(() => {
      if (!this.stopped && !(video.videoWidth > 0)) this.end(new WHEPError('no picture arrived over WebRTC'));
    }, PICTURE_MS);
    video.addEventListener('loadeddata', () => clearTimeout(t), { once: true });
  }

  end(err) {
    if (this.stopped) return;
    this.release(false);
    this.onEnd(err);
  }

  // stop ends the session (DELETE) and closes the connection. unloading:
  // the page is going away, so the request must outlive it.
  stop(unloading = false) {
    if (this.stopped) return;
    this.release(unloading);
  }

  release(unloading) {
    this.stopped = true;
    if (this.abortOffer) this.abortOffer();
    if (this.cancelConnect) this.cancelConnect();
    let ended = Promise.resolve();
    if (this.location) {
      const loc = this.location;
      this.location = '';
      ended = fetch(loc, { method: 'DELETE', keepalive: unloading, credentials: 'omit', cache: 'no-store', headers: this.headers() }).catch(() => {});
    }
    for (const t of this.stream.getTracks()) t.stop();
    if (this.pc) closeAfter(this.pc, unloading ? Promise.resolve() : ended);
  }

  // framesDecoded is the video frames decoded so far (getStats), for the
  // player's figures and tests.
  async framesDecoded() {
    if (!this.pc) return 0;
    let n = 0;
    const stats = await this.pc.getStats();
    stats.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
    });
    return n;
  }
}

// gathered resolves when ICE gathering completes, or after ms.
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(finish, ms);
    function finish() {
      clearTimeout(t);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    }
    function onChange() {
      if (pc.iceGatheringState === 'complete') finish();
    }
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

// httpError reads a refusal's JSON error ({"error": {"code", "message"}}).
async function httpError(res) {
  let msg = '';
  let code = '';
  try {
    const data = await res.json();
    if (data && data.error) {
      msg = data.error.message || '';
      code = data.error.code || '';
    }
  } catch {
    // Not JSON.
  }
  return new WHEPError(msg || `HTTP ${res.status}`, res.status, code);
}
