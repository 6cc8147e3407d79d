// Restreaming: a section of a live stream's card that lists the platforms
// the stream is pushed to while it is live (YouTube, Twitch, another
// Shoal: GET /v1/live-streams/{id}/restreams), each with its state, the
// reason when it failed and the bytes sent; a form adds a target (POST) and
// each target has a Remove button (DELETE).
//
// The list is polled every 2.5 s while the section is open, or while the
// stream is live, and only while it is on screen (the Live streams tab
// shown, the card scrolled into view, the browser tab visible).
//
// The target URL typed in the form ends with the platform's stream key: it
// only ever goes into the POST body. It is never put in the page's address,
// a message, the console or storage, the input has no name (a native form
// submission could not carry it) and is cleared once the target is added;
// the API shows the URL back with the key replaced by ****.

import { h, icon, replaceChildren, toast } from '../common/dom.js';
import { confirmDialog, formatBytes, formatDate, timeAgo } from './ui.js';

const POLL_MS = 2500;
const SOURCE = 'source';

// The targets' states, as badges.
const STATES = {
  idle: ['badge-muted', 'Idle'],
  connecting: ['badge-warn', 'Connecting'],
  live: ['badge-live', 'Live'],
  failed: ['badge-danger', 'Failed'],
};

export function restreamBadge(state) {
  const [cls, label] = STATES[state] || ['badge-muted', state || 'unknown'];
  return h('span', { class: 'badge restream-state ' + cls, text: label, dataset: { state } });
}

// ladderRungs returns the rung names of a ladder ("1080p:5000k,720p:3000k"
// gives ["1080p", "720p"]); [] for none.
export function ladderRungs(ladder) {
  if (!ladder || typeof ladder !== 'string') return [];
  return ladder.split(',').map((r) => r.split(':')[0].trim()).filter((r) => /^\d+p$/.test(r));
}

export class RestreamPanel {
  // card: the stream's card ({ api, ls (the stream's JSON) }).
  constructor(card) {
    this.card = card;
    this.api = card.api;
    this.rows = new Map(); // target id -> { el, parts }
    this.seq = 0; // the latest list request; older answers are dropped
    this.loaded = false;
    this.looping = false;
    this.onScreen = typeof IntersectionObserver !== 'function';
    this.build();
    this.onVisibility = () => this.sync();
    document.addEventListener('visibilitychange', this.onVisibility);
    if (!this.onScreen) {
      this.io = new IntersectionObserver((entries) => {
        this.onScreen = entries[entries.length - 1].isIntersecting;
        this.sync();
      }, { rootMargin: '200px' });
      this.io.observe(this.el);
    }
  }

  get ls() {
    return this.card.ls;
  }

  build() {
    const id = this.ls.id;
    this.summaryInfo = h('span', { class: 'restream-summary muted' });
    this.summary = h('summary', {}, h('span', { class: 'restream-title', text: 'Restream' }), this.summaryInfo);
    this.loadError = h('p', { class: 'restream-load-error notice notice-error', role: 'alert', hidden: true });
    this.list = h('ul', { class: 'restream-list', 'aria-label': `Restream targets of ${this.ls.name}` });
    this.empty = h('p', { class: 'restream-empty muted small', hidden: true, text: 'No targets yet: add one below.' });
    this.idleNote = h('p', { class: 'restream-note muted small' });

    this.nameInput = h('input', { id: `restream-name-${id}`, class: 'restream-name', type: 'text', maxlength: 200, placeholder: 'YouTube', autocomplete: 'off' });
    // No name attribute, no autocomplete, no spell checking (which may send
    // the text to a service): the URL holds the platform's stream key.
    this.urlInput = h('input', {
      id: `restream-url-${id}`, class: 'restream-url-input', type: 'text', maxlength: 2048,
      placeholder: 'rtmp://a.rtmp.youtube.com/live2/<stream key>', autocomplete: 'off', autocapitalize: 'off',
      autocorrect: 'off', spellcheck: 'false', 'data-lpignore': 'true', 'data-1p-ignore': 'true',
      'aria-describedby': `restream-url-help-${id}`,
    });
    this.renditionSlot = h('div', { class: 'field restream-rendition-field' });
    this.submit = h('button', { type: 'submit', class: 'btn btn-primary restream-add' }, icon('plus'), 'Add target');
    this.formError = h('p', { class: 'restream-form-error form-error', role: 'alert', hidden: true });
    this.form = h('form', { class: 'restream-form', novalidate: true, autocomplete: 'off', 'aria-label': `Add a restream target to ${this.ls.name}` },
      h('div', { class: 'form-row' },
        h('div', { class: 'field' }, h('label', { for: this.nameInput.id, text: 'Name' }), this.nameInput),
        h('div', { class: 'field grow' }, h('label', { for: this.urlInput.id, text: 'RTMP(S) URL with the stream key' }), this.urlInput),
        this.renditionSlot,
        this.submit),
      this.formError,
      h('p', { id: `restream-url-help-${id}`, class: 'muted small restream-help' },
        'The platform\'s server URL followed by its stream key (YouTube: ', h('code', { text: 'rtmp://a.rtmp.youtube.com/live2/' }),
        ', Twitch: ', h('code', { text: 'rtmp://live.twitch.tv/app/' }),
        '). The key is sent once and never shown again: the list shows it as ', h('code', { text: '****' }), '.'));
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      this.add();
    });

    this.el = h('details', { class: 'restream', dataset: { count: '' } },
      this.summary,
      h('div', { class: 'restream-body' },
        this.idleNote,
        this.loadError,
        this.list,
        this.empty,
        this.form));
    this.el.addEventListener('toggle', () => this.sync());
    this.renderRendition();
  }

  // onStatus follows the stream (called on every refresh of the card).
  onStatus(ls) {
    if (ls.ladder !== this.ladder) this.renderRendition();
    this.idleNote.textContent = ls.status === 'live'
      ? 'Live now: this server pushes the stream to each target below.'
      : 'While the stream is live, this server pushes it to each target below over RTMP(S), reconnecting by itself when a platform drops it.';
    this.sync();
  }

  // renderRendition offers the stream's ladder rungs when it has its own
  // ladder, else a text input (the node's ladder is not known here).
  renderRendition() {
    this.ladder = this.ls.ladder;
    const id = `restream-rendition-${this.ls.id}`;
    const old = this.renditionInput ? this.renditionInput.value : SOURCE;
    const rungs = ladderRungs(this.ladder);
    if (rungs.length) {
      this.renditionInput = h('select', { id, class: 'restream-rendition' },
        h('option', { value: SOURCE, text: 'Source (as published)' }),
        rungs.map((r) => h('option', { value: r, text: r })));
      this.renditionInput.value = [SOURCE, ...rungs].includes(old) ? old : SOURCE;
    } else {
      this.renditionInput = h('input', { id, class: 'restream-rendition', type: 'text', value: old || SOURCE, maxlength: 16, autocomplete: 'off', spellcheck: 'false', title: '“source”, or a rung of the ladder such as 720p' });
    }
    replaceChildren(this.renditionSlot, h('label', { for: id, text: 'Rendition' }), this.renditionInput);
  }

  // ---- polling ----------------------------------------------------------

  shouldPoll() {
    if (this.destroyed || document.hidden || !this.onScreen) return false;
    if (!this.el.isConnected || this.el.getClientRects().length === 0) return false; // the Live streams tab is hidden
    return this.el.open || this.ls.status === 'live';
  }

  // sync starts polling when it should run (and is not running); a loop
  // that should not run any more ends by itself.
  sync() {
    if (!this.looping && this.shouldPoll()) this.loop();
  }

  async loop() {
    this.looping = true;
    try {
      while (this.shouldPoll()) {
        await this.load();
        if (!this.shouldPoll()) break;
        await new Promise((resolve) => {
          this.wake = resolve;
          this.timer = setTimeout(resolve, POLL_MS);
        });
        this.wake = this.timer = null;
      }
    } finally {
      this.looping = false;
    }
  }

  destroy() {
    this.destroyed = true;
    clearTimeout(this.timer);
    if (this.wake) this.wake();
    document.removeEventListener('visibilitychange', this.onVisibility);
    if (this.io) this.io.disconnect();
  }

  // load reads the targets and shows them.
  async load() {
    const seq = ++this.seq;
    let data;
    try {
      data = await this.api.get(`/v1/live-streams/${this.ls.id}/restreams`);
    } catch (err) {
      if (seq !== this.seq || this.destroyed) return;
      // A deleted stream's card goes away with the next refresh.
      this.loadError.textContent = err.status === 404 ? 'This live stream no longer exists.' : `Could not read the restream targets: ${err.message}`;
      this.loadError.hidden = false;
      return;
    }
    if (seq !== this.seq || this.destroyed) return;
    this.loadError.hidden = true;
    this.render((data && data.data) || []);
  }

  render(targets) {
    this.loaded = true;
    const seen = new Set();
    let prev = null;
    for (const t of targets) {
      seen.add(t.id);
      let row = this.rows.get(t.id);
      if (!row) {
        row = this.makeRow(t);
        this.rows.set(t.id, row);
      }
      this.updateRow(row, t);
      const want = prev ? prev.nextSibling : this.list.firstChild;
      if (want !== row.el) this.list.insertBefore(row.el, want);
      prev = row.el;
    }
    for (const [rid, row] of this.rows) {
      if (!seen.has(rid)) {
        row.el.remove();
        this.rows.delete(rid);
      }
    }
    this.empty.hidden = targets.length > 0;
    this.el.dataset.count = String(targets.length);
    const counts = {};
    for (const t of targets) counts[t.state] = (counts[t.state] || 0) + 1;
    const parts = [targets.length === 1 ? '1 target' : `${targets.length} targets`];
    for (const s of ['live', 'connecting', 'failed']) if (counts[s]) parts.push(`${counts[s]} ${s}`);
    replaceChildren(this.summaryInfo, parts.join(' · '));
    this.summaryInfo.dataset.failed = counts.failed ? 'true' : 'false';
  }

  makeRow(t) {
    const p = {
      name: h('strong', { class: 'restream-target-name' }),
      badge: h('span', { class: 'restream-badge-slot' }),
      rendition: h('span', { class: 'restream-target-rendition muted small' }),
      url: h('code', { class: 'restream-url' }),
      meta: h('span', { class: 'restream-meta muted small' }),
      detail: h('p', { class: 'restream-detail muted small', hidden: true }),
      error: h('p', { class: 'restream-error', hidden: true }),
    };
    const remove = h('button', { type: 'button', class: 'btn btn-sm btn-danger restream-remove' }, icon('trash'), 'Remove');
    remove.addEventListener('click', () => this.remove(row.t, remove));
    const row = {
      p, remove,
      el: h('li', { class: 'restream-item', dataset: { id: t.id } },
        h('div', { class: 'restream-line' }, p.name, p.badge, p.rendition, h('span', { class: 'spacer' }), remove),
        h('div', { class: 'restream-line' }, p.url, p.meta),
        p.error, p.detail),
    };
    return row;
  }

  updateRow(row, t) {
    row.t = t;
    const { p } = row;
    p.name.textContent = t.name;
    if (row.el.dataset.state !== t.state) replaceChildren(p.badge, restreamBadge(t.state));
    row.el.dataset.state = t.state;
    p.rendition.textContent = !t.rendition || t.rendition === SOURCE ? 'source' : t.rendition;
    p.url.textContent = t.url;
    const since = t.since ? ` · ${t.state} since ${timeAgo(t.since)}` : '';
    p.meta.textContent = `${formatBytes(t.bytes_sent || 0)} sent${since}`;
    p.meta.title = t.since ? formatDate(t.since) : '';
    p.error.hidden = !(t.state === 'failed' && t.error);
    p.error.textContent = t.state === 'failed' ? t.error || '' : '';
    p.detail.hidden = !t.detail;
    p.detail.textContent = t.detail || '';
    row.remove.setAttribute('aria-label', `Remove the restream target ${t.name}`);
  }

  // ---- adding and removing ----------------------------------------------

  showFormError(msg, field) {
    this.formError.textContent = msg;
    this.formError.hidden = false;
    if (field) field.focus();
  }

  async add() {
    this.formError.hidden = true;
    this.formError.textContent = '';
    const name = this.nameInput.value.trim();
    const url = this.urlInput.value.trim();
    const rendition = this.renditionInput.value.trim() || SOURCE;
    if (!name) {
      this.showFormError('Name the target (for example YouTube).', this.nameInput);
      return;
    }
    if (!url) {
      this.showFormError('Paste the platform\'s RTMP(S) server URL followed by your stream key.', this.urlInput);
      return;
    }
    this.submit.disabled = true;
    try {
      const t = await this.api.post(`/v1/live-streams/${this.ls.id}/restreams`, { name, url, rendition });
      this.urlInput.value = '';
      this.nameInput.value = '';
      this.renditionInput.value = SOURCE;
      toast(`Restream target “${t.name}” added`);
      await this.load();
    } catch (err) {
      // The server's message, without the URL in case it ever quotes it.
      this.showFormError(scrub(err.message, url), /^url\b/i.test(err.message) ? this.urlInput : null);
    } finally {
      this.submit.disabled = false;
    }
  }

  async remove(t, btn) {
    const ok = await confirmDialog({
      title: 'Remove this restream target?',
      text: `“${t.name}” stops getting this stream at once, and its stream key is forgotten: add it again to restream there later.`,
      confirm: 'Remove',
      danger: true,
    });
    if (!ok) return;
    btn.disabled = true;
    try {
      await this.api.del(`/v1/live-streams/${this.ls.id}/restreams/${t.id}`);
      toast(`Restream target “${t.name}” removed`);
    } catch (err) {
      if (err.status !== 404) {
        btn.disabled = false;
        toast(err.message, 'error');
        return;
      }
    }
    const row = this.rows.get(t.id);
    if (row) {
      row.el.remove();
      this.rows.delete(t.id);
    }
    this.summary.focus();
    await this.load();
  }
}

// scrub replaces url, and its last path element (the stream key), in msg.
function scrub(msg, url) {
  let out = String(msg || '');
  const key = url.split(/[/?#]/).filter(Boolean).pop() || '';
  for (const s of [url, key]) {
    if (s.length >= 4) out = out.split(s).join('****');
  }
  return out;
}
