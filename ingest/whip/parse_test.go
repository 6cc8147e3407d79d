package whip

import (
	"fmt"
	"testing"

	"github.com/pion/webrtc/v4"
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

func TestRankOffered(t *testing.T) {
	h264 := func(pt webrtc.PayloadType, profile string) webrtc.RTPCodecParameters {
		return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile}, PayloadType: pt}
	}
	vp8 := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}
	av1 := webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000}, PayloadType: 45}
	// A browser's offer: VP8 first, AV1 (not taken), H.264 with its own
	// payload types, one of a profile the server does not list.
	offered := []webrtc.RTPCodecParameters{vp8, av1, h264(108, "42e01f"), h264(123, "f4001f"), h264(127, "4d001f")}
	got := rankOffered(offered, videoCodecs)
	var pts []webrtc.PayloadType
	for _, c := range got {
		pts = append(pts, c.PayloadType)
	}
	// H.264 first (the server's order, the offer's payload types), then
	// VP8, then the unlisted H.264 profile; AV1 dropped.
	want := []webrtc.PayloadType{108, 127, 96, 123}
	if fmt.Sprint(pts) != fmt.Sprint(want) {
		t.Fatalf("ranked payload types %v, want %v", pts, want)
	}
	if len(rankOffered([]webrtc.RTPCodecParameters{av1}, videoCodecs)) != 0 {
		t.Error("an offer with only AV1 has a codec in common")
	}
	if got := rankOffered([]webrtc.RTPCodecParameters{h264(102, "64001f")}, videoCodecs); len(got) != 1 || got[0].PayloadType != 102 {
		t.Errorf("an H.264-only offer (OBS): %+v", got)
	}
}
