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

// signingKeyKeeper keeps the signing keys this origin uses in Redis, once
// a minute: a Redis that lost its data (restarted without persistence,
// flushed) gets them back from the running origins, so that an origin
// started afterwards adopts them instead of offering a key of its own,
// which the running ones would not share. A key other than this origin's
// found there (Redis was unreachable when it started, and another origin
// offered its own meanwhile) cannot be taken on while running: it is
// logged, once per kind of answer, with what to do.
type signingKeyKeeper struct {
	store *routing.Store
	keys  map[string]ed25519.PrivateKey // by name
	log   *slog.Logger
	last  map[string]string // the last outcome logged, by name
}

func newSigningKeyKeeper(store *routing.Store, keys map[string]ed25519.PrivateKey, log *slog.Logger) *signingKeyKeeper {
	return &signingKeyKeeper{store: store, keys: keys, log: log, last: map[string]string{}}
}

// signingKeyCheck is how often the keeper offers the keys again.
const signingKeyCheck = time.Minute

func (k *signingKeyKeeper) run(ctx context.Context) {
	every(ctx, signingKeyCheck, func() bool { k.check(ctx); return false })
}

// check offers every key once; it returns the names whose stored key is
// another origin's.
func (k *signingKeyKeeper) check(ctx context.Context) []string {
	var differ []string
	for name, key := range k.keys {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		stored, err := k.store.ShareSigningKey(cctx, name, key.Seed())
		cancel()
		outcome := "shared"
		switch {
		case err != nil:
			outcome = "unreachable"
		case !bytes.Equal(stored, key.Seed()):
			outcome = "differs"
			differ = append(differ, name)
		}
		if outcome == k.last[name] {
			continue
		}
		prev := k.last[name]
		k.last[name] = outcome
		switch outcome {
		case "differs":
			k.log.Error("redis holds another signing key than this origin's: origins disagree (edges and players may refuse what this one signs); restart this origin to take the shared key on",
				"key", name)
		case "unreachable":
			if prev != "" {
				k.log.Warn("could not check the shared signing key in redis", "key", name, "err", err)
			}
		case "shared":
			if prev != "" {
				k.log.Info("the shared signing key is in redis again", "key", name)
			}
		}
	}
	return differ
}
