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

var fragCases = []struct {
	name string
	body string
	n    int
	end  bool
	err  bool
}{
	{"one candidate", "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n", 1, false, false},
	{"end", "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=end-of-candidates\r\n", 0, true, false},
	{"two media", "a=mid:0\na=candidate:1 1 udp 1 192.0.2.1 1 typ host\na=mid:1\na=candidate:2 1 udp 1 192.0.2.1 2 typ host\n", 2, false, false},
	{"short candidate", "a=candidate:1 1 udp\r\n", 0, false, true},
	{"garbage", "hello\r\n", 0, false, true},
	{"empty", "", 0, false, false},
}

func TestParseFragment(t *testing.T) {
	for _, c := range fragCases {
		f, err := parseFragment([]byte(c.body))
		if (err != nil) != c.err {
			t.Errorf("%s: err = %v", c.name, err)
			continue
		}
		if err == nil && (len(f.candidates) != c.n || f.end != c.end) {
			t.Errorf("%s: %d candidates, end %v", c.name, len(f.candidates), f.end)
		}
	}
	f, _ := parseFragment([]byte(fragCases[2].body))
	if f.candidates[0].mid != "0" || f.candidates[1].mid != "1" || f.candidates[1].value != "candidate:2 1 udp 1 192.0.2.1 2 typ host" {
		t.Errorf("candidates %+v", f.candidates)
	}
	if _, err := parseFragment(make([]byte, maxFragment+1)); err == nil {
		t.Error("an oversized fragment was accepted")
	}
}

func FuzzParseFragment(f *testing.F) {
	for _, c := range fragCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parseFragment(b)
		if err != nil {
			return
		}
		for _, c := range fr.candidates {
			if len(c.value) <= len("candidate:") {
				t.Fatalf("empty candidate from %q", b)
			}
		}
	})
}
