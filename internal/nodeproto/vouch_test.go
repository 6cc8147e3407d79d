package nodeproto

import (
	"crypto/ed25519"
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestVouch(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	otherPub, otherPriv, _ := ed25519.GenerateKey(nil)
	id := NodeID(pub)
	t0 := time.Unix(1_767_225_600, 0)
	const target = "/hls/qx3kd7ufmw2hpbz4na5e/master.m3u8?token=abc"

	signed := func() *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://origin"+target, nil)
		Vouch(r, priv, id, target, "203.0.113.7", t0)
		return r
	}
	check := func(r *http.Request, method, target string, now time.Time) error {
		v, err := ParseVouch(r)
		if err != nil {
			return err
		}
		return v.Check(pub, method, target, now)
	}

	r := signed()
	if got := r.Header.Get(ViewerIPHeader); got != "203.0.113.7" {
		t.Fatalf("%s = %q", ViewerIPHeader, got)
	}
	if RequestTarget(r) != target {
		t.Fatalf("RequestTarget = %q, want %q", RequestTarget(r), target)
	}
	v, err := ParseVouch(r)
	if err != nil || v.NodeID != id || v.ViewerIP != "203.0.113.7" {
		t.Fatalf("ParseVouch = %+v, %v", v, err)
	}
	// Fresh within VouchMaxAge either way.
	for _, now := range []time.Time{t0, t0.Add(VouchMaxAge), t0.Add(-VouchMaxAge)} {
		if err := check(signed(), http.MethodGet, target, now); err != nil {
			t.Errorf("at %s: %v", now.Sub(t0), err)
		}
	}
	for _, now := range []time.Time{t0.Add(VouchMaxAge + time.Second), t0.Add(-VouchMaxAge - time.Second)} {
		if err := check(signed(), http.MethodGet, target, now); !errors.Is(err, ErrVouchStale) {
			t.Errorf("at %s: %v, want ErrVouchStale", now.Sub(t0), err)
		}
	}

	// A replay with another address, request or method, or a vouch
	// checked with another node's key, does not verify.
	r = signed()
	r.Header.Set(ViewerIPHeader, "198.51.100.1")
	if err := check(r, http.MethodGet, target, t0); !errors.Is(err, ErrVouchSignature) {
		t.Errorf("changed IP: %v", err)
	}
	if err := check(signed(), http.MethodGet, target+"x", t0); !errors.Is(err, ErrVouchSignature) {
		t.Errorf("changed target: %v", err)
	}
	if err := check(signed(), http.MethodHead, target, t0); !errors.Is(err, ErrVouchSignature) {
		t.Errorf("changed method: %v", err)
	}
	v, _ = ParseVouch(signed())
	if err := v.Check(otherPub, http.MethodGet, target, t0); !errors.Is(err, ErrVouchSignature) {
		t.Errorf("another key: %v", err)
	}
	// Signed by another key that names this node.
	r, _ = http.NewRequest(http.MethodGet, "http://origin"+target, nil)
	Vouch(r, otherPriv, id, target, "203.0.113.7", t0)
	if err := check(r, http.MethodGet, target, t0); !errors.Is(err, ErrVouchSignature) {
		t.Errorf("forged by another key: %v", err)
	}

	// Malformed headers.
	r, _ = http.NewRequest(http.MethodGet, "http://origin"+target, nil)
	if _, err := ParseVouch(r); !errors.Is(err, ErrNoVouch) {
		t.Errorf("no headers: %v", err)
	}
	for name, edit := range map[string]func(h http.Header){
		"ip alone":        func(h http.Header) { h.Del(VouchHeader) },
		"vouch alone":     func(h http.Header) { h.Del(ViewerIPHeader) },
		"two ips":         func(h http.Header) { h.Add(ViewerIPHeader, "198.51.100.1") },
		"not an ip":       func(h http.Header) { h.Set(ViewerIPHeader, "viewer") },
		"mapped ip":       func(h http.Header) { h.Set(ViewerIPHeader, "::ffff:203.0.113.7") },
		"two fields":      func(h http.Header) { h.Set(VouchHeader, id+" 1767225600") },
		"bad time":        func(h http.Header) { h.Set(VouchHeader, id+" soon AAAA") },
		"short signature": func(h http.Header) { h.Set(VouchHeader, id+" 1767225600 AAAA") },
	} {
		r := signed()
		edit(r.Header)
		if _, err := ParseVouch(r); err == nil || errors.Is(err, ErrNoVouch) {
			t.Errorf("%s: %v, want a parse error", name, err)
		}
	}
	// An invalid viewer address sets nothing.
	r, _ = http.NewRequest(http.MethodGet, "http://origin"+target, nil)
	Vouch(r, priv, id, target, "not-an-ip", t0)
	if len(r.Header) != 0 {
		t.Errorf("vouched for an invalid address: %v", r.Header)
	}
}
