// Watch links: a plain link for public streams and videos; for signed ones,
// a button that asks the API for a playback token and then offers the
// signed watch link (valid for 24 hours).

import { h, icon, copyButton, replaceChildren, toast } from '../common/dom.js';

const SIGNED_TTL = 24 * 3600;

export function watchLinkButton(api, id, signed) {
  if (!signed) {
    return h('a', { class: 'btn btn-sm', href: `/watch/${id}`, target: '_blank', rel: 'noopener' }, icon('external'), 'Watch');
  }
  const slot = h('span', { class: 'signed-link' });
  const btn = h('button', { type: 'button', class: 'btn btn-sm' }, icon('lock'), 'Get a signed watch link');
  btn.addEventListener('click', async () => {
    btn.disabled = true;
    try {
      const t = await api.post('/v1/playback-tokens', { id, ttl_seconds: SIGNED_TTL });
      const url = `${location.origin}/watch/${id}?token=${encodeURIComponent(t.token)}`;
      replaceChildren(slot,
        h('a', { class: 'btn btn-sm', href: url, target: '_blank', rel: 'noopener' }, icon('external'), 'Open signed link'),
        copyButton('Copy', url, { ariaLabel: 'Copy the signed watch link', done: 'Signed link copied (valid 24 h)' }));
    } catch (err) {
      btn.disabled = false;
      toast(err.message, 'error');
    }
  });
  slot.append(btn);
  return slot;
}

// analyticsLink opens the Analytics tab on a video's or live stream's
// figures (kind: "video" or "live_stream").
export function analyticsLink(kind, id, name) {
  return h('a', { class: 'btn btn-sm analytics-link', href: `#analytics/${kind}/${encodeURIComponent(id)}`, 'aria-label': `Analytics of ${name}`, text: 'Analytics' });
}
