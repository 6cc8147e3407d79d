// Live streams: create, list with status, ingest settings (RTMP server,
// WHIP URL, OBS instructions), the stream key (and the RTSP and SRT URLs
// that embed it) shown once, right after it is made (create, reset key),
// going live from the browser (golive.js, with the dashboard's API key),
// restreaming to other platforms (restream.js), reset key, delete.

import { h, icon, copyButton, toast, replaceChildren } from '../common/dom.js';
import { confirmDialog, statusBadge, signedBadge, formatDate, P2PToggle } from './ui.js';
import { analyticsLink, watchLinkButton } from './links.js';
import { GoLivePanel } from './golive.js';
import { RestreamPanel } from './restream.js';

export class LiveSection {
  constructor(root, api) {
    this.root = root;
    this.api = api;
    this.cards = new Map();
    this.render();
  }

  render() {
    const name = h('input', { id: 'stream-name', name: 'name', type: 'text', required: true, maxlength: 200, placeholder: 'e.g. Friday night show', autocomplete: 'off' });
    const signed = h('input', { id: 'stream-signed', type: 'checkbox' });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary' }, icon('plus'), 'Create live stream');
    const form = h('form', { class: 'card create-form', id: 'new-stream-form', 'aria-labelledby': 'new-stream-title' },
      h('h3', { id: 'new-stream-title', text: 'New live stream' }),
      h('div', { class: 'form-row' },
        h('div', { class: 'field grow' }, h('label', { for: 'stream-name', text: 'Name' }), name),
        h('label', { class: 'check', for: 'stream-signed' }, signed, h('span', { text: 'Signed playback links only' })),
        submit));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const n = name.value.trim();
      if (!n) {
        name.focus();
        return;
      }
      submit.disabled = true;
      try {
        const body = { name: n };
        if (signed.checked) body.playback_policy = 'signed';
        const ls = await this.api.post('/v1/live-streams', body);
        name.value = '';
        signed.checked = false;
        toast(`Live stream “${ls.name}” created`);
        await this.refresh();
        const card = this.cards.get(ls.id);
        if (card) {
          card.showNewKey(ls);
          card.el.querySelector('details').open = true;
          card.el.querySelector('h3').focus();
        }
      } catch (err) {
        toast(err.message, 'error');
      } finally {
        submit.disabled = false;
      }
    });
    this.list = h('div', { class: 'stream-list', id: 'stream-list', 'aria-live': 'polite', 'aria-busy': 'true' });
    this.empty = h('div', { class: 'empty', hidden: true },
      h('p', { text: 'No live streams yet. Create one above, then point OBS at it.' }));
    replaceChildren(this.root,
      h('div', { class: 'panel-head' },
        h('h2', { id: 'live-title', text: 'Live streams' }),
        h('p', { class: 'muted', text: 'Go live from OBS (WHIP or RTMP), ffmpeg, or right here in the browser. Each stream has its own key; viewers watch at its watch page.' })),
      form, this.empty, this.list);
  }

  async refresh() {
    const data = await this.api.get('/v1/live-streams');
    const seen = new Set();
    let prev = null;
    for (const ls of data.data) {
      seen.add(ls.id);
      let card = this.cards.get(ls.id);
      if (!card) {
        card = new StreamCard(ls, this);
        this.cards.set(ls.id, card);
      } else {
        card.update(ls);
      }
      // Keep the API's order (newest first) without moving focused nodes needlessly.
      const want = prev ? prev.nextSibling : this.list.firstChild;
      if (want !== card.el) this.list.insertBefore(card.el, want);
      prev = card.el;
    }
    for (const [id, card] of this.cards) {
      if (!seen.has(id)) {
        card.destroy();
        card.el.remove();
        this.cards.delete(id);
      }
    }
    this.empty.hidden = data.data.length > 0;
    this.list.setAttribute('aria-busy', 'false');
  }

  // stop ends the browser broadcasts (sign-out).
  stop() {
    for (const card of this.cards.values()) card.destroy();
  }
}

class StreamCard {
  constructor(ls, section) {
    this.section = section;
    this.api = section.api;
    this.ls = ls;
    // fresh is the create or reset answer, the only one with the stream
    // key (the server keeps only its hash): shown until dismissed.
    this.fresh = null;
    this.build();
    this.update(ls);
  }

  build() {
    const id = this.ls.id;
    this.title = h('h3', { tabindex: '-1' });
    this.badges = h('div', { class: 'badges' });
    this.keyDef = h('dd', { class: 'stream-key', id: `key-${id}` });
    this.rtmp = h('code', {});
    this.rtspCode = h('code', {});
    this.sourceTerm = h('dt', { text: 'Pulled from' });
    this.sourceDef = h('dd', { class: 'pull' });
    this.rtspTerm = h('dt', { text: 'RTSP URL' });
    this.rtspDef = h('dd', {}, this.rtspCode, copyButton('Copy', () => (this.fresh && this.fresh.ingest.rtsp_url) || '', { ariaLabel: `Copy the RTSP publish URL of ${this.ls.name}`, done: 'RTSP URL copied' }));
    this.whipCode = h('code', { class: 'whip-url' });
    this.whipTerm = h('dt', { text: 'WHIP URL' });
    this.whipDef = h('dd', {}, this.whipCode, copyButton('Copy', () => this.ls.ingest.whip_url || '', { ariaLabel: `Copy the WHIP URL of ${this.ls.name}`, done: 'WHIP URL copied' }));
    this.srtCode = h('code', { class: 'srt-url' });
    this.srtTerm = h('dt', { text: 'SRT URL' });
    this.srtDef = h('dd', {}, this.srtCode, copyButton('Copy', () => (this.fresh && this.fresh.ingest.srt_url) || '', { ariaLabel: `Copy the SRT publish URL of ${this.ls.name}`, done: 'SRT URL copied' }));
    this.watchURL = `${location.origin}/watch/${id}`;
    this.hls = h('code', {});
    this.p2p = new P2PToggle(this.api, `/v1/live-streams/${id}`, this.ls.name);
    this.created = h('span', { class: 'muted' });
    this.resetBtn = h('button', { type: 'button', class: 'btn btn-sm key-reset', 'aria-label': `Reset the stream key of ${this.ls.name}` }, icon('refresh'), 'Reset key');
    this.resetBtn.addEventListener('click', () => this.resetKey());
    const del = h('button', { type: 'button', class: 'btn btn-sm btn-danger' }, icon('trash'), 'Delete');
    del.addEventListener('click', () => this.remove());
    this.watchSlot = h('span', { class: 'watch-slot' });
    this.goLiveBtn = h('button', { type: 'button', class: 'btn btn-sm golive-open', 'aria-expanded': 'false', hidden: true }, icon('camera'), 'Go live');
    this.goLiveBtn.addEventListener('click', () => this.toggleGoLive());
    this.panelSlot = h('div', { class: 'golive-slot' });
    this.restream = new RestreamPanel(this);

    this.el = h('article', { class: 'card stream', dataset: { id }, 'aria-labelledby': `stream-${id}-title` },
      h('header', { class: 'card-head' }, this.title, this.badges),
      h('dl', { class: 'kv' },
        h('dt', { text: 'RTMP server' }),
        h('dd', {}, this.rtmp, copyButton('Copy', () => this.ls.ingest.rtmp_url, { ariaLabel: `Copy the RTMP server URL of ${this.ls.name}`, done: 'RTMP URL copied' })),
        h('dt', { text: 'Stream key' }),
        this.keyDef,
        this.whipTerm, this.whipDef,
        this.rtspTerm, this.rtspDef,
        this.srtTerm, this.srtDef,
        this.sourceTerm, this.sourceDef,
        h('dt', { text: 'Watch page' }),
        h('dd', {}, h('a', { href: `/watch/${id}`, target: '_blank', rel: 'noopener', text: this.watchURL }), copyButton('Copy', this.watchURL, { ariaLabel: 'Copy the watch page link', done: 'Link copied' })),
        h('dt', { text: 'HLS' }),
        h('dd', {}, this.hls, copyButton('Copy', () => this.ls.playback.hls_url, { ariaLabel: 'Copy the HLS URL', done: 'HLS URL copied' })),
        h('dt', { text: 'Delivery' }),
        h('dd', {}, this.p2p.el)),
      this.panelSlot,
      this.restream.el,
      h('details', { class: 'obs' },
        h('summary', { text: 'Set up OBS Studio' }),
        this.obsWHIP = h('div', { class: 'obs-whip' },
          h('h4', { text: 'OBS 30 or later: WebRTC (WHIP)' }),
          h('ol', {},
            h('li', {}, 'Open ', h('strong', { text: 'Settings → Stream' }), ', choose Service ', h('strong', { text: 'WHIP' }), '.'),
            h('li', {}, 'Server: paste the ', h('em', { text: 'WHIP URL' }), ' above; Bearer Token: paste the ', h('em', { text: 'stream key' }), '.'),
            h('li', {}, 'In ', h('strong', { text: 'Settings → Output' }), ': an H.264 encoder (x264 or hardware), ', h('strong', { text: 'keyframe interval 2 s' }), ', audio Opus (OBS picks it for WHIP).'),
            h('li', {}, 'Click ', h('strong', { text: 'Start Streaming' }), '. WebRTC needs UDP to this server; if it does not connect, use RTMP below.'))),
        this.obsRTMPHead = h('h4', { text: 'OBS 29 and older, or any RTMP encoder' }),
        h('ol', {},
          h('li', {}, 'Open ', h('strong', { text: 'Settings → Stream' }), ', choose Service ', h('strong', { text: 'Custom…' }), '.'),
          h('li', {}, 'Server: paste the ', h('em', { text: 'RTMP server' }), ' above; Stream Key: paste the ', h('em', { text: 'stream key' }), '.'),
          h('li', {}, 'In ', h('strong', { text: 'Settings → Output' }), ' (Advanced): x264 or a hardware H.264 encoder, rate control CBR, ', h('strong', { text: 'keyframe interval 2 s' }), ', audio AAC.'),
          h('li', {}, 'Click ', h('strong', { text: 'Start Streaming' }), '. The status above turns ', h('em', { text: 'Live' }), ' within a few seconds and viewers see it on the watch page.')),
        h('p', { class: 'muted' }, 'With ffmpeg: ', h('code', { class: 'cmd', text: '' }))),
      h('footer', { class: 'card-actions' },
        this.watchSlot,
        this.goLiveBtn,
        analyticsLink('live_stream', id, this.ls.name || 'this live stream'),
        h('span', { class: 'spacer' }),
        this.created, del));
    this.title.id = `stream-${id}-title`;
  }

  update(ls) {
    this.ls = ls;
    this.title.textContent = ls.name;
    replaceChildren(this.badges, statusBadge(ls.status), ls.playback_policy === 'signed' ? signedBadge() : null,
      ls.error ? h('span', { class: 'badge badge-warn', title: ls.error, text: 'Not transcoded' }) : null);
    this.rtmp.textContent = ls.ingest.rtmp_url;
    // A stream pulled from a camera: its URL (password hidden by the API)
    // and the state of the pull.
    this.sourceTerm.hidden = this.sourceDef.hidden = !ls.source_url;
    if (ls.source_url) {
      const p = ls.pull || { state: 'connecting' };
      replaceChildren(this.sourceDef, h('code', { text: ls.source_url }), ' ',
        h('span', { class: 'badge ' + (p.state === 'live' ? 'badge-live' : 'badge-muted'), text: p.state }),
        p.error ? h('span', { class: 'muted small', text: ' ' + p.error }) : null);
      this.sourceDef.dataset.state = p.state;
    }
    this.hls.textContent = ls.playback.hls_url;
    this.p2p.set(ls.p2p !== false);
    this.created.textContent = `Created ${formatDate(ls.created_at)}`;
    const whip = ls.ingest.whip_url || '';
    this.whipTerm.hidden = this.whipDef.hidden = this.obsWHIP.hidden = !whip;
    this.obsRTMPHead.textContent = whip ? 'OBS 29 and older, or any RTMP encoder' : 'OBS over RTMP (any version)';
    this.whipCode.textContent = whip;
    this.goLiveBtn.hidden = !whip;
    this.el.dataset.status = ls.status;
    if (this.panel) this.panel.onStatus(ls);
    this.restream.onStatus(ls);
    if (!this.watchSlot.firstChild || this.policy !== ls.playback_policy) {
      this.policy = ls.playback_policy;
      replaceChildren(this.watchSlot, watchLinkButton(this.api, ls.id, ls.playback_policy === 'signed'));
    }
    this.renderKey();
  }

  // showNewKey shows the stream key of a create or reset answer, the only
  // time the dashboard sees it.
  showNewKey(answer) {
    this.fresh = answer;
    this.renderKey();
  }

  // renderKey shows the new stream key (and the RTSP and SRT URLs that
  // carry it) right after it was made, with the note that it is shown
  // once; otherwise says so, next to Reset key.
  renderKey() {
    const f = this.fresh;
    const k = f ? f.stream_key : '';
    if (f) {
      const done = h('button', { type: 'button', class: 'btn btn-sm key-done', 'aria-label': `Hide the stream key of ${this.ls.name}` }, icon('eye'), 'Done, hide it');
      done.addEventListener('click', () => {
        this.fresh = null;
        this.renderKey();
      });
      replaceChildren(this.keyDef,
        h('code', { class: 'secret', text: k }),
        copyButton('Copy', k, { ariaLabel: `Copy the stream key of ${this.ls.name}`, done: 'Stream key copied' }),
        done, this.resetBtn,
        h('p', { class: 'key-once', role: 'status' },
          h('strong', { text: 'Copy it now: it is shown once; ' }), 'Reset makes a new one (and stops the old one).'));
      this.keyDef.dataset.key = 'shown';
    } else {
      replaceChildren(this.keyDef,
        h('span', { class: 'muted key-hidden', text: 'Shown once, when it is made. Lost it? ' }),
        this.resetBtn);
      this.keyDef.dataset.key = 'hidden';
    }
    // The RTSP and SRT URLs carry the key: only with it.
    const rtsp = (f && f.ingest.rtsp_url) || '';
    this.rtspTerm.hidden = this.rtspDef.hidden = !rtsp;
    this.rtspCode.textContent = rtsp;
    const srt = (f && f.ingest.srt_url) || '';
    this.srtTerm.hidden = this.srtDef.hidden = !srt;
    this.srtCode.textContent = srt;
    this.el.querySelector('code.cmd').textContent =
      `ffmpeg -re -i input.mp4 -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv ${this.ls.ingest.rtmp_url}/${k || '<stream key>'}`;
  }

  // toggleGoLive opens or closes the "Go live from the browser" panel.
  toggleGoLive() {
    if (!this.panel) {
      const card = this;
      this.panel = new GoLivePanel({
        api: this.api,
        get ls() { return card.ls; },
        refresh: () => this.section.refresh(),
        onPanel: (open) => this.goLiveBtn.setAttribute('aria-expanded', String(open)),
      });
      this.panelSlot.append(this.panel.el);
    }
    if (this.panel.open) this.panel.close();
    else this.panel.show();
  }

  destroy() {
    if (this.panel) this.panel.destroy();
    this.restream.destroy();
  }

  async resetKey() {
    const ok = await confirmDialog({
      title: 'Reset the stream key?',
      text: `“${this.ls.name}” gets a new stream key, shown once. The old key stops working at once: whoever is broadcasting with it (OBS, ffmpeg, a camera) is disconnected. Update them with the new key.`,
      confirm: 'Reset key',
      danger: true,
    });
    if (!ok) return;
    try {
      const ls = await this.api.post(`/v1/live-streams/${this.ls.id}/reset-stream-key`);
      this.update(ls);
      this.showNewKey(ls);
      toast('New stream key made: copy it now');
    } catch (err) {
      toast(err.message, 'error');
    }
  }

  async remove() {
    const ok = await confirmDialog({
      title: 'Delete this live stream?',
      text: `“${this.ls.name}” will be deleted: its key stops working, a broadcast in progress is cut off, and its recording is deleted.`,
      confirm: 'Delete',
      danger: true,
    });
    if (!ok) return;
    try {
      await this.api.del(`/v1/live-streams/${this.ls.id}`);
      toast('Live stream deleted');
      await this.section.refresh();
    } catch (err) {
      toast(err.message, 'error');
    }
  }
}
