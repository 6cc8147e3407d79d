package routing

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

func TestUploadLockExcludesAcrossStores(t *testing.T) {
	t.Parallel()
	s1, srv := newTestStore(t)
	s2 := secondStore(t, srv)
	const id = "abc123-0a1b2c3d"
	a, err := s1.UploadLocker(0, nil).NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s2.UploadLocker(0, nil).NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	if ttl := s1.rdb.PTTL(t.Context(), s1.k(uploadLockPrefix)+id).Val(); ttl <= 0 || ttl > DefaultUploadLockTTL {
		t.Fatalf("lease TTL %v, want (0, %v]", ttl, DefaultUploadLockTTL)
	}
	if ok, err := b.TryLock(t.Context()); ok || err != nil {
		t.Fatalf("TryLock of a held lock at another store = %v, %v; want false, nil", ok, err)
	}
	// A wait bounded by a context ends with the context's error.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	err = b.Lock(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held lock until the deadline: %v, want DeadlineExceeded", err)
	}
	// A waiter takes the lock once the holder lets go.
	got := make(chan error, 1)
	go func() { got <- b.Lock(t.Context()) }()
	select {
	case err := <-got:
		t.Fatalf("the waiter got the lock while it was held: %v", err)
	default:
	}
	if err := a.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock after Unlock")
	}
	if ok, err := a.TryLock(t.Context()); ok || err != nil {
		t.Fatalf("TryLock while the waiter holds it = %v, %v", ok, err)
	}
	if err := b.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n := s1.rdb.Exists(t.Context(), s1.k(uploadLockPrefix)+id).Val(); n != 0 {
		t.Fatal("the lease is still there after Unlock")
	}
	// Released, it can be taken again.
	if ok, err := a.TryLock(t.Context()); !ok || err != nil {
		t.Fatalf("TryLock after release = %v, %v", ok, err)
	}
	_ = a.Unlock()
}

func TestUploadLockRefusesBadIDs(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	l := s.UploadLocker(0, nil)
	for _, id := range []string{"", "a:b", "../x", "a b", "{tag}", "é", strings.Repeat("a", 129)} {
		if _, err := l.NewLock(id); !errors.Is(err, ErrInvalidUploadID) {
			t.Errorf("NewLock(%q): %v, want ErrInvalidUploadID", id, err)
		}
	}
}

// Renewal keeps a lease held well past its TTL.
func TestUploadLockRenewalKeepsItHeld(t *testing.T) {
	t.Parallel()
	s1, srv := newTestStore(t)
	s2 := secondStore(t, srv)
	// The renewals come when the test says (no race with the clock): the
	// lease is renewed to its full TTL each time.
	const ttl = 5 * time.Second
	l := s1.UploadLocker(ttl, nil)
	tick := make(chan time.Time)
	l.ticker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
	renewed := make(chan bool, 1)
	l.onRenew = func(held bool, _ error) { renewed <- held }
	a, _ := l.NewLock("held-00000000")
	b, _ := s2.UploadLocker(0, nil).NewLock("held-00000000")
	if err := a.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	key := s1.k(uploadLockPrefix) + "held-00000000"
	left := func() time.Duration {
		d, err := s1.rdb.PTTL(t.Context(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for range 3 {
		// Some of the lease has run out...
		deadline := time.Now().Add(10 * time.Second)
		for left() > ttl-100*time.Millisecond {
			if time.Now().After(deadline) {
				t.Fatal("the lease does not run down")
			}
			runtime.Gosched()
		}
		// ...and a renewal gives it its whole TTL again.
		tick <- time.Now()
		if !<-renewed {
			t.Fatal("the renewal found the lease lost")
		}
		if d := left(); d <= ttl-100*time.Millisecond {
			t.Fatalf("after a renewal %v of the lease are left, want nearly %v", d, ttl)
		}
	}
	if ok, err := b.TryLock(t.Context()); ok || err != nil {
		t.Fatalf("another store took the lock: %v, %v", ok, err)
	}
	if err := a.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
}

// A holder that stops renewing (its origin died or stalled) loses the lease
// after its TTL; another holder takes it; the first one's late renewal
// finds it lost and logs it, and its Unlock leaves the new holder's lease.
func TestUploadLockExpiresWhenTheHolderStops(t *testing.T) {
	t.Parallel()
	s1, srv := newTestStore(t)
	s2 := secondStore(t, srv)
	logs := &testutil.Buffer{}
	l := s1.UploadLocker(200*time.Millisecond, slog.New(slog.NewTextHandler(logs, nil)))
	tick := make(chan time.Time)
	l.ticker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
	renewed := make(chan bool, 1)
	l.onRenew = func(held bool, _ error) { renewed <- held }
	const id = "dead-11111111"
	a, _ := l.NewLock(id)
	lost := make(chan struct{})
	a.WhenLost(func() { close(lost) })
	b, _ := s2.UploadLocker(0, nil).NewLock(id)
	if err := a.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	// a never renews: b gets the lock once a's lease expires.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.Lock(ctx); err != nil {
		t.Fatalf("the lock of a holder that stopped renewing was not taken over: %v", err)
	}
	tick <- time.Now() // a's late renewal
	select {
	case held := <-renewed:
		if held {
			t.Fatal("a late renewal extended another holder's lease")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal")
	}
	if !strings.Contains(logs.String(), "lease lost") {
		t.Errorf("the lost lease was not logged: %q", logs.String())
	}
	// The holder is told, to stop writing (tusd's requestRelease).
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told its lease was lost")
	}
	if err := a.Unlock(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Unlock after the lease was lost: %v, want ErrLockLost", err)
	}
	if got := s1.rdb.Get(t.Context(), s1.k(uploadLockPrefix)+id).Val(); got != b.token {
		t.Fatalf("the new holder's lease is %q after the old holder's Unlock, want its token", got)
	}
	if err := b.Unlock(); err != nil {
		t.Fatalf("the new holder's Unlock: %v", err)
	}
}

// A SET NX whose answer comes too late is retried by the Redis client, and
// the retry answers "not set" although the first try took the lock: the
// lock sees its own token and holds it (before, the lease was orphaned for
// its TTL and the upload blocked). Redis's first OK is held back by a proxy
// until the client has given up on it and asked again.
func TestUploadLockSurvivesARetriedSet(t *testing.T) {
	t.Parallel()
	singleRedisOnly(t)
	s1, srv := newTestStore(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	retried := make(chan struct{}) // closed when a second connection comes
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			first := conns.Add(1) == 1
			if !first && conns.Load() == 2 {
				close(retried)
			}
			up, err := net.Dial("tcp", srv.single.Addr)
			if err != nil {
				_ = c.Close()
				continue
			}
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				held := false
				for {
					n, err := up.Read(buf)
					if err != nil {
						return
					}
					if first && !held && string(buf[:n]) == "+OK\r\n" {
						held = true
						<-retried // the client gave up on this answer
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	s2, err := NewStore("redis://" + ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s2.Close() })
	k, _ := s2.UploadLocker(0, nil).NewLock("retried-00000000")
	ok, err := k.TryLock(t.Context())
	if !ok || err != nil {
		tok, _ := s1.rdb.Get(t.Context(), s1.k(uploadLockPrefix)+"retried-00000000").Result()
		t.Fatalf("TryLock = %v, %v; the lease holds %q", ok, err, tok)
	}
	if err := k.Unlock(); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if n, _ := s1.rdb.Exists(t.Context(), s1.k(uploadLockPrefix)+"retried-00000000").Result(); n != 0 {
		t.Fatal("the lease is still there after Unlock")
	}
}

// Renewals that cannot reach Redis twice in a row (two thirds of the TTL)
// tell the holder its lease may lapse, so that it stops writing before
// another origin may take the upload over.
func TestUploadLockFailingRenewalsTellTheHolder(t *testing.T) {
	t.Parallel()
	s1, srv := newTestStore(t)
	srv.ownRedis(t)
	l := s1.UploadLocker(time.Minute, nil)
	tick := make(chan time.Time)
	l.ticker = func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} }
	renewed := make(chan error, 1)
	l.onRenew = func(_ bool, err error) { renewed <- err }
	a, _ := l.NewLock("cut-22222222")
	lost := make(chan struct{})
	a.WhenLost(func() { close(lost) })
	if err := a.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	tick <- time.Now()
	if err := <-renewed; err == nil {
		t.Fatal("a renewal reached a dead Redis")
	}
	select {
	case <-lost:
		t.Fatal("told after one failed renewal")
	default:
	}
	tick <- time.Now()
	<-renewed
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the holder was not told after two failed renewals")
	}
	if err := a.Unlock(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Unlock with Redis down: %v, want ErrUnavailable", err)
	}
}
