package app

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/edgecache"
	"github.com/shoal-video/shoal/internal/nodeproto"
)

// edgeFeed is an edge's place in the origin's invalidation feed, kept
// next to its cache (cursorFileName in the cache directory) so that a
// restart resumes where the edge was instead of trusting a disk tier that
// may hold deleted videos or streams gone signed meanwhile:
//
//   - The cache holds its disk tier (edgecache.Config.HoldDisk) until an
//     answer says the edge has caught up with the feed
//     (invalidations_more absent); until then nothing stored before the
//     start is served.
//   - Without a kept cursor (a first start, a lost file), or when the
//     origin answers invalidations_reset (the cursor fell behind the
//     feed's trimming, or the feed lost its history), the edge cannot
//     know what it missed: it drops everything it holds (edgecache
//     Cache.Reset; the held disk tier is emptied instead of indexed).
//   - The cursor is written (to a temporary file renamed in place) only
//     once the disk tier is indexed, so a crash before that drop is done
//     starts again without it; then at most every cursorPersistEvery,
//     and when the edge stops. A cursor kept a little behind only
//     applies some invalidations again.
type edgeFeed struct {
	cache *edgecache.Cache
	file  string
	log   *slog.Logger
	now   func() time.Time

	resets   prometheus.Counter
	caughtUp prometheus.Gauge

	mu          sync.Mutex
	cursor      string
	dropDisk    bool // the held disk tier is dropped when released
	released    bool
	persisted   string
	persistedOK bool
	persistedAt time.Time
}

// cursorFileName is the file, in the cache directory, that keeps the
// edge's invalidation cursor.
const cursorFileName = "invalidation-cursor"

// cursorPersistEvery bounds how often the cursor is written.
const cursorPersistEvery = 10 * time.Second

var cursorFileRe = regexp.MustCompile(`^([0-9]{1,20}-[0-9]{1,20})?$`)

// newEdgeFeed reads the cursor kept in cacheDir: without one (or with a
// file that does not hold one), the held disk tier will be dropped.
func newEdgeFeed(cache *edgecache.Cache, cacheDir string, reg prometheus.Registerer, log *slog.Logger) (*edgeFeed, error) {
	f := &edgeFeed{cache: cache, file: filepath.Join(cacheDir, cursorFileName), log: log, now: time.Now,
		resets: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_edge_invalidation_resets_total",
			Help: "Times the edge dropped every cached object because it could not know which invalidations it missed (no kept cursor at start, or the origin said its cursor fell behind the feed)."}),
		caughtUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_edge_invalidations_caught_up",
			Help: "1 once the edge has applied every invalidation the origin has (its disk tier is served from then on), 0 before."}),
	}
	for _, c := range []prometheus.Collector{f.resets, f.caughtUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(f.file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.dropDisk = true
	case err != nil:
		return nil, fmt.Errorf("edge: read the invalidation cursor: %w", err)
	default:
		c := strings.TrimSpace(string(b))
		if !cursorFileRe.MatchString(c) {
			log.Warn("the kept invalidation cursor is unreadable: dropping the disk cache", "file", f.file)
			f.dropDisk = true
			break
		}
		f.cursor, f.persisted, f.persistedOK = c, c, true
	}
	if f.dropDisk {
		f.resets.Inc()
		log.Info("no invalidation cursor kept with the cache: what the disk cache holds is dropped", "file", f.file)
	}
	return f, nil
}

// Cursor is what the next join or heartbeat sends.
func (f *edgeFeed) Cursor() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cursor
}

// apply applies a join's or heartbeat's answer: a reset, the
// invalidations, the new cursor; the disk tier is released once caught up.
func (f *edgeFeed) apply(r nodeproto.JoinResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.InvalidationsReset {
		// Counted once applied (below): a reader of the metric then sees
		// a cache that holds nothing from before. Not twice for a start
		// without a kept cursor (counted when the edge started).
		if f.released || !f.dropDisk {
			defer f.resets.Inc()
		}
		if !f.released {
			f.dropDisk = true
		}
		f.log.Warn("the origin says this edge missed invalidations (its cursor fell behind the feed): dropping every cached object",
			"cursor", f.cursor)
		f.cache.Reset()
	}
	if len(r.Invalidations) > 0 {
		invs := make([]edgecache.Invalidation, len(r.Invalidations))
		for i, v := range r.Invalidations {
			invs[i] = edgecache.Invalidation{ID: v.ID, Deleted: v.Deleted, Signed: v.Signed}
		}
		f.cache.Invalidate(invs)
	}
	f.cursor = r.InvalidationCursor
	if r.InvalidationsMore {
		f.caughtUp.Set(0)
	} else {
		f.caughtUp.Set(1)
		if !f.released {
			f.released = true
			f.cache.ReleaseDisk(f.dropDisk)
		}
	}
	f.persistLocked(false)
}

// persist writes the cursor now if it changed (when the edge stops).
func (f *edgeFeed) persist() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.persistLocked(true)
}

func (f *edgeFeed) persistLocked(force bool) {
	if !f.released || !f.cache.Indexed() || (f.persistedOK && f.persisted == f.cursor) {
		return
	}
	now := f.now()
	if !force && f.persistedOK && now.Sub(f.persistedAt) < cursorPersistEvery {
		return
	}
	if err := writeFileAtomic(f.file, []byte(f.cursor+"\n")); err != nil {
		f.log.Warn("cannot keep the invalidation cursor (a restart will drop the disk cache)", "file", f.file, "err", err)
		return
	}
	f.persisted, f.persistedOK, f.persistedAt = f.cursor, true, now
}

// writeFileAtomic writes b to file through a temporary file of the same
// directory, synced and renamed in place.
func writeFileAtomic(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), file)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
