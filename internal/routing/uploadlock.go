package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"time"

	"github.com/redis/go-redis/v9"
)

// Upload locks: one writer per tus upload across every origin that shares
// this Redis and an upload directory.
//
//	shoal:uploadlock:<upload id>   string  the holder's random token, with a TTL (the lease)
//
// A holder takes the key with SET NX PX and renews it every third of its
// TTL with a script that extends it only while it still holds the holder's
// token; Unlock deletes it the same way, so an Unlock after the lease was
// lost never deletes another holder's lease. A holder whose origin dies
// stops renewing, and its lease expires after at most one TTL.

// DefaultUploadLockTTL is how long an upload lock outlives its holder's
// last renewal.
const DefaultUploadLockTTL = 30 * time.Second

// ErrInvalidUploadID is returned by NewLock for an id that cannot name a
// lock key.
var ErrInvalidUploadID = errors.New("invalid upload id")

// ErrLockLost is returned by Unlock when the lease had expired and was
// not the holder's any more.
var ErrLockLost = errors.New("upload lock lost")

const (
	uploadLockPrefix = "uploadlock:"
	// maxUploadIDLen bounds the ids a key is made of (Shoal's upload ids
	// are a video id, a dash and 8 characters: at most 73).
	maxUploadIDLen = 128
	// The wait for a lock held elsewhere polls Redis from lockPollMin,
	// doubling up to lockPollMax, with jitter.
	lockPollMin = 10 * time.Millisecond
	lockPollMax = 250 * time.Millisecond
)

// renewLockScript extends the lease KEYS[1] by ARGV[2] ms if it holds the
// token ARGV[1]; it returns 1 if it did, 0 if the lease is not the holder's.
var renewLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// unlockScript deletes the lease KEYS[1] if it holds the token ARGV[1].
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0`)

// UploadLocker hands out upload locks leased in Redis.
type UploadLocker struct {
	s   *Store
	ttl time.Duration
	log *slog.Logger

	// Test hooks. ticker makes the renewal ticker (time.NewTicker when
	// nil); onRenew, when set, is called after each renewal with whether
	// the lease was still held.
	ticker  func(d time.Duration) (<-chan time.Time, func())
	onRenew func(held bool, err error)
}

// UploadLocker returns a locker whose leases last ttl past their last
// renewal (DefaultUploadLockTTL when ttl <= 0). A lease lost while held is
// logged to log (discarded when nil).
func (s *Store) UploadLocker(ttl time.Duration, log *slog.Logger) *UploadLocker {
	if ttl <= 0 {
		ttl = DefaultUploadLockTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &UploadLocker{s: s, ttl: ttl, log: log}
}

// TTL is the lease's time to live.
func (l *UploadLocker) TTL() time.Duration { return l.ttl }

// validUploadID tells whether id may be part of a key: 1 to 128 ASCII
// letters, digits, dashes or underscores (tusd's and Shoal's ids are).
func validUploadID(id string) bool {
	if len(id) == 0 || len(id) > maxUploadIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// NewLock returns the (unlocked) lock of upload id. An id that is not
// 1 to 128 letters, digits, dashes or underscores is refused with
// ErrInvalidUploadID.
func (l *UploadLocker) NewLock(id string) (*UploadLock, error) {
	if !validUploadID(id) {
		return nil, fmt.Errorf("routing: upload lock: %w: %q", ErrInvalidUploadID, id)
	}
	return &UploadLock{l: l, id: id, key: l.s.k(uploadLockPrefix) + id}, nil
}

// UploadLock is one upload's lock. Lock and Unlock must not be called
// concurrently; a lock may be locked again after Unlock.
type UploadLock struct {
	l   *UploadLocker
	id  string
	key string

	token string
	base  context.Context // the Lock call's values, without its cancellation
	stop  chan struct{}   // closed by Unlock: stop renewing
	done  chan struct{}   // closed when the renewal goroutine has returned

	// onLost, when set (WhenLost), is called once when the lease is, or
	// may be, lost while held.
	onLost func()
}

// WhenLost sets f to be called (from the renewal goroutine, before Unlock
// returns) when the lease is lost while held: a renewal found it taken,
// or renewals failed for so long that it may have expired. The holder must
// then stop writing: another origin may take the upload over. Call it
// before Lock.
func (k *UploadLock) WhenLost(f func()) { k.onLost = f }

// TryLock takes the lock if nobody holds it, without waiting. It returns
// false when another holder has it; a Redis failure wraps ErrUnavailable.
func (k *UploadLock) TryLock(ctx context.Context) (bool, error) {
	if k.stop != nil {
		return false, errors.New("routing: upload lock: already locked")
	}
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := hex.EncodeToString(b[:])
	ok, err := k.l.s.rdb.SetNX(ctx, k.key, token, k.l.ttl).Result()
	if err == nil && !ok {
		// A retried SET whose first try took the lock answers "not set":
		// the lease holds this attempt's token then.
		v, gerr := k.l.s.rdb.Get(ctx, k.key).Result()
		ok, err = gerr == nil && v == token, nil
		if gerr != nil && !errors.Is(gerr, redis.Nil) {
			err = gerr
		}
	}
	if err != nil {
		// The SET may have taken the lock before failing: give it back.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = unlockScript.Run(cctx, k.l.s.rdb, []string{k.key}, token).Err()
		cancel()
		return false, wrapErr("upload lock", err)
	}
	if !ok {
		return false, nil
	}
	k.token = token
	k.base = context.WithoutCancel(ctx)
	k.stop, k.done = make(chan struct{}), make(chan struct{})
	go k.renew()
	return true, nil
}

// Lock takes the lock, waiting while another holder (on any origin) has
// it: it polls Redis with a backoff from 10 to 250 ms. When ctx ends first
// it returns an error that wraps ctx.Err(); a Redis failure wraps
// ErrUnavailable. Once taken, the lease is renewed every third of its TTL
// until Unlock.
func (k *UploadLock) Lock(ctx context.Context) error {
	wait := lockPollMin
	var t *time.Timer
	for {
		ok, err := k.TryLock(ctx)
		if ctx.Err() != nil {
			if ok {
				_ = k.Unlock()
			}
			return fmt.Errorf("routing: upload lock %s: %w", k.id, ctx.Err())
		}
		if err != nil || ok {
			return err
		}
		d := wait/2 + mrand.N(wait/2+1)
		if t == nil {
			t = time.NewTimer(d)
			defer t.Stop()
		} else {
			t.Reset(d)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("routing: upload lock %s: %w", k.id, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, lockPollMax)
	}
}

// renew keeps the lease alive until Unlock. A lease found lost (it
// expired, after renewals failed or stalled, and another holder took it),
// or one whose renewals failed for so long that it may expire before the
// next one, is logged, no longer renewed, and reported to onLost, so that
// the holder stops writing before another origin takes the upload over.
func (k *UploadLock) renew() {
	defer close(k.done)
	newTicker := k.l.ticker
	if newTicker == nil {
		newTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	tick, stopTick := newTicker(k.l.ttl / 3)
	defer stopTick()
	// failures counts renewals in a row that could not reach Redis: after
	// two (two thirds of the TTL) the lease may lapse before the next.
	failures := 0
	lost := func() {
		if k.onLost != nil {
			k.onLost()
		}
	}
	for {
		select {
		case <-k.stop:
			return
		case <-tick:
		}
		ctx, cancel := context.WithTimeout(k.base, max(k.l.ttl/3, time.Second))
		n, err := renewLockScript.Run(ctx, k.l.s.rdb, []string{k.key}, k.token, k.l.ttl.Milliseconds()).Int()
		cancel()
		held := err == nil && n == 1
		switch {
		case err != nil:
			// Redis unreachable: try again at the next tick; the lease
			// lasts its TTL meanwhile.
			k.l.log.Warn("upload lock: renewal failed; retrying", "upload", k.id, "err", err)
		case !held:
			k.l.log.Error("upload lock: lease lost (expired, possibly taken by another origin) while its request ran", "upload", k.id)
		}
		if hook := k.l.onRenew; hook != nil {
			hook(held, err)
		}
		if err == nil && !held {
			lost()
			return
		}
		if err != nil {
			if failures++; failures >= 2 {
				k.l.log.Error("upload lock: renewals failing; the lease may lapse, the upload's request is stopped", "upload", k.id)
				lost()
				return
			}
		} else {
			failures = 0
		}
	}
}

// Unlock stops the renewal, waits for it to return and deletes the lease
// if it is still the holder's. It returns an error wrapping ErrLockLost
// when it was not (the lease expired), and one wrapping ErrUnavailable
// when Redis could not be reached (the lease then expires after its TTL).
func (k *UploadLock) Unlock() error {
	if k.stop == nil {
		return nil
	}
	close(k.stop)
	<-k.done
	k.stop, k.done = nil, nil
	ctx, cancel := context.WithTimeout(k.base, 2*ioTimeout)
	defer cancel()
	n, err := unlockScript.Run(ctx, k.l.s.rdb, []string{k.key}, k.token).Int()
	if err != nil {
		return wrapErr("upload unlock", err)
	}
	if n != 1 {
		return fmt.Errorf("routing: upload unlock %s: %w", k.id, ErrLockLost)
	}
	return nil
}
