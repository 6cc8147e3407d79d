package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/clientip"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// vouchVerifier decides, on the origin, whether to believe the viewer
// address an edge vouches for (nodeproto.Vouch): only from a joined edge,
// signed by its registered key, fresh. A vouch it does not believe is
// ignored (the request's own address counts), counted and logged: the
// request still gets its answer, judged as coming from the edge.
type vouchVerifier struct {
	node func(ctx context.Context, id string) (routing.Node, error)
	now  func() time.Time
	log  *slog.Logger
	logs *logx.Limiter

	accepted prometheus.Counter
	rejected *prometheus.CounterVec

	mu   sync.Mutex
	keys map[string]nodeKeyEntry
}

type nodeKeyEntry struct {
	pub ed25519.PublicKey // nil: not a joined edge
	at  time.Time
}

// nodeKeyTTL is how long a node's registered key (or its absence) is
// remembered: a node that leaves is believed at most this much longer.
const (
	nodeKeyTTL      = 3 * time.Second
	maxNodeKeyCache = 10_000
)

func newVouchVerifier(store *routing.Store, reg prometheus.Registerer, log *slog.Logger) *vouchVerifier {
	v := &vouchVerifier{
		node: store.GetNode, now: time.Now, log: log, logs: logx.NewLimiter(10 * time.Second),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_vouch_accepted_total", Help: "Requests whose viewer address an edge vouched for, believed.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vouch_rejected_total",
			Help: "Requests with a viewer address vouch that was not believed (the connection's address counted instead), by reason.",
		}, []string{"reason"}),
		keys: map[string]nodeKeyEntry{},
	}
	for _, r := range []string{"malformed", "unknown_node", "stale", "signature"} {
		v.rejected.WithLabelValues(r)
	}
	reg.MustRegister(v.accepted, v.rejected)
	return v
}

// vouched is clientip.Resolver.Vouched.
func (v *vouchVerifier) vouched(r *http.Request) (string, bool) {
	claim, err := nodeproto.ParseVouch(r)
	if errors.Is(err, nodeproto.ErrNoVouch) {
		return "", false
	}
	if err != nil {
		v.reject(r, "malformed", err)
		return "", false
	}
	pub := v.key(r.Context(), claim.NodeID)
	if pub == nil {
		v.reject(r, "unknown_node", errors.New("node "+claim.NodeID+" is not a joined edge"))
		return "", false
	}
	switch err := claim.Check(pub, r.Method, nodeproto.RequestTarget(r), v.now()); {
	case errors.Is(err, nodeproto.ErrVouchStale):
		v.reject(r, "stale", err)
		return "", false
	case err != nil:
		v.reject(r, "signature", err)
		return "", false
	}
	v.accepted.Inc()
	return claim.ViewerIP, true
}

func (v *vouchVerifier) reject(r *http.Request, reason string, err error) {
	v.rejected.WithLabelValues(reason).Inc()
	if ok, suppressed := v.logs.Allow(); ok {
		v.log.Warn("ignored a viewer address vouch", "reason", reason, "err", err, "remote", r.RemoteAddr,
			"path", r.URL.Path, "suppressed", suppressed)
	}
}

// key returns the registered key of the joined edge id, nil if there is
// none. When the registry cannot answer, the last known answer stands.
func (v *vouchVerifier) key(ctx context.Context, id string) ed25519.PublicKey {
	now := v.now()
	v.mu.Lock()
	e, ok := v.keys[id]
	v.mu.Unlock()
	if ok && now.Sub(e.at) < nodeKeyTTL && now.Sub(e.at) >= 0 {
		return e.pub
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	n, err := v.node(ctx, id)
	var pub ed25519.PublicKey
	switch {
	case err == nil && n.Role == "edge":
		if k, perr := nodeproto.ParsePublicKey(n.PublicKey); perr == nil && nodeproto.NodeID(k) == id {
			pub = k
		}
	case err != nil && !errors.Is(err, routing.ErrNotFound):
		if ok {
			pub = e.pub
		}
	}
	v.mu.Lock()
	if len(v.keys) >= maxNodeKeyCache {
		clear(v.keys)
	}
	v.keys[id] = nodeKeyEntry{pub: pub, at: now}
	v.mu.Unlock()
	return pub
}

// newClientIPResolver is how a role finds its clients' addresses: trusted
// front proxies (cfg.TrustedProxies) and, on the origin, edges vouching
// (vouch; nil on an edge).
func newClientIPResolver(cfg config.Config, vouch *vouchVerifier) *clientip.Resolver {
	trusted, _ := clientip.ParseTrusted(cfg.TrustedProxies) // validated with the config
	res := &clientip.Resolver{Trusted: trusted}
	if vouch != nil {
		res.Vouched = vouch.vouched
	}
	return res
}
