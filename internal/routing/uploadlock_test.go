package routing

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// secondStore is another Store on srv: another origin's connection.
func secondStore(t *testing.T, srv *redistest.Server) *Store {
	t.Helper()
	s, err := NewStore(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

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
	if ttl := s1.rdb.PTTL(t.Context(), uploadLockPrefix+id).Val(); ttl <= 0 || ttl > DefaultUploadLockTTL {
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
	if n := s1.rdb.Exists(t.Context(), uploadLockPrefix+id).Val(); n != 0 {
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
	key := uploadLockPrefix + "held-00000000"
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
	if err := a.Unlock(); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Unlock after the lease was lost: %v, want ErrLockLost", err)
	}
	if got := s1.rdb.Get(t.Context(), uploadLockPrefix+id).Val(); got != b.token {
		t.Fatalf("the new holder's lease is %q after the old holder's Unlock, want its token", got)
	}
	if err := b.Unlock(); err != nil {
		t.Fatalf("the new holder's Unlock: %v", err)
	}
}
