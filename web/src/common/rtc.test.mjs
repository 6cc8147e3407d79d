// Unit tests of closeAfter (node --test; `go test ./web/` runs them too).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeAfter } from './rtc.js';

// fakePC counts close() calls and resolves closed on the first.
function fakePC() {
  const pc = { closes: 0 };
  pc.closed = new Promise((resolve) => {
    pc.close = () => {
      pc.closes++;
      resolve();
    };
  });
  return pc;
}

test('closeAfter closes the connection only once the DELETE has answered', async () => {
  const pc = fakePC();
  let answer;
  const ended = new Promise((resolve) => { answer = resolve; });
  closeAfter(pc, ended, 60_000);
  // Let every pending microtask and timer of this turn run.
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(pc.closes, 0, 'closed before the server answered the DELETE');
  answer();
  await pc.closed;
  assert.equal(pc.closes, 1);
});

test('closeAfter closes the connection when the DELETE never answers', async () => {
  const pc = fakePC();
  closeAfter(pc, new Promise(() => {}), 5);
  await pc.closed;
  assert.equal(pc.closes, 1);
});

test('closeAfter tolerates a connection that is already closed', async () => {
  let calls = 0;
  const pc = { close() { calls++; throw new Error('InvalidStateError'); } };
  closeAfter(pc, Promise.resolve(), 60_000);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(calls, 1);
});
