package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-video/shoal/internal/clientip"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// vouchVerifier decides whether to believe the viewer address another
// node vouches for (nodeproto.Vouch): only from a node whose key keyOf
// knows (on the origin: a joined edge, its registered key; on an edge: a
// sibling, its key as the origin announced it), signed by that key,
// fresh. A vouch it does not believe is ignored (the request's own address
// counts), counted and logged: the request still gets its answer, judged
// as coming from its peer.
type vouchVerifier struct {
	keyOf func(ctx context.Context, id string) ed25519.PublicKey
	now   func() time.Time
	log   *slog.Logger
	logs  *logx.Limiter

	accepted prometheus.Counter
	rejected *prometheus.CounterVec
}

func newVouchVerifier(keyOf func(ctx context.Context, id string) ed25519.PublicKey, reg prometheus.Registerer, log *slog.Logger) *vouchVerifier {
	v := &vouchVerifier{
		keyOf: keyOf, now: time.Now, log: log, logs: logx.NewLimiter(10 * time.Second),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_vouch_accepted_total", Help: "Requests whose viewer address another node vouched for, believed.",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vouch_rejected_total",
			Help: "Requests with a viewer address vouch that was not believed (the connection's address counted instead), by reason.",
		}, []string{"reason"}),
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
	pub := v.keyOf(withPeer(r.Context(), r.RemoteAddr), claim.NodeID)
	if pub == nil {
		v.reject(r, "unknown_node", errors.New("node "+claim.NodeID+" may not vouch here"))
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

// edgeKeys answers, on the origin, the registered key of a joined edge
// from the registry, remembering answers for nodeKeyTTL.
type edgeKeys struct {
	node func(ctx context.Context, id string) (routing.Node, error)
	now  func() time.Time

	mu   sync.Mutex
	keys map[string]nodeKeyEntry // joined edges' keys
	// unknown remembers ids that are not joined edges, apart from keys so
	// that requests naming made-up ids can't push real edges out; asks
	// about ids seen for the first time are rate-limited (lookups), so
	// such requests can't load Redis either.
	unknown map[string]time.Time
	lookups map[string]*rate.Limiter // by the asking connection's host (withPeer)
}

type peerKey struct{}

// withPeer names the connection (host:port) a lookup is made for: the
// lookups of ids not remembered are budgeted per host, so one client
// naming made-up ids can't spend everyone's (a new edge's first vouches).
func withPeer(ctx context.Context, remote string) context.Context {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	return context.WithValue(ctx, peerKey{}, host)
}

// allowLookup spends one lookup of peer's budget; under k.mu.
func (k *edgeKeys) allowLookup(peer string, now time.Time) bool {
	l := k.lookups[peer]
	if l == nil {
		if len(k.lookups) >= maxNodeKeyCache {
			clear(k.lookups)
		}
		l = rate.NewLimiter(nodeKeyLookups, nodeKeyLookups)
		k.lookups[peer] = l
	}
	return l.AllowN(now, 1)
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
	// nodeKeyLookups bounds the registry lookups of ids not remembered
	// that one host's requests cause, a second (burst as many).
	nodeKeyLookups = 20
)

func newEdgeKeys(store *routing.Store) *edgeKeys {
	return &edgeKeys{node: store.GetNode, now: time.Now, keys: map[string]nodeKeyEntry{}, unknown: map[string]time.Time{},
		lookups: map[string]*rate.Limiter{}}
}

// key returns the registered key of the joined edge id, nil if there is
// none. When the registry cannot answer, the last known answer stands.
func (k *edgeKeys) key(ctx context.Context, id string) ed25519.PublicKey {
	now := k.now()
	peer, _ := ctx.Value(peerKey{}).(string)
	k.mu.Lock()
	e, ok := k.keys[id]
	at, isUnknown := k.unknown[id]
	fresh := ok && now.Sub(e.at) < nodeKeyTTL && now.Sub(e.at) >= 0
	skip := !ok && (isUnknown && now.Sub(at) < nodeKeyTTL && now.Sub(at) >= 0 || !k.allowLookup(peer, now))
	k.mu.Unlock()
	if fresh {
		return e.pub
	}
	if skip {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	n, err := k.node(ctx, id)
	var pub ed25519.PublicKey
	switch {
	case err == nil && n.Role == "edge":
		if p, perr := nodeproto.ParsePublicKey(n.PublicKey); perr == nil && nodeproto.NodeID(p) == id {
			pub = p
		}
	case err != nil && !errors.Is(err, routing.ErrNotFound):
		if ok {
			pub = e.pub
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if pub == nil && !ok {
		// Remembered as not an edge only when the registry said so: after
		// a failed lookup, a new edge is asked about again.
		if errors.Is(err, routing.ErrNotFound) || err == nil {
			if len(k.unknown) >= maxNodeKeyCache {
				clear(k.unknown)
			}
			k.unknown[id] = now
		}
		return nil
	}
	delete(k.unknown, id)
	if len(k.keys) >= maxNodeKeyCache {
		clear(k.keys)
	}
	k.keys[id] = nodeKeyEntry{pub: pub, at: now}
	return pub
}

// originsVouch is keyOf for an origin's vouchVerifier: the joined edges'
// keys (edge), and the content key the origins share (contentPub), which
// only origins hold, under its node id: an origin that proxies a viewer's
// request for a live stream to the origin that ingests it vouches for the
// viewer's address with it.
func originsVouch(contentPub ed25519.PublicKey, edge func(ctx context.Context, id string) ed25519.PublicKey) func(ctx context.Context, id string) ed25519.PublicKey {
	originsID := nodeproto.NodeID(contentPub)
	return func(ctx context.Context, id string) ed25519.PublicKey {
		if id == originsID {
			return contentPub
		}
		return edge(ctx, id)
	}
}

// newClientIPResolver is how a role finds its clients' addresses: trusted
// front proxies (cfg.TrustedProxies) and the nodes vouch believes (on the
// origin, joined edges; on an edge, its siblings).
func newClientIPResolver(cfg config.Config, vouch *vouchVerifier) *clientip.Resolver {
	trusted, _ := clientip.ParseTrusted(cfg.TrustedProxies) // validated with the config
	res := &clientip.Resolver{Trusted: trusted}
	if vouch != nil {
		res.Vouched = vouch.vouched
	}
	return res
}
