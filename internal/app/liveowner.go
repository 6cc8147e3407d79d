package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// liveOwners keeps this origin's leases on the live streams it ingests
// (routing.ClaimLiveStream), so that several origins sharing Redis never
// ingest one stream twice, and tells where a stream live elsewhere is.
//
//   - A publisher is authorized only once its stream is claimed (guard):
//     a stream live at another origin is refused with the origin's URL.
//     With Redis down, publishing goes on (a single origin must not stop);
//     the claim is made when Redis is back.
//   - Every third of the TTL the leases of the streams live here are
//     renewed and the others released. A stream another origin took over
//     meanwhile (Redis lost the lease) has its publisher here disconnected.
//   - owner tells who ingests a stream (cached for a second), for the
//     status the API gives and for the HLS of a stream live elsewhere,
//     which is proxied to its owner (proxy).
type liveOwners struct {
	store  *routing.Store
	self   string // this origin's public URL
	ttl    time.Duration
	isLive func(id string) bool // live in this origin's hub
	// spooled, when set, tells whether the stream's files are not all in
	// the store yet: its lease is kept meanwhile, so that no origin takes
	// a broadcast that ended here for one to continue.
	spooled    func(id string) bool
	disconnect func(id string)
	log        *slog.Logger
	// vouchKey, when set, is the content key the origins share: proxy
	// vouches with it for the viewer's address (clientIP finds it), so
	// that playback tokens bound to an IP work at every origin.
	vouchKey ed25519.PrivateKey
	clientIP func(*http.Request) string

	// draining: the origin is stopping; the leases it holds are renewed
	// until run's context ends, live or not (what it wrote of them is
	// still going up to the store).
	draining atomic.Bool

	mu   sync.Mutex
	held map[string]time.Time // claimed here: when last claimed or authorized
	seen map[string]ownerSeen // owners looked up
}

type ownerSeen struct {
	owner string
	at    time.Time
}

// ownerCacheTTL bounds how stale an owner lookup may be.
const ownerCacheTTL = time.Second

func newLiveOwners(store *routing.Store, self string, isLive func(string) bool, log *slog.Logger) *liveOwners {
	return &liveOwners{store: store, self: strings.TrimSuffix(self, "/"), ttl: routing.DefaultLiveOwnerTTL, isLive: isLive,
		disconnect: func(string) {}, log: log, held: map[string]time.Time{}, seen: map[string]ownerSeen{}}
}

// claim makes this origin the owner of stream id, unless another holds it.
func (o *liveOwners) claim(ctx context.Context, id string) error {
	owner, err := o.store.ClaimLiveStream(ctx, id, o.self, o.ttl)
	if err != nil && !errors.Is(err, routing.ErrUnavailable) {
		return err
	}
	if err == nil && owner != o.self {
		o.remember(id, owner)
		return &ingest.LiveElsewhereError{Origin: owner}
	}
	if err != nil {
		o.log.Warn("redis is unreachable: the stream is taken without a lease, claimed once redis is back", "stream", id, "err", err)
	}
	o.mu.Lock()
	o.held[id] = time.Now()
	o.mu.Unlock()
	o.remember(id, o.self)
	return nil
}

// guard is auth, then the claim of the stream.
func (o *liveOwners) guard(auth ingest.Authorizer) ingest.Authorizer {
	return ingest.AuthorizerFunc(func(ctx context.Context, key string) (string, error) {
		id, err := auth.Authorize(ctx, key)
		if err != nil {
			return "", err
		}
		if err := o.claim(ctx, id); err != nil {
			return "", err
		}
		return id, nil
	})
}

// streamAuthFunc adapts a function to ingest.StreamAuthorizer.
type streamAuthFunc func(ctx context.Context, id, credential string) error

func (f streamAuthFunc) AuthorizeStream(ctx context.Context, id, credential string) error {
	return f(ctx, id, credential)
}

// guardStream is auth (an API key publishing to a named stream), then the
// claim of the stream.
func (o *liveOwners) guardStream(auth ingest.StreamAuthorizer) ingest.StreamAuthorizer {
	return streamAuthFunc(func(ctx context.Context, id, credential string) error {
		if err := auth.AuthorizeStream(ctx, id, credential); err != nil {
			return err
		}
		return o.claim(ctx, id)
	})
}

// run renews and releases the leases every third of the TTL until ctx is
// done, then releases them all.
func (o *liveOwners) run(ctx context.Context) {
	t := time.NewTicker(o.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.releaseAll()
			return
		case <-t.C:
		}
		o.renew(ctx)
	}
}

// renew renews the leases of the streams live here (or authorized less
// than a TTL ago: a publisher still starting) and releases the others.
func (o *liveOwners) renew(ctx context.Context) {
	o.mu.Lock()
	var keep, drop []string
	for id, at := range o.held {
		if o.draining.Load() || o.isLive(id) || time.Since(at) < o.ttl || o.spooled != nil && o.spooled(id) {
			keep = append(keep, id)
		} else {
			drop = append(drop, id)
			delete(o.held, id)
		}
	}
	o.mu.Unlock()
	for _, id := range drop {
		if err := o.store.ReleaseLiveStream(ctx, id, o.self); err != nil && ctx.Err() == nil {
			o.log.Warn("could not release a live stream's lease; it expires by itself", "stream", id, "err", err)
		}
		o.forget(id)
		// A publisher authorized meanwhile claimed the lease we just
		// released: claim it again at once.
		o.mu.Lock()
		_, again := o.held[id]
		o.mu.Unlock()
		if again {
			keep = append(keep, id)
		}
	}
	for _, id := range keep {
		owner, err := o.store.ClaimLiveStream(ctx, id, o.self, o.ttl)
		if err != nil {
			continue // Redis down: tried again at the next tick
		}
		if owner != o.self {
			o.log.Error("another origin took over a live stream ingested here (its lease was lost): disconnecting the publisher here",
				"stream", id, "owner", owner)
			o.mu.Lock()
			delete(o.held, id)
			o.mu.Unlock()
			o.remember(id, owner)
			o.disconnect(id)
		}
	}
}

// releaseAll releases every lease held (the origin stops; its streams
// ended).
func (o *liveOwners) releaseAll() {
	o.mu.Lock()
	held := o.held
	o.held = map[string]time.Time{}
	o.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for id := range held {
		_ = o.store.ReleaseLiveStream(ctx, id, o.self)
	}
}

func (o *liveOwners) remember(id, owner string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.seen) > 4096 {
		clear(o.seen)
	}
	o.seen[id] = ownerSeen{owner: owner, at: time.Now()}
}

func (o *liveOwners) forget(id string) {
	o.mu.Lock()
	delete(o.seen, id)
	o.mu.Unlock()
}

// owner is the origin that ingests stream id ("" when none does, or
// Redis cannot tell).
func (o *liveOwners) owner(ctx context.Context, id string) string {
	if o.isLive(id) {
		return o.self
	}
	// Here, the hub is the truth: a lease held while a publisher is still
	// starting (or while the origin drains) is not a live stream.
	o.mu.Lock()
	s, ok := o.seen[id]
	o.mu.Unlock()
	if ok && time.Since(s.at) < ownerCacheTTL {
		if s.owner == o.self {
			return ""
		}
		return s.owner
	}
	// Every HLS request asks: a slow Redis must not hold them all.
	ctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	owners, err := o.store.LiveStreamOwners(ctx, id)
	if err != nil {
		o.remember(id, "") // served here meanwhile; asked again in a second
		return ""
	}
	o.remember(id, owners[id])
	if owners[id] == o.self {
		return ""
	}
	return owners[id]
}

// isLiveAnywhere tells whether stream id is live here or at another
// origin.
func (o *liveOwners) isLiveAnywhere(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return o.owner(ctx, id) != ""
}

// viewerRequest keys the viewer's request in the context of the request
// proxy sends the owner.
type viewerRequest struct{}

// forwardedHeader marks a request an origin proxies to the owner of a
// live stream: the owner never proxies it again.
const forwardedHeader = "Shoal-Origin-Forwarded"

// ownerTarget is the target of out, a request proxied to the owner at
// base, as the owner receives it: without the path of the owner's public
// URL (a front proxy serving it under a prefix strips that), as an edge
// vouches for the part of its request after the base URL.
func ownerTarget(out *http.Request, base *url.URL) string {
	t := nodeproto.RequestTarget(out)
	if prefix := strings.TrimSuffix(base.Path, "/"); prefix != "" {
		if rest, ok := strings.CutPrefix(t, prefix); ok && strings.HasPrefix(rest, "/") {
			return rest
		}
	}
	return t
}

// proxy wraps the HLS handler: the playlists and segments of a stream
// live at another origin are fetched from that origin (which has the live
// playlists and parts in memory), once; everything else is served here.
func (o *liveOwners) proxy(next http.Handler) http.Handler {
	var mu sync.Mutex
	proxies := map[string]*httputil.ReverseProxy{}
	proxyTo := func(owner string) *httputil.ReverseProxy {
		mu.Lock()
		defer mu.Unlock()
		if p := proxies[owner]; p != nil {
			return p
		}
		u, err := url.Parse(owner)
		if err != nil {
			return nil
		}
		p := &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(u)
				r.Out.Host = u.Host
				r.Out.Header.Set(forwardedHeader, "1")
				// Only this origin's own word on the viewer goes on.
				r.Out.Header.Del(nodeproto.ViewerIPHeader)
				r.Out.Header.Del(nodeproto.VouchHeader)
				if o.vouchKey != nil && o.clientIP != nil {
					nodeproto.Vouch(r.Out, o.vouchKey, nodeproto.NodeID(o.vouchKey.Public().(ed25519.PublicKey)),
						ownerTarget(r.Out, u), o.clientIP(r.In), time.Now())
				}
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				// The owner is stopping (or gone): what the store has is
				// served here, behind the live edge, for the viewer's
				// own request (r is the one to the owner: its path has
				// the owner's prefix, its headers this origin's).
				if in, ok := r.Context().Value(viewerRequest{}).(*http.Request); ok {
					r = in
				}
				o.log.Warn("the origin that ingests a live stream did not answer; serving it from the store", "owner", owner, "path", r.URL.Path, "err", err)
				next.ServeHTTP(w, r)
			},
		}
		if len(proxies) > 64 {
			clear(proxies)
		}
		proxies[owner] = p
		return p
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(forwardedHeader) == "" {
			if rel, ok := hlspath.Parse(r.URL.Path); ok {
				id, _, _ := strings.Cut(rel, "/")
				if owner := o.owner(r.Context(), id); owner != "" && owner != o.self {
					if p := proxyTo(owner); p != nil {
						p.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), viewerRequest{}, r)))
						return
					}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}
