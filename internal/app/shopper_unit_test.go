package app

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
)

// shopperRig is a shopper over a temporary HLS tree, with an "edge" that
// serves that tree (altered when tamper is set), a node list it controls
// and an injected clock.
type shopperRig struct {
	s           *shopper
	pub, signed string
	mu          sync.Mutex
	node        routing.Node
	tamper      bool
	// refuse makes the edge answer 503; status, when set, another status.
	refuse bool
	status int
	// stale marks the edge's answers as copies it kept while the origin
	// failed (Cache-Status detail=stale-if-error).
	stale bool
	// tamperPlaylists alters only the playlists the edge serves.
	tamperPlaylists bool
	dir             string
	served          []string // paths the edge was asked for
	quarantines     []string
	now             time.Time
}

func newShopperRig(t *testing.T) *shopperRig {
	t.Helper()
	dir := t.TempDir()
	r := &shopperRig{pub: ids.New(), signed: ids.New(), now: time.Unix(1_800_000_000, 0), dir: dir}
	for _, id := range []string{r.pub, r.signed} {
		d := filepath.Join(dir, id, "source")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"s-1-0.m4s", "s-1-1.m4s", "s-1-2-p0.m4s", "index.m3u8"} {
			if err := os.WriteFile(filepath.Join(d, f), []byte(id+"/"+f), 0o644); err != nil {
				t.Fatal(err)
			}
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
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(req.URL.Path, "/hls/"))))
		if err != nil {
			http.NotFound(w, req)
			return
		}
		r.mu.Lock()
		r.served = append(r.served, req.URL.Path)
		if r.refuse || r.status != 0 {
			code := cmp.Or(r.status, http.StatusServiceUnavailable)
			r.mu.Unlock()
			http.Error(w, "no", code)
			return
		}
		if r.stale {
			w.Header().Set("Cache-Status", "shoal; fwd=stale; fwd-status=502; detail=stale-if-error")
		}
		if r.tamper || (r.tamperPlaylists && strings.HasSuffix(req.URL.Path, ".m3u8")) {
			b[0] ^= 1
		}
		r.mu.Unlock()
		_, _ = w.Write(b)
	}))
	t.Cleanup(edge.Close)
	r.node = rigNode(nodeKey.Public().(ed25519.PublicKey), edge.URL, r.now)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	store, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	r.s = newShopper(store, key, func(id string) bool { return id == r.signed }, time.Minute, 2,
		func(context.Context) ([]routing.Node, error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			return []routing.Node{r.node}, nil
		},
		func(_ context.Context, id, reason string) error {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.quarantines = append(r.quarantines, reason)
			r.node.Quarantine = &routing.Quarantine{Reason: reason}
			return nil
		}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	r.s.now = func() time.Time { r.mu.Lock(); defer r.mu.Unlock(); return r.now }
	r.s.rand = mrand.New(mrand.NewPCG(1, 2))
	return r
}

// answerProof answers a request for the proof of identity
// (nodeproto.ProofPath) as the edge whose key is key does; false for any
// other request.
func answerProof(w http.ResponseWriter, req *http.Request, key ed25519.PrivateKey) bool {
	if req.URL.Path != nodeproto.ProofPath {
		return false
	}
	p, err := nodeproto.Prove(key, req.URL.Query().Get("challenge"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return true
	}
	_ = json.NewEncoder(w).Encode(p)
	return true
}

// rigNode is the registry's record of the edge whose key is pub, at url.
func rigNode(pub ed25519.PublicKey, url string, joined time.Time) routing.Node {
	return routing.Node{ID: nodeproto.NodeID(pub), PublicKey: base64.StdEncoding.EncodeToString(pub), Role: "edge", PublicURL: url, JoinedAt: joined}
}

// audits is how many segments the edge was asked for.
func (r *shopperRig) audits() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.served)
}

// quarantined returns the quarantine reasons so far.
func (r *shopperRig) quarantined() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.quarantines...)
}

func (r *shopperRig) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// TestShopperPicksWhatTheOriginPublished: audits fetch whole segments of
// public ids only (never a signed id, a part or a playlist), from what the
// origin published even when the edge reports nothing.
func TestShopperPicksWhatTheOriginPublished(t *testing.T) {
	r := newShopperRig(t)
	for range 12 {
		r.s.round(t.Context())
		r.advance(2 * time.Minute)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.served) < 10 {
		t.Fatalf("%d audits in 12 rounds two intervals apart", len(r.served))
	}
	for _, p := range r.served {
		if !strings.HasPrefix(p, "/hls/"+r.pub+"/source/s-1-") || strings.Contains(p, "-p0") || !strings.HasSuffix(p, ".m4s") {
			t.Fatalf("audited %s", p)
		}
	}
	if sum, ok := r.s.summary(r.node.ID); !ok || sum.Passed != int64(len(r.served)) || sum.Failed != 0 {
		t.Fatalf("summary %+v", sum)
	}
}

// endRendition ends the public id's playlist, as the origin does when a
// video is finished, settle ago.
func (r *shopperRig) endRendition(t *testing.T, ago time.Duration) {
	t.Helper()
	p := filepath.Join(r.dir, r.pub, "source", playlistFile)
	if err := os.WriteFile(p, []byte("#EXTM3U\n#EXT-X-ENDLIST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-ago)
	if err := os.Chtimes(p, at, at); err != nil {
		t.Fatal(err)
	}
}

// TestShopperAuditsEndedPlaylists: the playlist of an ended rendition is
// audited now and then (a live one never is, nor one that ended too
// recently for every edge to have it); an edge that alters only its
// playlists is quarantined by those audits.
func TestShopperAuditsEndedPlaylists(t *testing.T) {
	r := newShopperRig(t)
	ctx := t.Context()
	playlists := func() int {
		r.mu.Lock()
		defer r.mu.Unlock()
		k := 0
		for _, p := range r.served {
			if strings.HasSuffix(p, "/source/index.m3u8") {
				k++
			}
		}
		return k
	}
	for range 20 {
		r.s.round(ctx)
		r.advance(2 * time.Minute)
	}
	if k := playlists(); k != 0 {
		t.Fatalf("a live rendition's playlist was audited %d times", k)
	}
	r.endRendition(t, time.Minute)
	for range 20 {
		r.s.round(ctx)
		r.advance(2 * time.Minute)
	}
	if k := playlists(); k != 0 {
		t.Fatalf("a playlist that ended a minute ago was audited %d times", k)
	}
	r.endRendition(t, playlistSettle+time.Second)
	for range 20 {
		r.s.round(ctx)
		r.advance(2 * time.Minute)
	}
	if k := playlists(); k == 0 || k > 15 {
		t.Fatalf("an ended rendition's playlist audited %d times in 20 audits", k)
	}
	if sum, _ := r.s.summary(r.node.ID); sum.Failed != 0 || len(r.quarantined()) != 0 {
		t.Fatalf("the honest edge: %+v, quarantines %q", sum, r.quarantined())
	}
	// An edge that alters its playlists, even calling them copies it
	// kept while the origin failed (a Cache-Status it sets itself), is
	// failed: no honest edge keeps a copy that long.
	r.mu.Lock()
	r.tamperPlaylists, r.stale = true, true
	r.mu.Unlock()
	for range 40 {
		if len(r.quarantined()) > 0 {
			break
		}
		r.s.round(ctx)
		r.advance(2 * time.Minute)
	}
	if q := r.quarantined(); len(q) != 1 || !strings.Contains(q[0], "index.m3u8") {
		t.Fatalf("an edge altering its playlists: quarantines %q", q)
	}
}

// TestFetchFindingTimeouts: an audit that ran out of time is the node's
// fault (it did not answer in time); one the origin cancelled (it stops)
// is not.
func TestFetchFindingTimeouts(t *testing.T) {
	expired, cancel := context.WithDeadline(t.Context(), time.Unix(0, 0))
	defer cancel()
	if f := fetchFinding(expired, "it", context.DeadlineExceeded, 0, true); !strings.HasPrefix(f, nodeFetchFailed) {
		t.Errorf("a timed-out audit: %q", f)
	}
	stopped, stop := context.WithCancel(t.Context())
	stop()
	if f := fetchFinding(stopped, "it", context.Canceled, 0, true); strings.HasPrefix(f, nodeFetchFailed) {
		t.Errorf("a cancelled audit: %q", f)
	}
}

// TestShopperFloorAndRelease: an edge that says it served nothing is
// audited at least every 10 intervals once its allowance is spent; two
// wrong answers in its last 10 audits quarantine it, and a release starts
// its record over (one more wrong answer does not quarantine it again).
func TestShopperFloorAndRelease(t *testing.T) {
	r := newShopperRig(t)
	ctx := t.Context()
	r.s.round(ctx)
	if r.audits() != 1 {
		t.Fatalf("first round: %d audits", r.audits())
	}
	// The allowance spent: due by time, but not affordable until the floor.
	r.s.mu.Lock()
	r.s.state[r.node.ID].auditedByte = auditAllowance + 1
	r.s.mu.Unlock()
	r.advance(2 * time.Minute)
	r.s.round(ctx)
	if r.audits() != 1 {
		t.Fatalf("audited beyond its allowance before the floor: %d", r.audits())
	}
	r.advance(9 * time.Minute)
	r.s.round(ctx)
	if r.audits() != 2 {
		t.Fatalf("not audited at the floor: %d", r.audits())
	}
	// Two wrong answers quarantine it.
	r.mu.Lock()
	r.tamper = true
	r.mu.Unlock()
	for range 2 {
		r.advance(11 * time.Minute)
		r.s.round(ctx)
	}
	if len(r.quarantined()) != 1 || !strings.Contains(r.quarantined()[0], "failed 2 of its last") {
		t.Fatalf("quarantines %q", r.quarantined())
	}
	// Quarantined: not audited. Released: one wrong answer is not enough.
	r.advance(11 * time.Minute)
	r.s.round(ctx)
	n := r.audits()
	r.mu.Lock()
	r.node.Quarantine = nil
	r.mu.Unlock()
	r.advance(11 * time.Minute)
	r.s.round(ctx)
	if r.audits() != n+1 || len(r.quarantined()) != 1 {
		t.Fatalf("after the release: %d audits (was %d), quarantines %q", r.audits(), n, r.quarantined())
	}
}

// TestShopperAccountsAudits: a passed audit adds its bytes and a pass to
// the edge's epoch figures, a failed one a failure (and no bytes).
func TestShopperAccountsAudits(t *testing.T) {
	r := newShopperRig(t)
	var got []map[string]int64
	r.s.figures = func(_ context.Context, node string, d map[string]int64) error {
		if node != r.node.ID {
			t.Errorf("figures of %s, want the audited edge %s", node, r.node.ID)
		}
		got = append(got, d)
		return nil
	}
	ctx := t.Context()
	r.s.round(ctx)
	r.mu.Lock()
	r.tamper = true
	r.mu.Unlock()
	r.advance(2 * time.Minute)
	r.s.round(ctx)
	// An edge that does not answer an audit fails it in its accounting.
	r.mu.Lock()
	r.tamper, r.refuse = false, true
	r.mu.Unlock()
	r.advance(2 * time.Minute)
	r.s.round(ctx)
	// Every segment of the rig is "<id>/s-1-N.m4s" with the id's length.
	size := int64(len(r.pub + "/s-1-0.m4s"))
	if len(got) != 3 || len(got[0]) != 2 || got[0][routing.FigureAuditsPassed] != 1 || got[0][routing.FigureAuditBytes] != size ||
		len(got[1]) != 1 || got[1][routing.FigureAuditsFailed] != 1 || len(got[2]) != 1 || got[2][routing.FigureAuditsFailed] != 1 {
		t.Fatalf("figures %v", got)
	}
	if sum, _ := r.s.summary(r.node.ID); sum.Errors != 1 || len(r.quarantined()) != 0 {
		t.Fatalf("an unanswered audit: %+v, quarantines %q", sum, r.quarantined())
	}
	// A 404 for an object the origin has is the edge's fault (an honest
	// one fetches what it lacks); once the origin no longer has it, not.
	r.mu.Lock()
	r.refuse, r.status = false, http.StatusNotFound
	r.mu.Unlock()
	r.advance(2 * time.Minute)
	r.s.round(ctx)
	if len(got) != 4 || got[3][routing.FigureAuditsFailed] != 1 {
		t.Fatalf("a 404 for a published object: %v", got)
	}
	if f := fetchFinding(ctx, "it", nil, http.StatusNotFound, false); strings.HasPrefix(f, nodeFetchFailed) {
		t.Fatalf("a 404 for an object the origin deleted: %q", f)
	}
	// An id the origin no longer knows (deleted, its files left behind)
	// is not audited at all.
	r.mu.Lock()
	r.status = 0
	r.mu.Unlock()
	r.s.known = func(id string) bool { return id != r.pub }
	n := r.audits()
	for range 5 {
		r.advance(11 * time.Minute)
		r.s.round(ctx)
	}
	if r.audits() != n {
		t.Fatalf("a deleted id was audited %d times", r.audits()-n)
	}
}
