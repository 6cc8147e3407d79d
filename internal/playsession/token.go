// Package playsession makes and reads playback session tokens: what the
// watch and embed pages hand the player so that its beacons (POST
// /v1/beacons) and route requests name a session the origin issued.
//
// A token is
//
//	s1.<kind><item id>.<session id>.<issued at>.<signature>
//
// kind is "v" (video) or "l" (live stream), the session id 16 random bytes
// and the signature 32 bytes (HMAC-SHA256 of everything before it, under a
// secret every origin of the deployment shares), both unpadded base64url;
// issued at is Unix seconds. Only [A-Za-z0-9._-], at most 146 characters.
package playsession

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

// Kinds of items a session plays.
const (
	KindVideo = "video"
	KindLive  = "live"
)

const (
	// StartWindow is how long after the page load a session's first beacon
	// may come.
	StartWindow = time.Hour
	// MaxLifetime is how long after the page load a session's beacons count.
	MaxLifetime = 12 * time.Hour
	// MaxSkew is how far in the future an issue time may be (origins'
	// clocks differ).
	MaxSkew = time.Minute
	// MaxLen is the longest token Parse reads.
	MaxLen = 200
)

const (
	version = "s1"
	sidLen  = 22 // base64url of 16 bytes
	sigLen  = 43 // base64url of 32 bytes
)

// ErrMalformed: the token is not one Mint makes. ErrSignature: it is, but
// not signed with the secret.
var (
	ErrMalformed = errors.New("playsession: malformed session token")
	ErrSignature = errors.New("playsession: session token signature does not verify")
)

// Claims are what a token says.
type Claims struct {
	Kind     string // KindVideo or KindLive
	ItemID   string
	Session  string // the random session id (22 characters of base64url)
	IssuedAt time.Time
}

// Mint returns a token for a new session of item id (kind KindVideo or
// KindLive), issued at now.
func Mint(secret []byte, kind, id string, now time.Time) (string, error) {
	k, ok := kindLetter(kind)
	if !ok || !ids.Valid(id) {
		return "", errors.New("playsession: mint: bad kind or item id")
	}
	var sid [16]byte
	if _, err := rand.Read(sid[:]); err != nil {
		return "", err
	}
	body := version + "." + k + id + "." + base64.RawURLEncoding.EncodeToString(sid[:]) + "." +
		strconv.FormatInt(now.Unix(), 10)
	return body + "." + sign(secret, body), nil
}

func sign(secret []byte, body string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("shoal playback session\x00"))
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func kindLetter(kind string) (string, bool) {
	switch kind {
	case KindVideo:
		return "v", true
	case KindLive:
		return "l", true
	}
	return "", false
}

// Parse checks tok's shape and signature (in constant time) and returns
// its claims. It does not judge the issue time: see Claims.Check.
func Parse(secret []byte, tok string) (Claims, error) {
	if len(tok) > MaxLen {
		return Claims{}, ErrMalformed
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 5 || parts[0] != version || len(parts[1]) < 2 || len(parts[2]) != sidLen ||
		len(parts[4]) != sigLen {
		return Claims{}, ErrMalformed
	}
	var c Claims
	switch parts[1][0] {
	case 'v':
		c.Kind = KindVideo
	case 'l':
		c.Kind = KindLive
	default:
		return Claims{}, ErrMalformed
	}
	c.ItemID = parts[1][1:]
	if !ids.Valid(c.ItemID) {
		return Claims{}, ErrMalformed
	}
	if b, err := base64.RawURLEncoding.Strict().DecodeString(parts[2]); err != nil || len(b) != 16 {
		return Claims{}, ErrMalformed
	}
	c.Session = parts[2]
	iat := parts[3]
	if len(iat) == 0 || len(iat) > 12 || (iat[0] == '0' && len(iat) > 1) {
		return Claims{}, ErrMalformed
	}
	for i := 0; i < len(iat); i++ {
		if iat[i] < '0' || iat[i] > '9' {
			return Claims{}, ErrMalformed
		}
	}
	secs, err := strconv.ParseInt(iat, 10, 64)
	if err != nil {
		return Claims{}, ErrMalformed
	}
	c.IssuedAt = time.Unix(secs, 0).UTC()
	got, err := base64.RawURLEncoding.Strict().DecodeString(parts[4])
	if err != nil || len(got) != 32 {
		return Claims{}, ErrMalformed
	}
	want, _ := base64.RawURLEncoding.DecodeString(sign(secret, tok[:len(tok)-sigLen-1]))
	if !hmac.Equal(got, want) {
		return Claims{}, ErrSignature
	}
	return c, nil
}

// ErrExpired: the session's time is over (or its issue time is in the
// future).
var ErrExpired = errors.New("playsession: session expired")

// Check tells whether a beacon at now may count for the session: started
// tells whether an earlier beacon of the session was accepted (a first
// beacon must come within StartWindow of the page load, later ones within
// MaxLifetime).
func (c Claims) Check(now time.Time, started bool) error {
	limit := StartWindow
	if started {
		limit = MaxLifetime
	}
	age := now.Sub(c.IssuedAt)
	if age < -MaxSkew || age >= limit {
		return ErrExpired
	}
	return nil
}

// Keeper mints and parses tokens with a secret it loads once (from the
// store every origin shares). One Keeper serves both the pages that mint
// tokens and the API that reads them.
type Keeper struct {
	load   func(ctx context.Context) ([]byte, error)
	reload func(ctx context.Context, current []byte) ([]byte, error)
	now    func() time.Time

	mu        sync.Mutex
	secret    []byte
	previous  []byte // the secret before the last refresh changed it
	refreshed time.Time
	reloading bool
	// loadErr is the last failed load's error, at loadFailed.
	loadErr    error
	loadFailed time.Time
}

// RefreshEvery bounds how often Refresh reads the secret again.
const RefreshEvery = time.Minute

// retryAfterFailure: after a reload that failed (the store down, or
// holding no usable secret), the next is at least this far off: forged
// tokens, which anyone can send, must not turn into store calls.
const retryAfterFailure = 5 * time.Second

// refreshTimeout bounds one reload.
const refreshTimeout = 2 * time.Second

// NewKeeper returns a Keeper whose secret comes from load (called until it
// succeeds once). reload, when set, reads the shared secret again for
// Refresh, given the current one (which it may write back where the store
// lost it, but it never makes a new one).
func NewKeeper(load func(ctx context.Context) ([]byte, error), reload func(ctx context.Context, current []byte) ([]byte, error)) *Keeper {
	return &Keeper{load: load, reload: reload, now: time.Now}
}

// Refresh reads the shared secret again, at most once every RefreshEvery
// (every retryAfterFailure after a reload failed; one reload at a time,
// outside the lock), and tells whether it
// changed: after a token failed to verify, the origins may have come to
// another one (the store lost it and another origin made a new one). The
// one it replaces is still accepted (Previous) until the next change.
func (k *Keeper) Refresh(ctx context.Context) bool {
	k.mu.Lock()
	now := k.now()
	if k.reload == nil || k.secret == nil || k.reloading || now.Sub(k.refreshed) < RefreshEvery {
		k.mu.Unlock()
		return false
	}
	k.reloading = true
	cur := k.secret
	k.mu.Unlock()
	// Not the request's context: a client that goes away must not leave
	// the refresh undone for a minute.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), refreshTimeout)
	s, err := k.reload(rctx, cur)
	cancel()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reloading = false
	if err != nil || len(s) < 16 {
		k.refreshed = now.Add(retryAfterFailure - RefreshEvery)
		return false
	}
	k.refreshed = now
	if hmac.Equal(s, cur) {
		return false
	}
	k.previous, k.secret = cur, s
	return true
}

// Previous is the secret a refresh replaced (nil: none), still accepted.
func (k *Keeper) Previous() []byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.previous
}

// Secret returns the secret, loading it on first use.
func (k *Keeper) Secret(ctx context.Context) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.secret != nil {
		return k.secret, nil
	}
	// A load that failed is not tried again for every request (anyone
	// can send tokens to check) until loadRetry has passed.
	if k.loadErr != nil && k.now().Sub(k.loadFailed) < loadRetry {
		return nil, k.loadErr
	}
	s, err := k.load(ctx)
	if err != nil {
		k.loadErr, k.loadFailed = err, k.now()
		return nil, err
	}
	k.secret, k.refreshed, k.loadErr = s, k.now(), nil
	return s, nil
}

// loadRetry is how long a failed first load of the secret answers with its
// error before it is tried again.
const loadRetry = time.Second

// Mint returns a token for a new session of item id of kind, issued now.
func (k *Keeper) Mint(ctx context.Context, kind, id string) (string, error) {
	s, err := k.Secret(ctx)
	if err != nil {
		return "", err
	}
	return Mint(s, kind, id, time.Now())
}
