package app

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// TestLiveOverSRT: the ffmpeg CLI publishes MPEG-TS to the live stream's
// ingest.srt_url; the stream goes live, HLS appears, and the recording
// lasts as long as the clip. A wrong key is refused at the handshake.
func TestLiveOverSRT(t *testing.T) {
	t.Parallel()
	n := startNode(t, fmt.Sprintf("SHOAL_SRT_ADDR=127.0.0.1:%d", testutil.FreeUDPPair(t)))
	ls := n.createStream("srt")
	if !strings.HasPrefix(ls.Ingest.SRTURL, "srt://127.0.0.1:") || !strings.HasSuffix(ls.Ingest.SRTURL, "?streamid=publish:"+ls.StreamKey) {
		t.Fatalf("ingest.srt_url %q", ls.Ingest.SRTURL)
	}
	cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip(t, 6), "-c", "copy", "-f", "mpegts", ls.Ingest.SRTURL)
	out := &testutil.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if s := n.status(ls.ID); s != "live" {
		t.Fatalf("status while publishing = %q, want live", s)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ffmpeg publish: %v\n%s", err, out.String())
	}
	n.waitFor("ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	if d := probeDuration(t, ls.Playback.HLSURL); d < 5 || d > 7 {
		t.Fatalf("recording lasts %.3f s, want 6 ± 1", d)
	}
	bad := strings.Replace(ls.Ingest.SRTURL, ls.StreamKey, "sk_wrongwrongwrongwrongwrongwrongwr", 1)
	if b, err := exec.Command("ffmpeg", "-v", "error", "-i", clip(t, 1), "-c", "copy", "-f", "mpegts", bad).CombinedOutput(); err == nil {
		t.Fatalf("a wrong stream key was accepted\n%s", b)
	}
	_, metrics := n.get("/metrics", "")
	if metric(metrics, "shoal_ingest_refused_total", `reason="unknown_key"`) < 1 {
		t.Error("the wrong key's refusal was not counted")
	}
}
