// Videos: upload (tus, resumable, with a progress bar), list with status,
// processing progress and thumbnail, delete.

import { Upload } from 'tus-js-client';
import { h, icon, copyButton, toast, replaceChildren } from '../common/dom.js';
import { confirmDialog, statusBadge, signedBadge, formatBytes, formatDuration, formatDate, P2PToggle } from './ui.js';
import { analyticsLink, watchLinkButton } from './links.js';

const CHUNK = 50 * 1024 * 1024;

export class VideosSection {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.cards = new Map();
    this.upload = null;
    this.render();
  }

  render() {
    const title = h('input', { id: 'video-title', type: 'text', maxlength: 200, placeholder: 'Defaults to the file name', autocomplete: 'off' });
    const file = h('input', { id: 'video-file', type: 'file', accept: 'video/*,.mkv,.mov,.mp4,.m4v,.webm,.ts,.avi,.flv', required: true });
    const signed = h('input', { id: 'video-signed', type: 'checkbox' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'upload-button' }, icon('upload'), 'Upload');
    this.progress = h('progress', { id: 'upload-progress', max: 100, value: 0, 'aria-label': 'Upload progress' });
    this.progressText = h('span', { class: 'upload-pct', id: 'upload-pct', text: '0%' });
    this.progressDetail = h('span', { class: 'muted upload-detail' });
    this.cancelBtn = h('button', { type: 'button', class: 'btn btn-sm' }, 'Cancel');
    this.cancelBtn.addEventListener('click', () => this.cancelUpload());
    this.status = h('div', { class: 'upload-status', id: 'upload-status', hidden: true, role: 'group', 'aria-label': 'Upload' },
      h('div', { class: 'upload-line' }, this.progress, this.progressText, this.cancelBtn),
      this.progressDetail);
    this.drop = h('label', { class: 'dropzone', for: 'video-file' },
      icon('upload'), h('span', { class: 'drop-text', text: 'Choose a video file or drop it here' }), file);
    const form = h('form', { class: 'card create-form', id: 'upload-form', 'aria-labelledby': 'upload-title' },
      h('h3', { id: 'upload-title', text: 'Upload a video' }),
      this.drop,
      h('div', { class: 'form-row' },
        h('div', { class: 'field grow' }, h('label', { for: 'video-title', text: 'Title' }), title),
        h('label', { class: 'check', for: 'video-signed' }, signed, h('span', { text: 'Signed playback links only' })),
        submit),
      this.status);
    file.addEventListener('change', () => this.fileChosen(file, title));
    for (const ev of ['dragenter', 'dragover']) {
      this.drop.addEventListener(ev, (e) => { e.preventDefault(); this.drop.classList.add('over'); });
    }
    for (const ev of ['dragleave', 'drop']) {
      this.drop.addEventListener(ev, () => this.drop.classList.remove('over'));
    }
    this.drop.addEventListener('drop', (e) => {
      e.preventDefault();
      if (e.dataTransfer && e.dataTransfer.files.length) {
        file.files = e.dataTransfer.files;
        this.fileChosen(file, title);
      }
    });
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      if (this.upload) return;
      if (!file.files.length) {
        toast('Choose a video file first', 'error');
        file.focus();
        return;
      }
      this.start(file.files[0], title.value.trim(), signed.checked, () => {
        form.reset();
        this.fileChosen(file, title);
      }, submit);
    });

    this.list = h('div', { class: 'video-grid', id: 'video-list', 'aria-live': 'polite', 'aria-busy': 'true' });
    this.empty = h('div', { class: 'empty', hidden: true }, h('p', { text: 'No videos yet. Upload one above.' }));
    replaceChildren(this.root,
      h('div', { class: 'panel-head' },
        h('h2', { text: 'Videos' }),
        h('p', { class: 'muted', text: 'Uploads are resumable: if the connection drops, the upload continues where it stopped. Each video is transcoded into an adaptive ladder with a poster and scrub previews.' })),
      form, this.empty, this.list);
  }

  fileChosen(file, title) {
    const f = file.files[0];
    const text = this.drop.querySelector('.drop-text');
    text.textContent = f ? `${f.name} (${formatBytes(f.size)})` : 'Choose a video file or drop it here';
    this.drop.classList.toggle('has-file', !!f);
    if (f && !title.value) title.placeholder = f.name.replace(/\.[^.]+$/, '');
  }

  async start(f, title, signed, done, submit) {
    submit.disabled = true;
    let video;
    try {
      const body = { title: title || f.name.replace(/\.[^.]+$/, '') };
      if (signed) body.playback_policy = 'signed';
      video = await this.api.post('/v1/videos', body);
    } catch (err) {
      submit.disabled = false;
      toast(err.message, 'error');
      return;
    }
    this.refresh().catch(() => {});
    this.status.hidden = false;
    this.cancelBtn.textContent = 'Cancel';
    this.setProgress(0, f.size, 0);
    const started = performance.now();
    const upload = new Upload(f, {
      endpoint: video.upload.tus_url,
      headers: { Authorization: `Bearer ${this.api.key}` },
      metadata: { video_id: video.id, filename: f.name, filetype: f.type || 'application/octet-stream' },
      chunkSize: CHUNK,
      retryDelays: [0, 1000, 3000, 5000, 10000, 20000],
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => {
        const secs = (performance.now() - started) / 1000;
        this.setProgress(sent, total, secs > 0 ? sent / secs : 0);
      },
      onSuccess: () => {
        this.upload = null;
        submit.disabled = false;
        this.setProgress(f.size, f.size, 0);
        this.progressDetail.textContent = 'Uploaded. Processing has started.';
        this.cancelBtn.textContent = 'Dismiss';
        toast(`“${video.title || f.name}” uploaded; processing`);
        done();
        setTimeout(() => { if (!this.upload) this.status.hidden = true; }, 4000);
        this.refresh().catch(() => {});
      },
      onError: (err) => {
        this.upload = null;
        submit.disabled = false;
        const msg = uploadError(err);
        this.progressDetail.textContent = msg;
        this.cancelBtn.textContent = 'Dismiss';
        toast(msg, 'error');
        this.refresh().catch(() => {});
      },
    });
    this.upload = upload;
    this.uploadVideoID = video.id;
    upload.start();
  }

  async cancelUpload() {
    if (!this.upload) {
      this.status.hidden = true;
      return;
    }
    const up = this.upload;
    this.upload = null;
    try {
      await up.abort(true);
    } catch {
      // The upload is gone anyway.
    }
    this.progressDetail.textContent = 'Upload cancelled. The video waits for a file; delete it or upload again.';
    this.cancelBtn.textContent = 'Dismiss';
    document.getElementById('upload-button').disabled = false;
    this.refresh().catch(() => {});
  }

  setProgress(sent, total, rate) {
    const pct = total ? Math.floor((sent / total) * 100) : 0;
    this.progress.value = pct;
    this.progressText.textContent = `${pct}%`;
    let detail = `${formatBytes(sent)} of ${formatBytes(total)}`;
    if (rate > 0 && sent < total) {
      const eta = (total - sent) / rate;
      detail += ` · ${formatBytes(rate)}/s · ${formatDuration(eta)} left`;
    }
    this.progressDetail.textContent = detail;
  }

  // refresh lists the videos (the first page) and tells whether any is
  // still processing.
  async refresh() {
    const data = await this.api.get('/v1/videos?limit=50');
    const seen = new Set();
    let prev = null;
    let busy = false;
    for (const v of data.data) {
      seen.add(v.id);
      busy = busy || v.status === 'processing' || v.status === 'waiting';
      let card = this.cards.get(v.id);
      if (!card) {
        card = new VideoCard(v, this);
        this.cards.set(v.id, card);
      } else {
        card.update(v);
      }
      const want = prev ? prev.nextSibling : this.list.firstChild;
      if (want !== card.el) this.list.insertBefore(card.el, want);
      prev = card.el;
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.el.remove();
        this.cards.delete(id);
      }
    }
    this.empty.hidden = data.data.length > 0;
    this.list.setAttribute('aria-busy', 'false');
    return busy;
  }
}

// uploadError turns a tus-js-client error into a message, using the API's
// JSON error when the server sent one.
function uploadError(err) {
  const res = err && err.originalResponse;
  if (res) {
    try {
      const body = JSON.parse(res.getBody());
      if (body && body.error && body.error.message) return `Upload failed: ${body.error.message}`;
    } catch {
      // Not JSON.
    }
    return `Upload failed (HTTP ${res.getStatus()})`;
  }
  return `Upload failed: ${(err && err.message) || err}`;
}

class VideoCard {
  constructor(v, section) {
    this.section = section;
    this.api = section.api;
    this.build(v);
    this.update(v);
  }

  build(v) {
    this.thumb = h('div', { class: 'thumb' });
    this.title = h('h3', {});
    this.badges = h('div', { class: 'badges' });
    this.progress = h('progress', { max: 100, value: 0, 'aria-label': 'Processing progress' });
    this.progressRow = h('div', { class: 'processing' }, this.progress, h('span', { class: 'pct' }));
    this.error = h('p', { class: 'video-error' });
    this.meta = h('p', { class: 'muted small' });
    this.watchSlot = h('span', {});
    this.copyEmbed = copyButton('Embed', () => `<iframe src="${location.origin}/embed/${v.id}" width="640" height="360" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen></iframe>`,
      { ariaLabel: 'Copy the embed code', done: 'Embed code copied' });
    const del = h('button', { type: 'button', class: 'btn btn-sm btn-danger' }, icon('trash'), 'Delete');
    del.addEventListener('click', () => this.remove());
    this.p2p = new P2PToggle(this.api, `/v1/videos/${v.id}`, v.title || 'this video');
    this.el = h('article', { class: 'card video', dataset: { id: v.id } },
      this.thumb,
      h('div', { class: 'video-body' },
        h('header', { class: 'card-head' }, this.title, this.badges),
        this.progressRow, this.error, this.meta,
        h('footer', { class: 'card-actions' }, this.watchSlot, this.copyEmbed, analyticsLink('video', v.id, v.title || 'this video'), this.p2p.el, h('span', { class: 'spacer' }), del)));
  }

  update(v) {
    this.v = v;
    this.el.dataset.status = v.status;
    this.title.textContent = v.title || 'Untitled video';
    this.p2p.set(v.p2p !== false);
    replaceChildren(this.badges, statusBadge(v.status), v.playback_policy === 'signed' ? signedBadge() : null);
    const processing = v.status === 'processing';
    this.progressRow.hidden = !processing;
    this.progress.value = v.progress || 0;
    this.progressRow.querySelector('.pct').textContent = `${v.progress || 0}%`;
    this.error.hidden = !v.error;
    this.error.textContent = v.error || '';
    const bits = [formatDate(v.created_at)];
    if (v.duration) bits.push(formatDuration(v.duration));
    if (v.source_bytes) bits.push(formatBytes(v.source_bytes));
    if (v.renditions && v.renditions.length) bits.push(v.renditions.map((r) => r.name).join(' · '));
    this.meta.textContent = bits.filter(Boolean).join(' — ');
    const thumbKey = `${v.status}|${v.playback.thumbnail_url || ''}`;
    if (thumbKey !== this.thumbKey) {
      this.thumbKey = thumbKey;
      this.renderThumb(v);
    }
    const ready = v.status === 'ready';
    const key = `${ready}|${v.playback_policy}`;
    if (key !== this.watchKey) {
      this.watchKey = key;
      replaceChildren(this.watchSlot, ready ? watchLinkButton(this.api, v.id, v.playback_policy === 'signed') : null);
    }
    // A signed video's embed needs a token: the signed link is the way to share it.
    this.copyEmbed.hidden = !ready || v.playback_policy === 'signed';
  }

  renderThumb(v) {
    const dur = v.duration ? h('span', { class: 'thumb-duration', text: formatDuration(v.duration) }) : null;
    if (v.status === 'ready' && v.playback.thumbnail_url && v.playback_policy !== 'signed') {
      replaceChildren(this.thumb, h('img', { src: v.playback.thumbnail_url, alt: '', loading: 'lazy', decoding: 'async' }), dur);
    } else {
      const name = v.playback_policy === 'signed' && v.status === 'ready' ? 'lock' : 'film';
      replaceChildren(this.thumb, h('div', { class: 'thumb-placeholder' }, icon(name)), dur);
    }
  }

  async remove() {
    const ok = await confirmDialog({
      title: 'Delete this video?',
      text: `“${this.v.title || 'Untitled video'}” and all of its files will be deleted. Embeds of it stop playing.`,
      confirm: 'Delete',
      danger: true,
    });
    if (!ok) return;
    try {
      await this.api.del(`/v1/videos/${this.v.id}`);
      toast('Video deleted');
      await this.section.refresh();
    } catch (err) {
      toast(err.message, 'error');
    }
  }
}
