package playback

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// testKey is a fixed key, so that the committed fuzz corpus holds tokens
// that really verify.
var testKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))

var testPub = testKey.Public().(ed25519.PublicKey)

// testNow is the time the tests verify at; testExp is an hour later.
var (
	testNow = time.Unix(1900000000, 0)
	testExp = testNow.Add(time.Hour)
)

func mustSign(t testing.TB, c Claims) string {
	t.Helper()
	tok, err := Sign(testKey, c)
	if err != nil {
		t.Fatalf("Sign(%+v): %v", c, err)
	}
	return tok
}

// tamper re-encodes a token's payload with raw bytes, keeping the signature.
func tamper(tok string, payload string) string {
	_, sig, _ := strings.Cut(tok, ".")
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + sig
}

// signRaw signs arbitrary payload bytes with the test key.
func signRaw(payload string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." +
		base64.RawURLEncoding.EncodeToString(ed25519.Sign(testKey, []byte(payload)))
}

type verifyCase struct {
	name     string
	token    string
	id       string
	clientIP string
	want     error // nil: valid
}

// verifyCases drives TestVerify and seeds FuzzVerify.
func verifyCases(t testing.TB) []verifyCase {
	valid := mustSign(t, Claims{ID: "abc", Expires: testExp})
	ipBound := mustSign(t, Claims{ID: "abc", Expires: testExp, IP: "203.0.113.7", Region: "eu-west"})
	prefix := mustSign(t, Claims{ID: "abc", Expires: testExp, IP: "2001:db8::/32"})
	otherKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	foreign, err := Sign(otherKey, Claims{ID: "abc", Expires: testExp})
	if err != nil {
		t.Fatal(err)
	}
	payload, sig, _ := strings.Cut(valid, ".")
	return []verifyCase{
		{"valid", valid, "abc", "", nil},
		{"valid, client IP ignored", valid, "abc", "198.51.100.1", nil},
		{"ip bound, right ip", ipBound, "abc", "203.0.113.7", nil},
		{"ip bound, host:port", ipBound, "abc", "203.0.113.7:5123", nil},
		{"ip bound, mapped", ipBound, "abc", "::ffff:203.0.113.7", nil},
		{"ip bound, wrong ip", ipBound, "abc", "203.0.113.8", ErrWrongIP},
		{"ip bound, no client ip", ipBound, "abc", "", ErrWrongIP},
		{"ip bound, garbage client ip", ipBound, "abc", "nope", ErrWrongIP},
		{"prefix, inside", prefix, "abc", "2001:db8:1::5", nil},
		{"prefix, outside", prefix, "abc", "2001:db9::5", ErrWrongIP},
		{"wrong id", valid, "abd", "", ErrWrongID},
		{"expired", mustSign(t, Claims{ID: "abc", Expires: testNow}), "abc", "", ErrExpired},
		{"expired long ago", mustSign(t, Claims{ID: "abc", Expires: time.Unix(1, 0)}), "abc", "", ErrExpired},
		{"wrong id beats expired", mustSign(t, Claims{ID: "abc", Expires: testNow}), "xyz", "", ErrWrongID},
		{"other key", foreign, "abc", "", ErrBadSignature},
		{"tampered id", tamper(valid, `{"id":"abd","exp":1900003600}`), "abd", "", ErrBadSignature},
		{"tampered exp", tamper(valid, `{"id":"abc","exp":2900003600}`), "abc", "", ErrBadSignature},
		{"flipped signature", payload + "." + flip(sig), "abc", "", ErrBadSignature},
		{"empty", "", "abc", "", ErrMalformed},
		{"no dot", payload, "abc", "", ErrMalformed},
		{"two dots", valid + ".x", "abc", "", ErrMalformed},
		{"empty payload", "." + sig, "abc", "", ErrMalformed},
		{"padded", payload + "=." + sig, "abc", "", ErrMalformed},
		{"std alphabet", strings.NewReplacer("-", "+", "_", "/").Replace(valid) + "+/", "abc", "", ErrMalformed},
		{"short signature", payload + "." + sig[:40], "abc", "", ErrMalformed},
		{"too long", valid + strings.Repeat("A", MaxTokenLen), "abc", "", ErrMalformed},
		{"signed garbage", signRaw("not json"), "abc", "", ErrMalformed},
		{"signed unknown field", signRaw(`{"id":"abc","exp":1900003600,"admin":true}`), "abc", "", ErrMalformed},
		{"signed without exp", signRaw(`{"id":"abc"}`), "abc", "", ErrMalformed},
		{"signed bad id", signRaw(`{"id":"../x","exp":1900003600}`), "../x", "", ErrMalformed},
		{"signed bad ip", signRaw(`{"id":"abc","exp":1900003600,"ip":"x"}`), "abc", "", ErrMalformed},
		{"signed trailing data", signRaw(`{"id":"abc","exp":1900003600} {}`), "abc", "", ErrMalformed},
		{"signed array", signRaw(`[]`), "abc", "", ErrMalformed},
	}
}

// flip changes the first character of a base64url string to another valid one.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestVerify(t *testing.T) {
	t.Parallel()
	for _, tc := range verifyCases(t) {
		c, err := Verify(testPub, tc.token, tc.id, testNow, tc.clientIP)
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: Verify = %v, want nil", tc.name, err)
			} else if c.ID != tc.id || !c.Expires.Equal(testExp) {
				t.Errorf("%s: claims %+v", tc.name, c)
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", tc.name, err, tc.want)
		}
		for _, other := range []error{ErrMalformed, ErrBadSignature, ErrExpired, ErrWrongID, ErrWrongIP} {
			if other != tc.want && errors.Is(err, other) {
				t.Errorf("%s: Verify = %v, which is also %v", tc.name, err, other)
			}
		}
	}
}

func TestSignRoundTrip(t *testing.T) {
	t.Parallel()
	c := Claims{ID: "qx3kd7ufmw2hpbz4na5e", Expires: testExp.Add(700 * time.Millisecond), IP: "::ffff:203.0.113.7", Region: "eu-west.1"}
	tok := mustSign(t, c)
	if len(tok) > 200 || strings.ContainsAny(tok, "+/=?&% ") {
		t.Errorf("token %q is not compact and URL-safe", tok)
	}
	got, err := Verify(testPub, tok, c.ID, testNow, "203.0.113.7")
	if err != nil {
		t.Fatal(err)
	}
	want := Claims{ID: c.ID, Expires: testExp, IP: "203.0.113.7", Region: "eu-west.1"}
	if got != want {
		t.Errorf("claims %+v, want %+v", got, want)
	}
	// Valid until the second of expiry, not at it.
	if _, err := Verify(testPub, tok, c.ID, testExp.Add(-time.Nanosecond), "203.0.113.7"); err != nil {
		t.Errorf("just before expiry: %v", err)
	}
	if _, err := Verify(testPub, tok, c.ID, testExp, "203.0.113.7"); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v", err)
	}
	// Deterministic: the same claims make the same token.
	if again := mustSign(t, want); again != tok {
		t.Errorf("Sign is not deterministic: %q vs %q", again, tok)
	}
	// The payload is the documented JSON.
	payload, _, _ := strings.Cut(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	if string(raw) != `{"id":"qx3kd7ufmw2hpbz4na5e","exp":1900003600,"ip":"203.0.113.7","rg":"eu-west.1"}` {
		t.Errorf("payload %s", raw)
	}
}

func TestSignRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []Claims{
		{ID: "", Expires: testExp},
		{ID: "ABC", Expires: testExp},
		{ID: strings.Repeat("a", 65), Expires: testExp},
		{ID: "abc"},
		{ID: "abc", Expires: time.Unix(-5, 0)},
		{ID: "abc", Expires: testExp, IP: "300.1.1.1"},
		{ID: "abc", Expires: testExp, IP: "fe80::1%eth0"},
		{ID: "abc", Expires: testExp, IP: "10.0.0.0/33"},
		{ID: "abc", Expires: testExp, Region: "eu west"},
		{ID: "abc", Expires: testExp, Region: strings.Repeat("r", 65)},
	} {
		if _, err := Sign(testKey, c); !errors.Is(err, ErrInvalidClaims) {
			t.Errorf("Sign(%+v) = %v, want ErrInvalidClaims", c, err)
		}
	}
	if _, err := Sign(testKey[:10], Claims{ID: "abc", Expires: testExp}); err == nil || errors.Is(err, ErrInvalidClaims) {
		t.Errorf("Sign with a short key = %v", err)
	}
	tok := mustSign(t, Claims{ID: "abc", Expires: testExp})
	if _, err := Verify(testPub[:5], tok, "abc", testNow, ""); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with a short key = %v", err)
	}
	if _, err := Verify(nil, tok, "abc", testNow, ""); !errors.Is(err, ErrBadSignature) {
		t.Errorf("Verify with no key = %v", err)
	}
}

func TestNormalizeIP(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"203.0.113.7":         "203.0.113.7",
		"::ffff:203.0.113.7":  "203.0.113.7",
		"2001:DB8::1":         "2001:db8::1",
		"203.0.113.77/24":     "203.0.113.0/24",
		"::ffff:10.1.2.3/104": "10.0.0.0/8",
		"10.1.2.3/32":         "10.1.2.3/32",
	} {
		got, err := NormalizeIP(in)
		if err != nil || got != want {
			t.Errorf("NormalizeIP(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "1.2.3", "1.2.3.4:80", "::ffff:1.2.3.4/8", "fe80::1%eth0"} {
		if got, err := NormalizeIP(bad); err == nil {
			t.Errorf("NormalizeIP(%q) = %q, want an error", bad, got)
		}
	}
}

func FuzzVerify(f *testing.F) {
	for _, tc := range verifyCases(f) {
		f.Add(tc.token, tc.id, tc.clientIP)
	}
	f.Fuzz(func(t *testing.T, token, id, clientIP string) {
		c, err := Verify(testPub, token, id, testNow, clientIP)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrExpired) &&
				!errors.Is(err, ErrWrongID) && !errors.Is(err, ErrWrongIP) {
				t.Fatalf("Verify(%q) = %v: not one of the documented errors", token, err)
			}
			return
		}
		// Accepted: nobody but the test can sign, so it is a token Sign
		// made for exactly these claims, for this id, not expired.
		if len(token) > MaxTokenLen || c.ID != id || !testNow.Before(c.Expires) {
			t.Fatalf("accepted %q for %q with claims %+v", token, id, c)
		}
		again, err := Sign(testKey, c)
		if err != nil || again != token {
			t.Fatalf("accepted %q, but its claims %+v sign to %q (%v)", token, c, again, err)
		}
	})
}
