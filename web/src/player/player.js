// The Shoal player: an HTML5 video element fed by hls.js (MSE), or by the
// browser itself where HLS is native (Safari), with our own controls: seek
// bar with storyboard previews, quality menu from the ladder, volume, live
// badge and latency, picture-in-picture and fullscreen. Live streams whose
// playlists have parts (LL-HLS) play in hls.js's low-latency mode.

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

export class Player {
  // root: the .player element rendered by the server (it holds the video
  // and the overlay). opts: { controls, autoplay, muted, token, force,
  // clockOffset (ms to add to Date.now() for the origin's clock),
  // onLatency(seconds|null, info), onState(kind) }. info: see latencyInfo.
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
  // stream (no seek bar; a LIVE button and latency). delivery: a Delivery
  // (delivery.js) that fetches from edges and verifies every object; only
  // hls.js can use it, so native HLS plays src (the origin) unverified.
  load(src, { live = false, poster = '', storyboard = '', autoplay = this.opts.autoplay, delivery = null } = {}) {
    this.unload();
    this.live = live;
    this.root.classList.toggle('is-live', live);
    this.root.classList.add('has-source');
    if (poster) this.video.poster = withToken(poster, this.opts.token);
    this.hideMessage();
    this.setBuffering(true);
    const url = withToken(src, this.opts.token);
    if (useNative(this.video, this.opts.force)) {
      this.engine = 'native';
      this.video.src = url;
      this.qualityBtn.hidden = true;
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
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.buildQualityMenu());
    hls.on(Hls.Events.LEVEL_SWITCHED, () => this.updateQualityLabel());
    hls.on(Hls.Events.ERROR, (_ev, data) => this.onHlsError(data));
    hls.loadSource(url);
    hls.attachMedia(this.video);
  }

  onHlsError(data) {
    if (!data.fatal) return;
    const code = data.response && data.response.code;
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

  // onTick updates the live latency once a second.
  onTick() {
    if (!this.live || !this.root.classList.contains('has-source')) return;
    if (this.engine === 'webrtc') {
      delete this.root.dataset.lowLatency;
      this.liveBtn.classList.toggle('behind', this.video.paused);
      this.latency.textContent = 'Real-time';
      this.latency.title = 'Playing over WebRTC, with well under a second of delay';
      this.opts.onLatency && this.opts.onLatency(null);
      return;
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

  goLive() {
    const v = this.video;
    if (this.engine === 'webrtc') {
      if (v.paused) this.play(false);
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
      this.video.currentTime = Number(s.value);
      this.hidePreview();
    });
    s.addEventListener('pointermove', (e) => {
      const rect = s.getBoundingClientRect();
      const dur = Number(s.max);
      if (!dur || !rect.width) return;
      const frac = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
      this.showPreview(frac * dur, frac);
    });
    s.addEventListener('pointerleave', () => { if (!this.scrubbing) this.hidePreview(); });
    s.addEventListener('blur', () => this.hidePreview());
    s.addEventListener('keydown', (e) => {
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

  // showPreview shows the storyboard frame and time of t above the seek bar.
  showPreview(t, frac) {
    const dur = Number(this.seek.max);
    if (!dur) return;
    if (frac == null) frac = t / dur;
    const cue = this.cues.length ? cueAt(this.cues, t) : null;
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
    this.previewTime.textContent = formatTime(t);
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
        if (this.live || tag === 'INPUT') return;
        v.currentTime = Math.max(0, v.currentTime - (e.key === 'ArrowLeft' ? SEEK_STEP : 10));
        break;
      case 'ArrowRight': case 'l': case 'L':
        if (this.live || tag === 'INPUT') return;
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
