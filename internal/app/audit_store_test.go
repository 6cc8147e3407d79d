package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// s3Rig is a published HLS tree in a bucket of a real S3 server
// (SeaweedFS), an "edge" that serves it from there (altered when tamper
// is set), and a shopper and auditor over that bucket, which reach S3
// through a proxy that the test can make fail.
type s3Rig struct {
	srv *s3test.Server
	// pubs are the public ids, signed the signed one.
	pubs   []string
	signed string
	a      *auditor
	s      *shopper
	node   routing.Node

	mu sync.Mutex
	// tamper alters what the edge serves; failS3 makes the proxy to S3
	// fail as a request reaches the edge (before it answers); down: the
	// proxy answers 503 Service Unavailable.
	tamper, failS3, down bool
	// status, when set, is the edge's answer instead of the object.
	status  int
	served  []string
	figures []map[string]int64
	now     time.Time
}

// Readable ids chosen so that which one a seeded shopper picks does not
// depend on chance.
var (
	s3PubIDs   = []string{"g000pub0", "t000pub1"}
	s3SignedID = "m000sgnd"
)

func newS3Rig(t *testing.T) *s3Rig {
	t.Helper()
	srv := s3test.Start(t)
	r := &s3Rig{srv: srv, pubs: s3PubIDs, signed: s3SignedID, now: time.Unix(1_800_000_000, 0)}
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	s3proxy := httputil.NewSingleHostReverseProxy(target)
	s3proxy.ErrorLog = log.New(io.Discard, "", 0)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		down := r.down
		r.mu.Unlock()
		if down {
			http.Error(w, "S3 is down", http.StatusServiceUnavailable)
			return
		}
		s3proxy.ServeHTTP(w, req)
	}))
	t.Cleanup(proxy.Close)
	// The edge's own way to the bucket does not fail with the origin's.
	edgeStore, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: "shoal-audit", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := edgeStore.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket: %v\nweed: %s", err, srv.Output())
	}
	store, err := s3store.New(s3store.Config{Endpoint: proxy.URL, Bucket: "shoal-audit", PathStyle: true, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, b []byte) {
		t.Helper()
		if _, err := edgeStore.Put(ctx, key, bytes.NewReader(b), int64(len(b))); err != nil {
			t.Fatalf("put %s: %v", key, err)
		}
	}
	for _, id := range append([]string{r.signed}, r.pubs...) {
		put(id+"/master.m3u8", []byte("#EXTM3U\n"))
		for _, rend := range []string{"r360", "source"} {
			for _, f := range []string{"s-1-0.m4s", "s-1-1.m4s", "s-1-2-p0.m4s"} {
				// Bigger than one read, so that the hash is streamed.
				put(id+"/"+rend+"/"+f, bytes.Repeat([]byte(id+"/"+rend+"/"+f), 5000))
			}
			put(id+"/"+rend+"/"+playlistFile, []byte("#EXTM3U\n#EXTINF:2,\ns-1-0.m4s\n#EXT-X-ENDLIST\n"))
		}
	}
	_, nodeKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if answerProof(w, req, nodeKey) { // it is the node it says
			return
		}
		r.mu.Lock()
		r.served = append(r.served, req.URL.Path)
		tamper, status := r.tamper, r.status
		if r.failS3 {
			r.down = true
		}
		r.mu.Unlock()
		b, _, err := storage.ReadAll(req.Context(), edgeStore, strings.TrimPrefix(req.URL.Path, "/hls/"))
		switch {
		case status != 0:
			http.Error(w, "no", status)
			return
		case err != nil:
			http.NotFound(w, req)
			return
		case tamper:
			b[len(b)/2] ^= 1
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(edge.Close)
	r.node = rigNode(nodeKey.Public().(ed25519.PublicKey), edge.URL, r.now)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signed := func(id string) bool { return id == r.signed }
	r.a = newAuditor(store, key, signed)
	// The ended playlists were just written: audited at once here (the
	// settle time has its own test, TestShopperAuditsEndedPlaylists).
	r.a.settle = 0
	r.s = newShopper(store, key, signed, time.Minute, 2,
		func(context.Context) ([]routing.Node, error) { return []routing.Node{r.node}, nil },
		func(_ context.Context, id, reason string) error {
			t.Errorf("quarantined %s: %s", id, reason)
			return nil
		}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	r.s.auditor.settle = 0
	r.s.now = func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.now }
	r.s.rand = mrand.New(mrand.NewPCG(1, 2))
	r.s.figures = func(_ context.Context, node string, d map[string]int64) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.figures = append(r.figures, d)
		return nil
	}
	return r
}

func (r *s3Rig) set(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// rounds runs k shopper rounds two intervals apart and returns the paths
// the edge was asked for in them.
func (r *s3Rig) rounds(ctx context.Context, k int) []string {
	r.mu.Lock()
	n := len(r.served)
	r.mu.Unlock()
	for range k {
		r.s.round(ctx)
		r.set(func() { r.now = r.now.Add(2 * time.Minute) })
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.served[n:]...)
}

// TestAuditorReadsS3: the audits compare what an edge serves with what
// the origin published in an S3 bucket: the published bytes pass, altered
// ones fail (segments and ended playlists), an object the bucket lacks is
// not held against the edge; the shopper picks whole segments of public
// ids from the bucket's listing.
func TestAuditorReadsS3(t *testing.T) {
	r := newS3Rig(t)
	ctx := t.Context()
	seg := "/hls/" + r.pubs[0] + "/source/s-1-1.m4s"
	pl := "/hls/" + r.pubs[1] + "/r360/" + playlistFile
	for _, c := range []struct{ path, kind string }{{seg, auditSegment}, {pl, auditPlaylist}} {
		if wrong, right, f := r.a.check(ctx, r.node, c.path, c.kind); wrong || !right {
			t.Fatalf("an honest edge's %s: wrong %v, right %v: %s", c.path, wrong, right, f)
		}
	}
	r.set(func() { r.tamper = true })
	for _, c := range []struct{ path, kind string }{{seg, auditSegment}, {pl, auditPlaylist}} {
		if wrong, right, f := r.a.check(ctx, r.node, c.path, c.kind); !wrong || right || !strings.Contains(f, "SHA-256") {
			t.Fatalf("an altered %s: wrong %v, right %v: %s", c.path, wrong, right, f)
		}
	}
	// A 404 for an object the bucket has is the edge's fault; for one it
	// lacks, not.
	r.set(func() { r.tamper, r.status = false, http.StatusNotFound })
	if _, _, f := r.a.check(ctx, r.node, seg, auditSegment); !strings.HasPrefix(f, nodeFetchFailed) {
		t.Fatalf("a 404 for a published segment: %s", f)
	}
	if wrong, right, f := r.a.check(ctx, r.node, "/hls/"+r.pubs[0]+"/source/s-1-9.m4s", auditSegment); wrong || right ||
		!strings.Contains(f, "the origin has no such object") {
		t.Fatalf("a segment the bucket lacks: wrong %v, right %v: %s", wrong, right, f)
	}
	r.set(func() { r.status = 0 })

	// The shopper: segments (now and then a playlist) of both public ids
	// and both renditions, never a part or the signed id, all passing.
	served := r.rounds(ctx, 24)
	seen := map[string]bool{}
	playlists := 0
	for _, p := range served {
		rel := strings.TrimPrefix(p, "/hls/")
		parts := strings.Split(rel, "/")
		if len(parts) != 3 || parts[0] == r.signed || hlsPartOrMaster(parts[2]) {
			t.Fatalf("audited %s", p)
		}
		if parts[2] == playlistFile {
			playlists++
		}
		seen[parts[0]+"/"+parts[1]] = true
	}
	for _, id := range r.pubs {
		for _, rend := range []string{"r360", "source"} {
			if !seen[id+"/"+rend] {
				t.Errorf("%s/%s never audited in %d audits: %q", id, rend, len(served), served)
			}
		}
	}
	if len(served) < 20 || playlists == 0 || playlists > len(served)/2 {
		t.Fatalf("%d audits in 24 rounds, %d of playlists", len(served), playlists)
	}
	sum, _ := r.s.summary(r.node.ID)
	if sum.Passed != int64(len(served)) || sum.Failed != 0 || sum.Errors != 0 {
		t.Fatalf("summary %+v after %d audits", sum, len(served))
	}
}

func hlsPartOrMaster(name string) bool {
	return strings.HasSuffix(name, "-p0.m4s") || name == "master.m3u8"
}

// TestAuditorStoreDown: when the origin's S3 fails (a proxy in front of
// it answering 503 during an audit, then SeaweedFS stopped), the audit is
// inconclusive: not failed, not counted against the edge in its
// accounting, and it never quarantines it, even if the edge serves wrong
// bytes meanwhile.
func TestAuditorStoreDown(t *testing.T) {
	r := newS3Rig(t)
	ctx := t.Context()
	seg := "/hls/" + r.pubs[0] + "/source/s-1-1.m4s"
	pl := "/hls/" + r.pubs[0] + "/source/" + playlistFile
	// The shopper audits normally while S3 is up.
	if served := r.rounds(ctx, 1); len(served) != 1 {
		t.Fatalf("first round: %q", served)
	}
	if sum, _ := r.s.summary(r.node.ID); sum.Passed != 1 {
		t.Fatalf("summary %+v", sum)
	}
	inconclusive := func(what, path, kind, want string) {
		t.Helper()
		wrong, right, f := r.a.check(ctx, r.node, path, kind)
		if wrong || right || !strings.HasPrefix(f, "not audited: the origin could not "+want) {
			t.Fatalf("%s: wrong %v, right %v: %s", what, wrong, right, f)
		}
	}
	// S3 fails while the edge answers 404: whether the origin still has
	// the object cannot be told, so the 404 is not the edge's fault.
	r.set(func() { r.failS3, r.status = true, http.StatusNotFound })
	inconclusive("S3 failing during a 404", seg, auditSegment, "check that it still has")
	// S3 fails while the edge serves an altered ended playlist: whether
	// the playlist changed meanwhile cannot be told.
	r.set(func() { r.down, r.status, r.tamper = false, 0, true })
	inconclusive("S3 failing during a playlist audit", pl, auditPlaylist, "check that its playlist did not change")
	// S3 stopped before the audit: nothing to compare with.
	r.set(func() { r.down, r.failS3 = false, false })
	r.srv.Stop()
	inconclusive("S3 stopped", seg, auditSegment, "read what it published")
	r.mu.Lock()
	asked := len(r.served)
	r.mu.Unlock()
	// The shopper, S3 stopped: no audit at all, nothing in the accounting.
	if served := r.rounds(ctx, 5); len(served) != 0 {
		t.Fatalf("audits with S3 stopped: %q", served)
	}
	r.mu.Lock()
	if len(r.served) != asked {
		t.Errorf("the edge was asked for %d objects with S3 stopped", len(r.served)-asked)
	}
	if len(r.figures) != 1 || r.figures[0][routing.FigureAuditsPassed] != 1 {
		t.Errorf("accounting figures %v, want only the first round's pass", r.figures)
	}
	r.mu.Unlock()
	if sum, _ := r.s.summary(r.node.ID); sum.Failed != 0 || sum.Passed != 1 {
		t.Fatalf("summary %+v", sum)
	}
}
