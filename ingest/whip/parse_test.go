package whip

import (
	"testing"
)

var vp8Cases = []struct {
	name  string
	frame []byte
	key   bool
	w, h  int
	err   bool
}{
	{"inter frame", []byte{0x31, 0x02, 0x00, 0x01}, false, 0, 0, false},
	{"keyframe 640x480", []byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 0x00}, true, 640, 480, false},
	{"keyframe with scaling bits", []byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x42, 0xe0, 0xc1}, true, 640, 480, false},
	{"short tag", []byte{0x50}, false, 0, 0, true},
	{"short keyframe", []byte{0x50, 0x42, 0x00, 0x9d, 0x01}, false, 0, 0, true},
	{"no start code", []byte{0x50, 0x42, 0x00, 0x00, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01}, false, 0, 0, true},
	{"zero size", []byte{0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x00, 0x00, 0xe0, 0x01}, false, 0, 0, true},
}

func TestVP8Keyframe(t *testing.T) {
	for _, c := range vp8Cases {
		key, w, h, err := vp8Keyframe(c.frame)
		if (err != nil) != c.err || key != c.key || w != c.w || h != c.h {
			t.Errorf("%s: got key=%v %dx%d err=%v", c.name, key, w, h, err)
		}
	}
}

func FuzzVP8Keyframe(f *testing.F) {
	for _, c := range vp8Cases {
		f.Add(c.frame)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		key, w, h, err := vp8Keyframe(b)
		if err == nil && key && (w <= 0 || h <= 0 || w > 0x3fff || h > 0x3fff) {
			t.Fatalf("keyframe of %dx%d", w, h)
		}
		if err != nil && key {
			t.Fatal("an error and a keyframe")
		}
	})
}
