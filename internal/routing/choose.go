package routing

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
)

// affinity is how many edges, ranked by rendezvous hash of the stream id,
// share one stream's viewers: few enough that each caches it once, more
// than one so that load can be balanced.
const affinity = 2

// ChooseEdge picks the edge a viewer of stream id should use, and says why.
// Policy: edges in the viewer's region (all edges when the region has none
// or no region is known); among them the affinity edges ranked first by
// rendezvous (highest random weight) hashing of the id, so that a stream's
// viewers concentrate on few edges and each caches it once; of those, the
// least loaded (connections, then egress). ok is false when no edge is
// alive.
func ChooseEdge(nodes []Node, id, region string) (chosen Node, reason string, ok bool) {
	var edges []Node
	for _, n := range nodes {
		if n.Role == "edge" && n.PublicURL != "" {
			edges = append(edges, n)
		}
	}
	if len(edges) == 0 {
		return Node{}, "no edge is alive", false
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
	slices.SortFunc(edges, func(a, b Node) int {
		wa, wb := rendezvous(id, a.ID), rendezvous(id, b.ID)
		switch {
		case wa > wb:
			return -1
		case wa < wb:
			return 1
		}
		return 0
	})
	top := edges[:min(affinity, len(edges))]
	best := top[0]
	for _, n := range top[1:] {
		if n.Load.Connections < best.Load.Connections ||
			(n.Load.Connections == best.Load.Connections && n.Load.EgressBytesPerSec < best.Load.EgressBytesPerSec) {
			best = n
		}
	}
	return best, fmt.Sprintf("%s; %d of %d edges share this stream (rendezvous hash); least loaded of them (%d connections)",
		scope, len(top), len(edges), best.Load.Connections), true
}

// rendezvous is the weight of node for key.
func rendezvous(key, node string) uint64 {
	h := sha256.Sum256([]byte(key + "\x00" + node))
	return binary.BigEndian.Uint64(h[:8])
}
