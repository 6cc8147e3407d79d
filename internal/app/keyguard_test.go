package app

import (
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
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
