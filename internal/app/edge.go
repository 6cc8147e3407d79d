package app

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/edgecache"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/p2p/tracker"
)

// edgeNode is the state an edge learns from the origin.
type edgeNode struct {
	id        atomic.Value // string
	siblings  atomic.Value // []edgecache.Sibling
	sibKeys   atomic.Value // map[string]ed25519.PublicKey: the siblings' node keys by id
	playbackK atomic.Value // ed25519.PublicKey
	joined    atomic.Bool
	cache     *edgecache.Cache
	// feed is the edge's place in the invalidation feed (nil: none, in
	// tests of the heartbeat loop).
	feed *edgeFeed
	// origins are the configured origins and those learned from the
	// answers' "origins", shared by the cache and the node client.
	origins *originset.Set
	// clientIP finds a viewer's address (trusted proxies).
	clientIP func(*http.Request) string
	// key signs the vouches for viewers' addresses sent to the origin.
	key ed25519.PrivateKey
	now func() time.Time
	// claimFactor, above 1, multiplies the bytes served its heartbeats
	// claim: a cheating edge, in tests only (testOptions).
	claimFactor int64
}

// vouch vouches to the origin for the address of the viewer whose request
// req forwards (edgecache.Deps.Vouch).
func (e *edgeNode) vouch(req *http.Request, target, viewerIP string) {
	nodeproto.Vouch(req, e.key, nodeproto.NodeID(e.key.Public().(ed25519.PublicKey)), target, viewerIP, e.now())
}

func (e *edgeNode) learn(r nodeproto.JoinResponse, log *slog.Logger) {
	e.id.Store(r.ID)
	if e.feed != nil {
		e.feed.apply(r)
	}
	sib := make([]edgecache.Sibling, 0, len(r.Siblings))
	keys := make(map[string]ed25519.PublicKey, len(r.Siblings))
	for _, s := range r.Siblings {
		sib = append(sib, edgecache.Sibling{ID: s.ID, URL: s.URL})
		if pub, err := nodeproto.ParsePublicKey(s.PublicKey); err == nil && nodeproto.NodeID(pub) == s.ID {
			keys[s.ID] = pub
		}
	}
	e.siblings.Store(sib)
	e.sibKeys.Store(keys)
	// An answer without "origins" (the origin could not list them) changes
	// nothing.
	if r.Origins != nil && e.origins != nil && e.origins.Learn(r.Origins) {
		log.Info("origins changed", "origins", strings.Join(e.origins.All(), ","))
	}
	if r.PlaybackPublicKey != "" {
		if pub, err := playback.ParsePublicKey(r.PlaybackPublicKey); err == nil {
			e.playbackK.Store(pub)
		} else {
			log.Warn("the origin sent an unusable playback key; signed streams will be refused", "err", err)
		}
	}
	e.joined.Store(true)
}

// siblingKey is the node key of sibling id, nil for a node that is not a
// sibling now (vouchVerifier.keyOf).
func (e *edgeNode) siblingKey(_ context.Context, id string) ed25519.PublicKey {
	keys, _ := e.sibKeys.Load().(map[string]ed25519.PublicKey)
	return keys[id]
}

func (e *edgeNode) siblingList() []edgecache.Sibling {
	s, _ := e.siblings.Load().([]edgecache.Sibling)
	return s
}

// access enforces signed playback with the origin's public key alone.
func (e *edgeNode) access(r *http.Request, id string, signed bool) (string, int) {
	if !signed {
		return "", 0
	}
	pub, _ := e.playbackK.Load().(ed25519.PublicKey)
	if pub == nil {
		return "", http.StatusServiceUnavailable
	}
	tok := r.URL.Query().Get("token")
	if _, err := playback.Verify(pub, tok, id, e.now(), e.clientIP(r)); err != nil {
		return "", http.StatusForbidden
	}
	return tok, 0
}

// edgePublicURL is how viewers reach this edge: SHOAL_PUBLIC_URL when set,
// otherwise derived from the edge address.
func edgePublicURL(cfg config.Config, explicit bool) string {
	if explicit {
		return cfg.PublicURL
	}
	host, port, err := net.SplitHostPort(cfg.Edge.Addr)
	if err != nil {
		return cfg.PublicURL
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// runEdge runs the edge role: the cache on SHOAL_EDGE_ADDR, joined to the
// origin's registry and heartbeating to it. With several origins
// (configured, or learned from the answers), the cache and the node client
// fail over between them (internal/originset).
func runEdge(ctx context.Context, cfg config.Config, explicitURL bool, log *slog.Logger, opts testOptions) error {
	if cfg.Edge.Addr == config.EdgeOff {
		return errors.New(`edge.addr (SHOAL_EDGE_ADDR) is "off": the edge role needs a listen address`)
	}
	if cfg.OriginURL == "" {
		return errors.New("SHOAL_ORIGIN_URL (origin_url) is required for the edge role: the origin's http(s) URL")
	}
	if cfg.NodeToken == "" {
		return errors.New("SHOAL_NODE_TOKEN (node_token) is required for the edge role: POST /v1/node-tokens on the origin issues one")
	}
	key, err := playback.LoadOrCreateKey(filepath.Join(cfg.DataDir, "node.key"))
	if err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	publicURL := edgePublicURL(cfg, explicitURL)
	cacheDir := cfg.Edge.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(cfg.DataDir, "edgecache")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	origins, err := originset.New(cfg.OriginURLs(), time.Now)
	if err != nil {
		return fmt.Errorf("origin_url (SHOAL_ORIGIN_URL): %w", err)
	}
	node := &edgeNode{key: key, now: time.Now, claimFactor: opts.claimFactor, origins: origins}
	node.clientIP = newClientIPResolver(cfg, newVouchVerifier(node.siblingKey, reg, log.With("component", "vouch"))).IP
	// The disk tier waits until the edge has caught up with the
	// invalidation feed (edgeFeed).
	cache, err := edgecache.New(edgecache.Config{
		CacheDir: cacheDir, DiskBytes: cfg.Edge.CacheBytes, MemoryBytes: cfg.Edge.MemoryBytes,
		Self: publicURL, HoldDisk: true,
	}, edgecache.Deps{Log: log.With("component", "edgecache"), Registerer: reg, Siblings: node.siblingList, Access: node.access,
		ClientIP: node.clientIP, Vouch: node.vouch, Origins: origins})
	if err != nil {
		return err
	}
	node.cache = cache
	if node.feed, err = newEdgeFeed(cache, cacheDir, reg, log.With("component", "invalidations")); err != nil {
		return err
	}
	client := &nodeproto.Client{Origins: origins, Token: cfg.NodeToken, Key: key}
	join := nodeproto.JoinRequest{Role: "edge", Region: cfg.Region, PublicURL: publicURL}

	// Peers connect to the edge itself: their address is the connection's
	// (or a trusted proxy's X-Forwarded-For), never a sibling's vouch.
	p2p, err := newTracker(cache, newClientIPResolver(cfg, nil).IP, reg, log.With("component", "p2p"))
	if err != nil {
		return err
	}
	defer p2p.Close()
	mux := http.NewServeMux()
	mux.Handle("/hls/", cache)
	mux.Handle(tracker.Path, p2p)
	// The origin's audits ask who answers at the public URL.
	mux.HandleFunc(nodeproto.ProofPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		p, err := nodeproto.Prove(key, r.URL.Query().Get("challenge"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !node.joined.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"unavailable","reason":"not joined to the origin yet"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	mux.Handle("/metrics", metricsHandler(reg, cfg.MetricsToken))
	ln, err := net.Listen("tcp", cfg.Edge.Addr)
	if err != nil {
		return fmt.Errorf("edge: listen on %s: %w", cfg.Edge.Addr, err)
	}
	defer ln.Close()
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}

	log.Info("shoal edge starting", "version", Version, "node", nodeproto.NodeID(key.Public().(ed25519.PublicKey)),
		"public_url", publicURL, "origins", cfg.OriginURL, "region", cfg.Region, "config", fmt.Sprintf("%+v", cfg.Redacted()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return cache.Run(gctx) })
	g.Go(func() error {
		errc := make(chan error, 1)
		log.Info("edge listening", "addr", ln.Addr().String())
		go func() { errc <- srv.Serve(ln) }()
		select {
		case err := <-errc:
			return fmt.Errorf("edge http: %w", err)
		case <-gctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		p2p.Close() // hijacked sockets: Shutdown does not end them
		<-errc
		return nil
	})
	stats := newP2PBatcher(p2p.TakeStats)
	g.Go(func() error { return heartbeatLoop(gctx, client, join, node, cache, stats, cfg, log) })
	err = g.Wait()
	// Every invalidation up to the cursor is applied: a restart resumes
	// from it.
	node.feed.persist()
	log.Info("shoal edge stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// heartbeatLoop joins, then heartbeats every nodeproto.HeartbeatInterval,
// joining again when the origin forgot the node. A refusal (bad or revoked
// token) stops the edge: it must not serve as part of the network. Each
// heartbeat carries a batch of the P2P tracker's stats, the same one
// again until a heartbeat is answered.
func heartbeatLoop(ctx context.Context, c *nodeproto.Client, join nodeproto.JoinRequest, node *edgeNode, cache *edgecache.Cache, p2p *p2pBatcher, cfg config.Config, log *slog.Logger) error {
	var retry heartbeatRetry
	joined := false
	for {
		var err error
		more := false // the origin has more invalidations for this edge
		if !joined {
			var r nodeproto.JoinResponse
			if node.feed != nil {
				join.InvalidationCursor = node.feed.Cursor()
			}
			if r, err = c.Join(ctx, join); err == nil {
				node.learn(r, log)
				joined, more = true, r.InvalidationsMore
				log.Info("joined the origin", "node", r.ID, "siblings", len(r.Siblings))
			}
		} else {
			id, _ := node.id.Load().(string)
			var r nodeproto.HeartbeatResponse
			hb := heartbeatOf(cache.Stats())
			if node.claimFactor > 1 {
				hb.BytesServed *= node.claimFactor
			}
			hb.MaxViewers = cfg.Edge.MaxViewers
			hb.MaxEgressBytesPerSec = float64(cfg.Edge.MaxEgressMbps) * 1e6 / 8
			if node.feed != nil {
				hb.InvalidationCursor = node.feed.Cursor()
			}
			var batch map[string]tracker.Bytes
			hb.P2PBatch, batch = p2p.next()
			hb.P2PStreamBytes = heartbeatFigures(batch)
			if r, err = c.Heartbeat(ctx, id, hb); err == nil {
				p2p.ack(hb.P2PBatch)
				node.learn(r, log)
				more = r.InvalidationsMore
			} else if errors.Is(err, nodeproto.ErrUnknownNode) {
				log.Warn("the origin forgot this edge (missed heartbeats?): joining again")
				joined = false
				continue
			}
		}
		if errors.Is(err, nodeproto.ErrRefused) {
			return fmt.Errorf("edge: %w", err)
		}
		if err != nil && ctx.Err() != nil {
			return nil
		}
		wait := retry.next(err, log)
		if more {
			// Catching up with the feed (the disk tier waits for it):
			// as fast as the origin takes heartbeats.
			wait = min(wait, time.Second)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

func heartbeatOf(s edgecache.Stats) nodeproto.Heartbeat {
	return nodeproto.Heartbeat{
		Connections: s.Connections, EgressBytesPerSec: s.EgressBytesPerSec, CacheBytes: s.CacheBytes,
		Hits: s.Hits, Misses: s.Misses, OriginFetches: s.OriginFetches, BytesServed: s.TotalBytesServed, StreamBytes: s.BytesServed,
		Viewers: s.Viewers,
	}
}

// heartbeatRetry spaces a node's joins and heartbeats: every
// nodeproto.HeartbeatInterval while the origin answers, else after a
// backoff from 1 s doubling to 10 s, logging each new error once.
type heartbeatRetry struct {
	backoff time.Duration
	lastErr string
}

// next is the wait before the next try after one that ended with err.
func (r *heartbeatRetry) next(err error, log *slog.Logger) time.Duration {
	if err == nil {
		r.backoff, r.lastErr = 0, ""
		return nodeproto.HeartbeatInterval
	}
	r.backoff = max(r.backoff, time.Second)
	if err.Error() != r.lastErr {
		log.Warn("cannot reach the origin; retrying", "err", err, "in", r.backoff)
		r.lastErr = err.Error()
	}
	wait := r.backoff
	r.backoff = min(r.backoff*2, 10*time.Second)
	return wait
}
