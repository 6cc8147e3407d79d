package app

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// TestKeyGuessingIsLimited: an address that sent too many wrong stream
// keys is refused on every protocol, before its key is checked, even the
// right one, and the encoder is told why; the refusals are counted.
func TestKeyGuessingIsLimited(t *testing.T) {
	t.Parallel()
	// One wrong key a minute: the allowance refills only after the test
	// (a minute), however slow the machine.
	n := startNode(t, "SHOAL_INGEST_MAX_KEY_FAILURES_PER_MINUTE=1")
	ls := n.createStream("guessing")
	file := clip(t, 1)
	rtmpPublish := func(key string) string {
		t.Helper()
		out, err := exec.Command("ffmpeg", "-v", "error", "-i", file, "-c", "copy", "-f", "flv", n.rtmp+"/"+key).CombinedOutput()
		if err == nil {
			t.Fatalf("publishing with key %q was accepted: %s", key, out)
		}
		return string(out)
	}
	if out := rtmpPublish("sk_wrongwrongwrongwrongwrongwrongwr"); !strings.Contains(out, "unknown stream key") {
		t.Fatalf("a wrong key: ffmpeg said %q, want unknown stream key", out)
	}
	// WHIP from the same address: 429 with Retry-After, without a check.
	req, err := http.NewRequest("POST", n.http+"/v1/whip", strings.NewReader("v=0\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer sk_wrongwrongwrongwrongwrongwrongwr")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("WHIP after the limit: %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Even the right key waits for the allowance to refill.
	if out := rtmpPublish(ls.StreamKey); !strings.Contains(out, "too many wrong stream keys") {
		t.Fatalf("the right key after the limit: ffmpeg said %q", out)
	}
	if s := n.status(ls.ID); s != "idle" {
		t.Fatalf("status %q after refused publishes", s)
	}
	n.waitFor("the refusals counted", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_ingest_refused_total", `reason="too_many_failures"`) >= 2
	})
}

// TestKeyGuessingLimitedOnRTSPAndSRT: the one guard covers RTSP and SRT
// too: after a wrong key over RTSP, the right key is held back over SRT
// and over RTSP, each refusal counted for its protocol.
func TestKeyGuessingLimitedOnRTSPAndSRT(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_INGEST_MAX_KEY_FAILURES_PER_MINUTE=1",
		fmt.Sprintf("SHOAL_RTSP_ADDR=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("SHOAL_SRT_ADDR=127.0.0.1:%d", testutil.FreeUDPPair(t)))
	ls := n.createStream("guessing")
	if ls.Ingest.RTSPURL == "" || ls.Ingest.SRTURL == "" {
		t.Fatalf("ingest URLs %+v", ls.Ingest)
	}
	file := clip(t, 1)
	run := func(format, url string) {
		t.Helper()
		if out, err := exec.Command("ffmpeg", "-v", "error", "-i", file, "-c", "copy", "-f", format, url).CombinedOutput(); err == nil {
			t.Fatalf("publishing to %s was accepted: %s", url, out)
		}
	}
	const wrong = "sk_wrongwrongwrongwrongwrongwrongwr"
	run("rtsp", strings.Replace(ls.Ingest.RTSPURL, ls.StreamKey, wrong, 1))
	run("mpegts", ls.Ingest.SRTURL)
	run("rtsp", ls.Ingest.RTSPURL)
	_, m := n.get("/metrics", "")
	if v := metric(m, "shoal_ingest_refused_total", `protocol="rtsp",reason="unknown_key"`); v != 1 {
		t.Errorf("RTSP unknown_key refusals %v, want 1", v)
	}
	for _, proto := range []string{"srt", "rtsp"} {
		if v := metric(m, "shoal_ingest_refused_total", `protocol="`+proto+`",reason="too_many_failures"`); v < 1 {
			t.Errorf("%s too_many_failures refusals %v, want at least 1", proto, v)
		}
	}
	if s := n.status(ls.ID); s != "idle" {
		t.Fatalf("status %q after refused publishes", s)
	}
}
