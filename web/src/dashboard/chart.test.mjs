// Unit tests of the SVG charts (node --test; `go test ./web/` runs them too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chartTree, niceTicks, renderSVG } from './chart.js';

// find returns the nodes of a tree with a tag (depth first).
function find(tree, tag, out = []) {
  if (typeof tree !== 'object') return out;
  if (tree.tag === tag) out.push(tree);
  for (const c of tree.children) find(c, tag, out);
  return out;
}
const text = (node) => node.children.filter((c) => typeof c === 'string').join('');

test('niceTicks spans the maximum in round steps from 0', () => {
  assert.deepEqual(niceTicks(100), [0, 25, 50, 75, 100]);
  assert.deepEqual(niceTicks(7), [0, 2, 4, 6, 8]);
  assert.deepEqual(niceTicks(0.031), [0, 0.01, 0.02, 0.03, 0.04]);
  assert.deepEqual(niceTicks(0), [0, 1]);
  assert.deepEqual(niceTicks(NaN), [0, 1]);
  // Counts: whole-number steps.
  assert.deepEqual(niceTicks(1, 4, true), [0, 1]);
  assert.deepEqual(niceTicks(3, 4, true), [0, 1, 2, 3]);
  assert.deepEqual(niceTicks(10, 4, true), [0, 5, 10]);
  assert.deepEqual(niceTicks(100, 4, true), [0, 50, 100]);
  assert.deepEqual(niceTicks(7, 4, true), [0, 2, 4, 6, 8]);
  for (const max of [1, 3, 9.5, 1234, 5e9]) {
    const t = niceTicks(max);
    assert.ok(t[t.length - 1] >= max && t.length <= 7, `${max}: ${t}`);
  }
});

test('a bar chart is an accessible image with its title, a description of the data, axes and a bar per value', () => {
  const t = chartTree({ kind: 'bar', id: 'c1', title: 'Credited bytes per epoch', desc: 'Bytes viewers and audits confirmed.',
    labels: ['12-05 06:00', '12-05 07:00', '12-05 08:00'], series: [{ name: 'Credited', values: [100, 0, 300] }], format: (v) => `${v} B` });
  assert.equal(t.tag, 'svg');
  assert.equal(t.attrs.role, 'img');
  assert.equal(t.attrs['aria-labelledby'], 'c1-title c1-desc');
  assert.equal(text(find(t, 'title').find((n) => n.attrs.id === 'c1-title')), 'Credited bytes per epoch');
  const desc = text(find(t, 'desc')[0]);
  assert.match(desc, /^Bytes viewers and audits confirmed\. 3 points from 12-05 06:00 to 12-05 08:00\. Credited: latest 300 B, highest 300 B\.$/);
  const bars = find(t, 'rect').filter((r) => r.attrs.class === 'chart-bar');
  assert.equal(bars.length, 3);
  // Heights are proportional to the values; the tallest reaches the top tick (300).
  assert.equal(bars[1].attrs.height, 0);
  assert.ok(Math.abs(bars[2].attrs.height - 3 * bars[0].attrs.height) < 0.5, `${bars[0].attrs.height} ${bars[2].attrs.height}`);
  assert.equal(text(find(bars[2], 'title')[0]), '12-05 08:00: 300 B');
  const labels = find(t, 'text').map(text);
  for (const l of ['0 B', '100 B', '300 B', '12-05 06:00', '12-05 08:00']) assert.ok(labels.includes(l), `axis label ${l} in ${labels}`);
  // One series: no legend.
  assert.equal(find(t, 'g').filter((g) => g.attrs.class === 'chart-legend').length, 0);
});

test('bars of a chart with few buckets stay narrow', () => {
  const t = chartTree({ kind: 'bar', title: 'One epoch', width: 1000, labels: ['12-05 07:00'], series: [{ name: 'Credited', values: [5] }, { name: 'Claimed', values: [9] }] });
  const bars = find(t, 'rect').filter((r) => r.attrs.class === 'chart-bar');
  assert.equal(bars.length, 2);
  for (const b of bars) assert.ok(b.attrs.width <= 48, `bar ${b.attrs.width} wide`);
});

test('a line chart breaks its line at missing values and has a legend for several series', () => {
  const t = chartTree({ kind: 'line', title: 'Startup time', labels: ['a', 'b', 'c', 'd'],
    series: [{ name: 'p50', values: [100, null, 200, 250] }, { name: 'p95', values: [400, 500, 600, 700] }], format: (v) => `${v} ms` });
  const paths = find(t, 'path');
  assert.equal(paths.length, 2);
  assert.equal((paths[0].attrs.d.match(/M/g) || []).length, 2, paths[0].attrs.d);
  assert.equal((paths[1].attrs.d.match(/M/g) || []).length, 1);
  assert.equal((paths[1].attrs.d.match(/L/g) || []).length, 3);
  assert.equal(find(t, 'circle').length, 7);
  const legend = find(t, 'g').find((g) => g.attrs.class === 'chart-legend');
  assert.deepEqual(find(legend, 'text').map(text), ['p50', 'p95']);
  assert.match(text(find(t, 'desc')[0]), /p50: latest 250 ms, highest 250 ms; p95: latest 700 ms, highest 700 ms/);
});

test('an empty chart says so and draws no marks', () => {
  const t = chartTree({ kind: 'bar', title: 'Views', labels: [], series: [{ name: 'Views', values: [] }] });
  assert.equal(find(t, 'rect').length, 0);
  assert.ok(find(t, 'text').some((n) => text(n) === 'No data in this period'));
  assert.match(text(find(t, 'desc')[0]), /No data\./);
});

test('x labels are thinned to those that fit side by side', () => {
  const xLabels = (labels, width) => {
    const t = chartTree({ kind: 'bar', title: 'Views', labels, width, series: [{ name: 'Views', values: labels.map((_, i) => i) }] });
    const x = find(t, 'g').find((g) => g.attrs.class === 'chart-x');
    return find(x, 'text');
  };
  const hours = Array.from({ length: 24 }, (_, i) => `${String(i).padStart(2, '0')}:00`);
  for (const [labels, width] of [[hours, 600], [hours, 300], [hours.map((h) => `12-04 ${h}`), 600], [hours.map((h) => `12-04 ${h}`), 300]]) {
    const shown = xLabels(labels, width);
    assert.equal(text(shown[0]), labels[0]);
    assert.ok(shown.length >= 2, `${width}: ${shown.map(text)}`);
    // Neighbours are at least a label's width apart (about 6.2 px a character).
    for (let i = 1; i < shown.length; i++) {
      assert.ok(shown[i].attrs.x - shown[i - 1].attrs.x >= labels[0].length * 6.2, `${width}: ${shown.map((n) => n.attrs.x)}`);
    }
  }
  assert.equal(xLabels(hours, 1200).length, 24);
  assert.equal(xLabels(hours.slice(0, 3), 300).length, 3);
});

test('the left margin fits the longest y label', () => {
  const short = chartTree({ kind: 'bar', title: 't', labels: ['a'], series: [{ name: 's', values: [3] }], format: String });
  const long = chartTree({ kind: 'bar', title: 't', labels: ['a'], series: [{ name: 's', values: [3] }], format: (v) => `${v} minutes and more` });
  const y = (t) => find(t, 'text').find((n) => n.attrs['text-anchor'] === 'end');
  assert.ok(y(long).attrs.x >= '4 minutes and more'.length * 6.2, `label ends at ${y(long).attrs.x}`);
  assert.ok(y(short).attrs.x < y(long).attrs.x);
});

test('renderSVG makes SVG elements, with text as text nodes', () => {
  const made = [];
  const doc = {
    createElementNS(ns, tag) {
      const n = { ns, tag, attrs: {}, kids: [], setAttribute(k, v) { this.attrs[k] = v; }, appendChild(c) { this.kids.push(c); return c; } };
      made.push(n);
      return n;
    },
    createTextNode(s) { return { text: s }; },
  };
  const svg = renderSVG(chartTree({ kind: 'bar', id: 'x', title: '<b>not markup</b>', labels: ['a'], series: [{ name: 's', values: [1] }] }), doc);
  assert.equal(svg.ns, 'http://www.w3.org/2000/svg');
  assert.equal(svg.attrs.role, 'img');
  assert.equal(svg.attrs.xmlns, undefined);
  const title = made.find((n) => n.tag === 'title' && n.attrs.id === 'x-title');
  assert.deepEqual(title.kids, [{ text: '<b>not markup</b>' }]);
  assert.ok(made.every((n) => n.ns === 'http://www.w3.org/2000/svg'));
});
