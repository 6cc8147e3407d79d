package app

import (
	"context"
	"errors"
	"sync"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/routing"
)

// keyLookup is the store query the ingest authorizer needs.
type keyLookup interface {
	LiveStreamIDByKey(ctx context.Context, streamKey string) (string, error)
}

// keyAuthorizer checks stream keys against Redis. It remembers the keys it
// accepted so that a publisher reconnecting while Redis is down is still let
// in; a key Redis says is unknown is forgotten at once.
type keyAuthorizer struct {
	store keyLookup

	mu    sync.Mutex
	known map[string]string // ids.Hash(stream key) -> stream id
}

// maxRememberedKeys bounds the fallback cache.
const maxRememberedKeys = 10000

func newKeyAuthorizer(store keyLookup) *keyAuthorizer {
	return &keyAuthorizer{store: store, known: map[string]string{}}
}

func (a *keyAuthorizer) Authorize(ctx context.Context, streamKey string) (string, error) {
	h := ids.Hash(streamKey)
	id, err := a.store.LiveStreamIDByKey(ctx, streamKey)
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case err == nil:
		if len(a.known) >= maxRememberedKeys {
			clear(a.known)
		}
		a.known[h] = id
		return id, nil
	case errors.Is(err, routing.ErrNotFound):
		delete(a.known, h)
		return "", ingest.ErrUnknownKey
	}
	if id, ok := a.known[h]; ok {
		return id, nil
	}
	return "", err
}

// forget drops what the authorizer remembers of live stream id's keys (its
// key was reset: the old one must not be accepted while Redis is down).
func (a *keyAuthorizer) forget(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for h, known := range a.known {
		if known == id {
			delete(a.known, h)
		}
	}
}
