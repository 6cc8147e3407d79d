package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// ErrTooManyFailures is what a guarded Authorizer returns, without asking
// the one it guards, to an address that sent too many unknown stream keys.
type ErrTooManyFailures struct {
	RetryAfter time.Duration // when the next attempt is let through
}

func (e *ErrTooManyFailures) Error() string {
	return fmt.Sprintf("too many wrong stream keys from your address; try again in %s", e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrKeyRateLimited) hold for every value.
func (e *ErrTooManyFailures) Is(target error) bool { return target == ErrKeyRateLimited }

// ErrKeyRateLimited matches any *ErrTooManyFailures with errors.Is.
var ErrKeyRateLimited = errors.New("too many wrong stream keys")

// KeyGuard rate-limits stream-key guessing per remote address: each
// address may send Burst unknown keys, then one more every Every. One
// guard is shared by every ingest protocol, so an address can't spread
// its guesses over them. Right keys cost nothing. Memory is bounded: an
// address that refilled its allowance is forgotten, and at most MaxAddrs
// are tracked (beyond that the oldest entry makes room).
type KeyGuard struct {
	Burst    int
	Every    time.Duration
	MaxAddrs int
	Now      func() time.Time // nil: time.Now

	mu    sync.Mutex
	addrs map[string]*keyBucket
}

type keyBucket struct {
	tokens float64
	at     time.Time // allowance counted up to here
	last   time.Time // the latest failure
}

// NewKeyGuard allows burst failures per address, then one per every; a
// burst of 0 or less turns the guard off (nil).
func NewKeyGuard(burst int, every time.Duration) *KeyGuard {
	if burst <= 0 || every <= 0 {
		return nil
	}
	return &KeyGuard{Burst: burst, Every: every, MaxAddrs: 100_000}
}

type remoteKey struct{}

// WithRemote names the address (host:port or a bare host) a stream key
// came from, for a guarded Authorizer.
func WithRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, hostOf(addr))
}

// hostOf is the network an address counts for: the IPv4 address, or the
// IPv6 /64 (one subscriber's usual allocation, so that rotating through
// it gains nothing).
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	ip = ip.Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// Guard wraps auth: a key check from an address out of allowance is
// refused with *ErrTooManyFailures before auth is asked, and every
// ErrUnknownKey auth answers spends one. A key check whose context names
// no address (WithRemote) is not limited. A nil guard returns auth.
func (g *KeyGuard) Guard(auth Authorizer) Authorizer {
	if g == nil {
		return auth
	}
	return guarded{g: g, auth: auth}
}

type guarded struct {
	g    *KeyGuard
	auth Authorizer
}

func (a guarded) Authorize(ctx context.Context, key string) (string, error) {
	ip, _ := ctx.Value(remoteKey{}).(string)
	if ip == "" {
		return a.auth.Authorize(ctx, key)
	}
	// One failure is reserved before the check, so that concurrent
	// checks from one address can't exceed its allowance, and given back
	// unless the key was wrong.
	if wait := a.g.take(ip); wait > 0 {
		return "", &ErrTooManyFailures{RetryAfter: wait}
	}
	id, err := a.auth.Authorize(ctx, key)
	if !errors.Is(err, ErrUnknownKey) {
		a.g.refund(ip)
	}
	return id, err
}

func (g *KeyGuard) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// refill brings b's allowance up to now; under g.mu.
func (g *KeyGuard) refill(b *keyBucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(g.Burst), b.tokens+float64(d)/float64(g.Every))
		b.at = now
	}
}

// take reserves one failure of ip's allowance: it returns 0, or how long
// ip must wait when none is left (nothing is then reserved).
func (g *KeyGuard) take(ip string) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	b := g.addrs[ip]
	if b == nil {
		if g.addrs == nil {
			g.addrs = map[string]*keyBucket{}
		}
		if g.MaxAddrs > 0 && len(g.addrs) >= g.MaxAddrs {
			g.evict(now)
		}
		b = &keyBucket{tokens: float64(g.Burst), at: now}
		g.addrs[ip] = b
	}
	g.refill(b, now)
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) * float64(g.Every))
	}
	b.tokens--
	b.last = now
	return 0
}

// refund gives back what take reserved (the key was right, or could not
// be checked); a full allowance is forgotten.
func (g *KeyGuard) refund(ip string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.addrs[ip]
	if b == nil {
		return
	}
	g.refill(b, g.now())
	b.tokens = min(float64(g.Burst), b.tokens+1)
	if b.tokens >= float64(g.Burst) {
		delete(g.addrs, ip)
	}
}

// evictSample is how many entries evict looks at.
const evictSample = 16

// evict makes room for one more address, in constant time: of a few
// entries (Go's map order is random), a refilled one or else the one
// whose latest failure is oldest goes; under g.mu.
func (g *KeyGuard) evict(now time.Time) {
	var oldest string
	var at time.Time
	n := 0
	for ip, b := range g.addrs {
		g.refill(b, now)
		if b.tokens >= float64(g.Burst) {
			delete(g.addrs, ip)
			return
		}
		if oldest == "" || b.last.Before(at) {
			oldest, at = ip, b.last
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(g.addrs, oldest)
}

// Tracked is how many addresses the guard remembers now.
func (g *KeyGuard) Tracked() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.addrs)
}
