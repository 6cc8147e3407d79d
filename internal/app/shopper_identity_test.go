package app

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
	playerapi "github.com/shoal-video/shoal/player-api"
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

// An edge that serves altered bytes to every audit, and after each one
// leaves for a few seconds (its record in Redis expires 7 s after its
// last heartbeat) and joins again, is still quarantined after 2 wrong
// answers: a round that did not see it live used to forget its record.
// The record of an edge gone longer than keepAbsent is forgotten.
func TestLeavingBrieflyKeepsFailedAudits(t *testing.T) {
	t.Parallel()
	r := newShopperRig(t)
	r.tamper = true
	gone := false
	list := r.s.nodes
	r.s.nodes = func(ctx context.Context) ([]routing.Node, error) {
		r.mu.Lock()
		away := gone
		r.mu.Unlock()
		if away {
			return nil, nil
		}
		return list(ctx)
	}
	away := func(d time.Duration) {
		r.mu.Lock()
		gone = true
		r.mu.Unlock()
		r.advance(d)
		r.s.round(t.Context()) // a round while it is away
		r.mu.Lock()
		gone = false
		r.node.JoinedAt = r.now // it joins again
		r.mu.Unlock()
	}
	for i := 0; i < 6 && len(r.quarantined()) == 0; i++ {
		r.s.round(t.Context()) // audited: wrong bytes
		away(10 * time.Second)
		r.advance(11 * time.Minute)
	}
	if len(r.quarantined()) == 0 {
		t.Fatalf("an edge that failed %d audits, leaving for 10 s after each, is not quarantined", r.audits())
	}
	r.s.mu.Lock()
	n := len(r.s.state)
	r.s.mu.Unlock()
	away(keepAbsent)
	r.s.mu.Lock()
	after := len(r.s.state)
	r.s.mu.Unlock()
	if n != 1 || after != 0 {
		t.Fatalf("records: %d while it came and went, %d after %v away; want 1, then 0", n, after, keepAbsent)
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

// A viewer's report of a segment the origin never published (nor has any
// more) is refuted, public or signed: an honest player reports only what
// the signed manifest lists (parts and "unlisted" objects aside). Before, such reports from 3 networks the
// edge had been offered to quarantined an honest edge. A signed object
// the origin has is still not audited (nor refuted); a report waits for
// an audit slot within its deadline instead of finding the origin busy.
func TestReportsOfObjectsNeverPublished(t *testing.T) {
	t.Parallel()
	r := newShopperRig(t)
	a := r.s.auditor
	ctx := t.Context()
	for _, c := range []struct {
		path             string
		refuted, checked bool
	}{
		{"/hls/" + r.pub + "/source/s-1-7.m4s", true, true},     // made up
		{"/hls/" + r.signed + "/source/s-1-7.m4s", true, false}, // made up, signed
		{"/hls/" + r.signed + "/source/s-1-0.m4s", false, false},
		{"/hls/" + r.pub + "/source/s-1-0.m4s", true, true}, // published: served right
	} {
		got := a.audit(ctx, r.node, c.path, "hash_mismatch")
		if got.Confirmed || got.Refuted != c.refuted {
			t.Errorf("a report of %s: %+v, want refuted %v", c.path, got, c.refuted)
		}
	}
	// But an LL-HLS part is never in the store (the origin keeps parts in
	// memory), and an "unlisted" object is one the manifest does not
	// list: their absence refutes nothing.
	for _, c := range []struct{ path, kind string }{
		{"/hls/" + r.pub + "/source/s-1-3-p1.m4s", "hash_mismatch"},
		{"/hls/" + r.signed + "/source/s-1-3-p1.m4s", "hash_mismatch"},
		{"/hls/" + r.signed + "/source/s-1-9.m4s", "unlisted"},
		{"/hls/" + r.pub + "/source/s-1-9.m4s", "unlisted"},
	} {
		if got := a.audit(ctx, r.node, c.path, c.kind); got.Confirmed || got.Refuted {
			t.Errorf("a report (%s) of %s: %+v, want neither confirmed nor refuted", c.kind, c.path, got)
		}
	}
	// Every slot taken: a report waits for one.
	for range cap(a.slots) {
		a.slots <- struct{}{}
	}
	done := make(chan playerapi.Audit, 1)
	go func() { done <- a.audit(ctx, r.node, "/hls/"+r.pub+"/source/s-1-1.m4s", "hash_mismatch") }()
	<-a.slots
	if got := <-done; !got.Refuted {
		t.Fatalf("a report made while every audit slot was taken: %+v", got)
	}
	for range cap(a.slots) - 1 {
		<-a.slots
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	for range cap(a.slots) {
		a.slots <- struct{}{}
	}
	if got := a.audit(short, r.node, "/hls/"+r.pub+"/source/s-1-1.m4s", "hash_mismatch"); got.Refuted || !strings.Contains(got.Finding, "busy") {
		t.Fatalf("a report whose deadline passed while the slots were taken: %+v", got)
	}
}
