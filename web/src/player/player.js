// The Shoal player: an HTML5 video element fed by hls.js (MSE), or by the
// browser itself where HLS is native (Safari), with our own controls: seek
// bar with storyboard previews, quality menu from the ladder, volume, live
// badge and latency, picture-in-picture and fullscreen. Live streams whose
// playlists have parts (LL-HLS) play in hls.js's low-latency mode.
//
// DVR window: a live stream with DVR playlists (the page's dvr_url) gets a
// seek bar over the window and -30 s / +30 s buttons. At the live edge it
// plays the low-latency master; a seek back past what that playlist holds
// reloads the DVR master (dvr.m3u8, hours long) at the moment asked for,
// found by its EXT-X-PROGRAM-DATE-TIME (else by its distance to the DVR
// playlist's end). LIVE goes back to the low-latency master at the edge.

import Hls from 'hls.js';
import { h, icon, setIcon, formatTime, spokenTime, replaceChildren } from '../common/dom.js';
import { loadStoryboard, cueAt } from './storyboard.js';
import { loaderClass } from './delivery.js';

// useNative tells whether to let the browser play HLS itself: Safari (where
// native HLS is the platform's player, with AirPlay and the system's ABR),
// or any browser without Media Source Extensions that can. ?player=hlsjs or
// ?player=native forces one (support and tests).
function useNative(video, force) {
  const native = !!video.canPlayType('application/vnd.apple.mpegurl');
  if (force === 'native') return native;
  if (force === 'hlsjs') return !Hls.isSupported() && native;
  const ua = navigator.userAgent;
  const safari = /Safari\//.test(ua) && !/(Chrome|Chromium|CriOS|FxiOS|Edg|OPR|Android)\//.test(ua);
  return native && (safari || !Hls.isSupported());
}

// withToken adds ?token= to a URL when the page has one.
export function withToken(url, token) {
  const u = new URL(url, location.href);
  if (token) u.searchParams.set('token', token);
  return u.href;
}

const SEEK_STEP = 5;
// DVR: the buttons' step; closer than this to live is live (the
// low-latency master at its edge); how far a seek stays from the oldest
// media of a playlist (it slides away), at least.
const DVR_STEP = 30;
const LIVE_SNAP_S = 6;
const WINDOW_MARGIN_S = 6;
// The seek bar spans at least this much (s), even at a broadcast's start.
const MIN_SPAN_S = 60;

// dvrPosition finds, in hls.js level details, the position (s, in hls.js's
// timeline) of the picture broadcast at wall-clock time at (ms, origin's
// clock), by the fragments' EXT-X-PROGRAM-DATE-TIME; without those, the
// position behind seconds before the playlist's end. It returns { pos,
// start, end } (the playlist's media from start to end), or null.
export function dvrPosition(details, at, behind) {
  const frags = details && details.fragments;
  if (!frags || !frags.length) return null;
  const first = frags[0];
  const last = frags[frags.length - 1];
  const start = Number.isFinite(details.fragmentStart) ? details.fragmentStart : first.start;
  const end = Number.isFinite(details.edge) && details.edge > 0 ? details.edge : last.start + last.duration;
  let pos;
  if (first.programDateTime != null && last.programDateTime != null) {
    // The last fragment that starts at or before the time asked for.
    let lo = 0;
    let hi = frags.length - 1;
    if (at < first.programDateTime) {
      pos = start - (first.programDateTime - at) / 1000;
    } else {
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if (frags[mid].programDateTime != null && frags[mid].programDateTime <= at) lo = mid;
        else hi = mid - 1;
      }
      const f = frags[lo];
      pos = f.start + Math.min(f.duration, (at - f.programDateTime) / 1000);
      if (lo === frags.length - 1) pos = f.start + (at - f.programDateTime) / 1000;
    }
  } else {
    pos = end - behind;
  }
  return { pos, start, end };
}

export class Player {
  // root: the .player element rendered by the server (it holds the video
  // and the overlay). opts: { controls, autoplay, muted, token, force,
  // clockOffset (ms to add to Date.now() for the origin's clock),
  // onLatency(seconds|null, info), onState(kind), onHls(hls, Hls.Events,
  // delivery|null): each hls.js instance made, before it loads anything }.
  // info: see latencyInfo.
  constructor(root, opts) {
    this.root = root;
    this.opts = opts;
    this.video = root.querySelector('video');
    this.overlay = root.querySelector('.overlay');
    this.hls = null;
    this.live = false;
    this.started = false;
    this.cues = [];
    this.mediaRecovered = false;
    // DVR: { url, window (s) } of the live stream being played, or null;
    // whether playing from the DVR master; the low-latency master; while a
    // DVR load has not found its start yet, { at } (the wall-clock time
    // asked for, origin's clock, ms).
    this.dvr = null;
    this.dvrMode = false;
    this.liveSrc = '';
    this.dvrPending = null;
    this.delivery = null;
    // The wall-clock time (origin's clock, ms) of the oldest picture of
    // the DVR window, once a DVR playlist told it: the seek bar spans
    // from there while the window is not full yet.
    this.dvrOldest = null;
    this.video.controls = false;
    this.video.playsInline = true;
    if (opts.muted) {
      this.video.muted = true;
      this.video.defaultMuted = true;
    }
    this.buildControls();
    this.bindVideo();
  }

  // ---- loading --------------------------------------------------------

  // load plays src (a master playlist URL). live: the source is a live
  // stream (a LIVE button and latency; no seek bar but with dvr).
  // delivery: a Delivery (delivery.js) that fetches from edges and verifies
  // every object; only hls.js can use it, so native HLS plays src (the
  // origin) unverified. dvr: { url, window } of a live stream's DVR
  // master; with dvrMode src is that master, to start at startAt
  // (wall-clock ms, the origin's clock).
  load(src, {
    live = false, poster = '', storyboard = '', autoplay = this.opts.autoplay, delivery = null,
    dvr = null, dvrMode = false, startAt = null,
  } = {}) {
    this.unload();
    this.live = live;
    this.delivery = delivery;
    const sameDVR = this.dvr && dvr && this.dvr.url === dvr.url;
    this.dvr = live && dvr && dvr.url && dvr.window > 0 ? dvr : null;
    if (!sameDVR) this.dvrOldest = null;
    this.dvrMode = !!(this.dvr && dvrMode);
    if (!this.dvrMode) this.liveSrc = src;
    this.root.classList.toggle('has-dvr', !!this.dvr);
    if (this.dvrMode) this.root.dataset.dvr = 'true';
    if (this.dvr) {
      this.seek.min = String(-this.dvrSpan());
      this.seek.max = '0';
      this.seek.value = '0';
    } else {
      this.seek.min = '0';
    }
    this.root.classList.toggle('is-live', live);
    this.root.classList.add('has-source');
    if (poster) this.video.poster = withToken(poster, this.opts.token);
    this.hideMessage();
    this.setBuffering(true);
    const url = withToken(src, this.opts.token);
    if (this.dvrMode) this.dvrPending = { at: startAt == null ? this.serverNow() : startAt };
    if (useNative(this.video, this.opts.force)) {
      this.engine = 'native';
      this.video.src = url;
      this.qualityBtn.hidden = true;
      if (this.dvrMode) this.startNativeDVR();
    } else if (Hls.isSupported()) {
      this.engine = 'hls.js';
      this.attachHls(url, delivery);
    } else {
      this.showMessage({
        icon: 'film',
        title: 'This browser cannot play this video',
        text: 'It supports neither HLS nor Media Source Extensions. Try a current version of Firefox, Chrome, Edge or Safari.',
      });
      return;
    }
    this.root.dataset.engine = this.engine;
    if (storyboard) {
      loadStoryboard(storyboard, this.opts.token).then((cues) => { this.cues = cues; });
    }
    if (autoplay) this.play(true);
  }

  // playStream plays a live MediaStream (real-time playback over WebRTC):
  // no seek bar, no quality menu, no latency figure (it is real time).
  playStream(stream) {
    this.unload();
    this.dvr = null;
    this.live = true;
    this.engine = 'webrtc';
    this.root.dataset.engine = this.engine;
    delete this.root.dataset.verified;
    this.root.classList.add('is-live', 'has-source');
    this.hideMessage();
    this.setBuffering(true);
    this.video.srcObject = stream;
    if (this.opts.autoplay) this.play(true);
    else this.setBuffering(false);
  }

  attachHls(url, delivery) {
    const config = {
      // Live playlists with EXT-X-PART-INF (LL-HLS: parts, blocking
      // reloads) play at the parts' hold-back; other playlists as plain HLS.
      lowLatencyMode: true,
      // Behind the target latency (a slow start, a stall), play up to
      // 1.25x until caught up instead of staying late for good.
      maxLiveSyncPlaybackRate: 1.25,
      // A modest back buffer so long sessions do not grow memory.
      backBufferLength: 90,
      maxBufferLength: 30,
      capLevelToPlayerSize: true,
      startLevel: -1,
    };
    if (delivery) {
      config.pLoader = loaderClass(delivery, 'playlist');
      config.fLoader = loaderClass(delivery, 'media');
      url = delivery.current().base + new URL(url, location.href).pathname;
      this.root.dataset.verified = 'true';
    } else {
      delete this.root.dataset.verified;
    }
    const hls = new Hls(config);
    this.hls = hls;
    if (this.opts.onHls) this.opts.onHls(hls, Hls.Events, delivery);
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.buildQualityMenu());
    hls.on(Hls.Events.LEVEL_SWITCHED, () => this.updateQualityLabel());
    hls.on(Hls.Events.ERROR, (_ev, data) => this.onHlsError(data));
    if (this.dvrPending) {
      // hls.js starts a live playlist near its end: once the first DVR
      // playlist is in, start again where the viewer asked for.
      const onLevel = (_ev, data) => {
        hls.off(Hls.Events.LEVEL_LOADED, onLevel);
        if (this.hls !== hls || !this.dvrPending) return;
        const at = this.dvrPending.at;
        this.dvrPending = null;
        this.noteDVROldest(data.details);
        const p = dvrPosition(data.details, at, (this.serverNow() - at) / 1000);
        if (p) hls.startLoad(this.clampDVR(p, data.details));
      };
      hls.on(Hls.Events.LEVEL_LOADED, onLevel);
    }
    hls.loadSource(url);
    hls.attachMedia(this.video);
  }

  // startNativeDVR starts native HLS playback of the DVR master where the
  // viewer asked for, by its distance to the end of the seekable range.
  startNativeDVR() {
    const v = this.video;
    const onMeta = () => {
      v.removeEventListener('loadedmetadata', onMeta);
      if (!this.dvrMode || !this.dvrPending) return;
      const behind = (this.serverNow() - this.dvrPending.at) / 1000;
      this.dvrPending = null;
      if (!v.seekable.length) return;
      const start = v.seekable.start(0) + WINDOW_MARGIN_S;
      v.currentTime = Math.max(start, v.seekable.end(v.seekable.length - 1) - behind);
    };
    v.addEventListener('loadedmetadata', onMeta);
  }

  // clampDVR keeps position p (see dvrPosition) away from the oldest media
  // of the playlist of details (it slides away) and before its live edge.
  clampDVR(p, details) {
    const margin = Math.max(WINDOW_MARGIN_S, 3 * (details.targetduration || 0));
    const sync = this.hls && Number.isFinite(this.hls.liveSyncPosition) && this.hls.liveSyncPosition > 0 ? this.hls.liveSyncPosition : p.end;
    return Math.max(Math.min(p.start + margin, sync), Math.min(p.pos, sync));
  }

  onHlsError(data) {
    if (!data.fatal) return;
    const code = data.response && data.response.code;
    if (this.dvrMode && code !== 403) {
      // The DVR window cannot be played (now): back to live.
      this.showNote(`Could not play back from the DVR window (${data.details || data.type}). Back to live.`);
      this.goLive();
      return;
    }
    if (data.type === Hls.ErrorTypes.MEDIA_ERROR && !this.mediaRecovered) {
      this.mediaRecovered = true;
      this.hls.recoverMediaError();
      return;
    }
    const detail = data.details || data.type;
    this.unload();
    this.dispatch('error', { code, detail, type: data.type });
  }

  // unload stops playback and releases hls.js.
  unload() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    if (this.video.srcObject) {
      this.video.srcObject = null;
    }
    if (this.video.getAttribute('src')) {
      this.video.removeAttribute('src');
      this.video.load();
    }
    this.root.classList.remove('has-source', 'is-playing', 'buffering');
    this.qualityMenu.hidden = true;
    this.qualityBtn.hidden = true;
    this.mediaRecovered = false;
    this.dvrMode = false;
    this.dvrPending = null;
    this.root.classList.remove('has-dvr');
    this.liveBtn.classList.remove('behind');
    this.latency.textContent = '';
    delete this.root.dataset.dvr;
    delete this.root.dataset.behind;
    delete this.root.dataset.lowLatency;
    this.opts.onLatency && this.opts.onLatency(null);
  }

  play(auto) {
    const p = this.video.play();
    if (p && p.catch) {
      p.catch((err) => {
        // Autoplay refused (NotAllowedError): show the big play button.
        if (err && err.name === 'NotAllowedError') {
          this.root.classList.add('needs-gesture');
          this.setBuffering(false);
        } else if (!auto) {
          this.setBuffering(false);
        }
      });
    }
  }

  togglePlay() {
    if (!this.root.classList.contains('has-source')) return;
    if (this.video.paused || this.video.ended) this.play(false);
    else this.video.pause();
  }

  dispatch(name, detail) {
    this.root.dispatchEvent(new CustomEvent('shoal:' + name, { detail }));
  }

  // ---- messages -------------------------------------------------------

  // showMessage covers the picture with a message: { icon, title, text,
  // progress (0-100), actions: [{label, onClick, primary}] }.
  showMessage(m) {
    const box = h('div', { class: 'overlay-box' },
      m.icon ? h('div', { class: 'overlay-icon' }, icon(m.icon)) : null,
      m.title ? h('p', { class: 'overlay-title', text: m.title }) : null,
      m.text ? h('p', { class: 'overlay-text', text: m.text }) : null,
      m.progress != null ? h('div', { class: 'overlay-progress' },
        h('progress', { max: 100, value: m.progress, 'aria-label': 'Processing progress' }),
        h('span', { text: `${m.progress}%` })) : null,
      m.actions && m.actions.length ? h('div', { class: 'overlay-actions' }, m.actions.map((a) =>
        h('button', { type: 'button', class: 'btn' + (a.primary ? ' btn-primary' : ''), onclick: a.onClick }, a.icon ? icon(a.icon) : null, a.label))) : null);
    replaceChildren(this.overlay, box);
    this.overlay.hidden = false;
    this.root.classList.add('has-message');
    this.root.dataset.message = m.kind || '';
  }

  // showNote shows a short notice over the top of the picture (playback
  // goes on under it) for a while.
  showNote(text) {
    if (!this.note) {
      const close = h('button', { type: 'button', class: 'player-note-close', 'aria-label': 'Dismiss' }, '×');
      close.addEventListener('click', () => this.hideNote());
      this.note = h('div', { class: 'player-note', role: 'status', hidden: true }, this.noteText = h('span'), close);
      this.root.append(this.note);
    }
    this.noteText.textContent = text;
    this.note.hidden = false;
    clearTimeout(this.noteTimer);
    this.noteTimer = setTimeout(() => this.hideNote(), 12000);
  }

  hideNote() {
    if (this.note) this.note.hidden = true;
  }

  hideMessage() {
    this.overlay.hidden = true;
    this.overlay.textContent = '';
    this.root.classList.remove('has-message');
    delete this.root.dataset.message;
  }

  setBuffering(on) {
    this.root.classList.toggle('buffering', !!on);
  }

  // ---- controls -------------------------------------------------------

  buildControls() {
    const r = this.root;
    this.bigPlay = h('button', { type: 'button', class: 'big-play', 'aria-label': 'Play' }, icon('play'));
    this.bigPlay.addEventListener('click', () => {
      this.root.classList.remove('needs-gesture');
      this.togglePlay();
    });
    this.spinner = h('div', { class: 'spinner', 'aria-hidden': 'true' });

    this.seek = h('input', {
      type: 'range', class: 'seek', min: 0, max: 0, step: 'any', value: 0,
      'aria-label': 'Seek', 'aria-valuetext': '0 seconds',
    });
    this.preview = h('div', { class: 'sb-preview', 'aria-hidden': 'true', hidden: true },
      this.previewImg = h('div', { class: 'sb-image' }, this.previewSprite = h('div', { class: 'sb-sprite' })),
      this.previewTime = h('div', { class: 'sb-time' }));
    const seekRow = h('div', { class: 'seek-row' }, this.seek, this.preview);

    this.playBtn = h('button', { type: 'button', class: 'ctl', 'aria-label': 'Play (k)' }, icon('play'));
    this.playBtn.addEventListener('click', () => this.togglePlay());
    this.muteBtn = h('button', { type: 'button', class: 'ctl', 'aria-label': 'Mute (m)' }, icon('volume'));
    this.muteBtn.addEventListener('click', () => { this.video.muted = !this.video.muted; });
    this.volume = h('input', { type: 'range', class: 'volume', min: 0, max: 1, step: 0.05, value: 1, 'aria-label': 'Volume' });
    this.volume.addEventListener('input', () => {
      this.video.volume = Number(this.volume.value);
      this.video.muted = this.video.volume === 0;
    });
    this.time = h('span', { class: 'time', 'aria-hidden': 'true', text: '0:00' });
    this.liveBtn = h('button', { type: 'button', class: 'live-btn', 'aria-label': 'Go to the live edge', title: 'Go to the live edge' },
      h('span', { class: 'live-dot' }), h('span', { text: 'LIVE' }));
    this.liveBtn.addEventListener('click', () => this.goLive());
    // DVR: back and forward within the window.
    this.backBtn = h('button', { type: 'button', class: 'ctl dvr-btn', 'aria-label': `Back ${DVR_STEP} seconds (j)`, title: `Back ${DVR_STEP} seconds` },
      h('span', { text: `−${DVR_STEP} s` }));
    this.backBtn.addEventListener('click', () => this.seekBack(DVR_STEP));
    this.fwdBtn = h('button', { type: 'button', class: 'ctl dvr-btn', 'aria-label': `Forward ${DVR_STEP} seconds (l)`, title: `Forward ${DVR_STEP} seconds` },
      h('span', { text: `+${DVR_STEP} s` }));
    this.fwdBtn.addEventListener('click', () => this.seekBack(-DVR_STEP));
    this.latency = h('span', { class: 'latency', text: '' });
    this.qualityBtn = h('button', {
      type: 'button', class: 'ctl quality-btn', 'aria-label': 'Quality', 'aria-haspopup': 'menu', 'aria-expanded': 'false', hidden: true,
    }, icon('settings'), this.qualityLabel = h('span', { class: 'quality-label', text: 'Auto' }));
    this.qualityBtn.addEventListener('click', () => this.toggleQualityMenu());
    this.qualityMenu = h('div', { class: 'quality-menu', role: 'menu', 'aria-label': 'Quality', hidden: true });
    this.pipBtn = h('button', { type: 'button', class: 'ctl', 'aria-label': 'Picture in picture' }, icon('pip'));
    this.pipBtn.hidden = !document.pictureInPictureEnabled;
    this.pipBtn.addEventListener('click', () => this.togglePip());
    this.fsBtn = h('button', { type: 'button', class: 'ctl', 'aria-label': 'Full screen (f)' }, icon('fullscreen'));
    this.fsBtn.addEventListener('click', () => this.toggleFullscreen());

    this.controls = h('div', { class: 'controls', role: 'group', 'aria-label': 'Player controls' },
      seekRow,
      h('div', { class: 'bar' },
        this.playBtn,
        h('div', { class: 'volume-group' }, this.muteBtn, this.volume),
        this.time,
        this.backBtn,
        this.fwdBtn,
        h('div', { class: 'live-group' }, this.liveBtn, this.latency),
        h('div', { class: 'spacer' }),
        h('div', { class: 'quality-group' }, this.qualityBtn, this.qualityMenu),
        this.pipBtn,
        this.fsBtn));
    this.srStatus = h('div', { class: 'visually-hidden', role: 'status', 'aria-live': 'polite' });
    r.append(this.spinner, this.bigPlay, this.controls, this.srStatus);
    if (!this.opts.controls) r.classList.add('no-controls');

    this.bindSeek();
    this.bindKeys();
    this.bindActivity();
    document.addEventListener('fullscreenchange', () => this.onFullscreenChange());
    document.addEventListener('webkitfullscreenchange', () => this.onFullscreenChange());
    document.addEventListener('click', (e) => {
      if (!this.qualityMenu.hidden && !e.target.closest('.quality-group')) this.closeQualityMenu();
    });
  }

  bindVideo() {
    const v = this.video;
    // A tap on a touch screen first brings the controls back; the next
    // one plays or pauses.
    this.root.addEventListener('pointerdown', (e) => {
      this.touchWake = e.pointerType === 'touch' && !v.paused && !this.root.classList.contains('user-active');
    }, true);
    v.addEventListener('click', () => {
      if (this.touchWake) {
        this.touchWake = false;
        return;
      }
      this.togglePlay();
    });
    v.addEventListener('dblclick', () => this.opts.controls && this.toggleFullscreen());
    v.addEventListener('play', () => this.onPlayState());
    v.addEventListener('pause', () => this.onPlayState());
    v.addEventListener('playing', () => {
      this.started = true;
      this.root.classList.remove('needs-gesture');
      this.setBuffering(false);
      this.onPlayState();
    });
    v.addEventListener('waiting', () => this.setBuffering(true));
    v.addEventListener('canplay', () => { if (v.paused) this.setBuffering(false); });
    v.addEventListener('timeupdate', () => this.onTime());
    v.addEventListener('durationchange', () => this.onTime());
    v.addEventListener('progress', () => this.onTime());
    v.addEventListener('volumechange', () => this.onVolume());
    v.addEventListener('ended', () => {
      this.onPlayState();
      this.dispatch('ended', {});
    });
    v.addEventListener('error', () => {
      if (this.engine === 'native' && v.error && this.root.classList.contains('has-source')) {
        const code = v.error.code;
        this.unload();
        this.dispatch('error', { code: 0, detail: 'native media error ' + code, type: 'native' });
      }
    });
    setInterval(() => this.onTick(), 1000);
  }

  onPlayState() {
    const v = this.video;
    const playing = !v.paused && !v.ended;
    this.root.classList.toggle('is-playing', playing);
    this.root.classList.toggle('is-paused', !playing);
    setIcon(this.playBtn, playing ? 'pause' : 'play');
    this.playBtn.setAttribute('aria-label', playing ? 'Pause (k)' : 'Play (k)');
    this.bigPlay.setAttribute('aria-label', playing ? 'Pause' : 'Play');
    this.poke();
  }

  onVolume() {
    const v = this.video;
    const muted = v.muted || v.volume === 0;
    setIcon(this.muteBtn, muted ? 'muted' : 'volume');
    this.muteBtn.setAttribute('aria-label', muted ? 'Unmute (m)' : 'Mute (m)');
    this.volume.value = muted ? 0 : v.volume;
    this.volume.style.setProperty('--fill', `${(muted ? 0 : v.volume) * 100}%`);
  }

  onTime() {
    const v = this.video;
    const d = v.duration;
    if (this.live) {
      this.time.textContent = '';
      if (this.dvr) this.updateDVRBar();
      return;
    }
    const dur = Number.isFinite(d) ? d : 0;
    if (!this.scrubbing) {
      this.seek.max = String(dur);
      this.seek.value = String(v.currentTime);
      this.seek.setAttribute('aria-valuetext', `${spokenTime(v.currentTime)} of ${spokenTime(dur)}`);
    }
    const shown = this.scrubbing ? Number(this.seek.value) : v.currentTime;
    this.time.textContent = `${formatTime(shown)} / ${formatTime(dur)}`;
    let buffered = 0;
    for (let i = 0; i < v.buffered.length; i++) {
      if (v.buffered.start(i) <= v.currentTime + 0.5) buffered = Math.max(buffered, v.buffered.end(i));
    }
    this.seek.style.setProperty('--played', dur ? `${(shown / dur) * 100}%` : '0%');
    this.seek.style.setProperty('--buffered', dur ? `${Math.min(100, (buffered / dur) * 100)}%` : '0%');
  }

  // latencyInfo measures how far behind live hls.js plays: { latency
  // (seconds behind the newest media the playlist lists, parts included),
  // measured (seconds between the origin's clock now and the
  // EXT-X-PROGRAM-DATE-TIME of the picture on screen; null without one),
  // target (hls.js's target latency), lowLatency (the playlist has parts
  // and hls.js plays in low-latency mode), partTarget (s) }; null before
  // hls.js knows.
  latencyInfo() {
    const hls = this.hls;
    if (!hls) return null;
    const d = hls.latestLevelDetails;
    const latency = Number.isFinite(hls.latency) && hls.latency > 0 ? hls.latency : null;
    let measured = null;
    const date = hls.playingDate;
    if (date && Number.isFinite(date.getTime())) {
      const s = (Date.now() + (this.opts.clockOffset || 0) - date.getTime()) / 1000;
      // A clock or timeline off by minutes says nothing of the latency.
      if (s >= 0 && s < 600) measured = s;
    }
    const partTarget = d && d.live && d.partTarget > 0 ? d.partTarget : 0;
    return {
      latency, measured,
      target: Number.isFinite(hls.targetLatency) ? hls.targetLatency : null,
      lowLatency: !!(partTarget && hls.lowLatencyMode),
      partTarget,
    };
  }

  // ---- DVR --------------------------------------------------------------

  serverNow() {
    return Date.now() + (this.opts.clockOffset || 0);
  }

  // behindLive is how many seconds behind live the picture on screen is
  // (see latencyInfo; in the DVR window: its EXT-X-PROGRAM-DATE-TIME
  // against the origin's clock, else its distance to the DVR playlist's
  // end); while a DVR load starts, the time asked for. null when unknown.
  behindLive() {
    if (this.dvrPending) return Math.max(0, (this.serverNow() - this.dvrPending.at) / 1000);
    const v = this.video;
    const hls = this.hls;
    if (hls) {
      const date = hls.playingDate;
      if (date && Number.isFinite(date.getTime())) {
        const s = (this.serverNow() - date.getTime()) / 1000;
        const max = (this.dvr ? this.dvr.window : 0) + 600;
        if (s > -5 && s < max) return Math.max(0, s);
      }
      return Number.isFinite(hls.latency) && hls.latency > 0 ? hls.latency : null;
    }
    if (this.engine === 'native' && v.seekable.length) return Math.max(0, v.seekable.end(v.seekable.length - 1) - v.currentTime);
    return null;
  }

  // dvrInfo: { available (the stream has a DVR window), active (playing
  // from the DVR master), behind (s, see behindLive), window (s), span (s,
  // how far back the seek bar reaches now, see dvrSpan) }.
  dvrInfo() {
    return {
      available: !!this.dvr && this.engine !== 'webrtc', active: this.dvrMode,
      behind: this.behindLive(), window: this.dvr ? this.dvr.window : 0, span: this.dvr ? this.dvrSpan() : 0,
    };
  }

  // seekBack goes seconds further back from the picture on screen
  // (negative: forward), within the DVR window.
  seekBack(seconds) {
    if (!this.dvr || this.engine === 'webrtc') return;
    this.seekBehind((this.behindLive() || 0) + seconds);
  }

  // seekBehind plays the picture broadcast seconds ago: within the live
  // playlist where it still holds it, else from the DVR master (loaded at
  // that moment when not already playing); live itself when that is less
  // than a few seconds ago.
  seekBehind(seconds) {
    if (!this.dvr || this.engine === 'webrtc' || !this.root.classList.contains('has-source')) return;
    const behind = Math.min(Math.max(0, seconds), this.dvr.window);
    if (behind < LIVE_SNAP_S) {
      this.goLive();
      return;
    }
    const at = this.serverNow() - behind * 1000;
    const v = this.video;
    const resume = () => { if (v.paused) this.play(false); };
    if (this.dvrPending) {
      // Still starting: start there instead.
      this.dvrPending.at = at;
      return;
    }
    if (this.engine === 'native') {
      if (!v.seekable.length) return;
      const start = v.seekable.start(0) + WINDOW_MARGIN_S;
      const pos = v.seekable.end(v.seekable.length - 1) - behind;
      if (this.dvrMode || pos >= start) {
        v.currentTime = Math.max(start, pos);
        resume();
        return;
      }
    } else if (this.hls) {
      const d = this.hls.latestLevelDetails;
      const p = d && dvrPosition(d, at, behind);
      if (p && this.dvrMode) {
        v.currentTime = this.clampDVR(p, d);
        resume();
        return;
      }
      // In the live playlist: while it holds that moment for a while yet.
      const margin = Math.max(WINDOW_MARGIN_S, d ? 2 * (d.targetduration || 0) : 0);
      if (p && p.pos >= p.start + margin) {
        v.currentTime = Math.min(p.pos, p.end);
        resume();
        return;
      }
    }
    if (this.dvrMode) return;
    this.load(this.dvr.url, { live: true, delivery: this.delivery, dvr: this.dvr, dvrMode: true, startAt: at, autoplay: true });
  }

  // noteDVROldest remembers when the oldest picture of a DVR playlist
  // (hls.js level details) was broadcast.
  noteDVROldest(details) {
    const f = details && details.fragments && details.fragments[0];
    if (!f) return;
    if (f.programDateTime != null) this.dvrOldest = f.programDateTime;
    else if (Number.isFinite(details.edge)) this.dvrOldest = this.serverNow() - (details.edge - f.start) * 1000;
  }

  // dvrSpan is how far back the DVR window reaches now (s): its length,
  // or less while the broadcast is younger than that.
  dvrSpan() {
    if (this.dvrMode && this.hls && this.hls.latestLevelDetails) this.noteDVROldest(this.hls.latestLevelDetails);
    const w = this.dvr.window;
    if (this.dvrOldest == null) return w;
    return Math.max(MIN_SPAN_S, Math.min(w, (this.serverNow() - this.dvrOldest) / 1000));
  }

  // updateDVRBar shows on the seek bar where in the DVR window the picture
  // on screen is (the bar spans the window, or what there is of it; its
  // end is live).
  updateDVRBar() {
    if (!this.dvr || this.scrubbing) return;
    const behind = this.behindLive();
    const w = this.dvrSpan();
    this.seek.min = String(-w);
    const b = behind == null ? 0 : Math.min(w, behind);
    this.seek.value = String(-b);
    this.seek.setAttribute('aria-valuetext', b < LIVE_SNAP_S ? 'live' : `${spokenTime(b)} behind live`);
    const v = this.video;
    let ahead = 0;
    for (let i = 0; i < v.buffered.length; i++) {
      if (v.buffered.start(i) <= v.currentTime + 0.5 && v.buffered.end(i) > v.currentTime) ahead = v.buffered.end(i) - v.currentTime;
    }
    this.seek.style.setProperty('--played', `${((w - b) / w) * 100}%`);
    this.seek.style.setProperty('--buffered', `${Math.min(100, ((w - b + ahead) / w) * 100)}%`);
    this.fwdBtn.disabled = !this.dvrMode && b < LIVE_SNAP_S + 2;
  }

  // onTick updates the live latency once a second.
  onTick() {
    if (!this.live || !this.root.classList.contains('has-source')) return;
    if (this.dvrMode) {
      this.onDVRTick();
      return;
    }
    if (this.engine === 'webrtc') {
      delete this.root.dataset.lowLatency;
      this.liveBtn.classList.toggle('behind', this.video.paused);
      this.latency.textContent = 'Real-time';
      this.latency.title = 'Playing over WebRTC, with well under a second of delay';
      this.opts.onLatency && this.opts.onLatency(null);
      return;
    }
    if (this.dvr) {
      const b = this.behindLive();
      if (b != null) this.root.dataset.behind = b.toFixed(1);
      this.updateDVRBar();
    }
    let lat = null;
    const info = this.latencyInfo();
    if (info && info.latency != null) {
      lat = info.latency;
    } else if (this.engine === 'native' && this.video.seekable.length) {
      lat = this.video.seekable.end(this.video.seekable.length - 1) - this.video.currentTime;
    }
    if (info) this.root.dataset.lowLatency = String(info.lowLatency);
    if (lat == null || !this.started) {
      this.latency.textContent = '';
      this.opts.onLatency && this.opts.onLatency(null);
      return;
    }
    const target = info && info.target != null ? info.target : 10;
    const behind = lat > target + 8 || this.video.paused;
    this.liveBtn.classList.toggle('behind', behind);
    // Shown: the measured latency (the stream's timestamps against the
    // origin's clock) where the playlist has them, else the distance to
    // the newest media listed.
    const shown = info && info.measured != null ? info.measured : lat;
    this.latency.textContent = `${info && info.lowLatency ? 'LL · ' : ''}${shown.toFixed(1)} s`;
    this.latency.title = (info && info.measured != null
      ? `${info.measured.toFixed(1)} s behind the broadcast (its timestamps against the server's clock); ${lat.toFixed(1)} s behind the newest ${info.lowLatency ? 'part' : 'segment'}`
      : `Seconds behind the newest ${info && info.lowLatency ? 'part' : 'segment'}`) +
      (info && info.lowLatency ? ' (low-latency HLS)' : '');
    this.opts.onLatency && this.opts.onLatency(shown, info);
  }

  // onDVRTick shows, while playing from the DVR master, how far behind
  // live the picture is.
  onDVRTick() {
    delete this.root.dataset.lowLatency;
    this.liveBtn.classList.add('behind');
    this.updateDVRBar();
    const b = this.behindLive();
    if (b == null) {
      this.latency.textContent = '';
      this.opts.onLatency && this.opts.onLatency(null);
      return;
    }
    this.root.dataset.behind = b.toFixed(1);
    this.latency.textContent = `−${formatTime(b)}`;
    this.latency.title = `${spokenTime(b)} behind live (DVR); LIVE goes back to the live edge`;
    this.opts.onLatency && this.opts.onLatency(b, { dvr: true, behind: b, latency: b, measured: null, lowLatency: false });
  }

  // goLive plays at the live edge: from the DVR window, the low-latency
  // master again.
  goLive() {
    const v = this.video;
    if (this.engine === 'webrtc') {
      if (v.paused) this.play(false);
      return;
    }
    if (this.dvrMode && this.liveSrc) {
      this.load(this.liveSrc, { live: true, delivery: this.delivery, dvr: this.dvr, autoplay: true });
      return;
    }
    if (this.hls && Number.isFinite(this.hls.liveSyncPosition)) {
      v.currentTime = this.hls.liveSyncPosition;
    } else if (v.seekable.length) {
      v.currentTime = Math.max(0, v.seekable.end(v.seekable.length - 1) - 6);
    }
    if (v.paused) this.play(false);
  }

  bindSeek() {
    const s = this.seek;
    s.addEventListener('input', () => {
      this.scrubbing = true;
      this.onTime();
      this.showPreview(Number(s.value));
    });
    s.addEventListener('change', () => {
      this.scrubbing = false;
      if (this.live && this.dvr) this.seekBehind(-Number(s.value));
      else this.video.currentTime = Number(s.value);
      this.hidePreview();
    });
    s.addEventListener('pointermove', (e) => {
      const rect = s.getBoundingClientRect();
      const min = Number(s.min);
      const span = Number(s.max) - min;
      if (!span || !rect.width) return;
      const frac = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
      this.showPreview(min + frac * span, frac);
    });
    s.addEventListener('pointerleave', () => { if (!this.scrubbing) this.hidePreview(); });
    s.addEventListener('blur', () => this.hidePreview());
    s.addEventListener('keydown', (e) => {
      if (this.live && this.dvr) {
        this.onDVRSeekKey(e);
        return;
      }
      const v = this.video;
      const dur = Number(s.max) || 0;
      let t = null;
      switch (e.key) {
        case 'ArrowLeft': case 'ArrowDown': t = v.currentTime - SEEK_STEP; break;
        case 'ArrowRight': case 'ArrowUp': t = v.currentTime + SEEK_STEP; break;
        case 'PageDown': t = v.currentTime - dur / 10; break;
        case 'PageUp': t = v.currentTime + dur / 10; break;
        case 'Home': t = 0; break;
        case 'End': t = dur; break;
        default: return;
      }
      e.preventDefault();
      e.stopPropagation();
      v.currentTime = Math.min(dur, Math.max(0, t));
      this.showPreview(v.currentTime);
      clearTimeout(this.previewTimer);
      this.previewTimer = setTimeout(() => this.hidePreview(), 1200);
    });
  }

  // onDVRSeekKey moves the DVR seek bar with the keyboard; the seek itself
  // waits for the keys to settle (each may load the DVR master).
  onDVRSeekKey(e) {
    const s = this.seek;
    const min = Number(s.min);
    const cur = Number(s.value);
    let t = null;
    switch (e.key) {
      case 'ArrowLeft': case 'ArrowDown': t = cur - SEEK_STEP; break;
      case 'ArrowRight': case 'ArrowUp': t = cur + SEEK_STEP; break;
      case 'PageDown': t = cur - DVR_STEP * 2; break;
      case 'PageUp': t = cur + DVR_STEP * 2; break;
      case 'Home': t = min; break;
      case 'End': t = 0; break;
      default: return;
    }
    e.preventDefault();
    e.stopPropagation();
    t = Math.min(0, Math.max(min, t));
    this.scrubbing = true;
    s.value = String(t);
    this.showPreview(t);
    clearTimeout(this.previewTimer);
    this.previewTimer = setTimeout(() => {
      this.scrubbing = false;
      this.hidePreview();
      this.seekBehind(-Number(s.value));
    }, 600);
  }

  // showPreview shows the storyboard frame and time of t above the seek bar
  // (on a live stream's DVR bar, t is minus the seconds behind live).
  showPreview(t, frac) {
    const min = Number(this.seek.min) || 0;
    const span = Number(this.seek.max) - min;
    if (!span) return;
    if (frac == null) frac = (t - min) / span;
    const dvr = this.live && !!this.dvr;
    const cue = this.cues.length && !dvr ? cueAt(this.cues, t) : null;
    this.preview.classList.toggle('has-image', !!cue);
    if (cue) {
      // The frame is shown at most 176 px wide: the inner element is one
      // sprite tile at its own size, scaled as a whole.
      const scale = Math.min(1, 176 / cue.w);
      const box = this.previewImg;
      box.style.width = `${Math.round(cue.w * scale)}px`;
      box.style.height = `${Math.round(cue.h * scale)}px`;
      const sp = this.previewSprite;
      sp.style.width = `${cue.w}px`;
      sp.style.height = `${cue.h}px`;
      sp.style.backgroundImage = `url("${cue.url}")`;
      sp.style.backgroundPosition = `-${cue.x}px -${cue.y}px`;
      sp.style.transform = `scale(${scale})`;
    }
    this.previewTime.textContent = !dvr ? formatTime(t) : -t < LIVE_SNAP_S ? 'LIVE' : `−${formatTime(-t)}`;
    this.preview.hidden = false;
    const row = this.seek.getBoundingClientRect();
    const w = this.preview.offsetWidth;
    const left = Math.min(Math.max(frac * row.width - w / 2, 0), Math.max(0, row.width - w));
    this.preview.style.left = `${left}px`;
  }

  hidePreview() {
    this.preview.hidden = true;
  }

  // ---- quality --------------------------------------------------------

  levels() {
    if (!this.hls) return [];
    return this.hls.levels
      .map((l, i) => ({ index: i, height: l.height, bitrate: l.bitrate }))
      .filter((l) => l.height > 0);
  }

  buildQualityMenu() {
    const levels = this.levels().sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
    const menu = this.qualityMenu;
    menu.textContent = '';
    if (levels.length < 2) {
      this.qualityBtn.hidden = true;
      return;
    }
    const item = (label, index, extra) => {
      const el = h('button', {
        type: 'button', role: 'menuitemradio', class: 'quality-item', 'aria-checked': 'false', dataset: { level: index },
      }, h('span', { text: label }), extra ? h('span', { class: 'quality-extra', text: extra }) : null);
      el.addEventListener('click', () => this.setQuality(index));
      return el;
    };
    menu.append(item('Auto', -1));
    for (const l of levels) menu.append(item(`${l.height}p`, l.index, l.bitrate ? `${(l.bitrate / 1e6).toFixed(1)} Mb/s` : ''));
    menu.addEventListener('keydown', (e) => this.onMenuKey(e));
    this.qualityBtn.hidden = false;
    this.updateQualityLabel();
  }

  setQuality(index) {
    if (!this.hls) return;
    this.hls.currentLevel = index;
    if (index === -1) this.hls.nextLevel = -1;
    this.manualLevel = index;
    this.updateQualityLabel();
    this.closeQualityMenu(true);
  }

  updateQualityLabel() {
    if (!this.hls) return;
    const auto = this.hls.autoLevelEnabled;
    const cur = this.hls.levels[this.hls.currentLevel];
    const h0 = cur && cur.height ? `${cur.height}p` : '';
    this.qualityLabel.textContent = auto ? (h0 ? `Auto · ${h0}` : 'Auto') : h0;
    this.qualityBtn.setAttribute('aria-label', `Quality: ${auto ? 'automatic' : h0}${auto && h0 ? ', playing ' + h0 : ''}`);
    const selected = auto ? -1 : this.hls.currentLevel;
    for (const el of this.qualityMenu.querySelectorAll('[role=menuitemradio]')) {
      el.setAttribute('aria-checked', String(Number(el.dataset.level) === selected));
    }
    this.root.dataset.level = String(this.hls.currentLevel);
  }

  toggleQualityMenu() {
    if (this.qualityMenu.hidden) this.openQualityMenu();
    else this.closeQualityMenu(true);
  }

  openQualityMenu() {
    this.qualityMenu.hidden = false;
    this.qualityBtn.setAttribute('aria-expanded', 'true');
    const checked = this.qualityMenu.querySelector('[aria-checked=true]') || this.qualityMenu.firstElementChild;
    checked && checked.focus();
  }

  closeQualityMenu(focusButton) {
    this.qualityMenu.hidden = true;
    this.qualityBtn.setAttribute('aria-expanded', 'false');
    if (focusButton) this.qualityBtn.focus();
  }

  onMenuKey(e) {
    const items = [...this.qualityMenu.querySelectorAll('[role=menuitemradio]')];
    const i = items.indexOf(document.activeElement);
    let next = null;
    switch (e.key) {
      case 'ArrowDown': next = items[(i + 1) % items.length]; break;
      case 'ArrowUp': next = items[(i - 1 + items.length) % items.length]; break;
      case 'Home': next = items[0]; break;
      case 'End': next = items[items.length - 1]; break;
      case 'Escape': case 'Tab':
        this.closeQualityMenu(e.key === 'Escape');
        if (e.key === 'Escape') e.preventDefault();
        e.stopPropagation();
        return;
      default: return;
    }
    e.preventDefault();
    e.stopPropagation();
    next && next.focus();
  }

  // ---- fullscreen, PiP --------------------------------------------------

  toggleFullscreen() {
    const d = document;
    if (d.fullscreenElement || d.webkitFullscreenElement) {
      (d.exitFullscreen || d.webkitExitFullscreen).call(d);
      return;
    }
    const el = this.root;
    if (el.requestFullscreen) el.requestFullscreen().catch(() => {});
    else if (el.webkitRequestFullscreen) el.webkitRequestFullscreen();
    else if (this.video.webkitEnterFullscreen) this.video.webkitEnterFullscreen();
  }

  onFullscreenChange() {
    const fs = (document.fullscreenElement || document.webkitFullscreenElement) === this.root;
    this.root.classList.toggle('is-fullscreen', fs);
    setIcon(this.fsBtn, fs ? 'exitFullscreen' : 'fullscreen');
    this.fsBtn.setAttribute('aria-label', fs ? 'Exit full screen (f)' : 'Full screen (f)');
  }

  togglePip() {
    if (document.pictureInPictureElement) document.exitPictureInPicture().catch(() => {});
    else this.video.requestPictureInPicture().catch(() => {});
  }

  // ---- keyboard and activity -------------------------------------------

  bindKeys() {
    this.root.addEventListener('keydown', (e) => this.onKey(e));
  }

  // onKey handles the player's shortcuts; global is set for keys that
  // reached the document with nothing focused.
  onKey(e) {
    if (e.defaultPrevented || e.altKey || e.ctrlKey || e.metaKey) return;
    const t = e.target;
    const tag = t && t.tagName;
    if (tag === 'INPUT' && t.type !== 'range') return;
    if (tag === 'TEXTAREA' || (t && t.isContentEditable)) return;
    const onButton = tag === 'BUTTON' || tag === 'A';
    const v = this.video;
    switch (e.key) {
      case ' ':
        if (onButton) return;
        this.togglePlay();
        break;
      case 'k': case 'K': this.togglePlay(); break;
      case 'm': case 'M': v.muted = !v.muted; break;
      case 'f': case 'F': this.toggleFullscreen(); break;
      case 'ArrowLeft': case 'j': case 'J':
        if (tag === 'INPUT') return;
        if (this.live) {
          if (!this.dvr || this.engine === 'webrtc') return;
          this.seekBack(e.key === 'ArrowLeft' ? SEEK_STEP : DVR_STEP);
          break;
        }
        v.currentTime = Math.max(0, v.currentTime - (e.key === 'ArrowLeft' ? SEEK_STEP : 10));
        break;
      case 'ArrowRight': case 'l': case 'L':
        if (tag === 'INPUT') return;
        if (this.live) {
          if (!this.dvr || this.engine === 'webrtc') return;
          this.seekBack(-(e.key === 'ArrowRight' ? SEEK_STEP : DVR_STEP));
          break;
        }
        v.currentTime = Math.min(v.duration || 0, v.currentTime + (e.key === 'ArrowRight' ? SEEK_STEP : 10));
        break;
      default: return;
    }
    e.preventDefault();
    this.poke();
  }

  bindActivity() {
    const poke = () => this.poke();
    this.root.addEventListener('pointermove', poke);
    this.root.addEventListener('pointerdown', poke);
    this.root.addEventListener('focusin', poke);
    this.root.addEventListener('pointerleave', () => {
      if (!this.video.paused) this.root.classList.remove('user-active');
    });
  }

  // poke shows the controls, hiding them again after a while of playback
  // without activity.
  poke() {
    this.root.classList.add('user-active');
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      const focusInControls = this.controls.contains(document.activeElement);
      if (!this.video.paused && !focusInControls && this.qualityMenu.hidden) this.root.classList.remove('user-active');
    }, 2800);
  }
}
