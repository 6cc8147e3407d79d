package ingest

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type keyTable map[string]string

func (k keyTable) Authorize(_ context.Context, key string) (string, error) {
	if id, ok := k[key]; ok {
		return id, nil
	}
	return "", ErrUnknownKey
}

func TestKeyGuard(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewKeyGuard(3, 10*time.Second)
	g.Now = func() time.Time { return now }
	calls := 0
	auth := g.Guard(AuthorizerFunc(func(ctx context.Context, key string) (string, error) {
		calls++
		return keyTable{"good": "s1"}.Authorize(ctx, key)
	}))
	from := func(addr string) context.Context { return WithRemote(context.Background(), addr) }

	// Three wrong keys are answered as wrong keys; the fourth is refused
	// without asking.
	for i := range 3 {
		if _, err := auth.Authorize(from("192.0.2.1:5000"), "bad"); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("attempt %d: %v, want ErrUnknownKey", i, err)
		}
	}
	_, err := auth.Authorize(from("192.0.2.1:5001"), "good")
	var tm *ErrTooManyFailures
	if !errors.As(err, &tm) || !errors.Is(err, ErrKeyRateLimited) || tm.RetryAfter != 10*time.Second {
		t.Fatalf("after the burst: %v, want too many failures, retry in 10s", err)
	}
	if calls != 3 {
		t.Fatalf("the guarded authorizer was asked %d times, want 3", calls)
	}
	// Another address is not affected, nor a check that names none.
	if id, err := auth.Authorize(from("[2001:db8::1]:1935"), "good"); id != "s1" || err != nil {
		t.Fatalf("other address: %q %v", id, err)
	}
	if id, err := auth.Authorize(context.Background(), "good"); id != "s1" || err != nil {
		t.Fatalf("no address: %q %v", id, err)
	}
	// After Every, one more attempt; a right key is then accepted and
	// costs nothing.
	now = now.Add(4 * time.Second)
	if _, err := auth.Authorize(from("192.0.2.1"), "good"); !errors.As(err, &tm) || tm.RetryAfter != 6*time.Second {
		t.Fatalf("4 s later: %v, want retry in 6s", err)
	}
	now = now.Add(6 * time.Second)
	for range 2 {
		if id, err := auth.Authorize(from("192.0.2.1"), "good"); id != "s1" || err != nil {
			t.Fatalf("after the wait: %q %v", id, err)
		}
	}
	// A full allowance is forgotten.
	now = now.Add(time.Minute)
	if _, err := auth.Authorize(from("192.0.2.1"), "good"); err != nil {
		t.Fatal(err)
	}
	if n := g.Tracked(); n != 0 {
		t.Fatalf("%d addresses tracked after they refilled, want 0", n)
	}
	if NewKeyGuard(0, time.Second).Guard(keyTable{}) == nil {
		t.Fatal("a guard turned off must pass the authorizer through")
	}
}

func TestKeyGuardMemoryIsBounded(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewKeyGuard(2, time.Minute)
	g.MaxAddrs = 100
	g.Now = func() time.Time { return now }
	auth := g.Guard(keyTable{})
	for i := range 1000 {
		now = now.Add(time.Millisecond)
		_, _ = auth.Authorize(WithRemote(context.Background(), fmt.Sprintf("10.0.%d.%d", i/256, i%256)), "bad")
	}
	if n := g.Tracked(); n > 100 {
		t.Fatalf("%d addresses tracked, want at most 100", n)
	}
	// The newest stays tracked.
	if g.addrs["10.0.3.231"] == nil {
		t.Fatal("the newest address was evicted")
	}
}

// An IPv6 /64 is one address to the guard; IPv4-mapped IPv6 is IPv4.
func TestKeyGuardNetworks(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewKeyGuard(2, time.Minute)
	g.Now = func() time.Time { return now }
	auth := g.Guard(keyTable{})
	from := func(addr string) error {
		_, err := auth.Authorize(WithRemote(context.Background(), addr), "bad")
		return err
	}
	_ = from("[2001:db8:1:2::1]:1000")
	_ = from("[2001:db8:1:2:ffff::9]:1000")
	if err := from("[2001:db8:1:2:abcd::7]:1000"); !errors.Is(err, ErrKeyRateLimited) {
		t.Fatalf("a third address of the same /64: %v, want limited", err)
	}
	if err := from("[2001:db8:1:3::1]:1000"); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("another /64: %v", err)
	}
	_ = from("192.0.2.9:1")
	_ = from("[::ffff:192.0.2.9]:2")
	if err := from("192.0.2.9:3"); !errors.Is(err, ErrKeyRateLimited) {
		t.Fatalf("IPv4 and IPv4-mapped IPv6 counted apart: %v", err)
	}
}

// Concurrent checks from one address can't exceed its allowance: each
// reserves its failure before the key is checked.
func TestKeyGuardConcurrent(t *testing.T) {
	g := NewKeyGuard(3, time.Hour)
	release := make(chan struct{})
	var asked atomic.Int32
	auth := g.Guard(AuthorizerFunc(func(context.Context, string) (string, error) {
		asked.Add(1)
		<-release
		return "", ErrUnknownKey
	}))
	var wg sync.WaitGroup
	limited := atomic.Int32{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := auth.Authorize(WithRemote(context.Background(), "198.51.100.1:9"), "bad"); errors.Is(err, ErrKeyRateLimited) {
				limited.Add(1)
			}
		}()
	}
	// The 17 refused answer at once; the 3 admitted wait in the check.
	for limited.Load() < 17 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if asked.Load() != 3 || limited.Load() != 17 {
		t.Fatalf("%d checks reached the authorizer and %d were limited, want 3 and 17", asked.Load(), limited.Load())
	}
}
