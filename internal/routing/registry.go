package routing

import (
	"context"
	"sync"
	"time"
)

// Registry is the origin's in-memory view of the live nodes, refreshed from
// Redis at most every RegistryRefresh, so that routing a viewer costs no
// Redis round trip. It also counts the viewers the origin itself sent to
// each node over AssignWindow: what the origin observed, which bounds what
// a node claims.
type Registry struct {
	list    func(ctx context.Context) ([]Node, error)
	refresh time.Duration
	now     func() time.Time

	loadMu  sync.Mutex // one reload at a time
	mu      sync.Mutex
	nodes   []Node
	at      time.Time
	valid   bool
	assigns map[string]*assignWindow
}

// Registry timing.
const (
	RegistryRefresh = time.Second
	AssignWindow    = time.Minute
	assignBuckets   = 12
)

// NewRegistry returns a registry reading nodes with list (Store.ListNodes).
// now may be nil (time.Now).
func NewRegistry(list func(ctx context.Context) ([]Node, error), now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{list: list, refresh: RegistryRefresh, now: now, assigns: map[string]*assignWindow{}}
}

// Nodes returns the live nodes, reading Redis only when the copy in memory
// is older than RegistryRefresh (or was invalidated). When Redis fails and
// a copy exists, the copy is returned with the error.
func (r *Registry) Nodes(ctx context.Context) ([]Node, error) {
	if nodes, ok := r.cached(); ok {
		return nodes, nil
	}
	r.loadMu.Lock()
	defer r.loadMu.Unlock()
	if nodes, ok := r.cached(); ok {
		return nodes, nil
	}
	nodes, err := r.list(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if r.nodes != nil {
			return r.nodes, err
		}
		return nil, err
	}
	r.nodes, r.at, r.valid = nodes, r.now(), true
	for id := range r.assigns {
		if !containsNode(nodes, id) {
			delete(r.assigns, id)
		}
	}
	return nodes, nil
}

func containsNode(nodes []Node, id string) bool {
	for _, n := range nodes {
		if n.ID == id {
			return true
		}
	}
	return false
}

func (r *Registry) cached() ([]Node, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.valid && r.now().Sub(r.at) < r.refresh {
		return r.nodes, true
	}
	return nil, false
}

// Invalidate makes the next Nodes read Redis (a node joined or was
// quarantined).
func (r *Registry) Invalidate() {
	r.mu.Lock()
	r.valid = false
	r.mu.Unlock()
}

// Assigned returns how many viewers the origin sent to node id within
// AssignWindow.
func (r *Registry) Assigned(id string) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.assigns[id]
	if w == nil {
		return 0
	}
	return w.total(r.now())
}

// Load is what placement counts for n: the larger of the viewers the
// origin sent it recently and the viewers it reports.
func (r *Registry) Load(n Node) int64 {
	return max(r.Assigned(n.ID), n.Load.Viewers)
}

// Observed is what the origin itself assigned to n (Assigned).
func (r *Registry) Observed(n Node) int64 { return r.Assigned(n.ID) }

// Assign records that a viewer was sent to node id.
func (r *Registry) Assign(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.assigns[id]
	if w == nil {
		w = &assignWindow{}
		r.assigns[id] = w
	}
	w.add(r.now())
}

// assignWindow counts events over AssignWindow in buckets.
type assignWindow struct {
	counts [assignBuckets]int64
	slots  [assignBuckets]int64 // the bucket index each count belongs to
}

func bucketOf(t time.Time) int64 { return t.UnixNano() / int64(AssignWindow/assignBuckets) }

func (w *assignWindow) add(t time.Time) {
	b := bucketOf(t)
	i := b % assignBuckets
	if w.slots[i] != b {
		w.slots[i], w.counts[i] = b, 0
	}
	w.counts[i]++
}

func (w *assignWindow) total(t time.Time) int64 {
	b := bucketOf(t)
	var n int64
	for i := range w.counts {
		if b-w.slots[i] < assignBuckets {
			n += w.counts[i]
		}
	}
	return n
}
