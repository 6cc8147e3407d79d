package routing

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
)

// Placement parameters.
const (
	// LoadSlack is ε of consistent hashing with bounded loads: no edge gets
	// more than (1+ε) times the average load of the edges in scope.
	LoadSlack = 0.25
	// MinBound is the load every edge may take whatever the average, so
	// that a quiet stream's first viewers stay on its first edge (one cache
	// fill) instead of spreading at once.
	MinBound = 8
	// egressFull is the share of its declared egress at which an edge
	// takes no more viewers.
	egressFull = 0.9
)

// Loads tells placement how loaded each node is (Registry implements it).
type Loads interface {
	// Load is the load counted against n's bound.
	Load(n Node) int64
	// Observed is the part of it the origin observed itself; the bound is
	// derived from the average of these.
	Observed(n Node) int64
}

// SameLoads uses one figure for both Load and Observed (tests, tools).
type SameLoads func(Node) int64

func (f SameLoads) Load(n Node) int64     { return f(n) }
func (f SameLoads) Observed(n Node) int64 { return f(n) }

// Placement is where a viewer of a stream goes: the edges to try, in
// order (Candidates[0] is the choice), and why.
type Placement struct {
	Candidates []Node
	Reason     string
}

// Place ranks the edges for a viewer of stream id. Policy:
//
//   - Only edges that are alive, have a public URL and are not quarantined.
//   - The viewer's region when it has edges; otherwise every region.
//   - Edges are ranked by a rendezvous hash of the stream id keyed with the
//     origin's secret (HMAC-SHA256): a stream's viewers concentrate on its
//     first edges, which cache it once, and since nobody outside the origin
//     knows the key, nobody can make up node ids that rank first for a
//     chosen stream.
//   - Bounded loads: the first edge in that order whose load is under its
//     bound is chosen, where the bound is (1+LoadSlack) times the average
//     load of the edges in scope (at least MinBound), and at most the
//     viewers the edge declares it can take. A popular stream thus spreads
//     over as many edges as it needs, and no edge, whatever it claims,
//     gets more than its bounded share.
//
// loads.Load(n) is the load counted for n: the origin uses the larger of
// what it assigned to n recently and the viewers n reports, so an edge
// that under-reports gains nothing. The average the bound derives from is
// of loads.Observed, what the origin itself assigned, so an edge that
// over-reports only fills its own bound and cannot raise everyone's. The
// rest of the candidates follow in rank order, those under their bound
// first; at most limit are returned.
func Place(nodes []Node, id, region string, secret []byte, loads Loads, limit int) Placement {
	var edges []Node
	for _, n := range nodes {
		if n.Role == "edge" && n.PublicURL != "" && n.Quarantine == nil {
			edges = append(edges, n)
		}
	}
	if len(edges) == 0 {
		return Placement{Reason: "no edge is alive"}
	}
	scope := "any region"
	if region != "" {
		var local []Node
		for _, n := range edges {
			if n.Region == region {
				local = append(local, n)
			}
		}
		if len(local) > 0 {
			edges, scope = local, "region "+region
		} else {
			scope = "no edge in region " + region + ", any region"
		}
	}
	type ranked struct {
		n     Node
		w     uint64
		load  int64
		bound int64
		ratio float64
		under bool
	}
	rs := make([]ranked, len(edges))
	var total int64
	for i, n := range edges {
		rs[i] = ranked{n: n, w: placementWeight(secret, id, n.ID), load: max(loads.Load(n), 0)}
		total += max(loads.Observed(n), 0)
	}
	bound := int64(math.Ceil((1 + LoadSlack) * float64(total+1) / float64(len(rs))))
	bound = max(bound, MinBound)
	for i := range rs {
		b := bound
		l := rs[i].n.Load
		if m := l.MaxViewers; m > 0 && m < b {
			b = m
		}
		rs[i].bound = b
		// An edge near the egress it declares it can send is full too,
		// whatever its viewer count.
		rs[i].under = rs[i].load < b && (l.MaxEgressBytesPerSec <= 0 || l.EgressBytesPerSec < egressFull*l.MaxEgressBytesPerSec)
		rs[i].ratio = float64(rs[i].load) / float64(max(b, 1))
	}
	slices.SortFunc(rs, func(a, b ranked) int {
		if a.under != b.under {
			if a.under {
				return -1
			}
			return 1
		}
		if !a.under && a.ratio != b.ratio {
			// Every edge is full: the least loaded first.
			return cmp.Compare(a.ratio, b.ratio)
		}
		return cmp.Compare(b.w, a.w)
	})
	if limit <= 0 || limit > len(rs) {
		limit = len(rs)
	}
	p := Placement{Candidates: make([]Node, 0, limit)}
	for _, r := range rs[:limit] {
		p.Candidates = append(p.Candidates, r.n)
	}
	first := rs[0]
	if first.under {
		p.Reason = fmt.Sprintf("%s; %d edges; first edge of this stream's keyed ranking under its load bound (%d of %d)",
			scope, len(rs), first.load, first.bound)
	} else {
		p.Reason = fmt.Sprintf("%s; %d edges; every edge at its load bound, the least loaded (%d of %d)",
			scope, len(rs), first.load, first.bound)
	}
	return p
}

// placementWeight is node's rendezvous weight for stream id under secret.
func placementWeight(secret []byte, id, node string) uint64 {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(id))
	m.Write([]byte{0})
	m.Write([]byte(node))
	return binary.BigEndian.Uint64(m.Sum(nil)[:8])
}
