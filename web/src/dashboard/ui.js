// Dashboard helpers: confirmation dialogs and formatting.

import { h, icon, toast } from '../common/dom.js';

// confirmDialog asks a yes/no question in a modal <dialog> and resolves to
// true when confirmed. Focus returns to the element that had it.
export function confirmDialog({ title, text, confirm = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const back = document.activeElement;
    const ok = h('button', { type: 'button', class: 'btn ' + (danger ? 'btn-danger-solid' : 'btn-primary'), value: 'ok', text: confirm });
    const cancel = h('button', { type: 'button', class: 'btn', value: 'cancel', text: 'Cancel' });
    const titleId = 'dlg-' + Math.random().toString(36).slice(2);
    const dlg = h('dialog', { class: 'dialog', 'aria-labelledby': titleId },
      h('h2', { id: titleId, text: title }),
      h('p', { text }),
      h('div', { class: 'dialog-actions' }, cancel, ok));
    let result = false;
    ok.addEventListener('click', () => { result = true; dlg.close(); });
    cancel.addEventListener('click', () => dlg.close());
    dlg.addEventListener('close', () => {
      dlg.remove();
      if (back && back.focus) back.focus();
      resolve(result);
    });
    document.body.append(dlg);
    dlg.showModal();
    cancel.focus();
  });
}

export function statusBadge(status) {
  const map = {
    live: ['badge-live', 'Live'],
    idle: ['badge-muted', 'Idle'],
    ready: ['badge-ok', 'Ready'],
    processing: ['badge-warn', 'Processing'],
    waiting: ['badge-muted', 'Waiting for upload'],
    failed: ['badge-danger', 'Failed'],
  };
  const [cls, label] = map[status] || ['badge-muted', status];
  return h('span', { class: 'badge ' + cls, text: label, dataset: { status } });
}

export function signedBadge() {
  return h('span', { class: 'badge badge-muted', title: 'Plays only with a signed playback link' }, icon('lock', 'badge-icon'), 'Signed');
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

export function formatBytes(n) {
  if (!Number.isFinite(n) || n <= 0) return '0 B';
  let i = 0;
  while (n >= 1000 && i < UNITS.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n >= 100 || i === 0 ? Math.round(n) : n.toFixed(1)} ${UNITS[i]}`;
}

// formatBitrate formats bytes per second as bits per second.
export function formatBitrate(bytesPerSec) {
  let b = (bytesPerSec || 0) * 8;
  const units = ['bit/s', 'kbit/s', 'Mbit/s', 'Gbit/s'];
  let i = 0;
  while (b >= 1000 && i < units.length - 1) {
    b /= 1000;
    i++;
  }
  return `${b >= 100 || i === 0 ? Math.round(b) : b.toFixed(1)} ${units[i]}`;
}

export function formatDuration(sec) {
  if (sec == null || !Number.isFinite(sec)) return '';
  sec = Math.round(sec);
  const hh = Math.floor(sec / 3600);
  const mm = Math.floor((sec % 3600) / 60);
  const ss = String(sec % 60).padStart(2, '0');
  return hh ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

const rtf = typeof Intl !== 'undefined' && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' }) : null;

// timeAgo says how long ago an ISO time was ("5 seconds ago").
export function timeAgo(iso, now = Date.now()) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const s = Math.round((t - now) / 1000);
  const abs = Math.abs(s);
  if (!rtf) return new Date(t).toLocaleString();
  if (abs < 60) return rtf.format(s, 'second');
  if (abs < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

export function formatDate(iso) {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? new Date(t).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : '';
}

// P2PToggle is the "Viewers share segments (P2P)" switch of a live stream
// or video: it PATCHes {"p2p": on} at path and goes back on failure.
export class P2PToggle {
  constructor(api, path, name) {
    this.box = h('input', { type: 'checkbox', class: 'p2p-toggle', 'aria-label': `Let viewers of ${name} share segments with each other (P2P)` });
    this.el = h('label', { class: 'check p2p' }, this.box, h('span', { text: 'Viewers share segments (P2P)' }));
    this.box.addEventListener('change', async () => {
      const on = this.box.checked;
      this.box.disabled = true;
      try {
        const res = await api.patch(path, { p2p: on });
        this.set(res.p2p !== false);
      } catch (err) {
        this.box.checked = !on;
        toast(err.message, 'error');
      } finally {
        this.box.disabled = false;
      }
    });
  }

  // set shows the record's state (unless the viewer is changing it).
  set(on) {
    if (!this.box.disabled) this.box.checked = on;
  }
}
