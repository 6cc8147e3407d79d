package playsession

import (
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func TestMintParse(t *testing.T) {
	now := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	tok, err := Mint(testSecret, KindVideo, "abc123", now)
	if err != nil {
		t.Fatal(err)
	}
	if len(tok) > MaxLen || !regexp.MustCompile(`^[A-Za-z0-9._-]+$`).MatchString(tok) {
		t.Fatalf("token %q is not URL-safe or too long", tok)
	}
	c, err := Parse(testSecret, tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Kind != KindVideo || c.ItemID != "abc123" || len(c.Session) != 22 || !c.IssuedAt.Equal(now) {
		t.Fatalf("claims %+v", c)
	}
	long, err := Mint(testSecret, KindLive, strings.Repeat("z", 64), now)
	if err != nil || len(long) > MaxLen {
		t.Fatalf("longest token %d chars, %v", len(long), err)
	}
	if c, err := Parse(testSecret, long); err != nil || c.Kind != KindLive {
		t.Fatalf("live token: %+v %v", c, err)
	}
	other, _ := Mint(testSecret, KindVideo, "abc123", now)
	if oc, _ := Parse(testSecret, other); oc.Session == c.Session {
		t.Fatal("two sessions share an id")
	}
	if _, err := Mint(testSecret, "movie", "abc123", now); err == nil {
		t.Fatal("bad kind minted")
	}
	if _, err := Mint(testSecret, KindVideo, "ABC", now); err == nil {
		t.Fatal("bad id minted")
	}
}

func TestParseRejects(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	tok, _ := Mint(testSecret, KindVideo, "abc123", now)
	parts := strings.Split(tok, ".")
	flip := func(s string) string {
		b := []byte(s)
		if b[0] == 'A' {
			b[0] = 'B'
		} else {
			b[0] = 'A'
		}
		return string(b)
	}
	for name, c := range map[string]struct {
		tok  string
		want error
	}{
		"empty":   {"", ErrMalformed},
		"garbage": {"hello", ErrMalformed},
		"other secret": {func() string {
			s, _ := Mint([]byte("another secret, 32 bytes long!!!"), KindVideo, "abc123", now)
			return s
		}(), ErrSignature},
		"other id":       {strings.Join([]string{parts[0], "vabc124", parts[2], parts[3], parts[4]}, "."), ErrSignature},
		"other kind":     {strings.Join([]string{parts[0], "labc123", parts[2], parts[3], parts[4]}, "."), ErrSignature},
		"other time":     {strings.Join([]string{parts[0], parts[1], parts[2], "1800000001", parts[4]}, "."), ErrSignature},
		"other session":  {strings.Join([]string{parts[0], parts[1], flip(parts[2]), parts[3], parts[4]}, "."), ErrSignature},
		"bad signature":  {strings.Join([]string{parts[0], parts[1], parts[2], parts[3], flip(parts[4])}, "."), ErrSignature},
		"leading zero":   {strings.Join([]string{parts[0], parts[1], parts[2], "0" + parts[3], parts[4]}, "."), ErrMalformed},
		"sign in time":   {strings.Join([]string{parts[0], parts[1], parts[2], "-1", parts[4]}, "."), ErrMalformed},
		"bad kind":       {strings.Join([]string{parts[0], "xabc123", parts[2], parts[3], parts[4]}, "."), ErrMalformed},
		"bad id":         {strings.Join([]string{parts[0], "vABC", parts[2], parts[3], parts[4]}, "."), ErrMalformed},
		"version":        {"s2" + tok[2:], ErrMalformed},
		"extra part":     {tok + ".x", ErrMalformed},
		"padded sig":     {tok[:len(tok)-1] + "=", ErrMalformed},
		"too long":       {strings.Repeat("a", MaxLen+1), ErrMalformed},
		"not base64 sid": {strings.Join([]string{parts[0], parts[1], "!!!!!!!!!!!!!!!!!!!!!!", parts[3], parts[4]}, "."), ErrMalformed},
	} {
		if _, err := Parse(testSecret, c.tok); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func TestCheck(t *testing.T) {
	at := time.Unix(1_800_000_000, 0)
	c := Claims{IssuedAt: at}
	for _, x := range []struct {
		after   time.Duration
		started bool
		ok      bool
	}{
		{0, false, true}, {StartWindow - time.Second, false, true}, {StartWindow, false, false},
		{StartWindow, true, true}, {MaxLifetime - time.Second, true, true}, {MaxLifetime, true, false},
		{-MaxSkew, false, true}, {-MaxSkew - time.Second, false, false},
	} {
		err := c.Check(at.Add(x.after), x.started)
		if (err == nil) != x.ok {
			t.Errorf("after %s started %v: %v", x.after, x.started, err)
		}
	}
}

// FuzzParse: Parse never panics, and whatever it accepts is a token Mint
// could have made (it reads back the same).
func FuzzParse(f *testing.F) {
	tok, _ := Mint(testSecret, KindVideo, "abc123", time.Unix(1_800_000_000, 0))
	f.Add(tok)
	f.Add("s1.vabc.AAAAAAAAAAAAAAAAAAAAAA.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(testSecret, s)
		if err != nil {
			return
		}
		k, _ := kindLetter(c.Kind)
		if s[:len(s)-sigLen-1] != version+"."+k+c.ItemID+"."+c.Session+"."+strconv.FormatInt(c.IssuedAt.Unix(), 10) {
			t.Fatalf("accepted %q reads back differently: %+v", s, c)
		}
	})
}

func TestKeeperRefresh(t *testing.T) {
	t.Parallel()
	secrets := [][]byte{[]byte("0123456789abcdef0123456789abcdef"), []byte("fedcba9876543210fedcba9876543210")}
	store := secrets[0]
	reloads := 0
	k := NewKeeper(func(context.Context) ([]byte, error) { return store, nil },
		func(ctx context.Context, current []byte) ([]byte, error) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			reloads++
			return store, nil
		})
	now := time.Unix(1_800_000_000, 0)
	k.now = func() time.Time { return now }
	ctx := context.Background()
	if k.Refresh(ctx) {
		t.Fatal("refreshed before the first load")
	}
	if s, err := k.Secret(ctx); err != nil || string(s) != string(secrets[0]) {
		t.Fatalf("secret %q %v", s, err)
	}
	// Another origin made a new secret; within a minute it is not read.
	store = secrets[1]
	now = now.Add(RefreshEvery - time.Second)
	if k.Refresh(ctx) || reloads != 0 {
		t.Fatalf("refreshed within a minute (%d reloads)", reloads)
	}
	// A request that went away does not cancel the reload.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	now = now.Add(time.Second)
	if !k.Refresh(gone) || reloads != 1 {
		t.Fatalf("not refreshed after a minute (%d reloads)", reloads)
	}
	if s, _ := k.Secret(ctx); string(s) != string(secrets[1]) || string(k.Previous()) != string(secrets[0]) {
		t.Fatalf("after the refresh: secret %q, previous %q", s, k.Previous())
	}
	now = now.Add(RefreshEvery)
	if k.Refresh(ctx) {
		t.Fatal("an unchanged secret reported as changed")
	}
	// Without a reload, never.
	k2 := NewKeeper(func(context.Context) ([]byte, error) { return secrets[0], nil }, nil)
	_, _ = k2.Secret(ctx)
	if k2.Refresh(ctx) {
		t.Fatal("a keeper without reload refreshed")
	}
}

// TestKeeperRefreshFailureIsPaced: a reload that fails is not tried again
// for every bad token (anyone can send those), only after
// retryAfterFailure.
func TestKeeperRefreshFailureIsPaced(t *testing.T) {
	reloads := 0
	k := NewKeeper(func(context.Context) ([]byte, error) { return []byte("0123456789abcdef0123456789abcdef"), nil },
		func(context.Context, []byte) ([]byte, error) {
			reloads++
			return nil, errors.New("redis: connection refused")
		})
	now := time.Unix(1_800_000_000, 0)
	k.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := k.Secret(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(RefreshEvery)
	for range 1000 {
		k.Refresh(ctx) // a forged token each
	}
	if reloads != 1 {
		t.Fatalf("%d reloads for 1000 bad tokens within a second, want 1", reloads)
	}
	now = now.Add(retryAfterFailure - time.Millisecond)
	k.Refresh(ctx)
	if reloads != 1 {
		t.Fatalf("tried again %v after a failure", retryAfterFailure-time.Millisecond)
	}
	now = now.Add(time.Millisecond)
	k.Refresh(ctx)
	if reloads != 2 {
		t.Fatalf("not tried again %v after a failure (%d reloads)", retryAfterFailure, reloads)
	}
}

// TestKeeperLoadFailureIsPaced: while the secret cannot be loaded (the
// store down), a load is tried at most once every loadRetry, not for every
// token checked.
func TestKeeperLoadFailureIsPaced(t *testing.T) {
	loads := 0
	fail := true
	k := NewKeeper(func(context.Context) ([]byte, error) {
		loads++
		if fail {
			return nil, errors.New("redis: connection refused")
		}
		return []byte("0123456789abcdef0123456789abcdef"), nil
	}, nil)
	now := time.Unix(1_800_000_000, 0)
	k.now = func() time.Time { return now }
	for range 100 {
		if _, err := k.Secret(context.Background()); err == nil {
			t.Fatal("a secret from a failing store")
		}
	}
	if loads != 1 {
		t.Fatalf("%d loads for 100 checks within a second, want 1", loads)
	}
	now, fail = now.Add(loadRetry), false
	if s, err := k.Secret(context.Background()); err != nil || len(s) == 0 || loads != 2 {
		t.Fatalf("after %v: %q, %v (%d loads)", loadRetry, s, err, loads)
	}
}
