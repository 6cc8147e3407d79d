// Small DOM helpers: elements are built with h(), never from HTML strings,
// so text from users (titles, names, errors) is always inserted as text.

const SVG_NS = 'http://www.w3.org/2000/svg';

// h(tag, attrs, ...children) makes an element. attrs: "class", "text",
// "on<event>" handlers, "dataset" (object), booleans (set when true) and
// anything else as attributes. Children: nodes, strings, arrays, null.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  if (!attrs) return;
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// clear removes every child of el and appends children.
export function replaceChildren(el, ...children) {
  el.textContent = '';
  return append(el, children);
}

// Icons: 24x24, drawn with strokes unless "fill" is set. Each is a list of
// path data, plus circles as [cx, cy, r].
const ICONS = {
  play: { fill: true, d: ['M8 5.5v13a.5.5 0 0 0 .77.42l10.2-6.5a.5.5 0 0 0 0-.84L8.77 5.08A.5.5 0 0 0 8 5.5z'] },
  pause: { fill: true, d: ['M6.5 5h3.5v14H6.5z', 'M14 5h3.5v14H14z'] },
  volume: { d: ['M4 9.5v5h3.5L12 18V6L7.5 9.5z', 'M15.5 9a4 4 0 0 1 0 6', 'M18 6.5a7.5 7.5 0 0 1 0 11'] },
  muted: { d: ['M4 9.5v5h3.5L12 18V6L7.5 9.5z', 'M16 9.5l5 5', 'M21 9.5l-5 5'] },
  fullscreen: { d: ['M4 9V4h5', 'M15 4h5v5', 'M20 15v5h-5', 'M9 20H4v-5'] },
  exitFullscreen: { d: ['M9 4v5H4', 'M20 9h-5V4', 'M15 20v-5h5', 'M4 15h5v5'] },
  settings: { d: ['M4 7h8', 'M17 7h3', 'M4 17h2', 'M11 17h9'], c: [[14.5, 7, 2.2], [8.5, 17, 2.2]] },
  pip: { d: ['M3 5h18v14H3z', 'M12.5 12.5h6v4.5h-6z'] },
  copy: { d: ['M9 9h11v11H9z', 'M5 15H4V4h11v1'] },
  link: { d: ['M10 14a4 4 0 0 0 5.66 0l3-3a4 4 0 0 0-5.66-5.66l-1 1', 'M14 10a4 4 0 0 0-5.66 0l-3 3a4 4 0 0 0 5.66 5.66l1-1'] },
  code: { d: ['M8.5 7l-5 5 5 5', 'M15.5 7l5 5-5 5'] },
  trash: { d: ['M4 7h16', 'M9.5 7V4.5h5V7', 'M6 7l1 13h10l1-13', 'M10 11v5.5', 'M14 11v5.5'] },
  refresh: { d: ['M20 12a8 8 0 1 1-2.34-5.66', 'M20 4v5h-5'] },
  upload: { d: ['M12 16V4.5', 'M7 9.5l5-5 5 5', 'M4 20h16'] },
  eye: { d: ['M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z'], c: [[12, 12, 3]] },
  eyeOff: { d: ['M2 12s3.6-7 10-7 10 7 10 7-3.6 7-10 7S2 12 2 12z', 'M4 4l16 16'] },
  plus: { d: ['M12 5v14', 'M5 12h14'] },
  external: { d: ['M14 4h6v6', 'M20 4l-9 9', 'M18 14v6H4V6h6'] },
  lock: { d: ['M6 11h12v9H6z', 'M8.5 11V8a3.5 3.5 0 0 1 7 0v3'] },
  signal: { d: ['M5 12a7 7 0 0 1 14 0', 'M8.5 12a3.5 3.5 0 0 1 7 0'], c: [[12, 15.5, 1.5]] },
  film: { d: ['M4 5h16v14H4z', 'M8 5v14', 'M16 5v14', 'M4 9.5h4', 'M16 9.5h4', 'M4 14.5h4', 'M16 14.5h4'] },
  server: { d: ['M4 4.5h16v6H4z', 'M4 13.5h16v6H4z', 'M7.5 7.5h.01', 'M7.5 16.5h.01'] },
  logout: { d: ['M14 4h5v16h-5', 'M10 8l-4 4 4 4', 'M6 12h10'] },
  bolt: { d: ['M13 3L5 13.5h6.5L10.5 21 19 10.5h-6.5z'] },
  camera: { d: ['M3 7h12v10H3z', 'M15 10.5l6-3.5v10l-6-3.5'] },
  screen: { d: ['M3 4.5h18v12H3z', 'M8.5 20h7', 'M12 16.5V20'] },
  stop: { fill: true, d: ['M6.5 6.5h11v11h-11z'] },
  close: { d: ['M6 6l12 12', 'M18 6L6 18'] },
};

// icon(name) returns an inline SVG element (aria-hidden: the control it sits
// in carries the label).
export function icon(name, cls) {
  const spec = ICONS[name];
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', 'icon' + (cls ? ' ' + cls : ''));
  if (spec.fill) {
    svg.setAttribute('fill', 'currentColor');
  } else {
    svg.setAttribute('fill', 'none');
    svg.setAttribute('stroke', 'currentColor');
    svg.setAttribute('stroke-width', '2');
    svg.setAttribute('stroke-linecap', 'round');
    svg.setAttribute('stroke-linejoin', 'round');
  }
  for (const d of spec.d) {
    const p = document.createElementNS(SVG_NS, 'path');
    p.setAttribute('d', d);
    svg.append(p);
  }
  for (const [cx, cy, r] of spec.c || []) {
    const c = document.createElementNS(SVG_NS, 'circle');
    c.setAttribute('cx', cx);
    c.setAttribute('cy', cy);
    c.setAttribute('r', r);
    svg.append(c);
  }
  return svg;
}

// setIcon replaces the icon inside a button.
export function setIcon(btn, name) {
  const old = btn.querySelector('svg.icon');
  const next = icon(name);
  if (old) old.replaceWith(next);
  else btn.prepend(next);
}

// toast shows a short message in the page's live region.
export function toast(msg, kind) {
  let box = document.getElementById('toasts');
  if (!box) {
    box = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(box);
  }
  const t = h('div', { class: 'toast' + (kind === 'error' ? ' toast-error' : ''), text: msg });
  box.append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 6000 : 2500);
}

// copyText copies text to the clipboard: the async Clipboard API where the
// page is a secure context, else a hidden textarea.
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // Denied (e.g. no user activation): fall back below.
    }
  }
  const ta = h('textarea', { class: 'visually-hidden', readonly: true, 'aria-hidden': 'true' });
  ta.value = text;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try {
    ok = document.execCommand('copy');
  } catch {
    ok = false;
  }
  ta.remove();
  return ok;
}

// copyButton makes a button that copies text() and says so.
export function copyButton(label, text, opts = {}) {
  const btn = h('button', {
    type: 'button',
    class: 'btn btn-sm' + (opts.class ? ' ' + opts.class : ''),
    'aria-label': opts.ariaLabel || label,
  }, icon('copy'), opts.iconOnly ? null : h('span', { text: label }));
  btn.addEventListener('click', async () => {
    const ok = await copyText(typeof text === 'function' ? text() : text);
    toast(ok ? (opts.done || 'Copied to the clipboard') : 'Could not copy: select the text and copy it yourself', ok ? '' : 'error');
  });
  return btn;
}

// readState returns the JSON state the server rendered into the page.
export function readState(doc = document) {
  const el = doc.getElementById('shoal-state');
  if (!el) return null;
  try {
    return JSON.parse(el.textContent);
  } catch {
    return null;
  }
}

// formatTime formats seconds as m:ss or h:mm:ss.
export function formatTime(sec) {
  if (!Number.isFinite(sec) || sec < 0) sec = 0;
  sec = Math.floor(sec);
  const hh = Math.floor(sec / 3600);
  const mm = Math.floor((sec % 3600) / 60);
  const ss = String(sec % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

// spokenTime formats seconds for screen readers ("1 minute 5 seconds").
export function spokenTime(sec) {
  if (!Number.isFinite(sec) || sec < 0) sec = 0;
  sec = Math.floor(sec);
  const parts = [];
  const hh = Math.floor(sec / 3600);
  const mm = Math.floor((sec % 3600) / 60);
  const ss = sec % 60;
  if (hh) parts.push(`${hh} hour${hh === 1 ? '' : 's'}`);
  if (mm) parts.push(`${mm} minute${mm === 1 ? '' : 's'}`);
  if (ss || !parts.length) parts.push(`${ss} second${ss === 1 ? '' : 's'}`);
  return parts.join(' ');
}
