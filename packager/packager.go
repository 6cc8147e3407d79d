// Package packager turns publications of the stream hub into HLS on disk
// and, for live streams, in memory (package live).
//
// Layout under Config.Dir, for a stream id:
//
//	<id>/master.m3u8                     variants + the audio group
//	<id>/dvr.m3u8                        the same, each variant's DVR playlist (Config.DVRWindow)
//	<id>/<rendition>/index.m3u8          live: sliding window (without parts); ended: whole recording (VOD)
//	<id>/<rendition>/dvr.m3u8            ended: whole recording (live: in memory only)
//	<id>/<rendition>/recording.m3u8      every segment since the stream started (EVENT, ENDLIST at the end); appended to
//	<id>/<rendition>/init-<s>-<r>-<g>.mp4  fMP4 initialization section g (a new one after a reconnect or codec change)
//	<id>/<rendition>/<s>-<r>-<n>.m4s|.ts   segment n of run r of the rendition in session s; never rewritten
//	<id>/audio/...                       the audio group, same files as a rendition
//
// Live playlists with LL-HLS parts (Config.PartDuration), the parts
// themselves and the DVR playlists live in the live registry (Deps.Live),
// which the origin serves. Every cost per segment is bounded by the window
// kept, never by the stream's age.
//
// Every rendition is video-only; audio is packaged once, from the first
// rendition that carries it, and referenced by every variant through one
// audio group. Segments are cut at video keyframes once the target duration
// is reached, and the audio is cut at the same instants. All renditions of
// a stream share one timeline (timeline.go).
//
// New finishes recordings that an earlier run left open (ENDLIST added), so a
// crash never leaves a recording that players treat as live forever.
//
// Files are written to a temporary name, synced and renamed (the directory
// synced after), so a reader sees either the previous or the next version
// of a playlist, never a partial one, and a crash loses no renamed file.
//
// A full disk never stops a stream: a segment that cannot be written is
// listed as a gap (EXT-X-GAP) in the live playlists and the recording, at
// its media sequence number in every rendition, and segments are written
// again as soon as there is space (storage.go, trackOut.flush).
package packager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager/live"
)

// AudioDir is the directory of the audio group; no rendition may use it.
const AudioDir = "audio"

// Hub is the part of the stream hub the packager reads from.
type Hub interface {
	Watch(match func(media.StreamKey) bool) *stream.Watcher
}

// Config configures the packager.
type Config struct {
	// Dir is where HLS trees are written (one directory per stream id).
	Dir string
	// SegmentDuration is the target segment length.
	SegmentDuration time.Duration
	// LiveWindow is how many segments the live playlist lists.
	LiveWindow int
	// Format is FormatFMP4 or FormatMPEGTS.
	Format string
	// ServeSource tells whether to package the source rendition of stream
	// id as it came (it is asked once, when the source starts). Nil means
	// always; with transcoding, only when the ladder does not replace it.
	ServeSource func(id string) bool
	// Renditions, when set, names the renditions stream id's master
	// playlist is to list (the transcoder's rungs; nil or empty: whatever
	// is published). The master playlist is first written once each has a
	// segment, so that players, which load it once, see the whole ladder;
	// one that is late by more than two segments is not waited for.
	Renditions func(id string) []string
	// PartDuration is the LL-HLS part target (0: no partial segments).
	// Parts need fMP4: with MPEG-TS it is ignored.
	PartDuration time.Duration
	// Linger keeps a stream's session open that long after its last
	// rendition ended, so that a rendition starting again (a transcoder
	// falling back to another encoder or to copying the source, which ends
	// its renditions and starts new ones) continues the same playlists,
	// timeline and recording instead of starting a new session over them.
	// The audio group ends when it expires. 0: the session ends with its
	// last rendition.
	Linger time.Duration
	// DVRWindow, when positive, keeps a DVR playlist of that length
	// (<rendition>/dvr.m3u8, with the master playlist dvr.m3u8 next to
	// master.m3u8) beside the short live one, in the live registry.
	DVRWindow time.Duration
	// Resume, when set, is asked at the start of each session of stream
	// id for the recordings of a session of it that never ended (its
	// origin died: resume.go), by playlist directory ("source", "720p",
	// "audio", ...), each the bytes of its recording.m3u8; nil when there
	// is none. Those recordings are continued, and the previous tree is
	// not reset; on an error it is not reset either (a new recording
	// starts). It is called with the packager's lock held: it must return
	// promptly (bound its I/O).
	Resume func(id string) (map[string][]byte, error)
	// NoSync leaves out the fsync of every finished file and of its
	// directory after the rename (storage.go). Benchmarks only: it
	// measures what the syncs cost.
	NoSync bool
}

// DVRPlaylist is the name of a rendition's DVR playlist and of the master
// playlist that lists them.
const DVRPlaylist = "dvr.m3u8"

// Deps are the packager's collaborators.
type Deps struct {
	Log        *slog.Logger
	Hub        Hub
	Registerer prometheus.Registerer
	// Now is the wall clock of EXT-X-PROGRAM-DATE-TIME (time.Now when
	// nil).
	Now func() time.Time
	// Live, when set, receives every live playlist (with LL-HLS parts)
	// and the parts themselves, for the origin to serve from memory.
	Live *live.Registry
	// Files, when set, hears of every file the packager writes (a mirror
	// copying the output to the media store).
	Files FileEvents
}

// FileEvents hears what the packager does to its directory, in the order
// it does it. Calls must not block for long (they are made while writing).
type FileEvents interface {
	// Written: the file rel ("<id>/...", relative to Config.Dir) was
	// written, replaced or appended to.
	Written(rel string)
	// Reset: stream id's tree is about to be removed (a new session
	// replaces it, or the stream was deleted).
	Reset(id string)
	// Ended: stream id's session ended; its files are final.
	Ended(id string)
	// Resumed: a session of stream id began without resetting the tree
	// (it continues a broadcast another origin left: Config.Resume).
	Resumed(id string)
}

// Packager writes HLS for every publication in the hub.
type Packager struct {
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	format  format
	watcher *stream.Watcher
	live    *live.Registry

	fs     storage
	events FileEvents // nil: nobody listens

	segments   *prometheus.CounterVec
	gaps       *prometheus.CounterVec
	errors     prometheus.Counter
	written    prometheus.Counter
	errLimiter *logx.Limiter
	// full: a write failed for want of space and no segment was written
	// since (one log line per episode).
	full struct {
		sync.Mutex
		on bool
	}

	mu       sync.Mutex
	stopping bool // Run is returning: sessions no longer linger
	streams  map[string]*streamState
	// ending: sessions that ended and are finishing their recordings
	// (closed when done).
	ending  map[string]chan struct{}
	removed map[string]bool // deleted streams: output arriving late is refused
	// problems says why a stream is not served ("" or absent: it is).
	problems map[string]string
	// orphans are the recordings an earlier run of this origin left open
	// (a crash), as they were before they were finished at start, by
	// stream: the stream's next session in this run, within orphanReturn
	// of the crash, continues them, as a takeover does, unless the store
	// is shared (Config.Resume set).
	orphans map[string]orphan
}

// Problem says why stream id is not being packaged right now ("" when
// nothing is wrong): a source browsers cannot play that no transcoder took.
func (p *Packager) Problem(id string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.problems[id]
}

func (p *Packager) setProblem(id, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if msg == "" {
		delete(p.problems, id)
	} else {
		p.problems[id] = msg
	}
}

// errRemoved refuses output for a stream that was deleted.
var errRemoved = errors.New("the stream was deleted")

// New validates cfg.
func New(cfg Config, deps Deps) (*Packager, error) {
	if deps.Hub == nil {
		return nil, errors.New("packager: Hub is required")
	}
	if cfg.Dir == "" {
		return nil, errors.New("packager: Dir is required")
	}
	if cfg.SegmentDuration <= 0 {
		return nil, fmt.Errorf("packager: segment duration must be positive, got %s", cfg.SegmentDuration)
	}
	if cfg.PartDuration < 0 || cfg.PartDuration > cfg.SegmentDuration {
		return nil, fmt.Errorf("packager: part duration %s must be between 0 and the segment duration (%s)", cfg.PartDuration, cfg.SegmentDuration)
	}
	if cfg.LiveWindow < 1 {
		return nil, fmt.Errorf("packager: live window must be at least 1, got %d", cfg.LiveWindow)
	}
	f, err := newFormat(cfg.Format)
	if err != nil {
		return nil, fmt.Errorf("packager: %w", err)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	p := &Packager{
		cfg: cfg, log: deps.Log, format: f, now: deps.Now, live: deps.Live, events: deps.Files,
		streams:    map[string]*streamState{},
		ending:     map[string]chan struct{}{},
		removed:    map[string]bool{},
		problems:   map[string]string{},
		errLimiter: logx.NewLimiter(5 * time.Second),
		fs:         storage{noSync: cfg.NoSync},
		segments: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_packager_segments_total", Help: "HLS segments written, by kind (video or audio).",
		}, []string{"kind"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_packager_gap_segments_total",
			Help: "HLS segments that could not be written (a full disk) and are listed as gaps (EXT-X-GAP), by kind (video or audio).",
		}, []string{"kind"}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_packager_errors_total", Help: "Segments or playlists that could not be written.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_packager_written_bytes_total", Help: "Bytes of segments, playlists and init sections written to disk.",
		}),
	}
	if p.events != nil {
		dir := filepath.Clean(cfg.Dir)
		p.fs.written = func(path string) {
			if rel, err := filepath.Rel(dir, path); err == nil && !strings.HasPrefix(rel, "..") {
				p.events.Written(filepath.ToSlash(rel))
			}
		}
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{p.segments, p.gaps, p.errors, p.written} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("packager: register metrics: %w", err)
			}
		}
	}
	// Recordings a crash left open are finished before any new stream can
	// start writing next to them.
	if orphans := finishOrphans(&p.fs, cfg.Dir, deps.Log); len(orphans) > 0 {
		deps.Log.Info("finished the recordings an earlier run left open", "streams", len(orphans))
		if cfg.Resume == nil {
			p.orphans = orphans
		}
	}
	// Watch from now on, so that no publication started between New and
	// Run is missed.
	p.watcher = deps.Hub.Watch(func(k media.StreamKey) bool {
		if !ids.Valid(k.Name) || !validRendition(k.Rendition) {
			return false
		}
		return k.Rendition != media.RenditionSource || cfg.ServeSource == nil || cfg.ServeSource(k.Name)
	})
	return p, nil
}

// Run packages publications until ctx is done or the hub closes. Streams still
// running then are finished (ENDLIST written) before Run returns.
func (p *Packager) Run(ctx context.Context) error {
	if err := os.MkdirAll(p.cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("packager: %w", err)
	}
	w := p.watcher
	defer w.Close()
	var g errgroup.Group
	// Output trashed by a process that stopped before deleting it goes
	// while publications start (it may be a long recording).
	g.Go(func() error {
		if entries, err := os.ReadDir(p.cfg.Dir); err == nil {
			for _, e := range entries {
				if e.IsDir() && strings.HasPrefix(e.Name(), trashPrefix) {
					p.emptyTrash(filepath.Join(p.cfg.Dir, e.Name()))
				}
			}
		}
		return nil
	})
	for {
		sub, err := w.Next(ctx)
		if err != nil {
			break
		}
		g.Go(func() error {
			p.runRendition(ctx, sub)
			return nil
		})
	}
	err := g.Wait()
	p.expireAll()
	return err
}

// partDuration is the LL-HLS part target, 0 when parts are off.
func (p *Packager) partDuration() time.Duration {
	if _, ok := p.format.(fmp4Format); !ok {
		return 0
	}
	return p.cfg.PartDuration
}

func validRendition(r string) bool {
	return r != AudioDir && ids.Valid(r)
}

func (p *Packager) reportError(log *slog.Logger, msg string, err error) {
	p.errors.Inc()
	if noSpace(err) {
		p.diskFull(err)
		return
	}
	if ok, n := p.errLimiter.Allow(); ok {
		log.Error(msg, "err", err, "suppressed_since_last", n)
	}
}

// diskFull notes a write that failed for want of space: the first of an
// episode is logged, the others only counted (errors, gap segments).
func (p *Packager) diskFull(err error) {
	p.full.Lock()
	defer p.full.Unlock()
	if !p.full.on {
		p.full.on = true
		p.log.Error("disk full: segments are marked as gaps until space returns", "dir", p.cfg.Dir, "err", err)
	}
}

// spaceBack notes a segment written: it ends a disk-full episode (logged).
func (p *Packager) spaceBack() {
	p.full.Lock()
	defer p.full.Unlock()
	if p.full.on {
		p.full.on = false
		p.log.Info("disk space is back: segments are written again", "dir", p.cfg.Dir)
	}
}

// join returns the state of stream id, starting a new session (and removing
// the previous session's files) when no rendition of it is running.
func (p *Packager) join(id string) (*streamState, error) {
	p.mu.Lock()
	for p.ending[id] != nil && p.streams[id] == nil {
		// The last session is still finishing its recordings.
		done := p.ending[id]
		p.mu.Unlock()
		<-done
		p.mu.Lock()
	}
	if p.removed[id] {
		p.mu.Unlock()
		return nil, errRemoved
	}
	if st := p.streams[id]; st != nil {
		if st.linger != nil {
			st.linger.Stop() // expire sees active > 0 if it runs anyway
			st.linger = nil
		}
		st.active++
		p.mu.Unlock()
		return st, nil
	}
	dir := filepath.Join(p.cfg.Dir, id)
	if p.live != nil {
		p.live.RemoveStream(id)
	}
	var resumed map[string]resumed
	keep := false // the store's tree is not to be reset
	if p.cfg.Resume != nil {
		recs, err := p.cfg.Resume(id)
		if err != nil {
			// Perhaps a broadcast to take over: its objects are kept,
			// though this session starts a recording of its own.
			keep = true
			p.log.Warn("could not tell whether a broadcast is to be taken over: a new recording starts; the stream's stored segments are kept (its playlists are replaced)",
				"stream", id, "err", err)
		}
		resumed = parseAll(recs)
	}
	// A broadcast this origin was packaging when it crashed: continued
	// here, its files where they are. Not with a shared store
	// (Config.Resume): another origin may have continued that broadcast
	// meanwhile, and its recording is not to be replaced.
	local := false
	if o, ok := p.orphans[id]; ok {
		delete(p.orphans, id)
		if resumed == nil && time.Since(o.cut) < orphanReturn {
			resumed = parseAll(o.recs)
			local = resumed != nil
		}
	}
	switch {
	case local:
		p.log.Warn("continuing the recordings of a broadcast this origin was packaging when it stopped mid-stream", "stream", id,
			"playlists", len(resumed))
		if p.events != nil {
			p.events.Resumed(id)
		}
	case resumed != nil:
		p.log.Warn("taking over a broadcast whose origin stopped mid-stream: its recordings are continued", "stream", id,
			"playlists", len(resumed))
		fallthrough
	case keep:
		if p.events != nil {
			p.events.Resumed(id)
		}
	default:
		p.reset(id)
	}
	old := ""
	if !local {
		var err error
		if old, err = p.trash(dir); err != nil {
			p.mu.Unlock()
			return nil, fmt.Errorf("removing the previous session: %w", err)
		}
	}
	if err := p.fs.mkdirAll(dir); err != nil && !noSpace(err) {
		// A full disk does not stop the broadcast: its renditions make
		// their directories once there is space (trackOut.makeDir).
		p.mu.Unlock()
		return nil, err
	}
	st := &streamState{
		p: p, id: id, dir: dir, active: 1,
		session:    strconv.FormatInt(time.Now().UnixMilli(), 36),
		renditions: map[string]*variantInfo{},
		resumed:    resumed,
	}
	p.streams[id] = st
	p.mu.Unlock()
	p.emptyTrash(old) // slow for a long recording: outside the lock
	return st, nil
}

// reset tells the listener that stream id's tree is about to go.
func (p *Packager) reset(id string) {
	if p.events != nil {
		p.events.Reset(id)
	}
}

// trashPrefix starts the names of directories being deleted: never a
// valid stream id, so they are never served.
const trashPrefix = ".trash-"

// trash moves dir out of the way under a name of its own (a rename: fast,
// so it may run under p.mu) and returns that name, "" when dir did not
// exist. emptyTrash deletes it later, outside the lock.
func (p *Packager) trash(dir string) (string, error) {
	old := filepath.Join(p.cfg.Dir, trashPrefix+filepath.Base(dir)+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, old); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", nil
		}
		return "", err
	}
	return old, nil
}

// emptyTrash deletes a directory trash returned.
func (p *Packager) emptyTrash(old string) {
	if old == "" {
		return
	}
	if err := os.RemoveAll(old); err != nil {
		p.log.Error("removing old HLS output", "dir", old, "err", err)
	}
}

func (p *Packager) leave(st *streamState) {
	var old string
	var finish func()
	defer func() { // after the lock is released
		if finish != nil {
			finish()
		}
		p.emptyTrash(old)
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	st.active--
	if st.active == 0 && p.streams[st.id] == st {
		if p.cfg.Linger > 0 && !st.removed && !p.stopping {
			st.linger = time.AfterFunc(p.cfg.Linger, func() { p.expire(st) })
			return
		}
		finish = p.endLocked(st)
		if st.removed {
			if p.live != nil {
				p.live.RemoveStream(st.id)
			}
			p.reset(st.id)
			var err error
			if old, err = p.trash(st.dir); err != nil {
				p.log.Error("removing the HLS output of a deleted stream", "stream", st.id, "err", err)
			}
		}
	}
}

// expire ends the session of st if no rendition came back while it
// lingered.
func (p *Packager) expire(st *streamState) {
	p.mu.Lock()
	var finish func()
	if st.active == 0 && p.streams[st.id] == st {
		finish = p.endLocked(st)
	}
	p.mu.Unlock()
	if finish != nil {
		finish()
	}
}

// expireAll ends every lingering session now (Run is returning).
func (p *Packager) expireAll() {
	p.mu.Lock()
	p.stopping = true
	var finishes []func()
	for _, st := range p.streams {
		if st.active == 0 {
			if st.linger != nil {
				st.linger.Stop()
			}
			finishes = append(finishes, p.endLocked(st))
		}
	}
	p.mu.Unlock()
	for _, f := range finishes {
		if f != nil {
			f()
		}
	}
}

// lingers reports whether st's session would linger were its last
// rendition to end now.
func (p *Packager) lingers(st *streamState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cfg.Linger > 0 && !st.removed && !p.stopping
}

// endLocked ends the session of st, whose renditions all ended, and
// returns what is left to do once p.mu is released (nil for a deleted
// stream): its kept video tracks and audio group end, which reads and
// writes whole recordings. A new session of the stream waits for it
// (join), so nothing writes into the directory of the next one.
func (p *Packager) endLocked(st *streamState) func() {
	delete(p.streams, st.id)
	if p.live != nil {
		// The master playlists on disk are the final ones.
		p.live.Remove(st.id + "/master.m3u8")
		p.live.Remove(st.id + "/" + DVRPlaylist)
	}
	if st.removed {
		return nil
	}
	done := make(chan struct{})
	p.ending[st.id] = done
	return func() {
		st.finalizeKept()
		// An audio group whose owner ended while others ran (or while the
		// session lingered), and that nobody took over, ends with the
		// session.
		if a := st.audioOut; a != nil && !a.ended {
			a.ended = true
			a.writePlaylists()
			st.audioGroupEnded(a)
		}
		if p.events != nil {
			p.events.Ended(st.id)
		}
		p.mu.Lock()
		if p.ending[st.id] == done {
			delete(p.ending, st.id)
		}
		p.mu.Unlock()
		close(done)
	}
}

// Remove deletes the HLS output of stream id. If the stream is being
// packaged, the output is deleted as soon as its renditions finish (end the
// publication in the hub to make them finish).
func (p *Packager) Remove(id string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("packager: invalid stream id %q", id)
	}
	p.mu.Lock()
	// Renditions may still arrive (a transcoder flushing its encoders):
	// they must not bring the output back. Ids are never reused.
	p.removed[id] = true
	delete(p.orphans, id)
	delete(p.problems, id)
	if st := p.streams[id]; st != nil {
		st.removed = true
		if st.active > 0 {
			p.mu.Unlock()
			return nil
		}
		// Lingering: nothing runs that would delete it later.
		if st.linger != nil {
			st.linger.Stop()
		}
		p.endLocked(st) // deleted: nothing left to finish
	}
	if p.live != nil {
		p.live.RemoveStream(id)
	}
	p.reset(id)
	old, err := p.trash(filepath.Join(p.cfg.Dir, id))
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("packager: removing the output of %s: %w", id, err)
	}
	p.emptyTrash(old)
	return nil
}

// writeFile writes a file through p.fs, counted in the written metric.
func (p *Packager) writeFile(path string, data []byte) error {
	p.written.Add(float64(len(data)))
	return p.fs.writeFile(path, data)
}

// appendFile appends to a file through p.fs, counted in the written
// metric.
func (p *Packager) appendFile(path string, data []byte) error {
	p.written.Add(float64(len(data)))
	return p.fs.appendFile(path, data)
}
