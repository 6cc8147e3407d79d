package playerapi

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/remote"
)

// workerReq sends a worker-protocol request signed with signer as node
// id (nil signer: unsigned).
func (e *env) workerReq(t *testing.T, method, target, token string, body []byte, signer ed25519.PrivateKey, id string) response {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if signer != nil {
		sum := sha256.Sum256(body)
		nodeproto.SignWorkerRequest(req, signer, target, hex.EncodeToString(sum[:]), int64(len(body)), time.Now())
		if id != "" {
			req.Header.Set(nodeproto.NodeHeader, id+" "+strings.Fields(req.Header.Get(nodeproto.NodeHeader))[1])
		}
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

// Workers join with their transcode capabilities (refused when absurd, or
// from an edge), heartbeat them, and are listed with them and their jobs;
// the worker routes take only a live joined worker signing with its own
// key, never an edge nor a quarantined node; answers match the spec.
func TestWorkerJoinAndAuth(t *testing.T) {
	t.Parallel()
	sc := &schemaChecker{doc: parseSpec(t, openAPISpec)}
	e := newEnv(t, Config{})
	// The origin's side, on the env's store and files.
	jobs, err := remote.New(remote.Config{Files: e.files, Ladder: media.DefaultLadder, Preset: "veryfast", SegmentDuration: 2 * time.Second,
		IdleTimeout: 30 * time.Second, MaxAttempts: 3}, remote.Deps{Queue: e.store})
	if err != nil {
		t.Fatal(err)
	}
	// Without the origin's side, the worker routes are unavailable.
	k := newKey(t)
	if r := e.workerReq(t, "POST", "/v1/worker/claim", testAdminKey, []byte(`{}`), k, ""); r.status != http.StatusServiceUnavailable {
		t.Fatalf("a claim with no WorkerJobs: %d %s", r.status, r.body)
	}
	e = newEnvOn(t, Config{WorkerJobs: jobs}, e.redis)
	call := func(r response, path, method string, want int) response {
		t.Helper()
		sc.check(t, path, method, r)
		if r.status != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, r.status, r.body, want)
		}
		return r
	}

	caps := nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 2, LaddersFrom: "configured", Summary: "x264"}
	join := func(k ed25519.PrivateKey, role, url string, tc *nodeproto.Transcoding) response {
		j := joinBody(k, "eu-west", time.Now())
		j.Role, j.PublicURL, j.Transcode = role, url, tc
		return e.nodeReq(t, "/v1/nodes/join", testAdminKey, j, k)
	}
	call(join(k, "worker", "", &caps), "/v1/nodes/join", "POST", http.StatusCreated)
	id := nodeproto.NodeID(k.Public().(ed25519.PublicKey))
	absurd := caps
	absurd.Ladders = 1_000_000
	call(join(newKey(t), "worker", "", &absurd), "/v1/nodes/join", "POST", http.StatusBadRequest)
	edge := newKey(t)
	call(join(edge, "edge", "http://edge.test:8081", &caps), "/v1/nodes/join", "POST", http.StatusBadRequest)
	call(join(edge, "edge", "", nil), "/v1/nodes/join", "POST", http.StatusBadRequest)
	call(join(edge, "origin", "http://edge.test:8081", nil), "/v1/nodes/join", "POST", http.StatusBadRequest)
	call(join(edge, "edge", "http://edge.test:8081", nil), "/v1/nodes/join", "POST", http.StatusCreated)

	// A heartbeat changes what the worker says it transcodes with.
	measured := caps
	measured.Ladders, measured.LaddersFrom, measured.RealtimeX = 3, "measured", 2.5
	call(e.nodeReq(t, "/v1/nodes/"+id+"/heartbeat", testAdminKey, nodeproto.Heartbeat{Time: time.Now(), Transcode: &measured}, k),
		"/v1/nodes/{id}/heartbeat", "POST", http.StatusOK)
	// What the origin's re-checks of its outputs came to.
	if _, err := e.store.AddWorkerFigures(t.Context(), id, map[string]int64{routing.WorkSegmentsVerified: 12, routing.WorkVerifyFailed: 1,
		routing.WorkVerifyErrors: 2, routing.WorkPixels: 3_000_000}); err != nil {
		t.Fatal(err)
	}
	r := call(e.do(t, "GET", "/v1/nodes", testAdminKey, nil), "/v1/nodes", "GET", http.StatusOK)
	var list struct {
		Data []nodeJSON `json:"data"`
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Data {
		switch n.ID {
		case id:
			if n.Role != "worker" || n.PublicURL != "" || n.Transcode == nil || n.Transcode.Ladders != 3 || n.Transcode.LaddersFrom != "measured" ||
				n.Jobs == nil || n.Jobs.Done != 0 || n.Jobs.SegmentsVerified != 12 || n.Jobs.VerifyFailed != 1 || n.Jobs.VerifyErrors != 2 ||
				n.Jobs.TranscodedPixels != 3_000_000 {
				t.Errorf("the worker in /v1/nodes: %+v %+v", n, n.Transcode)
			}
		default:
			if n.Transcode != nil || n.Jobs != nil {
				t.Errorf("the edge in /v1/nodes: %+v", n)
			}
		}
	}
	// Never routed to: the only edge is.
	vid := decode[videoJSON](t, e.doJSON(t, "POST", "/v1/videos", testAdminKey, `{}`).wantStatus(t, http.StatusCreated)).ID
	rt := decode[routeJSON](t, e.do(t, "GET", "/v1/route/"+vid, "", nil).wantStatus(t, http.StatusOK))
	for _, c := range rt.Candidates {
		if c.NodeID == id {
			t.Errorf("a viewer was offered the worker: %+v", rt)
		}
	}

	// The worker routes.
	const claim = "/v1/worker/claim"
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), k, ""), claim, "POST", http.StatusNoContent)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), nil, ""), claim, "POST", http.StatusUnauthorized)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), newKey(t), id), claim, "POST", http.StatusForbidden)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), newKey(t), ""), claim, "POST", http.StatusNotFound)
	call(e.workerReq(t, "POST", claim, "nt_"+strings.Repeat("x", 32), []byte(`{}`), k, ""), claim, "POST", http.StatusUnauthorized)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{"wait":5}`), k, ""), claim, "POST", http.StatusBadRequest)
	call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), edge, ""), claim, "POST", http.StatusForbidden)
	const progress = "/v1/worker/jobs/{job}/progress"
	call(e.workerReq(t, "POST", "/v1/worker/jobs/"+vid+".1.1-0/progress", testAdminKey, []byte(`{"progress":5}`), k, ""), progress, "POST", http.StatusGone)
	call(e.workerReq(t, "POST", "/v1/worker/jobs/"+vid+".1.1-0/progress", testAdminKey, []byte(`{"progress":500}`), k, ""), progress, "POST", http.StatusBadRequest)
	call(e.workerReq(t, "POST", "/v1/worker/jobs/nonsense/progress", testAdminKey, []byte(`{"progress":5}`), k, ""), progress, "POST", http.StatusNotFound)
	const source = "/v1/worker/jobs/{job}/source"
	call(e.workerReq(t, "GET", "/v1/worker/jobs/"+vid+".1.1-0/source", testAdminKey, nil, k, ""), source, "GET", http.StatusGone)
	// Quarantined, a worker takes nothing.
	if err := e.store.QuarantineNode(t.Context(), id, "caught lying"); err != nil {
		t.Fatal(err)
	}
	r = call(e.workerReq(t, "POST", claim, testAdminKey, []byte(`{}`), k, ""), claim, "POST", http.StatusForbidden)
	if !strings.Contains(string(r.body), "quarantined") {
		t.Errorf("a quarantined worker's claim: %s", r.body)
	}
}

// Completions running at once are bounded: past maxCompletions, one is
// answered 503 before its body is read or its sender looked up.
func TestWorkerCompletionsBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	jobs, err := remote.New(remote.Config{Files: e.files, Ladder: media.DefaultLadder, Preset: "veryfast", SegmentDuration: 2 * time.Second,
		IdleTimeout: 30 * time.Second, MaxAttempts: 3}, remote.Deps{Queue: e.store})
	if err != nil {
		t.Fatal(err)
	}
	e = newEnvOn(t, Config{WorkerJobs: jobs}, e.redis)
	k := newKey(t)
	const target = "/v1/worker/jobs/abc.1.1-0/complete"
	for range maxCompletions {
		e.a.completions <- struct{}{}
	}
	if r := e.workerReq(t, "POST", target, testAdminKey, []byte(`{}`), k, ""); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("a completion past the bound: %d %s", r.status, r.body)
	}
	for range maxCompletions {
		<-e.a.completions
	}
	if r := e.workerReq(t, "POST", target, testAdminKey, []byte(`{}`), k, ""); r.status != http.StatusNotFound {
		t.Fatalf("a completion of an unknown node within the bound: %d %s", r.status, r.body)
	}
}

// TestStalledCompletionsTakeAtMostHalfTheSlots: completion bodies are read
// before their signature can be checked, so one node token's requests,
// however slowly they send their bodies, take at most half the slots:
// another token's worker still completes.
func TestStalledCompletionsTakeAtMostHalfTheSlots(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	jobs, err := remote.New(remote.Config{Files: e.files, Ladder: media.DefaultLadder, Preset: "veryfast", SegmentDuration: 2 * time.Second,
		IdleTimeout: 30 * time.Second, MaxAttempts: 3}, remote.Deps{Queue: e.store})
	if err != nil {
		t.Fatal(err)
	}
	e = newEnvOn(t, Config{WorkerJobs: jobs}, e.redis)
	caps := nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 1, LaddersFrom: "configured", Summary: "x264"}
	join := func(k ed25519.PrivateKey, token string) {
		j := joinBody(k, "eu-west", time.Now())
		j.Role, j.PublicURL, j.Transcode = "worker", "", &caps
		e.nodeReq(t, "/v1/nodes/join", token, j, k).wantStatus(t, http.StatusCreated)
	}
	stallTok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"stalls"}`).wantStatus(t, http.StatusCreated))
	otherTok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"others"}`).wantStatus(t, http.StatusCreated))
	staller, honest := newKey(t), newKey(t)
	join(staller, stallTok.Token)
	join(honest, otherTok.Token)
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	const target = "/v1/worker/jobs/abcdefghijklmnopqrst.1.1-0/complete"
	for range maxCompletions {
		req := httptest.NewRequest("POST", target, nil)
		nodeproto.SignWorkerRequest(req, staller, target, strings.Repeat("0", 64), 1<<20, time.Now())
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		// A megabyte announced, one byte sent.
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n%s: %s\r\n%s: %s\r\nContent-Length: %d\r\n\r\n{",
			target, stallTok.Token, nodeproto.NodeHeader, req.Header.Get(nodeproto.NodeHeader),
			nodeproto.SignatureHeader, req.Header.Get(nodeproto.SignatureHeader), 1<<20)
	}
	waitFor(t, "the stalled completions to take their slots", func() bool {
		e.a.completionsMu.Lock()
		defer e.a.completionsMu.Unlock()
		return e.a.completionsBy[stallTok.ID] == maxCompletionsPerToken
	})
	r := e.workerReq(t, "POST", target, otherTok.Token, []byte(`{}`), honest, "")
	if r.status == http.StatusServiceUnavailable {
		t.Fatalf("another token's worker, with one token's completions stalled: %d %s", r.status, r.body)
	}
}

// TestBodyFailures: a body past its bound is answered 413, one that came
// too slowly 408 (a worker sends it again), any other failure 400.
func TestBodyFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err    error
		status int
		code   string
	}{
		{&http.MaxBytesError{Limit: 10}, http.StatusRequestEntityTooLarge, codePayloadTooLarge},
		{fmt.Errorf("read: %w", os.ErrDeadlineExceeded), http.StatusRequestTimeout, codeRequestTimeout},
		{io.ErrUnexpectedEOF, http.StatusBadRequest, codeInvalidRequest},
	} {
		rec := httptest.NewRecorder()
		ctx, _ := gin.CreateTestContext(rec)
		bodyFailed(ctx, c.err, "too large")
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), `"`+c.code+`"`) {
			t.Errorf("%v: %d %s", c.err, rec.Code, rec.Body)
		}
	}
}

// TestSlowBodiesAreCutOff: a bounded body that comes slower than the
// minimum rate, after the grace, ends with an error instead of holding
// the request.
func TestSlowBodiesAreCutOff(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := readPaced(w, r, 1<<20, 200*time.Millisecond, 1<<20)
		got <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
	select {
	case err := <-got:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a stalled body: %v, want a timeout", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a stalled body held the request")
	}
	// One that comes whole is read whole.
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := readPaced(w, r, 1<<20, time.Second, 1<<10)
		if err == nil && len(b) != 300<<10 {
			err = fmt.Errorf("read %d bytes", len(b))
		}
		got <- err
	}))
	defer srv2.Close()
	resp, err := http.Post(srv2.URL, "application/json", bytes.NewReader(make([]byte, 300<<10)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-got; err != nil {
		t.Fatalf("a body sent at once: %v", err)
	}
}
