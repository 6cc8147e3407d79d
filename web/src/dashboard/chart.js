// Small SVG charts with no dependency: bars and lines over labelled
// buckets (epochs, hours, days), with axis labels, a legend and an
// accessible name (<title>) and description (<desc>).
//
// chartTree builds the chart as a plain tree ({tag, attrs, children};
// strings are text), so that it can be tested without a DOM; renderSVG
// turns a tree into SVG elements. Text is always set as text, never parsed.

const SVG_NS = 'http://www.w3.org/2000/svg';
export const PALETTE = ['#2dd4bf', '#60a5fa', '#f472b6', '#fbbf24', '#a78bfa', '#34d399'];

let seq = 0;

const el = (tag, attrs, ...children) => ({ tag, attrs: attrs || {}, children: children.flat().filter((c) => c != null && c !== false) });

// niceTicks returns 0 and evenly spaced round values up to at least max
// (1, 2, 2.5 or 5 times a power of ten apart), about count steps.
// With integer, steps are whole numbers (for counts).
export function niceTicks(max, count = 4, integer = false) {
  if (!Number.isFinite(max) || max <= 0) return [0, 1];
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(integer ? 1 : 0, (integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * pow).find((s) => s >= raw));
  const ticks = [];
  for (let i = 0; ; i++) {
    const v = +(i * step).toPrecision(12);
    ticks.push(v);
    if (v >= max) break;
  }
  return ticks;
}

// chartTree describes a chart.
//   kind: 'bar' or 'line'
//   title, desc: the accessible name and description (desc gets a summary
//     of the data appended)
//   labels: the x axis, one label per bucket
//   series: [{name, values: [number|null per bucket], color}]
//   format: formats a y value (axis, tooltips and the summary)
//   integer: the values are counts (whole-number axis steps)
//   width, height: the viewBox (the SVG scales to its box)
export function chartTree({ kind = 'bar', title, desc = '', labels = [], series = [], format = String, integer = false, width = 600, height = 220, id }) {
  id = id || `chart${++seq}`;
  const values = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const max = values.length ? Math.max(...values) : 0;
  const ticks = niceTicks(max, 4, integer);
  const top = ticks[ticks.length - 1];
  // The left margin fits the longest y label (11 px text: about 6.2 px a
  // character).
  const m = { top: 12, right: 12, bottom: 34, left: Math.max(36, Math.ceil(Math.max(...ticks.map((t) => String(format(t)).length)) * 6.2) + 14) };
  const legend = series.length > 1;
  if (legend) m.top += 18;
  const pw = width - m.left - m.right;
  const ph = height - m.top - m.bottom;
  const y = (v) => m.top + ph - (v / top) * ph;
  const n = labels.length;
  const slot = n ? pw / n : pw;
  const xMid = (i) => m.left + slot * (i + 0.5);

  const summary = summarize(labels, series, format);
  const children = [
    el('title', { id: `${id}-title` }, title),
    el('desc', { id: `${id}-desc` }, [desc, summary].filter(Boolean).join(' ')),
  ];
  // Y axis: grid lines and labels.
  const yAxis = el('g', { class: 'chart-y' }, ticks.map((t) => el('g', {},
    el('line', { x1: m.left, x2: width - m.right, y1: r(y(t)), y2: r(y(t)), class: 'chart-grid' }),
    el('text', { x: m.left - 6, y: r(y(t)), 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'chart-label' }, format(t)))));
  // X axis: as many labels as fit side by side (11 px text: about 6.2 px
  // a character), evenly thinned.
  const labelW = Math.max(...labels.map((l) => String(l).length), 1) * 6.2 + 10;
  const every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(pw / labelW))));
  const xAxis = el('g', { class: 'chart-x' },
    el('line', { x1: m.left, x2: width - m.right, y1: m.top + ph, y2: m.top + ph, class: 'chart-axis' }),
    labels.map((l, i) => (i % every === 0
      ? el('text', { x: r(xMid(i)), y: m.top + ph + 16, 'text-anchor': 'middle', class: 'chart-label' }, l)
      : null)));
  children.push(yAxis, xAxis);

  const marks = el('g', { class: 'chart-marks' });
  if (n && series.length) {
    if (kind === 'bar') {
      const groupW = Math.min(slot * 0.8, 48 * series.length); // few buckets: bars stay bars
      const barW = groupW / series.length;
      series.forEach((s, si) => {
        s.values.forEach((v, i) => {
          if (!Number.isFinite(v)) return;
          const x0 = xMid(i) - groupW / 2 + si * barW;
          const h = Math.max(0, (v / top) * ph);
          marks.children.push(el('rect', { x: r(x0), y: r(m.top + ph - h), width: r(Math.max(1, barW - 1)), height: r(h), fill: s.color || PALETTE[si % PALETTE.length], class: 'chart-bar' },
            el('title', {}, `${labels[i]}: ${series.length > 1 ? s.name + ' ' : ''}${format(v)}`)));
        });
      });
    } else {
      series.forEach((s, si) => {
        const color = s.color || PALETTE[si % PALETTE.length];
        let d = '';
        let pen = false;
        s.values.forEach((v, i) => {
          if (!Number.isFinite(v)) {
            pen = false;
            return;
          }
          d += `${pen ? 'L' : 'M'}${r(xMid(i))} ${r(y(v))}`;
          pen = true;
        });
        if (d) marks.children.push(el('path', { d, fill: 'none', stroke: color, 'stroke-width': 2, class: 'chart-line' }));
        s.values.forEach((v, i) => {
          if (!Number.isFinite(v)) return;
          marks.children.push(el('circle', { cx: r(xMid(i)), cy: r(y(v)), r: 2.5, fill: color, class: 'chart-point' },
            el('title', {}, `${labels[i]}: ${series.length > 1 ? s.name + ' ' : ''}${format(v)}`)));
        });
      });
    }
  }
  children.push(marks);
  if (!values.length) {
    children.push(el('text', { x: m.left + pw / 2, y: m.top + ph / 2, 'text-anchor': 'middle', class: 'chart-empty-text' }, 'No data in this period'));
  }
  if (legend) {
    let x = m.left;
    children.push(el('g', { class: 'chart-legend' }, series.map((s, si) => {
      const g = el('g', {},
        el('rect', { x, y: 2, width: 10, height: 10, fill: s.color || PALETTE[si % PALETTE.length] }),
        el('text', { x: x + 14, y: 11, class: 'chart-label' }, s.name));
      x += 24 + 7 * String(s.name).length;
      return g;
    })));
  }
  return el('svg', {
    xmlns: SVG_NS, viewBox: `0 0 ${width} ${height}`, role: 'img', class: `chart-svg chart-${kind}`,
    'aria-labelledby': `${id}-title ${id}-desc`, preserveAspectRatio: 'xMidYMid meet',
  }, children);
}

// summarize says in words what the chart shows, for screen readers.
function summarize(labels, series, format) {
  if (!labels.length) return 'No data.';
  const parts = series.map((s) => {
    const vals = s.values.filter((v) => Number.isFinite(v));
    if (!vals.length) return `${s.name}: no data`;
    return `${s.name}: latest ${format(vals[vals.length - 1])}, highest ${format(Math.max(...vals))}`;
  });
  return `${labels.length} points from ${labels[0]} to ${labels[labels.length - 1]}. ${parts.join('; ')}.`;
}

function r(v) {
  return Math.round(v * 10) / 10;
}

// renderSVG makes SVG elements of a tree in doc.
export function renderSVG(tree, doc = document) {
  if (typeof tree === 'string' || typeof tree === 'number') return doc.createTextNode(String(tree));
  const node = doc.createElementNS(SVG_NS, tree.tag);
  for (const [k, v] of Object.entries(tree.attrs)) {
    if (v != null && k !== 'xmlns') node.setAttribute(k, String(v));
  }
  for (const c of tree.children) node.appendChild(renderSVG(c, doc));
  return node;
}

// chart returns a box that holds the chart (see chartTree), drawn at the
// box's width (so that text keeps its size) and drawn again when that
// changes.
export function chart(opts) {
  const box = document.createElement('div');
  box.className = 'svg-chart-box';
  const id = opts.id || `chart${++seq}`;
  let last = 0;
  let seen = false;
  const ro = new ResizeObserver(() => draw());
  const draw = () => {
    if (box.isConnected) seen = true;
    else if (seen) {
      ro.disconnect(); // removed from the page for good
      return;
    }
    const w = Math.round(box.clientWidth);
    if (!w || w === last) return;
    last = w;
    box.replaceChildren(renderSVG(chartTree({ ...opts, id, width: w })));
  };
  ro.observe(box);
  return box;
}
