package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/routing"
)

// keyStore is what the ingest authorizer needs of the store: the key
// lookup, and the feed of stream keys reset (or deleted) by any origin.
type keyStore interface {
	LiveStreamIDByKey(ctx context.Context, streamKey string) (string, error)
	KeyRevocationsCursor(ctx context.Context) (string, error)
	KeyRevocations(ctx context.Context, cursor string, block time.Duration) ([]routing.KeyRevocation, string, error)
}

// follow states of the key authorizer's revocation follower.
const (
	followStarting = iota // no cursor yet: nothing may be remembered
	followUp              // reading the feed: every revocation reaches forget
	followDown            // its read failed after it applied all it had read
)

// keyAuthorizer checks stream keys against Redis. It remembers the keys it
// accepted (by hash) so that a publisher reconnecting while Redis is down
// is still let in; a key Redis says is unknown is forgotten at once.
//
// A key reset (or a stream deleted) on any origin sharing the Redis must
// not be accepted from this memory, so Run follows the store's key
// revocations: each one, as soon as Redis made it, forgets what this node
// remembers of the stream and disconnects its publisher here (revoke). A
// remembered key is used only once the follower has seen its connection
// to Redis fail, that is after it has applied every revocation Redis sent
// before going down; a key reset and answered before the outage is then
// never accepted again.
type keyAuthorizer struct {
	store  keyStore
	log    *slog.Logger
	revoke func(id string) // disconnects live stream id's publisher on this node

	mu      sync.Mutex
	known   map[string]string // ids.Hash(stream key) -> stream id
	gen     uint64            // bumped by every forget
	state   int               // followStarting, followUp or followDown
	changed chan struct{}     // closed (and replaced) when state changes
}

const (
	// maxRememberedKeys bounds the fallback cache.
	maxRememberedKeys = 10000
	// revocationBlock is how long one read of the revocation feed waits.
	revocationBlock = 5 * time.Second
	// revocationRetry is the pause after a failed read of the feed: short,
	// so that a Redis that comes back is followed again at once.
	revocationRetry = 100 * time.Millisecond
	// followerWait bounds how long a key check that could not reach Redis
	// waits for the follower to see that Redis is down.
	followerWait = 2 * time.Second
)

func newKeyAuthorizer(store keyStore, log *slog.Logger) *keyAuthorizer {
	return &keyAuthorizer{store: store, log: log, revoke: func(string) {}, known: map[string]string{}, changed: make(chan struct{})}
}

func (a *keyAuthorizer) Authorize(ctx context.Context, streamKey string) (string, error) {
	h := ids.Hash(streamKey)
	a.mu.Lock()
	gen, state := a.gen, a.state
	a.mu.Unlock()
	id, err := a.store.LiveStreamIDByKey(ctx, streamKey)
	switch {
	case err == nil:
		a.mu.Lock()
		defer a.mu.Unlock()
		a.reachable(state)
		// Remembered only when every later revocation will reach forget:
		// the follower was reading the feed before the lookup, and no
		// forget ran during it (it may have been this key's).
		if state == followUp && gen == a.gen {
			if len(a.known) >= maxRememberedKeys {
				clear(a.known)
			}
			a.known[h] = id
		}
		return id, nil
	case errors.Is(err, routing.ErrNotFound):
		a.mu.Lock()
		a.reachable(state)
		delete(a.known, h)
		a.mu.Unlock()
		return "", ingest.ErrUnknownKey
	}
	if !a.followerDown(ctx) {
		return "", err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if id, ok := a.known[h]; ok {
		return id, nil
	}
	return "", err
}

// reachable notes, under a.mu, that Redis answered a lookup that started
// in follow state state: if the follower was down, revocations it has not
// read may have been made meanwhile (Redis is back, or flapping), so what
// is remembered can no longer be trusted.
func (a *keyAuthorizer) reachable(state int) {
	if state == followDown || a.state == followDown {
		a.gen++
		clear(a.known)
	}
}

// followerDown waits (a little) until the revocation follower has seen
// Redis fail, and reports whether it has: only then does what is
// remembered reflect every revocation Redis sent.
func (a *keyAuthorizer) followerDown(ctx context.Context) bool {
	timer := time.NewTimer(followerWait)
	defer timer.Stop()
	for {
		a.mu.Lock()
		state, changed := a.state, a.changed
		a.mu.Unlock()
		if state == followDown {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

func (a *keyAuthorizer) setState(s int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.state != s {
		a.state = s
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

// forget drops what the authorizer remembers of live stream id's keys (its
// key was reset: the old one must not be accepted while Redis is down).
func (a *keyAuthorizer) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	for h, known := range a.known {
		if known == id {
			delete(a.known, h)
		}
	}
}

// forgetAll drops every remembered key.
func (a *keyAuthorizer) forgetAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	clear(a.known)
}

// Run follows the key revocations until ctx is done: each one forgets the
// stream's remembered keys and disconnects its publisher on this node.
func (a *keyAuthorizer) Run(ctx context.Context) error {
	cursor := ""
	for ctx.Err() == nil {
		if cursor == "" {
			c, err := a.store.KeyRevocationsCursor(ctx)
			if err != nil {
				a.pause(ctx)
				continue
			}
			cursor = c
			a.setState(followUp)
			continue
		}
		revs, next, err := a.store.KeyRevocations(ctx, cursor, revocationBlock)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			a.mu.Lock()
			wasUp := a.state == followUp
			a.mu.Unlock()
			if wasUp {
				a.log.Warn("cannot follow stream key resets: Redis is unreachable; publishers reconnecting meanwhile are let in by the keys this node remembers", "err", err)
			}
			a.setState(followDown)
			a.pause(ctx)
			continue
		}
		a.mu.Lock()
		recovering := a.state == followDown
		a.mu.Unlock()
		if recovering {
			// Revocations missed meanwhile may have been trimmed from the
			// feed: Redis answers again, so nothing needs remembering.
			a.forgetAll()
		}
		for _, r := range revs {
			a.forget(r.ID)
			a.revoke(r.ID)
		}
		cursor = next
		if recovering {
			a.log.Info("following stream key resets again")
		}
		a.setState(followUp)
	}
	return nil
}

func (a *keyAuthorizer) pause(ctx context.Context) {
	t := time.NewTimer(revocationRetry)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// apiKeyStore is what authorizeAPIKeyPublish needs of the store.
type apiKeyStore interface {
	VerifyAPIKey(ctx context.Context, key string) (routing.APIKey, error)
	GetLiveStream(ctx context.Context, id string) (routing.LiveStream, error)
}

// apiKeyPrefix is the prefix of issued API keys (see player-api).
const apiKeyPrefix = "shoal"

// authorizeAPIKeyPublish is the one place that decides whether apiKey may
// publish to live stream id without its stream key (WHIP ?stream=<id>, how
// the dashboard goes live from the browser): the admin key (adminKeyHash is
// its ids.Hash) or an issued API key may. It returns nil, ingest.ErrUnknownKey
// (not a valid API key), ingest.ErrUnknownStream (no such stream) or an
// error wrapping routing.ErrUnavailable. A check of the key's scope (the
// "streams" scope) belongs here.
func authorizeAPIKeyPublish(ctx context.Context, store apiKeyStore, adminKeyHash, apiKey, id string) error {
	if !ids.Equal(ids.Hash(apiKey), adminKeyHash) {
		if !ids.LooksLikeSecret(apiKeyPrefix, apiKey) {
			return ingest.ErrUnknownKey
		}
		k, err := store.VerifyAPIKey(ctx, apiKey)
		if errors.Is(err, routing.ErrNotFound) {
			return ingest.ErrUnknownKey
		} else if err != nil {
			return err
		}
		if !k.HasScope(routing.ScopeStreams) {
			return ingest.ErrNotPermitted
		}
	}
	if !ids.Valid(id) {
		return ingest.ErrUnknownStream
	}
	if _, err := store.GetLiveStream(ctx, id); errors.Is(err, routing.ErrNotFound) {
		return ingest.ErrUnknownStream
	} else if err != nil {
		return err
	}
	return nil
}

// apiKeyPublish is the WHIP ingest's ingest.StreamAuthorizer: an API key
// for a named stream, checked by authorizeAPIKeyPublish.
type apiKeyPublish struct {
	store        apiKeyStore
	adminKeyHash string
}

func (p apiKeyPublish) AuthorizeStream(ctx context.Context, id, apiKey string) error {
	return authorizeAPIKeyPublish(ctx, p.store, p.adminKeyHash, apiKey, id)
}
