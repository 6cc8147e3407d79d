package app

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

type restreamTarget struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	URL       string `json:"url"`
	State     string `json:"state"`
	Error     string `json:"error"`
	BytesSent int64  `json:"bytes_sent"`
}

func (n *node) restreams(id string) map[string]restreamTarget {
	n.t.Helper()
	code, body := n.get("/v1/live-streams/"+id+"/restreams", testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("list restreams: %d %s", code, body)
	}
	var list struct {
		Data []restreamTarget `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		n.t.Fatal(err)
	}
	out := map[string]restreamTarget{}
	for _, r := range list.Data {
		out[r.Name] = r
	}
	return out
}

// TestRestream: a live stream with two restream targets, an RTMP server
// (the ffmpeg CLI listening, standing in for YouTube) and a server that
// hangs up on every connection. While ffmpeg publishes to Shoal the first
// receives the stream and shows live; the second shows failed with the reason, and a
// live_stream.restream.failed webhook is sent. The API never shows the
// targets' stream keys.
func TestRestream(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_INGEST_RESTREAM_ALLOW_PRIVATE=true") // the targets are on loopback
	ls := n.createStream("restream")
	hook := newReceiver(t)
	hook.register(n, "live_stream.restream.failed")

	port := freePort(t)
	out := filepath.Join(t.TempDir(), "target.flv")
	target := exec.Command("ffmpeg", "-v", "error", "-listen", "1", "-f", "flv", "-i",
		fmt.Sprintf("rtmp://127.0.0.1:%d/live2/platformkey", port), "-c", "copy", "-y", out)
	tout := &testutil.Buffer{}
	target.Stdout, target.Stderr = tout, tout
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	defer target.Process.Kill()
	targetDone := make(chan error, 1)
	go func() { targetDone <- target.Wait() }()

	// A target that hangs up on every connection (held by this test, so
	// no other test can take its port).
	refuser, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer refuser.Close()
	go func() {
		for {
			c, err := refuser.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	for name, url := range map[string]string{
		"ffmpeg": fmt.Sprintf("rtmp://127.0.0.1:%d/live2/platformkey", port),
		"down":   "rtmp://" + refuser.Addr().String() + "/app/otherkey",
	} {
		code, body := n.do(http.MethodPost, "/v1/live-streams/"+ls.ID+"/restreams", testAdminKey, map[string]string{"name": name, "url": url})
		if code != http.StatusCreated || strings.Contains(string(body), "platformkey") || strings.Contains(string(body), "otherkey") {
			t.Fatalf("add target %s: %d %s", name, code, body)
		}
	}
	code, body := n.do(http.MethodPost, "/v1/live-streams/"+ls.ID+"/restreams", testAdminKey, map[string]string{"name": "bad", "url": "http://example.com/x"})
	if code != http.StatusBadRequest {
		t.Fatalf("an http:// target: %d %s", code, body)
	}

	pub := publish(t, clip(t, 8), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	n.waitFor("the ffmpeg target live and the other failed", 20*time.Second, func() bool {
		r := n.restreams(ls.ID)
		return r["ffmpeg"].State == "live" && r["down"].State == "failed"
	})
	r := n.restreams(ls.ID)
	if r["down"].Error == "" || strings.Contains(r["down"].Error, "otherkey") || strings.Contains(r["down"].URL, "otherkey") {
		t.Errorf("failed target: %+v", r["down"])
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	select {
	case err := <-targetDone:
		if err != nil {
			t.Fatalf("the ffmpeg target: %v\n%s", err, tout.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the ffmpeg target did not end after the stream ended")
	}
	if v := probeVideo(t, out); !strings.HasPrefix(v, "h264") {
		t.Errorf("target received %q, want h264", v)
	}
	if d := probeDuration(t, out); d < 6 || d > 9 {
		t.Errorf("target received %.2f s of an 8 s stream", d)
	}
	n.waitFor("the restream.failed webhook", 20*time.Second, func() bool {
		return hook.count("live_stream.restream.failed", ls.ID) >= 1
	})
	if got := hook.count("live_stream.restream.failed", ls.ID); got != 1 {
		t.Errorf("%d restream.failed deliveries for one failing target, want 1", got)
	}
	// Deleting a target.
	if code, body := n.do(http.MethodDelete, "/v1/live-streams/"+ls.ID+"/restreams/"+r["down"].ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("delete target: %d %s", code, body)
	}
	if _, ok := n.restreams(ls.ID)["down"]; ok {
		t.Error("the deleted target is still listed")
	}
}
