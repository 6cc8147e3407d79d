// Package playback implements signed playback: tokens that the origin signs
// with its ed25519 key and that any node (the origin, edges) verifies with
// the public key alone, and the playlist rewriting that carries a viewer's
// token to every URL a player fetches.
//
// # Token format
//
// A token is two unpadded base64url (RFC 4648, section 5) strings joined by
// a dot:
//
//	base64url(payload) "." base64url(signature)
//
// payload is a compact JSON object, for example
//
//	{"id":"qx3kd7ufmw2hpbz4na5e","exp":1767225600,"ip":"203.0.113.7","rg":"eu-west"}
//
// with these fields, and no others:
//
//	id   the live stream or video the token opens (required, ids.Valid)
//	exp  expiry, Unix seconds; the token is valid while now < exp (required, > 0)
//	ip   optional: the viewer's IP address ("203.0.113.7", "2001:db8::1"), or
//	     a prefix ("203.0.113.0/24"); the token is then valid only from there
//	rg   optional: a region name (1 to 64 of [A-Za-z0-9._-]); Verify returns
//	     it in Claims, the caller decides what to do with it
//
// signature is the 64-byte ed25519 signature of the payload bytes exactly as
// they appear base64url-decoded in the token. Tokens are URL-safe as they
// are ("?token=" needs no escaping), at most MaxTokenLen bytes, and the
// encoding is canonical (strict base64, no padding), so one signed payload
// has one spelling.
//
// Verify checks, in this order: the shape (ErrMalformed), the signature
// (ErrBadSignature; the payload is parsed only once it is known to be
// signed), the id (ErrWrongID), the expiry (ErrExpired) and the IP
// (ErrWrongIP, only when the token carries one).
package playback

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

// MaxTokenLen is the longest token Verify accepts; longer ones are
// ErrMalformed without further work.
const MaxTokenLen = 1024

// maxRegionLen is the longest region a token may carry.
const maxRegionLen = 64

// Errors of Verify. Each is returned as is or wrapped (use errors.Is).
var (
	// ErrMalformed: not a token of this format (or longer than MaxTokenLen).
	ErrMalformed = errors.New("playback token is malformed")
	// ErrBadSignature: the token was not signed by the key it is checked with.
	ErrBadSignature = errors.New("playback token signature is invalid")
	// ErrExpired: the token's expiry has passed.
	ErrExpired = errors.New("playback token has expired")
	// ErrWrongID: the token opens another live stream or video.
	ErrWrongID = errors.New("playback token is for another video or live stream")
	// ErrWrongIP: the token is bound to another IP address.
	ErrWrongIP = errors.New("playback token is bound to another IP address")
)

// ErrInvalidClaims is wrapped by the errors of Sign for claims that cannot
// be signed (an invalid id, no expiry, a malformed IP or region).
var ErrInvalidClaims = errors.New("invalid playback token claims")

// Claims is what a token says.
type Claims struct {
	// ID is the live stream or video the token opens.
	ID string
	// Expires is when the token stops working (second precision).
	Expires time.Time
	// IP, when not empty, is the address ("203.0.113.7") or prefix
	// ("203.0.113.0/24") the token is valid from.
	IP string
	// Region, when not empty, is a region name for the caller to check.
	Region string
}

// payload is the JSON form of Claims.
type payload struct {
	ID  string `json:"id"`
	Exp int64  `json:"exp"`
	IP  string `json:"ip,omitempty"`
	RG  string `json:"rg,omitempty"`
}

var b64 = base64.RawURLEncoding.Strict()

// Sign returns a token for c signed with priv. Expires is truncated to the
// second. The error wraps ErrInvalidClaims when c cannot be signed.
func Sign(priv ed25519.PrivateKey, c Claims) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("playback: the signing key is %d bytes, want an ed25519 private key (%d)", len(priv), ed25519.PrivateKeySize)
	}
	p := payload{ID: c.ID, Exp: c.Expires.Unix(), IP: c.IP, RG: c.Region}
	if c.Expires.IsZero() {
		p.Exp = 0
	}
	if c.IP != "" {
		norm, err := NormalizeIP(c.IP)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrInvalidClaims, err)
		}
		p.IP = norm
	}
	if err := p.check(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidClaims, err)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return "", fmt.Errorf("playback: %w", err)
	}
	sig := ed25519.Sign(priv, data)
	tok := b64.EncodeToString(data) + "." + b64.EncodeToString(sig)
	if len(tok) > MaxTokenLen {
		return "", fmt.Errorf("%w: the token would be %d bytes, more than %d", ErrInvalidClaims, len(tok), MaxTokenLen)
	}
	return tok, nil
}

// check validates a payload's fields (both when signing and, once the
// signature is known good, when verifying).
func (p payload) check() error {
	if !ids.Valid(p.ID) {
		return fmt.Errorf("id %q is not a valid id", clip(p.ID))
	}
	if p.Exp <= 0 {
		return errors.New("no expiry")
	}
	if p.IP != "" {
		if _, err := parseIPOrPrefix(p.IP); err != nil {
			return err
		}
	}
	if p.RG != "" && !ValidRegion(p.RG) {
		return fmt.Errorf("region %q must be 1 to %d characters of [A-Za-z0-9._-]", clip(p.RG), maxRegionLen)
	}
	return nil
}

// Verify checks token for id at time now, coming from clientIP (consulted
// only when the token is bound to an IP; "" then fails), and returns its
// claims. The errors are ErrMalformed, ErrBadSignature, ErrWrongID,
// ErrExpired and ErrWrongIP, possibly wrapped. Signature verification takes
// the same time whatever the token (ed25519.Verify).
func Verify(pub ed25519.PublicKey, token, id string, now time.Time, clientIP string) (Claims, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Claims{}, fmt.Errorf("%w: the verification key is %d bytes, want %d", ErrBadSignature, len(pub), ed25519.PublicKeySize)
	}
	if len(token) > MaxTokenLen {
		return Claims{}, fmt.Errorf("%w: longer than %d bytes", ErrMalformed, MaxTokenLen)
	}
	// The decoder skips '\r' and '\n'; allow exactly the alphabet, so that
	// a token has one spelling.
	for i := 0; i < len(token); i++ {
		if !isTokenChar(token[i]) {
			return Claims{}, fmt.Errorf("%w: byte %d is not in the base64url alphabet", ErrMalformed, i)
		}
	}
	encPayload, encSig, ok := strings.Cut(token, ".")
	if !ok || encPayload == "" || strings.Contains(encSig, ".") {
		return Claims{}, fmt.Errorf("%w: want <payload>.<signature>", ErrMalformed)
	}
	data, err := b64.DecodeString(encPayload)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: payload is not unpadded base64url", ErrMalformed)
	}
	sig, err := b64.DecodeString(encSig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, fmt.Errorf("%w: signature is not %d bytes of unpadded base64url", ErrMalformed, ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, data, sig) {
		return Claims{}, ErrBadSignature
	}
	p, err := parsePayload(data)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	c := Claims{ID: p.ID, Expires: time.Unix(p.Exp, 0), IP: p.IP, Region: p.RG}
	if p.ID != id {
		return c, ErrWrongID
	}
	if now.Unix() >= p.Exp {
		return c, ErrExpired
	}
	if p.IP != "" && !ipMatches(p.IP, clientIP) {
		return c, ErrWrongIP
	}
	return c, nil
}

// parsePayload decodes a signed payload strictly: one JSON object, only
// the known fields, valid values.
func parsePayload(data []byte) (payload, error) {
	var p payload
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return payload{}, fmt.Errorf("payload: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return payload{}, errors.New("payload: data after the JSON object")
	}
	if err := p.check(); err != nil {
		return payload{}, fmt.Errorf("payload: %v", err)
	}
	return p, nil
}

// isTokenChar tells whether c may appear in a token: the base64url
// alphabet and the dot.
func isTokenChar(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.'
}

// ValidRegion tells whether s can be a token's region: 1 to 64 characters
// of [A-Za-z0-9._-].
func ValidRegion(s string) bool {
	if s == "" || len(s) > maxRegionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// NormalizeIP checks an IP address or prefix a token may be bound to and
// returns its canonical form ("203.0.113.7", "2001:db8::/32"; an
// IPv4-mapped IPv6 address becomes IPv4; a prefix is masked).
func NormalizeIP(s string) (string, error) {
	p, err := parseIPOrPrefix(s)
	if err != nil {
		return "", err
	}
	if p.IsSingleIP() && !strings.Contains(s, "/") {
		return p.Addr().String(), nil
	}
	return p.String(), nil
}

// parseIPOrPrefix parses an address (as a single-address prefix) or a
// prefix, unmapping IPv4-mapped IPv6 and masking the prefix.
func parseIPOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("ip %q is not an IP address or prefix", clip(s))
		}
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			if bits < 96 {
				return netip.Prefix{}, fmt.Errorf("ip %q: an IPv4-mapped prefix shorter than /96", clip(s))
			}
			a, bits = a.Unmap(), bits-96
		}
		return netip.PrefixFrom(a.WithZone(""), bits).Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("ip %q is not an IP address or prefix", clip(s))
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ipMatches tells whether clientIP (an address, or host:port) is within
// bound (a token's "ip").
func ipMatches(bound, clientIP string) bool {
	p, err := parseIPOrPrefix(bound)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(clientIP)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(clientIP)
		if err2 != nil {
			return false
		}
		a = ap.Addr()
	}
	return p.Contains(a.Unmap().WithZone(""))
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
