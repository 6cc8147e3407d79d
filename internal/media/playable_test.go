package media

import (
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/testutil"
)

func TestUnplayable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		want string // substring of the reason; "" = playable
	}{
		{"high 8-bit 4:2:0", []string{"-pix_fmt", "yuv420p"}, ""},
		{"baseline", []string{"-pix_fmt", "yuv420p", "-profile:v", "baseline"}, ""},
		{"10-bit 4:4:4", []string{"-pix_fmt", "yuv444p10le"}, "High 4:4:4"},
		{"4:4:4 8-bit", []string{"-pix_fmt", "yuv444p"}, "High 4:4:4"},
		{"10-bit 4:2:0", []string{"-pix_fmt", "yuv420p10le"}, "High 10"},
	} {
		got := Unplayable(Track{Codec: CodecH264, SPS: testutil.H264SPS(t, c.args...)})
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if got := Unplayable(Track{Codec: CodecAAC}); got != "" {
		t.Errorf("audio: %q", got)
	}
	if got := Unplayable(Track{Codec: CodecH264, SPS: []byte{0x67}}); got != "" {
		t.Errorf("a broken SPS: %q", got)
	}
}
