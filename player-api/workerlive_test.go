package playerapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/remote"
)

// streamReq sends a request whose body is signed as streamed
// (nodeproto.StreamSHA256, size -1), as a worker's renditions body is.
func (e *env) streamReq(t *testing.T, target string, body []byte, signer ed25519.PrivateKey) response {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	nodeproto.SignWorkerRequest(req, signer, target, nodeproto.StreamSHA256, -1, time.Now())
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// The live worker routes: unavailable with transcode.remote off; a joined
// worker's claim waits and answers 204, or the ladder handed to it; only
// that worker may read its source or post its renditions, the renditions
// signed as a streamed body and starting with their header; an assignment
// that ended is gone. Answers match the spec.
func TestWorkerLiveRoutes(t *testing.T) {
	t.Parallel()
	sc := &schemaChecker{doc: parseSpec(t, openAPISpec)}
	e := newEnv(t, Config{})
	k := newKey(t)
	if r := e.workerReq(t, "POST", "/v1/worker/live/claim", testAdminKey, []byte(`{}`), k, ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("a live claim with no WorkerLive: %d %s", r.status, r.body)
	}
	lo, err := remote.NewLiveOrigin(remote.LiveConfig{PollWait: 200 * time.Millisecond}, remote.LiveDeps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e = newEnvOn(t, Config{WorkerLive: lo}, e.redis)
	call := func(r response, path, method string, want int) response {
		t.Helper()
		sc.check(t, path, method, r)
		if r.status != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, want)
		}
		return r
	}
	caps := nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 1, LaddersFrom: "configured", Summary: "x264"}
	join := func(k ed25519.PrivateKey) string {
		j := joinBody(k, "eu-west", time.Now())
		j.Role, j.Transcode = "worker", &caps
		call(e.nodeReq(t, "/v1/nodes/join", testAdminKey, j, k), "/v1/nodes/join", "POST", http.StatusCreated)
		return nodeproto.NodeID(k.Public().(ed25519.PublicKey))
	}
	join(k)
	other := newKey(t)
	join(other)

	const claim = "/v1/worker/live/claim"
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), nil, ""), claim, "POST", http.StatusUnauthorized)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), k, ""), claim, "POST", http.StatusNoContent)

	// A claim in flight gets the ladder reserved for its worker.
	got := make(chan response, 1)
	go func() { got <- e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), k, "") }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	var rl interface{ Close() }
	for rl == nil {
		if time.Now().After(deadline) {
			t.Fatal("no worker to reserve")
		}
		<-tick.C
		if r, ok := lo.Reserve("live1", []string{nodeproto.NodeID(other.Public().(ed25519.PublicKey))}); ok {
			r.Start(nodeproto.LiveSource{Stream: "live1"})
			rl = r
		}
	}
	r := <-got
	if r.status == http.StatusNoContent { // the claim ended just before the reservation: the next one has it
		r = e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), k, "")
	}
	call(r, claim, "POST", http.StatusOK)
	var as nodeproto.LiveAssignment
	if err := json.Unmarshal(r.body, &as); err != nil || as.Check() != nil || as.Stream != "live1" {
		t.Fatalf("assignment %s: %v", r.body, err)
	}
	src := "/v1/worker/live/" + as.Assignment + "/source"
	out := "/v1/worker/live/" + as.Assignment + "/renditions"
	const srcPath, outPath = "/v1/worker/live/{assignment}/source", "/v1/worker/live/{assignment}/renditions"
	// Another worker may not touch it.
	call(e.workerReq(t, "GET", src, testAdminKey, nil, other, ""), srcPath, "GET", http.StatusForbidden)
	call(e.streamReq(t, out, nil, other), outPath, "POST", http.StatusForbidden)
	// The renditions are signed as a streamed body, not by their hash.
	var au bytes.Buffer
	if err := nodeproto.NewLiveWriter(&au, nil).WriteAU(&media.AccessUnit{Track: 0, PTS: 1, DTS: 1, Keyframe: true, Payload: [][]byte{{0x65, 1}}}); err != nil {
		t.Fatal(err)
	}
	call(e.workerReq(t, "POST", out, testAdminKey, au.Bytes(), k, ""), outPath, "POST", http.StatusForbidden)
	// A renditions body must start with its header.
	call(e.streamReq(t, out, au.Bytes(), k), outPath, "POST", http.StatusBadRequest)
	// Once the assignment ended, it is gone; a malformed one is not found.
	rl.Close()
	call(e.workerReq(t, "GET", src, testAdminKey, nil, k, ""), srcPath, "GET", http.StatusGone)
	call(e.streamReq(t, out, nil, k), outPath, "POST", http.StatusGone)
	call(e.workerReq(t, "GET", "/v1/worker/live/NOT-AN-ID/source", testAdminKey, nil, k, ""), srcPath, "GET", http.StatusNotFound)
}
