package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"time"

	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
)

// sharedSigningKey is the signing key name that every origin sharing the
// Redis uses: this origin's own (kept at path, made on first use) when it
// is the first, else the one the others use, which then replaces the file
// at path. With Redis unreachable at start, the origin's own key is used
// and a warning says that origins may disagree until it restarts.
func sharedSigningKey(ctx context.Context, store *routing.Store, name, path string, log *slog.Logger) (ed25519.PrivateKey, error) {
	own, err := playback.LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	seed, err := store.ShareSigningKey(ctx, name, own.Seed())
	if err != nil {
		log.Warn("could not share the signing key through redis: this origin signs with its own, which other origins may not accept until it restarts with redis up",
			"key", name, "err", err)
		return own, nil
	}
	if bytes.Equal(seed, own.Seed()) {
		return own, nil
	}
	shared := ed25519.NewKeyFromSeed(seed)
	if err := playback.ReplaceKey(path, shared); err != nil {
		return nil, fmt.Errorf("keeping the %s key the other origins use: %w", name, err)
	}
	log.Warn("this origin now signs with the key the other origins on this redis use; its own was replaced", "key", name, "file", path)
	return shared, nil
}
