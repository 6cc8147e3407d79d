// Storyboards: a WebVTT track whose cues point into sprite sheets
// ("storyboard-0.jpg#xywh=160,0,160,90"), the format the VOD worker writes
// next to a video's HLS tree. Used for scrub previews on the seek bar.

// parseVTTTime parses "hh:mm:ss.mmm" or "mm:ss.mmm" into seconds.
function parseVTTTime(s) {
  const m = /^(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:\.(\d{1,3}))?$/.exec(s.trim());
  if (!m) return NaN;
  return (Number(m[1] || 0) * 3600) + Number(m[2]) * 60 + Number(m[3]) + Number((m[4] || '0').padEnd(3, '0')) / 1000;
}

// parseStoryboard parses a storyboard track; base resolves the sprite
// URLs and token, when set, is added to each of them (signed playback).
// A sprite elsewhere than the track's own origin is refused: the token is
// never sent anywhere else.
export function parseStoryboard(text, base, token) {
  let origin;
  try {
    origin = new URL(base).origin;
  } catch {
    return [];
  }
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  if (!/^WEBVTT/.test(lines[0] || '')) return [];
  const cues = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line.includes('-->')) continue;
    const [from, to] = line.split('-->').map((p) => parseVTTTime(p.split(/\s/).filter(Boolean)[0] || ''));
    const ref = (lines[i + 1] || '').trim();
    const hash = ref.indexOf('#xywh=');
    if (!Number.isFinite(from) || !Number.isFinite(to) || hash < 0) continue;
    const xywh = ref.slice(hash + 6).split(',').map(Number);
    if (xywh.length !== 4 || xywh.some((n) => !Number.isFinite(n) || n < 0)) continue;
    let url;
    try {
      url = new URL(ref.slice(0, hash), base);
    } catch {
      continue;
    }
    if (url.origin !== origin || (url.protocol !== 'https:' && url.protocol !== 'http:')) continue;
    if (token) url.searchParams.set('token', token);
    cues.push({ from, to, url: url.href, x: xywh[0], y: xywh[1], w: xywh[2], h: xywh[3] });
    i++;
  }
  cues.sort((a, b) => a.from - b.from);
  return cues;
}

// cueAt returns the cue shown at time t (the last one starting at or before t).
export function cueAt(cues, t) {
  let lo = 0;
  let hi = cues.length - 1;
  let best = null;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cues[mid].from <= t) {
      best = cues[mid];
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return best || cues[0] || null;
}

// loadStoryboard fetches and parses the track; failures leave no previews.
export async function loadStoryboard(url, token) {
  try {
    const u = new URL(url, location.href);
    if (token) u.searchParams.set('token', token);
    const res = await fetch(u.href, { credentials: 'omit' });
    if (!res.ok) return [];
    return parseStoryboard(await res.text(), u.href, token);
  } catch {
    return [];
  }
}
