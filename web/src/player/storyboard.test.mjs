// Unit tests of the storyboard parser (node --test; `go test ./web/` runs
// them too, see node_test.go): sprites resolve against the track's URL,
// the playback token goes only to the track's own origin.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStoryboard, cueAt } from './storyboard.js';

const BASE = 'https://video.example.com/hls/abc/storyboard.vtt?token=T';

test('cues resolve against the track and carry the token', () => {
  const cues = parseStoryboard('WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nstoryboard-0.jpg#xywh=0,0,160,90\n\n00:00:01.000 --> 00:00:02.000\nstoryboard-0.jpg#xywh=160,0,160,90\n', BASE, 'T');
  assert.equal(cues.length, 2);
  assert.equal(cues[1].url, 'https://video.example.com/hls/abc/storyboard-0.jpg?token=T');
  assert.deepEqual([cues[1].x, cues[1].y, cues[1].w, cues[1].h], [160, 0, 160, 90]);
  assert.equal(cueAt(cues, 1.5), cues[1]);
});

test('a sprite of another origin is refused: the token stays home', () => {
  for (const ref of ['https://evil.example/storyboard-0.jpg', '//evil.example/storyboard-0.jpg', 'http://video.example.com/hls/abc/storyboard-0.jpg', 'data:image/jpeg;base64,AAAA']) {
    const cues = parseStoryboard(`WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n${ref}#xywh=0,0,160,90\n`, BASE, 'T');
    assert.deepEqual(cues, [], ref);
  }
});
