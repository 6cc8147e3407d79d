// Package mirror copies the packager's live output from local disk (the
// spool) to the media store (S3), as it is written.
//
// The packager tells the mirror what it does (packager.FileEvents): a file
// written or appended to, a stream's tree reset (a new session, or the
// stream deleted), a session ended. The mirror uploads the files of each
// stream in the order they were last written, so a playlist reaches the
// store after the segments it lists; a playlist written again before its
// upload is uploaded once, with its latest content. Streams upload side by
// side (Config.Workers).
//
// When the store fails, nothing is lost: the files stay on local disk and
// their uploads are retried, in order, with a backoff of at most
// Config.MaxBackoff, until the store is back; a log line and the
// shoal_storage_spool_objects gauge say so. Once a session has ended and
// every file of it is in the store, its local tree is removed: the origin
// then serves it from the store. Files left on disk by a process that
// stopped (a crash, the store down at shutdown) are uploaded at the next
// start (Scan).
package mirror

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/storage"
)

// Config configures a Mirror.
type Config struct {
	// Dir is the packager's directory (the spool): <Dir>/<id>/....
	Dir string
	// Workers is how many streams upload at once (default 4); each
	// uploads up to 4 files of a batch at once.
	Workers int
	// MaxBackoff bounds the wait between retries of a failing store
	// (default 5 s; the first retry is after 100 ms).
	MaxBackoff time.Duration
}

// Deps are the mirror's collaborators.
type Deps struct {
	// Store is where the files go, keyed "<id>/..." as under Dir.
	Store      storage.Store
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock of the upload delays (time.Now when nil).
	Now func() time.Time
}

type kind int

const (
	kindFile  kind = iota
	kindReset      // delete the stream's objects in the store
	kindEnd        // the session ended: remove the local tree once all is up
)

type entry struct {
	kind   kind
	rel    string // kindFile: "<id>/<...>"
	gen    int    // kindEnd: the stream's generation when it ended
	queued time.Time
}

// stream is the upload queue of one stream id.
type stream struct {
	pending []entry
	busy    bool // a worker holds it
	gen     int  // Resets seen
	retryAt time.Time
}

// Mirror uploads the packager's files. Create it with New, call Scan once,
// give it to the packager (Deps.Files) and Run it.
type Mirror struct {
	cfg   Config
	store storage.Store
	log   *slog.Logger
	now   func() time.Time
	warn  *logx.Limiter

	// ctx ends the uploads in flight when Run gives up draining.
	ctx context.Context

	mu      sync.Mutex
	streams map[string]*stream
	ready   chan struct{} // signalled when work may be available
	objects int           // files pending, for the gauge
	// leftover: streams whose files an earlier run left (Scan) and no
	// session of this run has reset: their playlists replace the store's
	// only when they extend them (see put).
	leftover map[string]bool
	// failing: since when uploads fail (zero: they do not).
	failing time.Time
	flushed int // uploads since failing began

	spool    prometheus.Gauge
	uploads  *prometheus.CounterVec
	delay    prometheus.Histogram
	failures prometheus.Counter
}

// New validates cfg.
func New(cfg Config, deps Deps) (*Mirror, error) {
	if cfg.Dir == "" {
		return nil, errors.New("mirror: Dir is required")
	}
	if deps.Store == nil {
		return nil, errors.New("mirror: a Store is required")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	m := &Mirror{cfg: cfg, store: deps.Store, ctx: context.Background(), log: deps.Log, now: deps.Now, warn: logx.NewLimiter(30 * time.Second),
		streams: map[string]*stream{}, ready: make(chan struct{}, 1), leftover: map[string]bool{},
		spool: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_storage_spool_objects",
			Help: "Live files written to local disk and not yet in the media store (they wait there while the store fails).",
		}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_storage_uploads_total", Help: "Uploads of live files to the media store, by result (ok, error).",
		}, []string{"result"}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_storage_upload_delay_seconds",
			Help:    "Time from a live file's last write to its upload into the media store.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_storage_spool_episodes_total", Help: "Times the media store began failing while live files were uploaded.",
		}),
	}
	m.uploads.WithLabelValues("ok")
	m.uploads.WithLabelValues("error")
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{m.spool, m.uploads, m.delay, m.failures} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("mirror: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Scan queues every file under Dir, as a stream whose session ended: what
// an earlier run left on disk goes to the store, then leaves the disk. Call
// it before the packager starts (its own writes then queue after).
func (m *Mirror) Scan() (int, error) {
	ents, err := os.ReadDir(m.cfg.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("mirror: %w", err)
	}
	n := 0
	for _, e := range ents {
		id := e.Name()
		if !e.IsDir() || !ids.Valid(id) {
			continue
		}
		var media, playlists []string
		var masters []string
		err := filepath.WalkDir(filepath.Join(m.cfg.Dir, id), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(m.cfg.Dir, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			switch {
			case strings.HasSuffix(rel, ".tmp"):
			case strings.Count(rel, "/") == 1 && strings.HasSuffix(rel, ".m3u8"):
				masters = append(masters, rel)
			case strings.HasSuffix(rel, ".m3u8"):
				playlists = append(playlists, rel)
			default:
				media = append(media, rel)
			}
			return nil
		})
		if err != nil {
			return n, fmt.Errorf("mirror: scanning %s: %w", id, err)
		}
		m.mu.Lock()
		m.leftover[id] = true
		m.mu.Unlock()
		for _, rel := range slices.Concat(media, playlists, masters) {
			m.Written(rel)
			n++
		}
		m.Ended(id)
	}
	return n, nil
}

// Written queues the file rel ("<id>/..."), just written or appended to,
// for upload (again, if it was queued already: it moves to the end).
func (m *Mirror) Written(rel string) {
	id, _, ok := strings.Cut(rel, "/")
	if !ok || !ids.Valid(id) || storage.CheckKey(rel) != nil {
		return
	}
	m.mu.Lock()
	s := m.stream(id)
	if i := slices.IndexFunc(s.pending, func(e entry) bool { return e.kind == kindFile && e.rel == rel }); i >= 0 {
		s.pending = slices.Delete(s.pending, i, i+1)
		m.objects--
	}
	s.pending = append(s.pending, entry{kind: kindFile, rel: rel, queued: m.now()})
	m.objects++
	m.spool.Set(float64(m.objects))
	m.mu.Unlock()
	m.signal()
}

// Reset drops stream id's queued files and queues the removal of its
// objects from the store (a new session replaces the tree, or the stream
// was deleted). The packager calls it before it touches the tree.
func (m *Mirror) Reset(id string) {
	if !ids.Valid(id) {
		return
	}
	m.mu.Lock()
	delete(m.leftover, id)
	s := m.stream(id)
	s.gen++
	for _, e := range s.pending {
		if e.kind == kindFile {
			m.objects--
		}
	}
	s.pending = append(s.pending[:0], entry{kind: kindReset, queued: m.now()})
	m.spool.Set(float64(m.objects))
	m.mu.Unlock()
	m.signal()
}

// Ended says stream id's session ended: once its files are in the store,
// its local tree is removed (unless a new session began meanwhile).
func (m *Mirror) Ended(id string) {
	if !ids.Valid(id) {
		return
	}
	m.mu.Lock()
	s := m.stream(id)
	s.pending = append(s.pending, entry{kind: kindEnd, gen: s.gen, queued: m.now()})
	m.mu.Unlock()
	m.signal()
}

// Pending is the number of files not yet in the store.
func (m *Mirror) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.objects
}

func (m *Mirror) stream(id string) *stream {
	s := m.streams[id]
	if s == nil {
		s = &stream{}
		m.streams[id] = s
	}
	return s
}

func (m *Mirror) signal() {
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

// Run uploads until ctx is done, then goes on for at most drain to empty
// the queue (what the packager wrote as it stopped); what is left stays on
// disk for the next start.
func (m *Mirror) Run(ctx context.Context, drain time.Duration) error {
	upCtx, cancelUploads := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelUploads()
	m.ctx = upCtx
	work := make(chan string)
	var g errgroup.Group
	for range m.cfg.Workers {
		g.Go(func() error {
			for id := range work {
				m.process(id)
			}
			return nil
		})
	}
	var deadline <-chan time.Time
	stopping := ctx.Done()
	for {
		id, wait := m.next()
		if id != "" {
			work <- id
			continue
		}
		if deadline != nil && m.drained() {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-m.ready:
		case <-t.C:
		case <-stopping:
			stopping = nil
			dt := time.NewTimer(drain)
			defer dt.Stop()
			deadline = dt.C
		case <-deadline:
			t.Stop()
			cancelUploads()
			close(work)
			_ = g.Wait()
			if n := m.Pending(); n > 0 {
				m.log.Warn("stopping with live files not yet in the media store: they are uploaded at the next start", "files", n)
			}
			return nil
		}
		t.Stop()
	}
	close(work)
	return g.Wait()
}

// drained reports whether nothing is queued or being worked on.
func (m *Mirror) drained() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.streams {
		if s.busy || len(s.pending) > 0 {
			return false
		}
	}
	return true
}

// next picks a stream with work that no worker holds and whose backoff
// is over, and marks it busy; otherwise it says how long to wait.
func (m *Mirror) next() (string, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	wait := time.Second
	for id, s := range m.streams {
		switch {
		case s.busy:
		case len(s.pending) == 0:
			delete(m.streams, id)
		case now.Before(s.retryAt):
			wait = min(wait, s.retryAt.Sub(now))
		default:
			s.busy = true
			return id, 0
		}
	}
	return "", wait
}

// process works through stream id's queue as it stands: consecutive files
// go up together (media first, then playlists), markers in their turn. On
// a failure what is left goes back to the front, after a backoff.
func (m *Mirror) process(id string) {
	m.mu.Lock()
	s := m.streams[id]
	batch := s.pending
	s.pending = nil
	gen := s.gen
	m.mu.Unlock()

	done := 0
	var err error
	for done < len(batch) && err == nil {
		e := batch[done]
		switch e.kind {
		case kindReset:
			if err = m.store.DeletePrefix(m.ctx, id+"/"); err == nil {
				done++
			}
		case kindEnd:
			if e.gen == gen {
				m.removeLocal(id, e.gen)
			}
			done++
		default:
			j := done
			for j < len(batch) && batch[j].kind == kindFile {
				j++
			}
			var n int
			n, err = m.upload(batch[done:j])
			done += n
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	s.busy = false
	if err == nil {
		s.retryAt = time.Time{}
		if !m.failing.IsZero() {
			m.recovered()
		}
		if len(s.pending) > 0 {
			m.signal()
		}
		return
	}
	// Put back what is left, unless a Reset dropped it meanwhile; a file
	// queued again meanwhile keeps its newer place.
	left := batch[done:]
	kept := left[:0:0]
	for _, e := range left {
		drop := s.gen != gen || e.kind == kindFile &&
			slices.ContainsFunc(s.pending, func(p entry) bool { return p.kind == kindFile && p.rel == e.rel })
		switch {
		case !drop:
			kept = append(kept, e)
		case e.kind == kindFile:
			m.objects--
		}
	}
	left = kept
	s.pending = append(left, s.pending...)
	m.spool.Set(float64(m.objects))
	backoff := 100 * time.Millisecond
	if !m.failing.IsZero() {
		backoff = min(m.cfg.MaxBackoff, max(backoff, m.now().Sub(m.failing)/4))
	} else {
		m.failing = m.now()
		m.flushed = 0
		m.failures.Inc()
		m.log.Warn("the media store is failing: live files stay on local disk and are uploaded in order once it is back",
			"stream", id, "err", err)
	}
	s.retryAt = m.now().Add(backoff)
	if ok, n := m.warn.Allow(); ok {
		m.log.Warn("still spooling live files to local disk", "files", m.objects, "err", err, "suppressed_since_last", n)
	}
}

// recovered logs the end of a failing episode (m.mu held).
func (m *Mirror) recovered() {
	m.log.Info("the media store is back: spooled live files flushed", "after", m.now().Sub(m.failing).Round(time.Millisecond),
		"still_pending", m.objects)
	m.failing = time.Time{}
}

func countFiles(es []entry) int {
	n := 0
	for _, e := range es {
		if e.kind == kindFile {
			n++
		}
	}
	return n
}

// upload puts the files of es into the store: media, then rendition
// playlists, then master playlists. It
// returns how many entries of es are done (from the front), and the first
// error. A file that is no longer on disk (its tree was reset) is done.
func (m *Mirror) upload(es []entry) (int, error) {
	var media, playlists, masters []int
	for i, e := range es {
		switch {
		case !strings.HasSuffix(e.rel, ".m3u8"):
			media = append(media, i)
		case strings.Count(e.rel, "/") == 1:
			masters = append(masters, i)
		default:
			playlists = append(playlists, i)
		}
	}
	ok := make([]bool, len(es))
	for _, group := range [][]int{media, playlists, masters} {
		var g errgroup.Group
		g.SetLimit(4)
		for _, i := range group {
			g.Go(func() error {
				if err := m.put(es[i]); err != nil {
					return err
				}
				ok[i] = true
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			// Done: the leading entries that went up. The rest is tried
			// again in order (uploading a file twice is harmless).
			n := 0
			for n < len(es) && ok[n] {
				n++
			}
			m.settle(es[:n])
			return n, err
		}
	}
	m.settle(es)
	return len(es), nil
}

// settle counts entries as uploaded.
func (m *Mirror) settle(es []entry) {
	if len(es) == 0 {
		return
	}
	m.mu.Lock()
	m.objects -= len(es)
	m.spool.Set(float64(m.objects))
	m.mu.Unlock()
}

func (m *Mirror) put(e entry) error {
	path := filepath.Join(m.cfg.Dir, filepath.FromSlash(e.rel))
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // reset since: nothing to upload
	}
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if m.isLeftover(e.rel) && strings.HasSuffix(e.rel, ".m3u8") {
		if keep, err := m.storeHasOther(e.rel, path); err != nil {
			return err
		} else if keep {
			m.log.Info("not uploading a playlist an earlier run left: the store's copy is not an earlier state of it (another origin took the stream over)",
				"playlist", e.rel)
			return nil
		}
	}
	if _, err := m.store.Put(m.ctx, e.rel, f, st.Size()); err != nil {
		m.uploads.WithLabelValues("error").Inc()
		return err
	}
	m.uploads.WithLabelValues("ok").Inc()
	m.delay.Observe(m.now().Sub(e.queued).Seconds())
	return nil
}

// removeLocal removes stream id's local tree, unless a Reset came since
// gen (a new session writing there): under m.mu, so that a Reset, which
// the packager calls before it touches the tree, waits for the rename.
func (m *Mirror) removeLocal(id string, gen int) {
	m.mu.Lock()
	s := m.streams[id]
	if s.gen != gen {
		m.mu.Unlock()
		return
	}
	if countFiles(s.pending) > 0 {
		// Written again since it ended (a recording finished at start):
		// once those are up.
		s.pending = append(s.pending, entry{kind: kindEnd, gen: gen, queued: m.now()})
		m.mu.Unlock()
		return
	}
	dir := filepath.Join(m.cfg.Dir, id)
	// The packager's trash prefix: a tree left half removed by a crash is
	// swept by the packager at the next start.
	old := filepath.Join(m.cfg.Dir, ".trash-uploaded-"+id+"-"+ids.New()[:6])
	err := os.Rename(dir, old)
	m.mu.Unlock()
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err == nil {
		err = os.RemoveAll(old)
	}
	if err != nil {
		m.log.Warn("removing a stream's local files after their upload", "stream", id, "err", err)
	}
}

func (m *Mirror) isLeftover(rel string) bool {
	id, _, _ := strings.Cut(rel, "/")
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leftover[id]
}

// storeHasOther reports whether the store holds a copy of the playlist rel
// that the local file at path does not extend: an origin that restarts
// after another took its broadcast over must not put its own, older
// recording over the one the other continued.
func (m *Mirror) storeHasOther(rel, path string) (bool, error) {
	remote, _, err := storage.ReadAll(m.ctx, m.store, rel)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	local, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	remote = bytes.TrimSuffix(remote, []byte("#EXT-X-ENDLIST\n"))
	return !bytes.HasPrefix(local, remote), nil
}
