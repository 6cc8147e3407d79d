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
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
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
	// judged: whether the recording of a leftover stream's playlist
	// directory ("<id>/<dir>") was taken over, and the running sessions'
	// recordings found taken over (see takenOver); forgotten when a
	// session of the stream begins.
	judged map[string]bool
	// uploaded: an upload succeeded since the last look (the store
	// answers: a failing episode is over).
	uploaded bool
	// failing: since when uploads fail (zero: they do not).
	failing time.Time

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
		streams: map[string]*stream{}, ready: make(chan struct{}, 1), leftover: map[string]bool{}, judged: map[string]bool{},
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
	m.forgetJudged(id)
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

// Resumed says a session of stream id began that continues the broadcast
// in the store (another origin's, which died): nothing is removed, and
// what was queued for an earlier session here (an end, files) stays
// queued, but no earlier end removes the new session's local tree.
func (m *Mirror) Resumed(id string) {
	if !ids.Valid(id) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.leftover, id)
	m.forgetJudged(id)
	m.stream(id).gen++
}

// forgetJudged forgets the judgments of stream id's recordings (m.mu held):
// a new session's are its own.
func (m *Mirror) forgetJudged(id string) {
	for dir := range m.judged {
		if strings.HasPrefix(dir, id+"/") {
			delete(m.judged, dir)
		}
	}
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

// PendingFor reports whether stream id has anything not yet done: files
// to upload, a reset or an end.
func (m *Mirror) PendingFor(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.streams[id]
	return s != nil && (s.busy || len(s.pending) > 0)
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
			select {
			case work <- id:
				continue
			case <-stopping:
				// Every worker is busy (a store that hangs): the id
				// waits; the drain starts.
				m.unbusy(id)
				stopping = nil
				dt := time.NewTimer(drain)
				defer dt.Stop()
				deadline = dt.C
				continue
			case <-deadline:
				m.unbusy(id)
				cancelUploads()
				close(work)
				_ = g.Wait()
				m.warnLeft()
				return nil
			}
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
			m.warnLeft()
			return nil
		}
		t.Stop()
	}
	close(work)
	return g.Wait()
}

// unbusy gives back stream id, picked by next but not handed to a worker.
func (m *Mirror) unbusy(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.streams[id]; s != nil {
		s.busy = false
	}
}

// warnLeft says what stopping leaves on disk.
func (m *Mirror) warnLeft() {
	if n := m.Pending(); n > 0 {
		m.log.Warn("stopping with live files not yet in the media store: they are uploaded at the next start", "files", n)
	}
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
	read := m.readPlaylists(batch)
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
			switch {
			case e.gen != gen:
			case countFiles(batch[done+1:]) > 0:
				// Files written after the end are in this batch (a
				// recording finished at start): the end goes behind them.
				m.mu.Lock()
				s.pending = append(s.pending, e)
				m.mu.Unlock()
			default:
				m.removeLocal(id, e.gen)
			}
			done++
		default:
			j := done
			for j < len(batch) && batch[j].kind == kindFile {
				j++
			}
			var n int
			n, err = m.upload(id, batch[done:j], read)
			done += n
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	s.busy = false
	if err == nil {
		s.retryAt = time.Time{}
		if !m.failing.IsZero() && m.uploaded {
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
	if m.ctx.Err() != nil {
		return // the drain ran out: what is left waits for the next start
	}
	backoff := 100 * time.Millisecond
	if !m.failing.IsZero() {
		backoff = min(m.cfg.MaxBackoff, max(backoff, m.now().Sub(m.failing)/4))
	} else {
		m.failing = m.now()
		m.uploaded = false
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

// upload puts the files of es (one stream's) into the store: media, then
// rendition playlists, then master playlists. It returns how many entries
// of es are done (from the front), and the first error. A file that is no
// longer on disk (its tree was reset) is done.
//
// Playlists go up as they were read when the batch was taken (read),
// never as they are now: a segment written since may be listed in the
// file, and is not in the batch.
func (m *Mirror) upload(id string, es []entry, read map[string][]byte) (int, error) {
	var media, playlists []int
	for i, e := range es {
		if strings.HasSuffix(e.rel, ".m3u8") {
			playlists = append(playlists, i)
		} else {
			media = append(media, i)
		}
	}
	// Rendition playlists before masters, recordings first among them
	// (whether an earlier run's recording was taken over decides the
	// others: snapshot).
	slices.SortStableFunc(playlists, func(a, b int) int { return playlistRank(es[a].rel) - playlistRank(es[b].rel) })
	ok := make([]bool, len(es))
	fail := func(err error) (int, error) {
		n := 0
		for n < len(es) && ok[n] {
			n++
		}
		m.settle(es[:n])
		return n, err
	}
	var g errgroup.Group
	g.SetLimit(4)
	for _, i := range media {
		g.Go(func() error {
			if err := m.putFile(es[i]); err != nil {
				return err
			}
			ok[i] = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fail(err)
	}
	if len(playlists) > 0 {
		snaps, err := m.judge(id, es, playlists, read)
		if err != nil {
			return fail(err)
		}
		for _, rank := range []int{0, 1, 2} {
			var g errgroup.Group
			g.SetLimit(4)
			for _, i := range playlists {
				if playlistRank(es[i].rel) != rank {
					continue
				}
				g.Go(func() error {
					if data, up := snaps[i]; up {
						if err := m.putBytes(es[i], data); err != nil {
							return err
						}
					}
					ok[i] = true
					return nil
				})
			}
			if err := g.Wait(); err != nil {
				return fail(err)
			}
		}
	}
	m.settle(es)
	return len(es), nil
}

// playlistRank orders playlists: recordings, other rendition playlists,
// master playlists.
func playlistRank(rel string) int {
	switch {
	case strings.Count(rel, "/") == 1:
		return 2
	case path.Base(rel) == "recording.m3u8":
		return 0
	}
	return 1
}

// judge returns the playlists es[i] for i in idx to upload, with the
// bytes read when the batch was taken: not a file that was gone, nor the
// playlists of a broadcast that another origin took over (see takenOver):
// an earlier run's, or this run's once its recording is finished (an
// origin that lost its lease ends its session only when it learns it, and
// its finished playlists must not replace those of the origin that
// continued the broadcast, which may have ended already).
func (m *Mirror) judge(id string, es []entry, idx []int, read map[string][]byte) (map[int][]byte, error) {
	out := map[int][]byte{}
	for _, i := range idx {
		rel := es[i].rel
		data, ok := read[rel]
		if !ok {
			continue
		}
		leftover := m.isLeftover(id)
		judge := leftover
		if !judge {
			var err error
			if judge, err = m.finished(id, rel, data); err != nil {
				return nil, err
			}
		}
		if judge {
			over, err := m.takenOver(id, rel, data, leftover)
			if err != nil {
				return nil, err
			}
			if over {
				if leftover {
					m.log.Info("not uploading a playlist an earlier run left: another origin took the broadcast over and continued its recording",
						"playlist", rel)
				} else {
					m.log.Warn("not uploading a finished playlist: another origin took the broadcast over and continued its recording (this origin lost its lease)",
						"playlist", rel)
				}
				continue
			}
		}
		out[i] = data
	}
	return out, nil
}

// finished reports whether a local recording that the playlist rel (local
// content data) of stream id is judged by (see takenOver) is finished.
func (m *Mirror) finished(id, rel string, data []byte) (bool, error) {
	var recs []string
	if strings.Count(rel, "/") == 1 {
		ents, err := os.ReadDir(filepath.Join(m.cfg.Dir, id))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		for _, e := range ents {
			if e.IsDir() {
				recs = append(recs, id+"/"+e.Name()+"/recording.m3u8")
			}
		}
	} else {
		recs = []string{path.Dir(rel) + "/recording.m3u8"}
	}
	for _, rec := range recs {
		local := data
		if rel != rec {
			var err error
			if local, err = os.ReadFile(filepath.Join(m.cfg.Dir, filepath.FromSlash(rec))); errors.Is(err, fs.ErrNotExist) {
				continue
			} else if err != nil {
				return false, err
			}
		}
		if bytes.HasSuffix(local, []byte("#EXT-X-ENDLIST\n")) {
			return true, nil
		}
	}
	return false, nil
}

// readPlaylists reads the playlists of batch (m.mu held: the packager,
// which tells of a segment before it writes the playlist that lists it,
// waits, so every segment a playlist read here lists is in batch or up
// already). A file that is gone is left out.
func (m *Mirror) readPlaylists(batch []entry) map[string][]byte {
	out := map[string][]byte{}
	for _, e := range batch {
		if e.kind != kindFile || !strings.HasSuffix(e.rel, ".m3u8") {
			continue
		}
		if data, err := os.ReadFile(filepath.Join(m.cfg.Dir, filepath.FromSlash(e.rel))); err == nil {
			out[e.rel] = data
		}
	}
	return out
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

// putFile uploads the media file of e.
func (m *Mirror) putFile(e entry) error {
	f, err := os.Open(filepath.Join(m.cfg.Dir, filepath.FromSlash(e.rel)))
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
	return m.put(e, f, st.Size())
}

// putBytes uploads data as the playlist of e.
func (m *Mirror) putBytes(e entry, data []byte) error {
	return m.put(e, bytes.NewReader(data), int64(len(data)))
}

func (m *Mirror) put(e entry, r io.Reader, size int64) error {
	if _, err := m.store.Put(m.ctx, e.rel, r, size); err != nil {
		m.uploads.WithLabelValues("error").Inc()
		return err
	}
	m.uploads.WithLabelValues("ok").Inc()
	m.delay.Observe(m.now().Sub(e.queued).Seconds())
	m.mu.Lock()
	m.uploaded = true
	m.mu.Unlock()
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

func (m *Mirror) isLeftover(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leftover[id]
}

// takenOver reports whether the playlist rel (local content data) of a
// broadcast an earlier run left, or of this run's session once its
// recording is finished, belongs to a broadcast another origin took over:
// its recording in the store is not an earlier state of the local one (the
// other origin continued it). A rendition playlist is judged by its
// directory's recording, a master playlist by any recording of the
// stream; the answers are kept until a session of the stream begins.
func (m *Mirror) takenOver(id, rel string, data []byte, leftover bool) (bool, error) {
	dirs := []string{path.Dir(rel)}
	if strings.Count(rel, "/") == 1 {
		ents, err := os.ReadDir(filepath.Join(m.cfg.Dir, id))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		dirs = dirs[:0]
		for _, e := range ents {
			if e.IsDir() {
				dirs = append(dirs, id+"/"+e.Name())
			}
		}
	}
	for _, dir := range dirs {
		over, err := m.recordingTakenOver(dir, rel, data, leftover)
		if over || err != nil {
			return over, err
		}
	}
	return false, nil
}

// recordingTakenOver judges the recording of the playlist directory dir
// (data is its local content when rel is that recording): once for a
// leftover; for a running session, until it is found taken over (a
// recording may finish while the others of its stream run on).
func (m *Mirror) recordingTakenOver(dir, rel string, data []byte, leftover bool) (bool, error) {
	m.mu.Lock()
	over, known := m.judged[dir]
	m.mu.Unlock()
	if known {
		return over, nil
	}
	recKey := dir + "/recording.m3u8"
	remote, _, err := storage.ReadAll(m.ctx, m.store, recKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		over = false
	case err != nil:
		return false, err
	default:
		local := data
		if rel != recKey {
			if local, err = os.ReadFile(filepath.Join(m.cfg.Dir, filepath.FromSlash(recKey))); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, err
			}
		}
		remote = bytes.TrimSuffix(remote, []byte("#EXT-X-ENDLIST\n"))
		// The packager rewrites the target duration's line when it rises
		// (once per raise): the rest only grows at the end.
		over = !bytes.HasPrefix(withoutTarget(local), withoutTarget(remote))
	}
	if over || leftover {
		m.mu.Lock()
		m.judged[dir] = over
		m.mu.Unlock()
	}
	return over, nil
}

// withoutTarget is a playlist without its #EXT-X-TARGETDURATION line.
func withoutTarget(b []byte) []byte {
	i := bytes.Index(b, []byte("#EXT-X-TARGETDURATION:"))
	if i < 0 || (i > 0 && b[i-1] != '\n') {
		return b
	}
	j := bytes.IndexByte(b[i:], '\n')
	if j < 0 {
		return b[:i]
	}
	return append(append([]byte(nil), b[:i]...), b[i+j+1:]...)
}
