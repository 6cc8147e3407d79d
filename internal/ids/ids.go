// Package ids makes and checks the identifiers and secrets Shoal hands out.
//
// Ids appear in URL paths and file names (/hls/<id>/...), so Valid is strict:
// lowercase letters and digits only, a fixed alphabet with no separators,
// dots or escapes. Secrets (stream keys, API keys) carry a readable prefix.
package ids

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"net/url"
	"strings"
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// idLen is the length of an id made by New (12 random bytes, base32).
const idLen = 20

// New returns a random id of 20 characters from [a-z2-7].
func New() string { return random(12) }

// Valid reports whether s is an id that is safe in paths and file names:
// 1 to 64 characters of [a-z0-9]. It accepts more than New makes so that
// operators may choose readable ids in tests and tooling.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// NewSecret returns prefix + "_" + 32 random base32 characters (160 bits).
func NewSecret(prefix string) string { return prefix + "_" + random(20) }

// Hash returns the hex SHA-256 of a secret; secrets are stored and looked up
// by this hash, never in plain text.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Equal compares two secrets (or hashes) in constant time.
func Equal(a, b string) bool {
	ha := sha256.Sum256([]byte(a))
	hb := sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// LooksLikeSecret reports whether s has the shape NewSecret(prefix) makes.
func LooksLikeSecret(prefix, s string) bool {
	rest, ok := strings.CutPrefix(s, prefix+"_")
	return ok && len(rest) == 32 && Valid(rest)
}

func random(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("ids: crypto/rand failed: " + err.Error())
	}
	return enc.EncodeToString(b)
}

// RedactURL hides a URL's credentials for logs and answers: the password
// (the user name stays) and the whole query, where some devices take
// credentials. A string that does not parse is hidden but for its scheme.
func RedactURL(raw string) string {
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.Index(raw, "://"); i > 0 {
			return raw[:i] + "://***"
		}
		return "***"
	}
	out := u.Scheme + "://"
	if u.User != nil {
		out += u.User.Username() + ":***@"
	}
	out += u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		out += "?***"
	}
	return out
}
