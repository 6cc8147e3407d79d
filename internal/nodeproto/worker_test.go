package nodeproto

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// The paths a worker may upload are those of a VOD tree, nothing else.
func TestCheckOutputPath(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		"master.m3u8", "poster.jpg", "storyboard.vtt", "storyboard-0.jpg", "storyboard-123456.jpg",
		"480p/index.m3u8", "480p/recording.m3u8", "480p/init-mxafli99-0-0.mp4", "480p/mxafli99-0-12.m4s",
		"audio/index.m3u8", "audio/mxafli99-0-0.m4s", "1080p/x.m4s",
	} {
		if err := CheckOutputPath(p); err != nil {
			t.Errorf("CheckOutputPath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{
		"", "/master.m3u8", "../master.m3u8", "480p/../master.m3u8", "480p/../../etc/passwd", "480p/./x.m4s",
		"480p//x.m4s", "480p/sub/x.m4s", "480P/x.m4s", "480p/x.M4S", "480p/x.m4s/", "480p/.x.m4s", "480p/-x.m4s",
		"480p/x.ts", "480p/dvr.m3u8", "480p/other.m3u8", "480p/manifest.txt", "480p/x.m4s\x00", "480p\\x.m4s",
		"master.m3u8.sh", "index.m3u8", "x.m4s", "poster.png", "storyboard-1234567.jpg", "storyboard-x.jpg",
		"480p/" + strings.Repeat("a", 65) + ".m4s", strings.Repeat("a", 65) + "/x.m4s", "%2e%2e/x.m4s", "ü/x.m4s",
	} {
		if err := CheckOutputPath(p); err == nil {
			t.Errorf("CheckOutputPath(%q) accepted it", p)
		}
	}
	if MaxFileBytes("480p/x.m4s") != MaxOutputFileBytes || MaxFileBytes("480p/index.m3u8") != MaxTextFileBytes {
		t.Error("MaxFileBytes")
	}
}

func TestJobRef(t *testing.T) {
	t.Parallel()
	ref := JobRef{VideoID: "abc123", Attempt: 2, Entry: "1733412345678-0"}
	got, err := ParseJobRef(ref.String())
	if err != nil || got != ref {
		t.Fatalf("ParseJobRef(%q) = %+v, %v", ref.String(), got, err)
	}
	for _, s := range []string{"", "abc123.0.1-0", "abc123.1.1", "ABC.1.1-0", "abc.1.1-0.x", "abc..1-0", "abc.12345.1-0", "a/b.1.1-0", "abc.1.1-0 "} {
		if _, err := ParseJobRef(s); err == nil {
			t.Errorf("ParseJobRef(%q) accepted it", s)
		}
	}
}

// A worker request's signature covers its method, target, node, time and
// body: any of them changed, it no longer verifies.
func TestWorkerRequestSignature(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Unix(1_800_000_000, 0)
	body := `{"progress":40}`
	sum := hexSHA256([]byte(body))
	req := httptest.NewRequest(http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", strings.NewReader(body))
	SignWorkerRequest(req, priv, "/v1/worker/jobs/abc.1.1-0/progress", sum, int64(len(body)), now)
	c, err := ParseNodeHeader(req.Header)
	if err != nil || c.ID != NodeID(pub) || !c.Time.Equal(now) {
		t.Fatalf("ParseNodeHeader: %+v, %v", c, err)
	}
	sig := req.Header.Get(SignatureHeader)
	if err := c.VerifyWorkerRequest(pub, http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", sum, int64(len(body)), sig); err != nil {
		t.Fatalf("the signature does not verify: %v", err)
	}
	for name, v := range map[string]func() error{
		"method": func() error {
			return c.VerifyWorkerRequest(pub, http.MethodPut, "/v1/worker/jobs/abc.1.1-0/progress", sum, 15, sig)
		},
		"target": func() error {
			return c.VerifyWorkerRequest(pub, http.MethodPost, "/v1/worker/jobs/abc.1.1-0/fail", sum, 15, sig)
		},
		"body": func() error {
			return c.VerifyWorkerRequest(pub, http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", EmptySHA256, 15, sig)
		},
		"size": func() error {
			return c.VerifyWorkerRequest(pub, http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", sum, 16, sig)
		},
		"key": func() error {
			return c.VerifyWorkerRequest(other.Public().(ed25519.PublicKey), http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", sum, 15, sig)
		},
		"time": func() error {
			later := ClaimedNode{ID: c.ID, Time: now.Add(time.Second), unix: now.Unix() + 1}
			return later.VerifyWorkerRequest(pub, http.MethodPost, "/v1/worker/jobs/abc.1.1-0/progress", sum, 15, sig)
		},
	} {
		if err := v(); err == nil {
			t.Errorf("changed %s: the signature still verifies", name)
		}
	}
	for _, h := range []string{"", c.ID, c.ID + " x", "short 1", c.ID + " -1", c.ID + " 1 2"} {
		hdr := http.Header{}
		if h != "" {
			hdr.Set(NodeHeader, h)
		}
		if _, err := ParseNodeHeader(hdr); err == nil {
			t.Errorf("ParseNodeHeader(%q) accepted it", h)
		}
	}
}

func validComplete() Complete {
	return Complete{
		Job: "abc123.1.1733412345678-0", DurationSeconds: 10,
		Renditions: []Rendition{{Name: "480p", Width: 854, Height: 480, Bitrate: 1_200_000}},
		Files: []OutputFile{
			{Path: "master.m3u8", Size: 10, SHA256: strings.Repeat("a", 64)},
			{Path: "480p/index.m3u8", Size: 10, SHA256: strings.Repeat("b", 64)},
		},
	}
}

func TestDecodeComplete(t *testing.T) {
	t.Parallel()
	good, _ := json.Marshal(validComplete())
	if _, err := DecodeComplete(good); err != nil {
		t.Fatalf("a valid manifest: %v", err)
	}
	for name, mod := range map[string]func(*Complete){
		"bad job":            func(c *Complete) { c.Job = "abc" },
		"no duration":        func(c *Complete) { c.DurationSeconds = 0 },
		"endless":            func(c *Complete) { c.DurationSeconds = 1e9 },
		"no rendition":       func(c *Complete) { c.Renditions = nil },
		"audio as rendition": func(c *Complete) { c.Renditions[0].Name = "audio" },
		"twice":              func(c *Complete) { c.Renditions = append(c.Renditions, c.Renditions[0]) },
		"tiny":               func(c *Complete) { c.Renditions[0].Width = 1 },
		"no bitrate":         func(c *Complete) { c.Renditions[0].Bitrate = 0 },
		"no file":            func(c *Complete) { c.Files = nil },
		"traversal":          func(c *Complete) { c.Files[1].Path = "480p/../../x.m4s" },
		"same path":          func(c *Complete) { c.Files[1].Path = "master.m3u8" },
		"negative size":      func(c *Complete) { c.Files[0].Size = -1 },
		"huge playlist":      func(c *Complete) { c.Files[0].Size = MaxTextFileBytes + 1 },
		"bad sha":            func(c *Complete) { c.Files[0].SHA256 = strings.Repeat("A", 64) },
	} {
		c := validComplete()
		mod(&c)
		b, _ := json.Marshal(c)
		if _, err := DecodeComplete(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, b := range []string{"", "null", "[]", `{"job":1}`, string(good) + "{}", `{"unknown":1}`} {
		if _, err := DecodeComplete([]byte(b)); err == nil {
			t.Errorf("DecodeComplete(%q) accepted it", b)
		}
	}
	if _, err := DecodeProgress([]byte(`{"progress":101}`)); err == nil {
		t.Error("progress 101 accepted")
	}
	if p, err := DecodeProgress([]byte(`{"progress":42}`)); err != nil || p.Progress != 42 {
		t.Errorf("progress 42: %+v %v", p, err)
	}
	if _, err := DecodeFailure([]byte(`{"error":"  "}`)); err == nil {
		t.Error("an empty failure accepted")
	}
	if _, err := DecodeFailure([]byte(`{"error":"` + strings.Repeat("x", MaxFailureMessage+1) + `"}`)); err == nil {
		t.Error("an overlong failure accepted")
	}
	if _, err := DecodeClaim([]byte(`{"wait":1}`)); err == nil {
		t.Error("a claim with an unknown field accepted")
	}
	for _, bad := range []string{`{"vod_busy":-1}`, `{"vod_busy":1025}`, `{"vod_busy":"2"}`} {
		if _, err := DecodeClaim([]byte(bad)); err == nil {
			t.Errorf("claim %s accepted", bad)
		}
	}
	if c, err := DecodeClaim([]byte(`{"vod_busy":2}`)); err != nil || c.VODBusy != 2 {
		t.Errorf("a claim with 2 VOD jobs: %+v %v", c, err)
	}
}

func TestTranscodingCheck(t *testing.T) {
	t.Parallel()
	good := Transcoding{Encoder: "nvenc", Decode: "cuda", Ladders: 8, LaddersFrom: "measured", RealtimeX: 12.5, Summary: "NVIDIA",
		GPUs: []GPU{{Index: 0, Name: "NVIDIA H100", NVDEC: []string{"h264", "hevc"}, NVENC: true, NVENCSessions: 8}}}
	if err := good.Check(); err != nil {
		t.Fatalf("a plausible claim: %v", err)
	}
	for name, mod := range map[string]func(*Transcoding){
		"encoder":  func(x *Transcoding) { x.Encoder = "magic" },
		"decode":   func(x *Transcoding) { x.Decode = "fpga" },
		"ladders":  func(x *Transcoding) { x.Ladders = 1_000_000 },
		"from":     func(x *Transcoding) { x.LaddersFrom = "trust me" },
		"realtime": func(x *Transcoding) { x.RealtimeX = -1 },
		"summary":  func(x *Transcoding) { x.Summary = strings.Repeat("x", 2000) },
		"gpus":     func(x *Transcoding) { x.GPUs = make([]GPU, 100) },
		"codec":    func(x *Transcoding) { x.GPUs[0].NVDEC = []string{"<script>"} },
	} {
		x := good
		x.GPUs = append([]GPU{}, good.GPUs...)
		x.GPUs[0].NVDEC = append([]string{}, good.GPUs[0].NVDEC...)
		mod(&x)
		if err := x.Check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestWorkerErrorMatches(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err    *WorkerError
		target error
		want   bool
	}{
		{&WorkerError{Status: 410, Code: CodeJobGone}, ErrJobGone, true},
		{&WorkerError{Status: 401, Code: "unauthorized"}, ErrRefused, true},
		{&WorkerError{Status: 403, Code: "quarantined"}, ErrRefused, true},
		{&WorkerError{Status: 403, Code: CodeNotYourJob}, ErrRefused, false},
		{&WorkerError{Status: 404, Code: "unknown_node"}, ErrUnknownNode, true},
		{&WorkerError{Status: 422, Code: CodeOutputRejected}, ErrJobGone, false},
	} {
		if got := errors.Is(c.err, c.target); got != c.want {
			t.Errorf("errors.Is(%v, %v) = %v", c.err, c.target, got)
		}
	}
}

// A source download that breaks resumes where it stopped (Range), signed
// every time; a presigned URL that fails falls back to the origin; a size
// other than the job's is an error.
func TestFetchSourceResumes(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("0123456789", 10_000))
	var ranges []string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := ParseNodeHeader(r.Header)
		if err != nil || c.VerifyWorkerRequest(pub, r.Method, r.URL.RequestURI(), EmptySHA256, 0, r.Header.Get(SignatureHeader)) != nil {
			http.Error(w, "unsigned", http.StatusForbidden)
			return
		}
		rng := r.Header.Get("Range")
		ranges = append(ranges, rng)
		if rng == "" {
			// Half, then the connection drops.
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(data[:50_000])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		if rng != "bytes=50000-" {
			http.Error(w, "unexpected range "+rng, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Range", "bytes 50000-99999/100000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[50_000:])
	}))
	defer origin.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "AccessDenied", http.StatusForbidden)
	}))
	defer broken.Close()
	c := &Client{Key: priv, Token: "nt_x"}
	job := WorkerJob{Job: "abc.1.1-0", SourceBytes: int64(len(data)), SourceURL: "/v1/worker/jobs/abc.1.1-0/source", SourcePresignedURL: broken.URL + "/bucket/videos/abc/source"}
	dst := t.TempDir() + "/source"
	if err := c.FetchSource(t.Context(), origin.URL, job, dst); err == nil {
		t.Fatal("the broken download succeeded")
	}
	if err := c.FetchSource(t.Context(), origin.URL, job, dst); err != nil {
		t.Fatalf("resuming: %v (ranges asked: %q)", err, ranges)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != string(data) || len(ranges) != 2 {
		t.Fatalf("got %d bytes after %q", len(got), ranges)
	}
	job.SourceBytes++
	if err := c.FetchSource(t.Context(), origin.URL, job, t.TempDir()+"/s2"); err == nil {
		t.Fatal("a source of another size was accepted")
	}
}

// A claimed job names the worker's files (its scratch directory, its
// output tree): a job whose video is not its JobRef's, or not an id, is
// refused, as a fake origin could otherwise point the worker's output out of
// its data dir ("../../..").
func TestClaimRefusesUnusableJob(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := WorkerJob{Job: "abc.2.1-0", VideoID: "abc", Attempt: 2, SourceBytes: 10, SourceURL: "/v1/worker/jobs/abc.2.1-0/source"}
	for _, tc := range []struct {
		name   string
		change func(j *WorkerJob)
	}{
		{"honest", func(*WorkerJob) {}},
		{"video out of the data dir", func(j *WorkerJob) { j.VideoID = "../../../.." }},
		{"another video", func(j *WorkerJob) { j.VideoID = "abd" }},
		{"an empty video", func(j *WorkerJob) { j.VideoID = "" }},
		{"a bad job", func(j *WorkerJob) { j.Job = "../abc.2.1-0" }},
		{"another attempt", func(j *WorkerJob) { j.Attempt = 3 }},
		{"no source", func(j *WorkerJob) { j.SourceURL = "" }},
		{"a negative size", func(j *WorkerJob) { j.SourceBytes = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			job := good
			tc.change(&job)
			origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(job)
			}))
			defer origin.Close()
			c := &Client{OriginURL: origin.URL, Key: priv, Token: "nt_x"}
			got, base, ok, err := c.Claim(t.Context())
			if tc.name == "honest" {
				if err != nil || !ok || base != origin.URL || got != job {
					t.Fatalf("Claim = %+v %q %v %v", got, base, ok, err)
				}
				return
			}
			if err == nil || ok || !strings.Contains(err.Error(), "unusable job") {
				t.Fatalf("Claim accepted %+v: %+v %v %v", job, got, ok, err)
			}
		})
	}
}

// The node's token and signature go to the origin only: an absolute
// source_url on another host (or port) is fetched without them, one on the
// origin itself is signed.
func TestFetchSourceCredentialsOnlyToOrigin(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("x", 1000))
	serve := func(seen chan<- http.Header) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
			_, _ = w.Write(data)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	originSeen, otherSeen := make(chan http.Header, 4), make(chan http.Header, 4)
	origin, other := serve(originSeen), serve(otherSeen)
	c := &Client{Key: priv, Token: "nt_secret"}
	job := WorkerJob{Job: "abc.1.1-0", VideoID: "abc", Attempt: 1, SourceBytes: int64(len(data)), SourceURL: other.URL + "/steal"}
	if err := c.FetchSource(t.Context(), origin.URL, job, t.TempDir()+"/source"); err != nil {
		t.Fatal(err)
	}
	h := <-otherSeen
	if h.Get("Authorization") != "" || h.Get(NodeHeader) != "" || h.Get(SignatureHeader) != "" {
		t.Fatalf("another host got the node's credentials: %v", h)
	}
	job.SourceURL = origin.URL + "/v1/worker/jobs/abc.1.1-0/source"
	if err := c.FetchSource(t.Context(), origin.URL, job, t.TempDir()+"/source"); err != nil {
		t.Fatal(err)
	}
	if h := <-originSeen; h.Get("Authorization") != "Bearer nt_secret" || h.Get(SignatureHeader) == "" {
		t.Fatalf("the origin's own absolute URL was not signed: %v", h)
	}
}

// A source larger than the worker takes, or than its free disk, is refused
// before a byte is fetched.
func TestFetchSourceBounded(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan struct{}, 4)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- struct{}{}
		http.Error(w, "no", http.StatusTeapot)
	}))
	defer origin.Close()
	job := WorkerJob{Job: "abc.1.1-0", VideoID: "abc", Attempt: 1, SourceBytes: 2 << 20, SourceURL: "/source"}
	c := &Client{Key: priv, Token: "nt_x", MaxSourceBytes: 1 << 20}
	if err := c.FetchSource(t.Context(), origin.URL, job, t.TempDir()+"/source"); err == nil || !strings.Contains(err.Error(), "more than the 1048576 this worker takes") {
		t.Fatalf("a source over the bound: %v", err)
	}
	job.SourceBytes = 1 << 60 // more than any disk
	c.MaxSourceBytes = 1 << 62
	if err := c.FetchSource(t.Context(), origin.URL, job, t.TempDir()+"/source"); err == nil || !strings.Contains(err.Error(), "free") {
		t.Fatalf("a source over the free disk: %v", err)
	}
	if len(asked) != 0 {
		t.Fatalf("%d requests were made", len(asked))
	}
}

// A resumed download answered 206 with another range than the one asked
// for starts over instead of appending the wrong bytes.
func TestFetchSourceChecksContentRange(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(strings.Repeat("0123456789", 1000))
	var ranges []string
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rng := r.Header.Get("Range")
		ranges = append(ranges, rng)
		if rng == "" {
			_, _ = w.Write(data)
			return
		}
		// The first half again, as if it were the second.
		w.Header().Set("Content-Range", "bytes 0-4999/10000")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(data[:5000])
	}))
	defer origin.Close()
	dst := t.TempDir() + "/source"
	if err := os.WriteFile(dst, data[:5000], 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Client{Key: priv, Token: "nt_x"}
	job := WorkerJob{Job: "abc.1.1-0", VideoID: "abc", Attempt: 1, SourceBytes: int64(len(data)), SourceURL: "/source"}
	if err := c.FetchSource(t.Context(), origin.URL, job, dst); err == nil || !strings.Contains(err.Error(), "Content-Range") {
		t.Fatalf("a wrong range was accepted: %v", err)
	}
	if err := c.FetchSource(t.Context(), origin.URL, job, dst); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(dst)
	if string(got) != string(data) || len(ranges) != 2 || ranges[1] != "" {
		t.Fatalf("got %d bytes after ranges %q", len(got), ranges)
	}
}

// A completion the origin takes long to answer is abandoned when the
// worker shuts down (its context ends).
func TestCompleteAbandonedAtShutdown(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	arrived, release := make(chan struct{}), make(chan struct{})
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer origin.Close()
	defer close(release)
	c := &Client{Key: priv, Token: "nt_x"}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Complete(ctx, origin.URL, validComplete())
		done <- err
	}()
	<-arrived
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Complete = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the completion went on after the shutdown")
	}
}

// While the origin answers that the output's checks go on (202), the
// worker sends the same manifest again, signed afresh each time, until the
// final answer, which Complete returns.
func TestCompleteWaitsWhileChecking(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	want, err := json.Marshal(validComplete())
	if err != nil {
		t.Fatal(err)
	}
	var bodies int
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		c, err := ParseNodeHeader(r.Header)
		s := sha256.Sum256(b)
		if err != nil || c.VerifyWorkerRequest(pub, r.Method, r.URL.RequestURI(), hex.EncodeToString(s[:]), int64(len(b)), r.Header.Get(SignatureHeader)) != nil {
			http.Error(w, "unsigned", http.StatusForbidden)
			return
		}
		if !bytes.Equal(b, want) {
			http.Error(w, "another manifest", http.StatusConflict)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if bodies++; bodies < 3 {
			w.WriteHeader(http.StatusAccepted)
			_, _ = w.Write([]byte(`{"status":"checking"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	}))
	defer origin.Close()
	c := &Client{Key: priv, Token: "nt_x"}
	out, err := c.Complete(t.Context(), origin.URL, validComplete())
	if err != nil || out.Status != "ready" || bodies != 3 {
		t.Fatalf("Complete = %+v, %v after %d requests; want ready after 3", out, err, bodies)
	}
}
