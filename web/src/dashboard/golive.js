// "Go live" from the browser: a panel on a live stream's card with a local
// preview, a camera (or "Share screen") and microphone picker, Start and
// Stop. Start publishes over WebRTC to the stream's WHIP endpoint
// (ingest.whip_url?stream=<id>) with the dashboard's API key as the bearer
// token (the dashboard does not have the stream key: it is shown once, when
// made): H.264 when the browser can send it, else VP8 (the server converts
// VP8 and Opus to H.264 and AAC for HLS). Stop ends the session (DELETE on
// its Location, with the same bearer) and releases the camera and
// microphone.
//
// The API key only ever goes into the Authorization header of requests to
// this node: it is never shown here, put in a URL or logged.

import { h, icon, replaceChildren } from '../common/dom.js';
import { closeAfter } from '../common/rtc.js';

const GATHER_MS = 1500; // longest wait for local ICE candidates
const CONNECT_MS = 15000; // longest wait for the connection
const STATUS_POLL_MS = 2000; // the stream's status while publishing
const SCREEN = 'screen';
const NO_MIC = 'none';

// Publisher states, as data-state on the panel.
const LABELS = {
  idle: 'Not live',
  preview: 'Ready: check the preview, then Start',
  connecting: 'Connecting…',
  live: 'Sending from this browser',
  stopped: 'Stopped',
  error: 'Not live',
};

export class GoLivePanel {
  // card: the stream's card ({ api, ls (the stream's JSON), refresh() }).
  constructor(card) {
    this.card = card;
    this.stream = null; // the local MediaStream (preview and publication)
    this.pc = null;
    this.location = '';
    this.bearer = ''; // what the session was started with
    this.state = 'idle';
    this.codec = '';
    this.gen = 0; // bumps when a start is cancelled
    this.build();
  }

  get ls() {
    return this.card.ls;
  }

  build() {
    const id = this.ls.id;
    this.preview = h('video', { class: 'golive-video', muted: true, playsinline: true, autoplay: true, 'aria-label': 'Local preview' });
    this.preview.muted = true;
    this.videoSel = h('select', { id: `golive-cam-${id}`, class: 'golive-cam' });
    this.audioSel = h('select', { id: `golive-mic-${id}`, class: 'golive-mic' });
    this.startBtn = h('button', { type: 'button', class: 'btn btn-primary golive-start' }, icon('camera'), 'Start');
    this.stopBtn = h('button', { type: 'button', class: 'btn btn-danger golive-stop', disabled: true }, icon('stop'), 'Stop');
    this.closeBtn = h('button', { type: 'button', class: 'btn btn-ghost golive-close' }, icon('close'), 'Close');
    this.statusText = h('span', { class: 'golive-state', text: LABELS.idle });
    this.streamStatus = h('span', { class: 'golive-stream-status muted' });
    this.error = h('p', { class: 'golive-error notice notice-error', role: 'alert', hidden: true });
    this.el = h('section', { class: 'golive', 'aria-label': `Go live from this browser: ${this.ls.name}`, hidden: true, dataset: { state: 'idle' } },
      h('div', { class: 'golive-grid' },
        h('div', { class: 'golive-preview' }, this.preview, this.tag = h('span', { class: 'golive-tag', text: 'Preview' })),
        h('div', { class: 'golive-side' },
          h('div', { class: 'field' }, h('label', { for: this.videoSel.id, text: 'Camera or screen' }), this.videoSel),
          h('div', { class: 'field' }, h('label', { for: this.audioSel.id, text: 'Microphone' }), this.audioSel),
          h('div', { class: 'golive-buttons' }, this.startBtn, this.stopBtn, this.closeBtn),
          h('p', { class: 'golive-status', role: 'status', 'aria-live': 'polite' },
            h('span', { class: 'golive-dot', 'aria-hidden': 'true' }), this.statusText, this.streamStatus),
          this.error,
          h('p', { class: 'muted small' },
            'Sends over WebRTC (WHIP), signed in with your API key (no stream key needed). Keep this tab open while you are live; closing it ends the broadcast.'))));
    this.fillDevices([]);
    this.startBtn.addEventListener('click', () => this.start());
    this.stopBtn.addEventListener('click', () => this.stop());
    this.closeBtn.addEventListener('click', () => this.close());
    this.videoSel.addEventListener('change', () => this.changeSource());
    this.audioSel.addEventListener('change', () => this.changeSource());
    this.onHide = () => this.release(true);
    window.addEventListener('pagehide', this.onHide);
  }

  get open() {
    return !this.el.hidden;
  }

  // show opens the panel and asks for the camera and microphone (which
  // also makes their names readable for the pickers).
  async show() {
    this.el.hidden = false;
    this.card.onPanel(true);
    this.onStatus(this.ls);
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      this.fail('This browser cannot capture here: going live from the browser needs HTTPS (or localhost) and a current browser.');
      this.startBtn.disabled = true;
      return;
    }
    if (typeof RTCPeerConnection !== 'function') {
      this.fail('This browser does not support WebRTC, which going live from the browser needs.');
      this.startBtn.disabled = true;
      return;
    }
    if (this.state === 'idle' || this.state === 'stopped' || this.state === 'error') {
      await this.acquire(true);
    }
  }

  // close ends any broadcast and hides the panel.
  close() {
    this.release(false);
    this.setState('idle');
    this.el.hidden = true;
    this.card.onPanel(false);
  }

  // destroy is close for good (the stream was deleted, or sign-out).
  destroy() {
    this.release(false);
    window.removeEventListener('pagehide', this.onHide);
  }

  setState(s, detail) {
    this.state = s;
    this.el.dataset.state = s;
    this.statusText.textContent = detail || LABELS[s];
    this.tag.textContent = s === 'live' ? 'On air' : 'Preview';
    const busy = s === 'connecting' || s === 'live';
    this.startBtn.disabled = busy;
    this.stopBtn.disabled = !busy;
    // While live the source may change (replaceTrack); a microphone can
    // only be switched, not added, since WHIP cannot renegotiate.
    this.audioSel.disabled = s === 'connecting' || (s === 'live' && !this.audioSender);
    this.videoSel.disabled = s === 'connecting';
  }

  fail(msg) {
    this.error.textContent = msg;
    this.error.hidden = false;
  }

  clearError() {
    this.error.hidden = true;
    this.error.textContent = '';
  }

  // onStatus shows the stream's status as the API reports it.
  onStatus(ls) {
    this.el.dataset.streamStatus = ls.status;
    let text = ls.status === 'live' ? ' · the stream is live' : ' · the stream is idle';
    if (this.state === 'live' && ls.status !== 'live') text = ' · waiting for the stream to go live…';
    this.streamStatus.textContent = text;
  }

  // ---- devices ----------------------------------------------------------

  async listDevices() {
    try {
      return await navigator.mediaDevices.enumerateDevices();
    } catch {
      return [];
    }
  }

  // fillDevices fills the pickers, keeping the current choices.
  fillDevices(devices) {
    const cams = devices.filter((d) => d.kind === 'videoinput');
    const mics = devices.filter((d) => d.kind === 'audioinput');
    const v = this.videoSel.value;
    const a = this.audioSel.value;
    replaceChildren(this.videoSel,
      cams.map((d, i) => h('option', { value: d.deviceId, text: d.label || `Camera ${i + 1}` })),
      navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia ? h('option', { value: SCREEN, text: 'Share screen' }) : null);
    replaceChildren(this.audioSel,
      mics.map((d, i) => h('option', { value: d.deviceId, text: d.label || `Microphone ${i + 1}` })),
      h('option', { value: NO_MIC, text: 'No microphone' }));
    if (v && [...this.videoSel.options].some((o) => o.value === v)) this.videoSel.value = v;
    if (a && [...this.audioSel.options].some((o) => o.value === a)) this.audioSel.value = a;
  }

  // selectTracks sets the pickers to the devices of the current stream.
  selectTracks() {
    const vt = this.stream && this.stream.getVideoTracks()[0];
    const at = this.stream && this.stream.getAudioTracks()[0];
    if (vt && !this.screen) {
      const id = vt.getSettings().deviceId;
      if (id && [...this.videoSel.options].some((o) => o.value === id)) this.videoSel.value = id;
    }
    if (at) {
      const id = at.getSettings().deviceId;
      if (id && [...this.audioSel.options].some((o) => o.value === id)) this.audioSel.value = id;
    } else {
      this.audioSel.value = NO_MIC;
    }
  }

  // capture gets the tracks the pickers name: a camera or the screen, and a
  // microphone or none. first: the panel just opened (any camera and
  // microphone).
  async capture(first) {
    const md = navigator.mediaDevices;
    const v = first ? '' : this.videoSel.value;
    const a = first ? '' : this.audioSel.value;
    const audio = a === NO_MIC ? false : { deviceId: a ? { exact: a } : undefined, echoCancellation: true, noiseSuppression: true };
    if (v === SCREEN) {
      const screen = await md.getDisplayMedia({ video: { frameRate: { ideal: 30 } }, audio: false });
      let mic = null;
      if (audio) {
        try {
          mic = await md.getUserMedia({ audio });
        } catch (err) {
          screen.getTracks().forEach((t) => t.stop());
          throw err;
        }
      }
      return { stream: new MediaStream([...screen.getVideoTracks(), ...(mic ? mic.getAudioTracks() : [])]), screen: true };
    }
    const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    if (v) video.deviceId = { exact: v };
    return { stream: await md.getUserMedia({ video, audio }), screen: false };
  }

  // acquire replaces the local stream with what the pickers name and
  // shows it; false when capture failed (the error is shown).
  async acquire(first) {
    this.clearError();
    const gen = this.gen;
    let got;
    try {
      got = await this.capture(first);
    } catch (err) {
      this.fillDevices(await this.listDevices());
      this.fail(captureError(err));
      if (this.state !== 'live' && this.state !== 'connecting') this.setState('error', 'Cannot capture');
      return false;
    }
    if (gen !== this.gen || this.el.hidden) {
      // Closed while the browser was asking for the camera: let it go.
      got.stream.getTracks().forEach((t) => t.stop());
      return false;
    }
    const old = this.stream;
    this.stream = got.stream;
    this.screen = got.screen;
    this.preview.srcObject = this.stream;
    this.preview.play().catch(() => {});
    const vt = this.stream.getVideoTracks()[0];
    if (vt) {
      vt.contentHint = this.screen ? 'detail' : 'motion';
      // The browser's own "Stop sharing" ends a screen capture.
      vt.addEventListener('ended', () => {
        if (this.stream && this.stream.getVideoTracks()[0] === vt && this.state === 'live') {
          this.release(false);
          this.setState('stopped', 'Stopped: the capture ended');
        }
      });
    }
    if (old && old !== this.stream) old.getTracks().forEach((t) => t.stop());
    this.fillDevices(await this.listDevices());
    this.selectTracks();
    if (this.state !== 'live' && this.state !== 'connecting') this.setState('preview');
    return true;
  }

  // changeSource follows a picker: a new preview, and while live the new
  // tracks replace the sent ones (no renegotiation).
  async changeSource() {
    const live = this.state === 'live';
    if (!(await this.acquire(false))) return;
    if (!live || !this.pc) return;
    try {
      const vt = this.stream.getVideoTracks()[0] || null;
      const at = this.stream.getAudioTracks()[0] || null;
      if (this.videoSender) await this.videoSender.replaceTrack(vt);
      if (this.audioSender) await this.audioSender.replaceTrack(at);
    } catch (err) {
      this.fail(`Could not switch the source: ${err.message || err}`);
    }
  }

  // ---- publishing -------------------------------------------------------

  async start() {
    const whipURL = this.ls.ingest && this.ls.ingest.whip_url;
    if (!whipURL) {
      this.fail('This server does not take WebRTC (WHIP) broadcasts.');
      return;
    }
    const gen = ++this.gen;
    this.clearError();
    this.setState('connecting');
    const live = this.stream && this.stream.getVideoTracks().some((t) => t.readyState === 'live');
    if (!live && !(await this.acquire(false))) {
      this.setState('error');
      return;
    }
    if (gen !== this.gen) return;
    try {
      await this.publish(whipURL, gen);
    } catch (err) {
      if (gen !== this.gen) return;
      this.release(false, true);
      this.fail(err.message || String(err));
      this.setState('error');
      return;
    }
    if (gen !== this.gen) return;
    this.setState('live', `Sending from this browser (${this.codec})`);
    this.onStatus(this.ls);
    this.pollStatus(gen);
  }

  async publish(whipURL, gen) {
    const vt = this.stream.getVideoTracks()[0];
    const at = this.stream.getAudioTracks()[0];
    if (!vt) throw new Error('There is no picture to send: choose a camera or share a screen.');
    const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.pc = pc;
    const vtx = pc.addTransceiver(vt, { direction: 'sendonly', streams: [this.stream] });
    this.videoSender = vtx.sender;
    this.codec = preferCodecs(vtx);
    this.audioSender = at ? pc.addTransceiver(at, { direction: 'sendonly', streams: [this.stream] }).sender : null;
    await keepResolution(vtx.sender);
    window.shoalGoLive = this; // for support and tests
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, GATHER_MS);
    if (gen !== this.gen) throw new Error('cancelled');
    let res;
    // The session is ended with the bearer it was started with.
    this.bearer = this.card.api.key;
    const offerURL = new URL(whipURL, location.href);
    offerURL.searchParams.set('stream', this.ls.id);
    try {
      res = await fetch(offerURL.href, {
        method: 'POST', cache: 'no-store', credentials: 'omit',
        headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${this.bearer}` },
        body: pc.localDescription.sdp,
      });
    } catch {
      throw new Error('The server cannot be reached. Check your connection.');
    }
    if (res.status !== 201 && res.status !== 200) throw new Error(await whipError(res));
    const loc = res.headers.get('Location');
    if (loc) this.location = new URL(loc, whipURL).href;
    const answer = await res.text();
    this.sdp = { offer: pc.localDescription.sdp, answer }; // for support and tests
    if (gen !== this.gen) {
      // Stopped while the server was answering: end what it started.
      this.endSession(false);
      throw new Error('cancelled');
    }
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    this.codec = negotiatedCodec(answer) || this.codec;
    this.el.dataset.codec = this.codec;
    await connected(pc, CONNECT_MS);
    // Some browsers only take the preference once the sender is running.
    await keepResolution(vtx.sender);
    this.el.dataset.degradation = (vtx.sender.getParameters() || {}).degradationPreference || '';
    pc.addEventListener('connectionstatechange', () => {
      if (this.pc !== pc) return;
      const s = pc.connectionState;
      if (s === 'failed' || s === 'closed') {
        this.release(false, true);
        this.fail('The connection to the server was lost, so the broadcast stopped. Start again to go back live.');
        this.setState('error', 'Disconnected');
      }
    });
  }

  // stop ends the broadcast: DELETE on the session, tracks closed.
  stop() {
    this.release(false);
    this.setState('stopped');
    this.card.refresh();
  }

  // release ends the session and closes the tracks. unloading: the page is
  // going away, so the DELETE must outlive it. keepTracks: keep the
  // preview (a failed start).
  release(unloading, keepTracks) {
    this.gen++;
    const ended = this.endSession(unloading);
    if (this.pc) {
      closeAfter(this.pc, unloading ? Promise.resolve() : ended);
      this.pc = null;
    }
    this.videoSender = this.audioSender = null;
    if (!keepTracks && this.stream) {
      this.stream.getTracks().forEach((t) => t.stop());
      this.stream = null;
      this.preview.srcObject = null;
    }
  }

  // endSession ends the WHIP session on the server (DELETE its Location).
  // It returns a promise settled when the server has answered (or the
  // request failed).
  endSession(unloading) {
    if (!this.location) return Promise.resolve();
    const loc = this.location;
    this.location = '';
    this.bearer = ''; // what the session was started with
    return fetch(loc, {
      method: 'DELETE', keepalive: unloading, cache: 'no-store', credentials: 'omit',
      headers: { Authorization: `Bearer ${this.bearer}` },
    }).catch(() => {});
  }

  // pollStatus refreshes the card while this browser publishes, so that the
  // stream's status follows quickly.
  async pollStatus(gen) {
    while (gen === this.gen && this.state === 'live') {
      try {
        await this.card.refresh();
      } catch {
        // The section's own polling reports API errors.
      }
      await new Promise((r) => setTimeout(r, STATUS_POLL_MS));
    }
  }
}

// preferCodecs puts H.264 (packetization mode 1, constrained baseline
// first) then VP8 at the head of the video codecs, when the browser lets
// a page choose (others but VP9 are left out); it returns the codec
// preferred.
export function preferCodecs(tx) {
  if (!tx.setCodecPreferences || typeof RTCRtpSender === 'undefined' || !RTCRtpSender.getCapabilities) return 'browser default';
  const caps = RTCRtpSender.getCapabilities('video');
  if (!caps || !caps.codecs) return 'browser default';
  const mime = (c) => c.mimeType.toLowerCase();
  const fmtp = (c) => c.sdpFmtpLine || '';
  const rank = (c) => (/profile-level-id=42e0/.test(fmtp(c)) ? 0 : /profile-level-id=4200/.test(fmtp(c)) ? 1 : 2);
  const h264 = caps.codecs.filter((c) => mime(c) === 'video/h264' && /packetization-mode=1/.test(fmtp(c))).sort((a, b) => rank(a) - rank(b));
  const vp8 = caps.codecs.filter((c) => mime(c) === 'video/vp8');
  // VP9 stays listed, last: Shoal's server takes it too.
  const vp9 = caps.codecs.filter((c) => mime(c) === 'video/vp9' && /profile-id=0/.test(fmtp(c)));
  const extra = caps.codecs.filter((c) => /\/(rtx|red|ulpfec)$/.test(mime(c)));
  const tries = [];
  if (h264.length) tries.push(['H.264', [...h264, ...vp8, ...vp9]]);
  if (vp8.length) tries.push(['VP8', [...vp8, ...vp9]]);
  for (const [name, list] of tries) {
    try {
      tx.setCodecPreferences([...list, ...extra]);
      return name;
    } catch {
      // This list is refused: try the next.
    }
  }
  return 'browser default';
}

// keepResolution asks the encoder to lower the frame rate rather than the
// resolution when bandwidth or CPU is short, where the browser supports it.
async function keepResolution(sender) {
  try {
    const p = sender.getParameters();
    if (p.degradationPreference === 'maintain-resolution') return;
    p.degradationPreference = 'maintain-resolution';
    await sender.setParameters(p);
  } catch {
    // Not supported: the browser's default.
  }
}

// negotiatedCodec reads the video codec the answer chose.
function negotiatedCodec(sdp) {
  const m = /m=video \d+ [A-Z/]+ (\d+)/.exec(sdp);
  if (!m) return '';
  const rtp = new RegExp(`a=rtpmap:${m[1]} ([A-Za-z0-9-]+)/`).exec(sdp);
  if (!rtp) return '';
  return rtp[1].toUpperCase() === 'H264' ? 'H.264' : rtp[1].toUpperCase();
}

function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      pc.removeEventListener('icegatheringstatechange', check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === 'complete') done();
    }
    pc.addEventListener('icegatheringstatechange', check);
  });
}

function connected(pc, ms) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => finish(new Error('The WebRTC connection to the server did not come up. A firewall may block UDP; use OBS over RTMP instead.')), ms);
    function finish(err) {
      clearTimeout(t);
      pc.removeEventListener('connectionstatechange', check);
      if (err) reject(err);
      else resolve();
    }
    function check() {
      const s = pc.connectionState;
      if (s === 'connected') finish();
      else if (s === 'failed' || s === 'closed') finish(new Error('The WebRTC connection to the server failed.'));
    }
    pc.addEventListener('connectionstatechange', check);
    check();
  });
}

// whipError turns a refusal into a sentence for the user.
async function whipError(res) {
  let msg = '';
  try {
    const data = await res.json();
    msg = (data && data.error && data.error.message) || '';
  } catch {
    // Not JSON.
  }
  switch (res.status) {
    case 409:
      return 'This stream is already live from another publisher (OBS, ffmpeg or another tab). Stop that one first, then Start again.';
    case 401:
      return 'The server did not accept your API key. Sign in again.';
    case 404:
      return msg === 'no such live stream' ? 'This live stream no longer exists. Reload the page.' : 'This server does not take WebRTC (WHIP) broadcasts.';
    default:
      return msg ? `The server refused the broadcast: ${msg} (HTTP ${res.status}).` : `The server refused the broadcast (HTTP ${res.status}).`;
  }
}

// captureError explains why the camera, microphone or screen could not be
// captured.
function captureError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
      return 'Access to the camera, microphone or screen was refused. Allow it in the browser\'s site settings, then try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'That camera or microphone was not found. Choose another one.';
    case 'NotReadableError':
      return 'That camera or microphone is in use by another application.';
    default:
      return `Cannot capture: ${(err && err.message) || err}`;
  }
}
