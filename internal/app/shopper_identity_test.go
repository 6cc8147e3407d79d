package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
)

// An edge that serves altered bytes to every audit is quarantined after 2
// wrong answers of its last 10, even when it joins again (what
// POST /v1/nodes/join does at every restart; nothing limits how often)
// between audits: joining again used to start its record over, so it was
// never quarantined however many audits it failed.
func TestRejoiningKeepsFailedAudits(t *testing.T) {
	t.Parallel()
	r := newShopperRig(t)
	r.tamper = true
	for i := 0; i < 6 && len(r.quarantined()) == 0; i++ {
		r.s.round(t.Context())
		r.advance(11 * time.Minute)
		r.mu.Lock()
		r.node.JoinedAt = r.now // it joins again before its next audit
		r.mu.Unlock()
	}
	if len(r.quarantined()) == 0 {
		t.Fatalf("an edge that failed %d audits, joining again between them, is not quarantined", r.audits())
	}
}

// A node that gives another server's URL as its public URL (it serves
// nothing itself) fails its audits and is quarantined, and is credited
// with nothing: the server there answers as another node (an honest edge),
// or as no node at all (the origin). Before, every audit of it passed with
// that server's bytes, and they were credited to it.
func TestBorrowedPublicURLFailsAudits(t *testing.T) {
	t.Parallel()
	for _, whose := range []string{"an edge's", "the origin's"} {
		r := newShopperRig(t)
		url := r.node.PublicURL
		if whose == "the origin's" {
			origin := httptest.NewServer(http.StripPrefix("/hls/", http.FileServer(http.Dir(r.dir))))
			t.Cleanup(origin.Close)
			url = origin.URL
		}
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		r.node = rigNode(pub, url, r.now) // the thief's record
		var got []map[string]int64
		r.s.figures = func(_ context.Context, _ string, d map[string]int64) error {
			got = append(got, d)
			return nil
		}
		for i := 0; i < 4 && len(r.quarantined()) == 0; i++ {
			r.s.round(t.Context())
			r.advance(11 * time.Minute)
		}
		sum, _ := r.s.summary(r.node.ID)
		if len(r.quarantined()) == 0 || sum.Passed != 0 {
			t.Fatalf("a node giving %s URL: quarantines %q, audits %+v", whose, r.quarantined(), sum)
		}
		for _, d := range got {
			if d[routing.FigureAuditBytes] != 0 || d[routing.FigureAuditsPassed] != 0 {
				t.Fatalf("a node giving %s URL was credited %v", whose, d)
			}
		}
		t.Logf("%s URL: %s", whose, sum.LastFinding)
	}
}
