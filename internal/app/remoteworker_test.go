package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/remote"
	"github.com/shoal-video/shoal/transcode/vod"
)

// Remote VOD workers end to end: `shoal worker` with SHOAL_ORIGIN_URL, run
// as real processes (this test binary, see TestMain) on data dirs of their
// own, with no SHOAL_REDIS_URL (set, it is refused:
// TestRemoteWorkerConfigProblems); an origin (shoal dev) with no VOD
// worker of its own; ffprobe reading what the origin publishes.

// remoteWorker is a `shoal worker` process that joined an origin.
type remoteWorker struct {
	*workerProc
	dataDir string
	http    string
	env     []string
}

// startRemoteWorker runs this test binary as `shoal worker` joining n with
// token, on a data dir of its own.
func startRemoteWorker(t *testing.T, n *node, token string, extraEnv ...string) *remoteWorker {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	w := &remoteWorker{dataDir: dir, http: fmt.Sprintf("http://127.0.0.1:%d", port)}
	w.env = append([]string{
		"SHOAL_ORIGIN_URL=" + n.http,
		"SHOAL_NODE_TOKEN=" + token,
		"SHOAL_DATA_DIR=" + dir,
		// Unset (empty), whatever the environment says: a remote worker
		// has no Redis.
		"SHOAL_REDIS_URL=",
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", port),
		"SHOAL_TRANSCODE_HWACCEL=none",
	}, extraEnv...)
	w.workerProc = startProc(t, "worker", w.env...)
	return w
}

// nodeTokenWithID issues a node token on n and returns it with its id.
func (n *node) nodeTokenWithID(name string) (token, id string) {
	n.t.Helper()
	code, b := n.do(http.MethodPost, "/v1/node-tokens", testAdminKey, map[string]string{"name": name})
	if code != http.StatusCreated {
		n.t.Fatalf("create node token: %d %s", code, b)
	}
	var tok struct {
		ID    string `json:"id"`
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tok)
	return tok.Token, tok.ID
}

// joinedWorker is a joined worker's entry in GET /v1/nodes.
type joinedWorker struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Region    string `json:"region"`
	PublicURL string `json:"public_url"`
	State     string `json:"state"`
	// QuarantineReason is why the node is quarantined.
	QuarantineReason string                 `json:"quarantine_reason"`
	Transcode        *nodeproto.Transcoding `json:"transcode"`
	Jobs             *struct {
		Done             int64  `json:"done"`
		Rejected         int64  `json:"rejected"`
		Failed           int64  `json:"failed"`
		SegmentsVerified int64  `json:"segments_verified"`
		VerifyFailed     int64  `json:"verify_failed"`
		VerifyErrors     int64  `json:"verify_errors"`
		TranscodedPixels int64  `json:"transcoded_pixels"`
		LastRejection    string `json:"last_rejection"`
	} `json:"jobs"`
}

// joinedWorkers are the joined workers GET /v1/nodes lists (not the
// announced ones: those have no "jobs").
func (n *node) joinedWorkers() map[string]joinedWorker {
	n.t.Helper()
	code, b := n.get("/v1/nodes", testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("GET /v1/nodes: %d %s", code, b)
	}
	var out struct {
		Data []joinedWorker `json:"data"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		n.t.Fatal(err)
	}
	m := map[string]joinedWorker{}
	for _, d := range out.Data {
		if d.Role == "worker" && d.Jobs != nil {
			m[d.ID] = d
		}
	}
	return m
}

// filesUnder lists the files below dir, relative to it.
func filesUnder(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// A remote worker, joined with a node token, measures its capacity and
// shows in /v1/nodes with it; an upload to an origin that transcodes
// nothing itself becomes ready through it: the HLS plays with the
// ladder's rungs and the source's duration, its manifests are signed by
// the origin, the worker never touched Redis and keeps nothing of the job,
// and no viewer is routed to it.
func TestRemoteWorkerVOD(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0")
	token, tokenID := n.nodeTokenWithID("gpu box")
	w := startRemoteWorker(t, n, token, "SHOAL_REGION=EU-West", "SHOAL_VOD_WORKERS=2")
	var me joinedWorker
	n.waitFor("the worker in /v1/nodes with its measured capacity", 90*time.Second, func() bool {
		for _, jw := range n.joinedWorkers() {
			me = jw
		}
		return me.Transcode != nil && me.Transcode.LaddersFrom == "measured"
	})
	if me.Region != "eu-west" || me.State != "active" || me.PublicURL != "" || me.Transcode.Encoder != "software" || me.Transcode.Decode != "cpu" ||
		me.Transcode.Ladders < 1 || me.Transcode.RealtimeX <= 0 || me.Transcode.GPUs == nil || me.Jobs.Done != 0 {
		t.Fatalf("the worker in /v1/nodes: %+v (transcode %+v)", me, me.Transcode)
	}
	if resp, err := http.Get(w.http + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the worker's /readyz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	src := testutil.MakeMP4(t, 854, 480, 10)
	v := n.createVideo("transcoded elsewhere")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT source: %d %s", code, body)
	}
	v = n.waitVideo(v.ID, 180*time.Second)
	if v.Status != "ready" || v.Progress != 100 || v.Error != "" || v.Attempts != 1 {
		t.Fatalf("video (want ready at the first attempt): %+v\nworker log:\n%s", v, w.stderr.String())
	}
	if len(v.Renditions) != 2 || v.Renditions[0].Name != "480p" || v.Renditions[0].Width != 854 || v.Renditions[1].Name != "360p" {
		t.Fatalf("renditions %+v, want 480p (854 wide) and 360p", v.Renditions)
	}
	if v.Duration == nil || *v.Duration < 9.5 || *v.Duration > 10.5 {
		t.Fatalf("duration %v, want 10 s", v.Duration)
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 9.5 || d > 10.5 {
		t.Fatalf("ffprobe measures %.3f s, want 10 ± 0.5", d)
	}
	for r, want := range map[string]string{"480p": "h264,854,480", "360p": "h264,642,360"} {
		if got := probeVideo(t, n.http+"/hls/"+v.ID+"/"+r+"/index.m3u8"); got != want {
			t.Errorf("rendition %s = %q, want %q", r, got, want)
		}
	}
	master := n.playlist(v.ID, "master.m3u8")
	for _, want := range []string{"480p/index.m3u8", "360p/index.m3u8", `TYPE=AUDIO`} {
		if !strings.Contains(master, want) {
			t.Errorf("master playlist lacks %q:\n%s", want, master)
		}
	}
	if code, b := n.get("/hls/"+v.ID+"/poster.jpg", ""); code != http.StatusOK || len(b) < 3 || b[0] != 0xff || b[1] != 0xd8 {
		t.Errorf("poster: %d, %d bytes", code, len(b))
	}
	// The origin signs the manifests of what the worker made, as always.
	code, body := n.get("/hls/"+v.ID+"/480p/manifest.txt", "")
	pub := n.contentKey()
	m, err := manifest.Verify(body, map[string]ed25519.PublicKey{manifest.KeyID(pub): pub})
	if code != http.StatusOK || err != nil || m.ID != v.ID || m.Rendition != "480p" || !m.Ended || len(m.Entries) < 6 {
		t.Fatalf("480p's signed manifest: %d %v %+v", code, err, m)
	}

	// The worker never opened Redis, keeps no output, and counts the job.
	if log := w.stderr.String(); strings.Contains(log, "component=redis") || strings.Contains(log, "component=storage") {
		t.Errorf("the remote worker used Redis or the media store:\n%s", log)
	}
	n.waitFor("the worker's scratch files to go", 10*time.Second, func() bool {
		return len(filesUnder(t, filepath.Join(w.dataDir, "work"))) == 0
	})
	for _, f := range filesUnder(t, w.dataDir) {
		if f != "node.key" && f != "shoal.lock" {
			t.Errorf("the worker's data dir keeps %s", f)
		}
	}
	if left := filesUnder(t, filepath.Join(n.dataDir, "work", "remote")); len(left) != 0 {
		t.Errorf("the origin's staging keeps %v", left)
	}
	if jw := n.joinedWorkers()[me.ID]; jw.Jobs == nil || jw.Jobs.Done != 1 || jw.Jobs.Rejected != 0 {
		t.Errorf("the worker's jobs in /v1/nodes: %+v", jw.Jobs)
	}
	// Viewers are never sent to a worker.
	var rt route
	code, body = n.get("/v1/route/"+v.ID+"?region=eu-west", "")
	if code != http.StatusOK || json.Unmarshal(body, &rt) != nil || rt.NodeID != "" || len(rt.Candidates) != 1 {
		t.Errorf("route with only a worker joined: %d %s", code, body)
	}
	if code, body := n.get("/metrics", ""); code != http.StatusOK || !strings.Contains(string(body), `shoal_vod_remote_jobs_total{outcome="ready"} 1`) {
		t.Errorf("/metrics lacks the remote job")
	}
	// Its token revoked, the worker stops, saying why.
	if code, _ := n.do(http.MethodDelete, "/v1/node-tokens/"+tokenID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("revoking the token: %d", code)
	}
	exited := make(chan error, 1)
	go func() { exited <- w.cmd.Wait() }()
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(w.stderr.String(), "the origin refused this node") {
			t.Errorf("the worker's exit with its token revoked: %v\n%s", err, w.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the worker did not stop within 30 s of its token's revocation")
	}
}

// A worker that joins an origin needs a node token: said before it starts.
func TestRemoteWorkerConfigProblems(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := []string{"SHOAL_DATA_DIR=" + t.TempDir(), "SHOAL_ORIGIN_URL=http://origin.example:8080"}
	if code := Main(t.Context(), []string{"worker"}, env, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "node_token (SHOAL_NODE_TOKEN) is required for a worker that joins an origin") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
	// A shared environment that sets both Redis and an origin is refused:
	// it is either a worker on the origin's Redis or a remote one.
	for _, redis := range []string{"SHOAL_REDIS_URL=redis://redis.internal:6379/0", "SHOAL_REDIS_URL=redis://127.0.0.1:6380/0"} {
		stderr.Reset()
		env := []string{"SHOAL_DATA_DIR=" + t.TempDir(), "SHOAL_ORIGIN_URL=https://origin.example", "SHOAL_NODE_TOKEN=nt_x", redis}
		if code := Main(t.Context(), []string{"worker"}, env, &stdout, &stderr); code != 2 ||
			!strings.Contains(stderr.String(), "redis_url (SHOAL_REDIS_URL) and origin_url (SHOAL_ORIGIN_URL) are both set") {
			t.Fatalf("%s: exit %d:\n%s", redis, code, stderr.String())
		}
	}
	// Plain http only to a loopback origin: the token and the jobs would
	// cross the network in the clear.
	for _, tc := range []struct {
		origins string
		refused bool
	}{
		{"http://origin.example:8080", true},
		{"https://origin.example,http://10.0.0.2:8080", true},
		{"https://origin.example,http://127.0.0.1:8080,http://localhost:8080,http://[::1]:8080", false},
	} {
		stderr.Reset()
		env := []string{"SHOAL_DATA_DIR=" + t.TempDir(), "SHOAL_ORIGIN_URL=" + tc.origins, "SHOAL_NODE_TOKEN=nt_x",
			"SHOAL_HTTP_ADDR=127.0.0.1:0", "SHOAL_TRANSCODE_HWACCEL=none"}
		if !tc.refused {
			// Accepted: it starts, and stops with its context.
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if code := Main(ctx, []string{"worker"}, env, &stdout, &stderr); code != 0 {
				t.Fatalf("%s: exit %d:\n%s", tc.origins, code, stderr.String())
			}
			continue
		}
		if code := Main(t.Context(), []string{"worker"}, env, &stdout, &stderr); code != 2 ||
			!strings.Contains(stderr.String(), "a remote worker talks to its origins over https:// only") {
			t.Fatalf("%s: exit %d:\n%s", tc.origins, code, stderr.String())
		}
	}
}

// strangerWorker is a worker this test plays itself, in process, with the
// real protocol client: honest or not, as each step needs.
type strangerWorker struct {
	t   *testing.T
	n   *node
	c   *nodeproto.Client
	key ed25519.PrivateKey
	id  string
	// stop ends its heartbeats (it leaves the registry once they age).
	stop func()
}

// joinStranger joins n as a worker with token and keeps heartbeating
// until the test ends (or the origin refuses it).
func joinStranger(t *testing.T, n *node, token string) *strangerWorker {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &nodeproto.Client{OriginURL: n.http, Token: token, Key: key}
	caps := nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 1, LaddersFrom: "configured"}
	r, err := c.Join(t.Context(), nodeproto.JoinRequest{Role: nodeproto.RoleWorker, Transcode: &caps})
	if err != nil {
		t.Fatalf("join as a worker: %v", err)
	}
	ctx, stop := context.WithCancel(t.Context())
	s := &strangerWorker{t: t, n: n, c: c, key: key, id: r.ID, stop: stop}
	tick := time.NewTicker(nodeproto.HeartbeatInterval)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if _, err := c.Heartbeat(ctx, r.ID, nodeproto.Heartbeat{Transcode: &caps}); errors.Is(err, nodeproto.ErrRefused) {
				return
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return s
}

// claim waits for a job.
func (s *strangerWorker) claim() nodeproto.WorkerJob {
	s.t.Helper()
	var job nodeproto.WorkerJob
	s.n.waitFor("a job to claim", 30*time.Second, func() bool {
		j, origin, ok, err := s.c.Claim(s.t.Context())
		if err != nil {
			s.t.Fatalf("claim: %v", err)
		}
		if ok && origin != s.n.http {
			s.t.Fatalf("claimed at %s", origin)
		}
		job = j
		return ok
	})
	return job
}

// keepAlive reports progress on job until the returned func is called,
// as a worker does while it works.
func (s *strangerWorker) keepAlive(job nodeproto.WorkerJob) func() {
	tick := time.NewTicker(300 * time.Millisecond)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = s.c.ReportProgress(s.t.Context(), s.n.http, job.Job, 50)
		}
	}()
	return func() { close(stop); <-done }
}

// upload sends every file of m from tree, honestly.
func (s *strangerWorker) upload(job nodeproto.WorkerJob, tree string, m nodeproto.Complete) {
	s.t.Helper()
	for _, f := range m.Files {
		if err := s.c.PutFile(s.t.Context(), s.n.http, job.Job, f.Path, filepath.Join(tree, filepath.FromSlash(f.Path)), f.SHA256); err != nil {
			s.t.Fatalf("upload %s: %v", f.Path, err)
		}
	}
}

// request sends a worker request signed with key (nil: unsigned) as node
// id; sum is the body's declared SHA-256 ("": its own).
func (s *strangerWorker) request(key ed25519.PrivateKey, id, method, target string, body []byte, sum string) (int, string, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.n.http+target, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.c.Token)
	if sum == "" {
		h := sha256.Sum256(body)
		sum = hex.EncodeToString(h[:])
	}
	if key != nil {
		nodeproto.SignWorkerRequest(req, key, target, sum, int64(len(body)), time.Now())
		req.Header.Set(nodeproto.NodeHeader, id+" "+strconv.FormatInt(time.Now().Unix(), 10))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &e)
	return resp.StatusCode, e.Error.Code, e.Error.Message
}

// putHeaders sends only the headers of a signed PUT declaring size bytes
// (the origin must answer before any byte of the body) and returns the
// answer's status.
func (s *strangerWorker) putHeaders(target string, size int64) int {
	s.t.Helper()
	sum := strings.Repeat("0", 64)
	req, _ := http.NewRequest(http.MethodPut, s.n.http+target, nil)
	req.Header.Set("Authorization", "Bearer "+s.c.Token)
	nodeproto.SignWorkerRequest(req, s.key, target, sum, size, time.Now())
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.n.http, "http://"))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", target, req.Host, size)
	for k, v := range req.Header {
		fmt.Fprintf(conn, "%s: %s\r\n", k, v[0])
	}
	fmt.Fprint(conn, "\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		s.t.Fatalf("the answer to a PUT of %d bytes: %v", size, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// honestOutput transcodes src for job as a remote worker does, into a
// directory of its own, and returns the tree and its manifest.
func honestOutput(t *testing.T, job nodeproto.WorkerJob, src string) (string, nodeproto.Complete) {
	t.Helper()
	ladder, err := media.ParseLadder(job.Ladder)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := vod.Settings{Backend: ffmpeg.BackendSoftware, Preset: job.Preset,
		SegmentDuration: time.Duration(job.SegmentDurationSeconds * float64(time.Second)), NewPackager: vodPackager, Log: slog.New(slog.DiscardHandler)}
	out, err := vod.TranscodeJob(t.Context(), s, job.VideoID, src, dir, ladder, func(float64) {})
	if err != nil {
		t.Fatalf("transcoding: %v", err)
	}
	tree := filepath.Join(dir, job.VideoID)
	m, err := remote.BuildManifest(tree, job.Job, out)
	if err != nil {
		t.Fatal(err)
	}
	return tree, m
}

// copyTree copies the output tree at src into a new directory, leaving out
// the files skip says to, and returns it.
func copyTree(t *testing.T, src string, skip func(rel string) bool) string {
	t.Helper()
	dst := t.TempDir()
	for _, rel := range filesUnder(t, src) {
		if skip(filepath.ToSlash(rel)) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, rel))
		if err != nil {
			t.Fatal(err)
		}
		_ = os.MkdirAll(filepath.Dir(filepath.Join(dst, rel)), 0o755)
		if err := os.WriteFile(filepath.Join(dst, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// keepLines rewrites the playlist at p keeping only the lines keep says to.
func keepLines(t *testing.T, p string, keep func(line string) bool) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if keep(l) {
			out = append(out, l)
		}
	}
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The origin refuses what a worker may not do, with the right status, and
// publishes nothing of it: an unsigned request, one signed with another
// key, one from a node that did not join; an upload with a path trick,
// one larger than a file may be, one whose bytes are not those declared;
// a completion whose manifest does not match what was uploaded, one with
// a rung missing, one with a rendition much shorter than the source (each
// fails its attempt, and the node's record counts it); everything from a
// worker whose token was revoked. Then an honest worker's completion of
// the same video publishes it.
func TestRemoteWorkerRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0", "SHOAL_VOD_MAX_ATTEMPTS=10", "SHOAL_VOD_IDLE_TIMEOUT=3s")
	token, tokenID := n.nodeTokenWithID("strangers")
	s := joinStranger(t, n, token)
	src := testutil.MakeMP4(t, 854, 480, 6)
	v := n.createVideo("refusals")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT source: %d %s", code, body)
	}
	notPublished := func(step string) {
		t.Helper()
		if code, _ := n.get("/hls/"+v.ID+"/master.m3u8", ""); code != http.StatusNotFound {
			t.Fatalf("%s: master.m3u8 answers %d, want 404 (nothing published)", step, code)
		}
		if got := n.video(v.ID); got.Status != "processing" {
			t.Fatalf("%s: the video is %+v, want processing", step, got)
		}
	}

	// Who may ask: the joined node, signing with its own key.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	claim := nodeproto.WorkerPrefix + "/claim"
	if code, errCode, msg := s.request(nil, "", http.MethodPost, claim, []byte(`{}`), ""); code != http.StatusUnauthorized {
		t.Errorf("an unsigned claim: %d %s %s", code, errCode, msg)
	}
	if code, errCode, msg := s.request(other, s.id, http.MethodPost, claim, []byte(`{}`), ""); code != http.StatusForbidden || !strings.Contains(msg, nodeproto.SignatureHeader) {
		t.Errorf("a claim signed with another key: %d %s %s", code, errCode, msg)
	}
	if code, errCode, _ := s.request(other, nodeproto.NodeID(other.Public().(ed25519.PublicKey)), http.MethodPost, claim, []byte(`{}`), ""); code != http.StatusNotFound || errCode != "unknown_node" {
		t.Errorf("a claim from a node that did not join: %d %s", code, errCode)
	}
	notPublished("after the refused claims")

	job := s.claim()
	if job.VideoID != v.ID || job.Attempt != 1 || job.SourceBytes == 0 || job.Ladder == "" {
		t.Fatalf("claimed %+v", job)
	}
	stop := s.keepAlive(job)
	// The source comes from the origin, whole.
	srcCopy := filepath.Join(t.TempDir(), "source")
	if err := s.c.FetchSource(t.Context(), n.http, job, srcCopy); err != nil {
		t.Fatalf("fetching the source: %v", err)
	}
	tree, honest := honestOutput(t, job, srcCopy)

	// Uploads: only the names of a VOD tree, no bigger than allowed, the
	// bytes declared.
	files := nodeproto.WorkerPrefix + "/jobs/" + job.Job + "/files/"
	for _, p := range []string{"../x.m4s", "480p/../../../x.m4s", "480p%2f..%2f..%2fx.m4s", "480p/run.sh", "480p/sub/x.m4s", "%2e%2e/master.m3u8"} {
		if code, errCode, msg := s.request(s.key, s.id, http.MethodPut, files+p, []byte("x"), ""); code != http.StatusBadRequest || errCode != nodeproto.CodeBadOutputPath {
			t.Errorf("PUT %s: %d %s %s", p, code, errCode, msg)
		}
	}
	if code := s.putHeaders(files+"480p/huge.m4s", nodeproto.MaxOutputFileBytes+1); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a PUT of a segment of %d bytes: %d, want 413", nodeproto.MaxOutputFileBytes+1, code)
	}
	if code := s.putHeaders(files+"480p/index.m3u8", nodeproto.MaxTextFileBytes+1); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a PUT of a playlist of %d bytes: %d, want 413", nodeproto.MaxTextFileBytes+1, code)
	}
	if code, errCode, msg := s.request(s.key, s.id, http.MethodPut, files+"poster.jpg", []byte("not the declared bytes"), strings.Repeat("a", 64)); code != http.StatusBadRequest || errCode != nodeproto.CodeHashMismatch {
		t.Errorf("a PUT whose bytes are not those declared: %d %s %s", code, errCode, msg)
	}

	// A manifest that does not match what was uploaded.
	s.upload(job, tree, honest)
	lying := honest
	lying.Files = append([]nodeproto.OutputFile{}, honest.Files...)
	for i, f := range lying.Files {
		if strings.HasSuffix(f.Path, ".m4s") {
			lying.Files[i].SHA256 = strings.Repeat("0", 64)
			break
		}
	}
	stop()
	rejected := func(step string, m nodeproto.Complete, want string) {
		t.Helper()
		_, err := s.c.Complete(t.Context(), n.http, m)
		var we *nodeproto.WorkerError
		if !errors.As(err, &we) || we.Status != http.StatusUnprocessableEntity || we.Code != nodeproto.CodeOutputRejected || !strings.Contains(we.Message, want) {
			t.Fatalf("%s: completing answered %v, want 422 output_rejected saying %q", step, err, want)
		}
		t.Logf("%s: %s", step, we.Message)
		notPublished(step)
	}
	rejected("a tampered hash", lying, "does not match the manifest")

	// A rung missing: 360p left out of the tree, the master and the manifest.
	job = s.claim()
	if job.Attempt != 2 {
		t.Fatalf("the second claim: %+v", job)
	}
	stop = s.keepAlive(job)
	missing := copyTree(t, tree, func(rel string) bool { return strings.HasPrefix(rel, "360p/") })
	keepLines(t, filepath.Join(missing, "master.m3u8"), func(l string) bool { return !strings.Contains(l, "360p") })
	out := routing.JobOutcome{Duration: honest.Duration()}
	for _, r := range honest.Renditions {
		if r.Name != "360p" {
			out.Renditions = append(out.Renditions, routing.VideoRendition{Name: r.Name, Width: r.Width, Height: r.Height, Bitrate: r.Bitrate})
		}
	}
	m, err := remote.BuildManifest(missing, job.Job, out)
	if err != nil {
		t.Fatal(err)
	}
	s.upload(job, missing, m)
	stop()
	rejected("a missing rung", m, "the ladder's rungs for a 854x480 source are 480p, 360p")

	// A rendition much shorter than the source: 480p keeps its first
	// segment only.
	job = s.claim()
	stop = s.keepAlive(job)
	seg := ""
	for _, l := range strings.Split(fileOf(t, tree, "480p/index.m3u8"), "\n") {
		if strings.HasSuffix(l, ".m4s") && seg == "" {
			seg = l
		}
	}
	short := copyTree(t, tree, func(rel string) bool {
		return strings.HasPrefix(rel, "480p/") && strings.HasSuffix(rel, ".m4s") && rel != "480p/"+seg
	})
	for _, pl := range []string{"index.m3u8", "recording.m3u8"} {
		keep := true
		keepLines(t, filepath.Join(short, "480p", pl), func(l string) bool {
			if strings.HasPrefix(l, "#EXTINF") || strings.HasPrefix(l, "#EXT-X-PROGRAM-DATE-TIME") {
				return keep
			}
			if strings.HasSuffix(l, ".m4s") {
				ok := keep && l == seg
				keep = false
				return ok
			}
			return true
		})
	}
	m, err = remote.BuildManifest(short, job.Job, routing.JobOutcome{Duration: honest.Duration()})
	if err != nil {
		t.Fatal(err)
	}
	m.Renditions = honest.Renditions
	s.upload(job, short, m)
	stop()
	rejected("a short rendition", m, "rendition 480p lasts")

	// The node's record counts the refusals.
	jw := n.joinedWorkers()[s.id]
	if jw.Jobs == nil || jw.Jobs.Rejected != 3 || jw.Jobs.Done != 0 || !strings.Contains(jw.Jobs.LastRejection, "rendition 480p lasts") {
		t.Errorf("the liar's record in /v1/nodes: %+v", jw.Jobs)
	}

	// A revoked token: nothing more from its worker.
	job = s.claim()
	if code, _ := n.do(http.MethodDelete, "/v1/node-tokens/"+tokenID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("revoking the token: %d", code)
	}
	if code, errCode, _ := s.request(s.key, s.id, http.MethodPut, nodeproto.WorkerPrefix+"/jobs/"+job.Job+"/files/master.m3u8", []byte("#EXTM3U\n"), ""); code != http.StatusUnauthorized {
		t.Errorf("an upload with a revoked token: %d %s", code, errCode)
	}
	honest.Job = job.Job
	if _, err := s.c.Complete(t.Context(), n.http, honest); !errors.Is(err, nodeproto.ErrRefused) {
		t.Errorf("completing with a revoked token: %v", err)
	}
	if _, _, _, err := s.c.Claim(t.Context()); !errors.Is(err, nodeproto.ErrRefused) {
		t.Errorf("claiming with a revoked token: %v", err)
	}
	notPublished("with a revoked token")

	// An honest worker takes the job over once the revoked one stopped
	// reporting, and its output is published.
	honestToken, _ := n.nodeTokenWithID("honest")
	h := joinStranger(t, n, honestToken)
	job = h.claim()
	if job.Attempt != 5 {
		t.Errorf("the honest claim is attempt %d, want 5", job.Attempt)
	}
	stop = h.keepAlive(job)
	h.upload(job, tree, honest)
	stop()
	honest.Job = job.Job
	if _, err := h.c.Complete(t.Context(), n.http, honest); err != nil {
		t.Fatalf("the honest completion: %v", err)
	}
	got := n.video(v.ID)
	if got.Status != "ready" || got.Attempts != 5 || len(got.Renditions) != 2 {
		t.Fatalf("the video after the honest completion: %+v", got)
	}
	if d := probeDuration(t, got.Playback.HLSURL); d < 5.5 || d > 6.5 {
		t.Fatalf("ffprobe measures %.3f s, want 6", d)
	}
	if jw := n.joinedWorkers()[h.id]; jw.Jobs == nil || jw.Jobs.Done != 1 || jw.Jobs.Rejected != 0 {
		t.Errorf("the honest worker's record: %+v", jw.Jobs)
	}
	if left := filesUnder(t, filepath.Join(n.dataDir, "work", "remote")); len(left) != 0 {
		t.Errorf("the origin's staging keeps %v", left)
	}
}

// fileOf reads the file rel of the tree at dir.
func fileOf(t *testing.T, dir, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A remote worker killed mid-job (kill -9) stops reporting progress: after
// the queue's idle timeout, the job goes to another remote worker, which
// finishes it; the video is ready once, after two attempts. The killed
// worker, started again on its data dir, clears what it left.
func TestRemoteWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0", "SHOAL_VOD_IDLE_TIMEOUT=3s")
	token, _ := n.nodeTokenWithID("two workers")
	// No self-benchmark: both take jobs at once.
	workers := []*remoteWorker{
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0"),
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0"),
	}
	n.waitFor("both workers in /v1/nodes", 30*time.Second, func() bool { return len(n.joinedWorkers()) == 2 })
	for _, jw := range n.joinedWorkers() {
		if jw.Transcode == nil || jw.Transcode.LaddersFrom != "configured" || jw.Transcode.Ladders != 1 {
			t.Errorf("a worker's transcode: %+v", jw.Transcode)
		}
	}
	src := testutil.MakeMP4(t, 854, 480, 20)
	v := n.createVideo("survives a dead remote worker")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	killed, other := n.killBusy(t, "a worker to make progress on the job", [2]*workerProc{workers[0].workerProc, workers[1].workerProc},
		func() bool { return n.video(v.ID).Progress >= 5 }, "processing video")
	victim := workers[0]
	if killed == workers[1].workerProc {
		victim = workers[1]
	}
	killedAt := time.Now()
	t.Logf("killed worker %d at %d%%", victim.cmd.Process.Pid, n.video(v.ID).Progress)
	v = n.waitVideo(v.ID, 180*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video after its worker died: %+v\nsurvivor log:\n%s", v, other.stderr.String())
	}
	t.Logf("ready %s after the kill, attempts %d", time.Since(killedAt).Round(time.Millisecond), v.Attempts)
	if v.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (the killed one and the takeover)", v.Attempts)
	}
	if !strings.Contains(other.stderr.String(), "processing video") || !strings.Contains(n.stderr.String(), "a remote worker took over a job from a worker that stopped") {
		t.Errorf("the survivor did not take the job over")
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 19.5 || d > 20.5 {
		t.Fatalf("ffprobe measures %.3f s, want 20", d)
	}
	if left := filesUnder(t, filepath.Join(n.dataDir, "work", "remote")); len(left) != 0 {
		t.Errorf("the origin's staging keeps %v", left)
	}
	// The dead worker left its scratch files (the source, at least);
	// started again on its data dir, it clears them before it claims
	// anything.
	if left := filesUnder(t, filepath.Join(victim.dataDir, "work")); len(left) == 0 {
		t.Errorf("the killed worker left no scratch files")
	}
	again := startProc(t, "worker", victim.env...)
	n.waitFor("the restarted worker to clear its scratch files", 30*time.Second, func() bool {
		return strings.Contains(again.stderr.String(), "remote VOD worker started") && len(filesUnder(t, filepath.Join(victim.dataDir, "work"))) == 0
	})
}

// With the media store on S3 (with keys), a remote worker fetches the
// source from a presigned URL of the bucket, never from the origin, and
// the video becomes ready.
func TestRemoteWorkerPresignedSource(t *testing.T) {
	t.Parallel()
	const access, secret = "SHOALREMOTEACCESS001", "shoal-remote-secret-key-0123456789abcdef"
	srv := s3test.StartWithCredentials(t, access, secret)
	n := startNode(t, append(s3Env(srv, "shoal-remote"), "SHOAL_STORAGE_ACCESS_KEY="+access, "SHOAL_STORAGE_SECRET_KEY="+secret,
		"SHOAL_VOD_WORKERS=0")...)
	token, _ := n.nodeTokenWithID("s3 worker")
	w := startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0")
	v := n.createVideo("from the bucket")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 640, 360, 4)); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	v = n.waitVideo(v.ID, 120*time.Second)
	if v.Status != "ready" || v.Attempts != 1 {
		t.Fatalf("video: %+v\nworker log:\n%s", v, w.stderr.String())
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 3.5 || d > 4.5 {
		t.Fatalf("ffprobe measures %.3f s, want 4", d)
	}
	// The video turns ready when the output is published; the worker
	// hears of it at its completion's answer, which may come after (a
	// loaded machine: the completion answered 202 first, sent again).
	var metrics []byte
	n.waitFor("the completion answered 200", 60*time.Second, func() bool {
		_, metrics = n.get("/metrics", "")
		return strings.Contains(string(metrics), `route="/v1/worker/jobs/:job/complete",status="200"`)
	})
	if strings.Contains(string(metrics), `route="/v1/worker/jobs/:job/source"`) {
		t.Errorf("the worker fetched the source from the origin, not the bucket")
	}
}

// A remote worker that stalls (SIGSTOP) past the idle timeout loses its
// job to another; when it wakes up, the origin answers its reports "gone"
// and it drops its work: nothing of it is published, the other's output
// is.
func TestRemoteWorkerStalledLosesJob(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0", "SHOAL_VOD_IDLE_TIMEOUT=3s")
	token, _ := n.nodeTokenWithID("two workers")
	workers := []*remoteWorker{
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0"),
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0"),
	}
	src := testutil.MakeMP4(t, 854, 480, 12)
	v := n.createVideo("outlives a stalled worker")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	var stalled, other *remoteWorker
	n.waitFor("a worker to take the job", 60*time.Second, func() bool {
		for i, w := range workers {
			if strings.Contains(w.stderr.String(), "processing video") {
				stalled, other = w, workers[1-i]
				return true
			}
		}
		return false
	})
	if err := stalled.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the other worker to take the job over", 60*time.Second, func() bool {
		return strings.Contains(other.stderr.String(), "processing video")
	})
	if err := stalled.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the stalled worker to drop the job", 60*time.Second, func() bool {
		return strings.Contains(stalled.stderr.String(), "the origin took the job away")
	})
	v = n.waitVideo(v.ID, 120*time.Second)
	if v.Status != "ready" || v.Attempts != 2 {
		t.Fatalf("video: %+v", v)
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 11.5 || d > 12.5 {
		t.Fatalf("ffprobe measures %.3f s, want 12", d)
	}
	jobs := n.joinedWorkers()
	if s, o := jobs[nodeIDOf(t, stalled)], jobs[nodeIDOf(t, other)]; s.Jobs == nil || o.Jobs == nil || s.Jobs.Done != 0 || o.Jobs.Done != 1 {
		t.Errorf("jobs: the stalled worker %+v, the other %+v", s.Jobs, o.Jobs)
	}
	n.waitFor("the stalled worker's scratch files to go", 10*time.Second, func() bool {
		return len(filesUnder(t, filepath.Join(stalled.dataDir, "work"))) == 0
	})
}

// nodeIDOf is the node id of the remote worker w (from its key).
func nodeIDOf(t *testing.T, w *remoteWorker) string {
	t.Helper()
	key, err := playback.LoadOrCreateKey(filepath.Join(w.dataDir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	return nodeproto.NodeID(key.Public().(ed25519.PublicKey))
}

// The origins a heartbeat lists are learned only if a remote worker may
// talk to them: https, or plain http to loopback.
func TestRemoteWorkerLearnsSecureOriginsOnly(t *testing.T) {
	t.Parallel()
	got := workerOrigins([]string{"https://b.example", "http://c.example:8080", "http://127.0.0.1:8081", "http://10.1.2.3", "ftp://d.example"},
		slog.New(slog.DiscardHandler))
	if want := []string{"https://b.example", "http://127.0.0.1:8081"}; !slices.Equal(got, want) {
		t.Fatalf("workerOrigins = %q, want %q", got, want)
	}
}
