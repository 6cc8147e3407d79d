// Entry point of the watch and embed pages: reads the state the server
// rendered, builds the player and follows the live stream or video through
// its states (offline -> live -> ended, processing -> ready).

import '../common/base.css';
import './player.css';
import { h, icon, readState, copyButton, replaceChildren, formatTime } from '../common/dom.js';
import { Player } from './player.js';
import { Delivery, importKeys, routeRequest } from './delivery.js';
import { P2P, bufferAhead } from './p2p.js';
import { WHEPSession, supported as realtimeSupported } from './realtime.js';
import { Beacons, viewerId } from './beacons.js';

const params = new URLSearchParams(location.search);
const token = params.get('token') || '';
const OFFLINE_POLL_MS = 4000;
const PROCESSING_POLL_MS = 3000;

let state = readState();
// The origin's clock minus ours, to judge how old a signed manifest is.
const serverOffset = state && state.server_time ? state.server_time - Date.now() : 0;
const root = document.getElementById('player');
let waiting = 0; // generation of the current waitForLive loop
let playing = 0; // generation of the current live playback start
// Live streams play over HLS (verified delivery) unless the viewer chose
// real-time playback over WebRTC (the toggle, or ?mode=realtime).
let mode = params.get('mode') === 'realtime' && canRealtime() ? 'realtime' : 'hls';
let realtime = null; // the WHEPSession while playing in real time
// Peer-assisted delivery: on unless the stream turns it off, the viewer
// did (the P2P switch, remembered in localStorage) or the address has
// ?p2p=0.
const P2P_KEY = 'shoal.p2p';
let p2pChoice = readP2PChoice();
let currentDelivery = null; // the verified session playing, for the P2P switch
let beacons = null; // the viewer's beacons (beacons.js), when the page has a session
const creditedObjects = new Set(); // objects whose bytes the page's Deliveries counted (Delivery.credited)

function start() {
  const embed = state.page === 'embed';
  const player = new Player(root, {
    controls: state.controls !== false,
    autoplay: embed ? !!state.autoplay : true,
    muted: !!state.muted,
    token,
    force: params.get('player') || '',
    clockOffset: serverOffset,
    onLatency: showLatency,
    onHls: (hls, events, delivery) => { if (beacons) beacons.watchHls(hls, events, delivery); },
  });
  window.shoalPlayer = player; // for support and tests
  startBeacons(player);
  root.addEventListener('shoal:error', (e) => onError(player, e.detail));
  root.addEventListener('shoal:ended', () => onEnded(player));
  // Shortcuts (k, space, m, f, arrows) also work with nothing focused.
  document.addEventListener('keydown', (e) => {
    if (e.target === document.body || e.target === document.documentElement) player.onKey(e);
  });
  if (!embed) setupShare();
  setupModeToggle(player);
  setupP2PToggle(player);
  // End a real-time session with the page (its DELETE outlives the page).
  window.addEventListener('pagehide', () => stopRealtime(true));
  // Leave the swarms with the page (the last stats go to the tracker).
  window.addEventListener('pagehide', () => {
    if (currentDelivery && currentDelivery.p2p) currentDelivery.p2p.close();
  });
  route(player);
}

// route starts what the current state calls for.
function route(player) {
  setStatus(state.status);
  if (state.needs_token) {
    player.showMessage(needsToken());
    return;
  }
  if (state.kind === 'live') {
    if (state.status === 'live') playLive(player);
    else waitForLive(player, false);
    return;
  }
  switch (state.status) {
    case 'ready':
      newDelivery().then((delivery) => {
        player.load(state.hls_url, { poster: state.poster_url, storyboard: state.storyboard_url, delivery });
      });
      break;
    case 'failed':
      player.showMessage({
        kind: 'failed', icon: 'film', title: 'This video could not be processed',
        text: state.error || 'Processing failed.',
      });
      break;
    default:
      showProcessing(player);
      pollState(player);
  }
}

function needsToken() {
  return {
    kind: 'needs-token', icon: 'lock', title: 'This video needs a playback link with a token',
    text: 'Its owner shares it with signed links only. Ask them for a link that ends with ?token=…',
  };
}

function showProcessing(player) {
  const waiting = state.status === 'waiting';
  player.showMessage({
    kind: 'processing', icon: 'film',
    title: waiting ? 'Waiting for the upload' : 'This video is being processed',
    text: waiting ? 'The video will be processed as soon as its file has arrived.' : 'It will play here as soon as it is ready; this page updates by itself.',
    progress: waiting ? null : (state.progress || 0),
  });
}

// pollState re-reads the page's state until the video is ready or failed.
async function pollState(player) {
  for (;;) {
    await sleep(PROCESSING_POLL_MS);
    const next = await fetchState();
    if (!next) continue;
    const changed = next.status !== state.status;
    // One playback session per page: the beacons carry the first one, so
    // the route requests must too (each render mints a new one).
    if (state.session) next.session = state.session;
    state = next;
    if (!changed && (state.status === 'processing' || state.status === 'waiting')) {
      showProcessing(player);
      continue;
    }
    route(player);
    return;
  }
}

// fetchState loads this page again and reads its state.
async function fetchState() {
  try {
    const res = await fetch(location.href, { cache: 'no-store', credentials: 'omit', headers: { Accept: 'text/html' } });
    if (!res.ok) return null;
    const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
    return readState(doc);
  } catch {
    return null;
  }
}

// ---- live -------------------------------------------------------------

function playLive(player) {
  setStatus('live');
  if (mode === 'realtime') {
    playRealtime(player);
    return;
  }
  const gen = ++playing;
  stopRealtime();
  showMode();
  newDelivery({ live: true }).then((delivery) => {
    if (gen === playing) player.load(state.hls_url, { live: true, delivery, dvr: dvrOf(state) });
  });
}

// dvrOf is the DVR window of a live stream's state ({ url, window (s) }),
// or null: the player then offers seeking back that far (see Player.dvr).
function dvrOf(st) {
  if (!st.dvr_url || !(st.dvr_window_s > 0)) return null;
  return { url: st.dvr_url, window: st.dvr_window_s };
}

// ---- real-time playback (WebRTC, WHEP) -----------------------------------

function canRealtime() {
  return !!(state && state.kind === 'live' && state.whep_url && !state.needs_token && realtimeSupported());
}

// playRealtime plays the live stream over WHEP; when that fails it says so
// and plays over HLS.
async function playRealtime(player) {
  const gen = ++playing;
  stopRealtime();
  player.unload();
  player.hideMessage();
  showMode('connecting');
  const ses = new WHEPSession({
    url: state.whep_url, token,
    onEnd: async (err) => {
      if (realtime !== ses) return;
      realtime = null;
      // The broadcast ended (its recording ends within moments): wait for
      // the next one, in real time again. Otherwise the connection broke:
      // go on over HLS.
      let r = await probeLive();
      for (let i = 0; r === 'live' && i < 4 && gen === playing; i++) {
        await sleep(1000);
        r = await probeLive();
      }
      if (gen !== playing) return;
      if (r === 'live') {
        fallBack(player, err, 'The real-time connection ended');
      } else {
        player.unload();
        waitForLive(player, true);
      }
    },
  });
  realtime = ses;
  window.shoalRealtime = ses; // for support and tests (ses.pc.getStats())
  try {
    const stream = await ses.start();
    if (gen !== playing || realtime !== ses) {
      ses.stop();
      return;
    }
    player.playStream(stream);
    ses.watchPicture(player.video);
    showMode();
  } catch (err) {
    if (gen !== playing || realtime !== ses) return;
    ses.stop();
    realtime = null;
    fallBack(player, err, 'Real-time playback is not available');
  }
}

// fallBack switches to HLS after real-time playback failed, and says why.
function fallBack(player, err, what) {
  mode = 'hls';
  setModeParam();
  let why = err && err.message ? err.message : 'unknown error';
  if (err && err.status && !why.includes(String(err.status))) why += ` (HTTP ${err.status})`;
  player.showNote(`${what}: ${why}. Playing over HLS instead.`);
  document.body.dataset.realtimeError = why;
  playLive(player);
}

function stopRealtime(unloading) {
  if (!realtime) return;
  const ses = realtime;
  realtime = null;
  ses.stop(unloading);
}

// setupModeToggle adds the "Real-time" switch to the watch page of a live
// stream.
function setupModeToggle(player) {
  const meta = document.querySelector('.watch-meta');
  if (!canRealtime()) {
    showMode();
    return;
  }
  if (meta && state.page === 'watch') {
    const btn = h('button', {
      type: 'button', id: 'mode-toggle', class: 'btn btn-sm mode-toggle', 'aria-pressed': 'false',
      title: 'Real-time: well under a second behind, over WebRTC. Off: HLS, a few seconds behind, from the nearest edge.',
    }, icon('bolt'), 'Real-time');
    btn.addEventListener('click', () => {
      mode = mode === 'realtime' ? 'hls' : 'realtime';
      setModeParam();
      player.hideNote();
      delete document.body.dataset.realtimeError;
      // Switch now when the stream plays live; otherwise the choice applies
      // when it goes live.
      if (document.body.dataset.status === 'live') playLive(player);
      else showMode();
    });
    meta.append(btn, h('span', { id: 'play-mode', class: 'play-mode', role: 'status' }));
  }
  showMode();
}

// showMode shows how the stream plays: 'connecting' while a real-time
// session starts.
function showMode(phase) {
  const shown = phase || (mode === 'realtime' && realtime ? 'realtime' : mode === 'realtime' ? 'realtime-pending' : 'hls');
  document.body.dataset.mode = shown;
  const btn = document.getElementById('mode-toggle');
  if (btn) btn.setAttribute('aria-pressed', String(mode === 'realtime'));
  const label = document.getElementById('play-mode');
  if (!label) return;
  const live = document.body.dataset.status === 'live';
  label.textContent = {
    connecting: 'Connecting in real time…',
    realtime: 'Playing in real time (WebRTC)',
    'realtime-pending': live ? 'Playing in real time (WebRTC)' : 'Plays in real time when the stream is live',
    hls: live ? (document.body.dataset.dvr === 'true' ? 'Playing back from the DVR window (HLS)'
      : document.body.dataset.lowLatency === 'true' ? 'Playing over low-latency HLS' : 'Playing over HLS') : '',
  }[shown];
}

// setModeParam keeps ?mode=realtime in the address, so that a reload or a
// shared link keeps the choice.
function setModeParam() {
  const u = new URL(location.href);
  if (mode === 'realtime') u.searchParams.set('mode', 'realtime');
  else u.searchParams.delete('mode');
  history.replaceState(history.state, '', u.href);
}

// newDelivery asks the origin where to play from (edges first, itself
// last) for a verified session; null (play from the origin) when this
// browser cannot verify signatures or routing does not answer.
async function newDelivery({ live = false } = {}) {
  if (!state.route_url || !state.content_keys || params.get('edge') === 'off') return null;
  const keys = await importKeys(state.content_keys);
  if (!keys) return null;
  try {
    const u = routeRequest(state.route_url, location.href, { token, session: state.session || '' });
    const res = await fetch(u, { cache: 'no-store', credentials: 'omit' });
    if (!res.ok) return null;
    const route = await res.json();
    if (!route.candidates || !route.candidates.length) return null;
    const delivery = new Delivery({
      id: state.id, candidates: route.candidates, keys, serverOffset, token, live,
      reportURL: new URL('/v1/delivery-reports', location.href).href,
      credited: creditedObjects,
      onSwitch: (c) => { root.dataset.deliveryNode = c.node || 'origin'; },
    });
    root.dataset.deliveryNode = delivery.current().node || 'origin';
    window.shoalDelivery = delivery; // for support and tests
    setDeliveryP2P(delivery);
    return delivery;
  } catch {
    return null;
  }
}

// startBeacons sends the viewer's beacons (beacons.js) when the page has a
// playback session from the origin; window.shoalBeacons { flush(final),
// snapshot() } is for support and tests. Beacons never stop playback:
// when they cannot start, the page plays without.
function startBeacons(player) {
  if (!state.session || !state.beacon_url) return;
  let storage = null;
  try {
    storage = window.localStorage;
  } catch {
    // Storage blocked: a viewer id for this page alone.
  }
  try {
    beacons = new Beacons({
      url: new URL(state.beacon_url, location.href).href,
      session: state.session,
      viewer: viewerId(storage),
      onRefused: renewSession,
    });
    beacons.watchVideo(player.video);
    beacons.start();
  } catch {
    beacons = null;
    return;
  }
  window.shoalBeacons = {
    flush: (final) => beacons.flush(!!final),
    snapshot: () => beacons.snapshot(),
  };
}

// renewSession goes on with a new playback session when the origin refused
// the page's (it expired: a page left open for hours): the page's state
// carries a new one, which is offered the edges again (a route request)
// and the beacons go on with.
async function renewSession() {
  const next = await fetchState();
  if (!beacons || !next || !next.session || next.session === state.session) return;
  state.session = next.session;
  if (state.route_url) {
    try {
      await fetch(routeRequest(state.route_url, location.href, { token, session: state.session }), { cache: 'no-store', credentials: 'omit' });
    } catch {
      // Bytes from edges count again from the next route.
    }
  }
  beacons.renew(state.session);
}

// ---- peer-assisted delivery (P2P) -----------------------------------------

function p2pAllowed() {
  return !!(state && state.p2p && params.get('p2p') !== '0' && typeof RTCPeerConnection === 'function' && typeof WebSocket === 'function');
}

function readP2PChoice() {
  try {
    return localStorage.getItem(P2P_KEY) !== 'off';
  } catch {
    return true;
  }
}

function p2pOn() {
  return p2pAllowed() && p2pChoice;
}

// setDeliveryP2P gives a verified session its P2P (a new one) when P2P is
// on, and ends the one it had otherwise: then the player never opens the
// tracker.
function setDeliveryP2P(delivery) {
  const old = currentDelivery && currentDelivery.p2p;
  if (old && (currentDelivery !== delivery || !p2pOn())) {
    old.close();
    currentDelivery.p2p = null;
  }
  currentDelivery = delivery;
  if (delivery && p2pOn() && !delivery.p2p) {
    delivery.p2p = new P2P({
      id: state.id, token,
      rtc: state.stun_servers && state.stun_servers.length ? { iceServers: [{ urls: state.stun_servers }] } : {},
      ahead: () => bufferAhead(document.querySelector('#player video')),
      onChange: showP2P,
    });
  }
  window.shoalP2P = delivery ? delivery.p2p : null; // for support and tests
  showP2P();
}

// p2pStats are the page's P2P counters (for support and tests): those of
// the current session, zero without one.
window.shoalP2PStats = () => {
  const p = currentDelivery && currentDelivery.p2p;
  const s = p ? p.stats : {};
  return {
    enabled: !!p, http_bytes: s.http_bytes || 0, p2p_bytes: s.p2p_bytes || 0, p2p_segments: s.p2p_segments || 0,
    uploaded_bytes: s.uploaded_bytes || 0, peers_dropped: s.peers_dropped || 0, peers: s.peers || 0, bad_reports: s.bad_reports || 0,
    asked: s.asked || 0, offered: s.offered || 0, failed: s.failed || 0,
  };
};

let p2pShown = 0;
let p2pTimer = 0;
// showP2P shows the share of media bytes that came from peers (at most
// twice a second).
function showP2P() {
  const s = window.shoalP2PStats();
  root.dataset.p2p = s.enabled ? 'on' : 'off';
  const el = document.getElementById('p2p-share');
  if (!el) return;
  const now = performance.now();
  if (s.enabled && now - p2pShown < 500) {
    if (!p2pTimer) p2pTimer = setTimeout(() => { p2pTimer = 0; showP2P(); }, 500);
    return;
  }
  p2pShown = now;
  el.hidden = !s.enabled;
  if (!s.enabled) return;
  const total = s.http_bytes + s.p2p_bytes;
  const share = total ? Math.round((100 * s.p2p_bytes) / total) : 0;
  el.textContent = `P2P ${share}% · ${s.peers} peer${s.peers === 1 ? '' : 's'}`;
  el.title = `From peers: ${mb(s.p2p_bytes)} in ${s.p2p_segments} segments, each checked against the signed manifest; ` +
    `over HTTP: ${mb(s.http_bytes)}; uploaded to peers: ${mb(s.uploaded_bytes)}` +
    (s.peers_dropped ? `; ${s.peers_dropped} peer${s.peers_dropped === 1 ? '' : 's'} dropped for sending bytes that failed verification` : '');
}

function mb(n) {
  return `${(n / 1e6).toFixed(1)} MB`;
}

// setupP2PToggle adds the "P2P" switch to the watch page.
function setupP2PToggle() {
  const meta = document.querySelector('.watch-meta');
  if (!meta || state.page !== 'watch' || !p2pAllowed()) return;
  const btn = h('button', {
    type: 'button', id: 'p2p-toggle', class: 'btn btn-sm mode-toggle', 'aria-pressed': String(p2pChoice),
    title: 'P2P: share the video with other viewers over WebRTC (every piece is checked against the signed original). Off: everything comes from the server.',
  }, icon('signal'), 'P2P');
  btn.addEventListener('click', () => {
    p2pChoice = !p2pChoice;
    try {
      localStorage.setItem(P2P_KEY, p2pChoice ? 'on' : 'off');
    } catch {
      // Not remembered (storage blocked): it still applies to this page.
    }
    btn.setAttribute('aria-pressed', String(p2pChoice));
    setDeliveryP2P(currentDelivery);
  });
  meta.append(btn, h('span', { id: 'p2p-share', class: 'latency-text', hidden: true }));
}

// probeLive looks at the master playlist: "live" when its first variant is
// still being written (no ENDLIST), "recording" when it ended, null when
// there is nothing (or it cannot be read).
async function probeLive() {
  const master = new URL(state.hls_url, location.href);
  if (token) master.searchParams.set('token', token);
  try {
    const res = await fetch(master.href, { cache: 'no-store', credentials: 'omit' });
    if (res.status === 403) return 'forbidden';
    if (!res.ok) return null;
    const text = await res.text();
    const first = text.split('\n').map((l) => l.trim()).find((l) => l && !l.startsWith('#'));
    if (!first) return null;
    const media = new URL(first, res.url || master.href);
    if (token && !media.searchParams.has('token')) media.searchParams.set('token', token);
    const mres = await fetch(media.href, { cache: 'no-store', credentials: 'omit' });
    if (!mres.ok) return null;
    const mtext = await mres.text();
    if (!/#EXTINF/.test(mtext)) return null;
    return /#EXT-X-ENDLIST/.test(mtext) ? 'recording' : 'live';
  } catch {
    return null;
  }
}

// waitForLive shows the offline message and polls the playlists until the
// stream goes live, then starts playing by itself.
async function waitForLive(player, ended) {
  const gen = ++waiting;
  playing++;
  stopRealtime();
  setStatus('idle');
  showMode();
  let recording = false;
  const show = () => player.showMessage({
    kind: 'offline', icon: 'signal',
    title: ended ? 'The broadcast has ended' : 'This stream is offline',
    text: 'It will start here by itself when the creator goes live.',
    actions: recording ? [{
      label: ended ? 'Watch from the beginning' : 'Watch the last broadcast', icon: 'play', primary: true,
      onClick: () => {
        waiting++;
        setStatus('recording');
        showMode();
        newDelivery().then((delivery) => player.load(state.hls_url, { live: false, delivery }));
      },
    }] : [],
  });
  show();
  for (;;) {
    const r = await probeLive();
    if (gen !== waiting) return;
    if (r === 'live') {
      playLive(player);
      return;
    }
    if (r === 'forbidden') {
      player.showMessage(expiredToken());
      return;
    }
    if ((r === 'recording') !== recording) {
      recording = r === 'recording';
      show();
    }
    await sleep(OFFLINE_POLL_MS);
    if (gen !== waiting) return;
  }
}

function onEnded(player) {
  if (state.kind === 'live' && player.live) {
    player.unload();
    waitForLive(player, true);
  }
}

function expiredToken() {
  return {
    kind: 'forbidden', icon: 'lock',
    title: token ? 'This playback link has expired or is not valid' : 'This video needs a playback link with a token',
    text: token ? 'Ask the owner for a new link.' : 'Ask its owner for a link that ends with ?token=…',
  };
}

function onError(player, err) {
  if (err.code === 403) {
    player.showMessage(expiredToken());
    return;
  }
  if (state.kind === 'live') {
    // The stream ended or is between broadcasts: wait for it again.
    waitForLive(player, player.started);
    return;
  }
  player.showMessage({
    kind: 'error', icon: 'film', title: 'The video could not be played',
    text: `Playback error (${err.detail}${err.code ? ', HTTP ' + err.code : ''}).`,
    actions: [{ label: 'Try again', icon: 'refresh', primary: true, onClick: () => route(player) }],
  });
}

// ---- page chrome --------------------------------------------------------

function setStatus(status) {
  document.body.dataset.status = status;
  const badge = document.getElementById('status-badge');
  if (!badge || state.kind !== 'live') return;
  const live = status === 'live';
  badge.className = 'badge ' + (live ? 'badge-live' : 'badge-muted');
  badge.textContent = live ? 'Live' : status === 'recording' ? 'Recording' : 'Offline';
}

// showLatency shows how far behind live the stream plays (see
// Player.latencyInfo), and whether over low-latency HLS.
function showLatency(sec, info) {
  const ll = sec != null && !!(info && info.lowLatency);
  const dvr = sec != null && !!(info && info.dvr);
  if (ll !== (document.body.dataset.lowLatency === 'true') || dvr !== (document.body.dataset.dvr === 'true')) {
    document.body.dataset.lowLatency = String(ll);
    document.body.dataset.dvr = String(dvr);
    showMode();
  }
  const el = document.getElementById('latency');
  if (!el) return;
  el.hidden = sec == null;
  if (sec == null) return;
  if (dvr) {
    el.textContent = `${formatTime(sec)} behind live · DVR`;
    el.title = 'Playing back from the DVR window: the LIVE button goes back to the live edge';
    return;
  }
  el.textContent = `${sec.toFixed(1)} s behind live${ll ? ' · low latency' : ''}`;
  el.title = info && info.measured != null
    ? `Measured: the picture on screen was broadcast ${info.measured.toFixed(1)} s ago (its timestamps against the server's clock)` +
      (info.latency != null ? `; ${info.latency.toFixed(1)} s behind the newest media the player knows of` : '')
    : 'Behind the newest media the player knows of';
}

function setupShare() {
  const box = document.getElementById('share');
  if (!box) return;
  const watchURL = state.watch_url;
  const embedURL = token ? withPageToken(state.embed_url) : state.embed_url;
  const embedCode = `<iframe src="${escapeAttr(embedURL)}" width="640" height="360" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen title="${escapeAttr(state.title)}"></iframe>`;
  const embedBox = h('div', { class: 'embed-code', id: 'embed-code', hidden: true },
    h('label', { for: 'embed-code-text', text: 'Embed code' }),
    h('textarea', { id: 'embed-code-text', readonly: true, rows: 3, spellcheck: 'false' }),
    copyButton('Copy embed code', embedCode, { done: 'Embed code copied' }));
  embedBox.querySelector('textarea').value = embedCode;
  const embedBtn = h('button', { type: 'button', class: 'btn', 'aria-expanded': 'false', 'aria-controls': 'embed-code' }, icon('code'), 'Embed');
  embedBtn.addEventListener('click', () => {
    embedBox.hidden = !embedBox.hidden;
    embedBtn.setAttribute('aria-expanded', String(!embedBox.hidden));
    if (!embedBox.hidden) embedBox.querySelector('textarea').select();
  });
  replaceChildren(box,
    h('div', { class: 'share-buttons' },
      copyButton('Copy link', token ? withPageToken(watchURL) : watchURL, { done: 'Link copied', class: 'btn-share' }),
      state.needs_token ? null : embedBtn),
    embedBox);
}

function withPageToken(u) {
  const x = new URL(u);
  x.searchParams.set('token', token);
  return x.href;
}

function escapeAttr(s) {
  return String(s || '').replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

if (state && root) start();
