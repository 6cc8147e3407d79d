package app

import (
	"testing"
	"time"
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
