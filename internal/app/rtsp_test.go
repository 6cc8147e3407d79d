package app

import (
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// freeUDPPair finds an even UDP port whose successor is free too (RTP and
// RTCP).
func freeUDPPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port &^ 1
		c.Close()
		a, err1 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		b, err2 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		if err1 == nil && err2 == nil {
			return p
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}

// TestLiveOverRTSP: the ffmpeg CLI publishes to the live stream's
// ingest.rtsp_url over TCP, then over UDP; each time the stream goes live,
// HLS appears, and the recording lasts as long as the clip.
func TestLiveOverRTSP(t *testing.T) {
	t.Parallel()
	n := startNode(t, fmt.Sprintf("SHOAL_RTSP_ADDR=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("SHOAL_INGEST_RTSP_UDP_PORT=%d", freeUDPPair(t)))
	for _, transport := range []string{"tcp", "udp"} {
		ls := n.createStream("rtsp " + transport)
		if ls.Ingest.RTSPURL == "" || ls.Ingest.RTSPURL[:7] != "rtsp://" {
			t.Fatalf("ingest.rtsp_url %q", ls.Ingest.RTSPURL)
		}
		cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip(t, 6), "-c", "copy", "-f", "rtsp",
			"-rtsp_transport", transport, ls.Ingest.RTSPURL)
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
			t.Fatalf("%s: status while publishing = %q, want live", transport, s)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: ffmpeg publish: %v\n%s", transport, err, out.String())
		}
		n.waitFor("ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
		if d := probeDuration(t, ls.Playback.HLSURL); d < 5 || d > 7 {
			t.Fatalf("%s: recording lasts %.3f s, want 6 ± 1", transport, d)
		}
	}
	// One publisher per stream key, whatever the protocol: while RTMP
	// publishes, an RTSP publisher of the same key is refused.
	ls := n.createStream("rtmp first")
	pub := publish(t, clip(t, 20), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the RTMP publisher live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip(t, 6), "-c", "copy", "-f", "rtsp",
		"-rtsp_transport", "tcp", ls.Ingest.RTSPURL).CombinedOutput()
	if err == nil {
		t.Fatalf("a second publisher over RTSP was accepted\n%s", out)
	}
	code, metrics := n.get("/metrics", "")
	if code != 200 || metric(metrics, "shoal_ingest_bytes_total", `protocol="rtsp"`) == 0 {
		t.Fatal("no RTSP ingest bytes in /metrics")
	}
	if metric(metrics, "shoal_ingest_refused_total", `reason="already_publishing"`) < 1 {
		t.Fatal("the second publisher's refusal was not counted")
	}
}
