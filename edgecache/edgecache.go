// Package edgecache is the HTTP cache an edge node serves viewers from.
//
// It answers the origin's playback paths (/hls/<id>/...) from two tiers, a
// memory LRU for hot objects and a disk LRU that survives restarts, and
// fills misses from the origin or from a sibling edge of the same region:
//
//   - Concurrent misses for one object cause one upstream fetch; every
//     waiter is streamed the bytes as they arrive.
//   - Freshness follows the upstream Cache-Control: segments and init
//     sections are immutable, live playlists live for a second and are then
//     revalidated (If-None-Match). 404s are remembered for NegativeTTL;
//     upstream errors become 502 and are not cached.
//   - On a miss for a segment, the owner of its path among the region's
//     edges (rendezvous hashing) is asked first. Sibling bytes are trusted
//     only when their SHA-256 matches the digest the origin announces in a
//     HEAD (Shoal-Content-SHA256); a sibling that fails is skipped for 30 s,
//     and so is one that refuses (a 4xx, or a size too big to cache) twice
//     in a row an object that the HEAD says the origin has. A refusal sends
//     the miss to the origin at once, without waiting for that HEAD.
//   - Every answer carries an RFC 9211 Cache-Status header.
//   - With several origins (Config.OriginURL, Deps.Origins), every request
//     to the origin goes to the preferred one, and to the next one on a
//     connection error, a stall or a 502/503/504, down the origins that
//     did not fail recently (two at least); an origin that failed is tried
//     last for 10 s (origins.go).
//
// LL-HLS blocking playlist reloads pass through with coalescing (blocking.go):
//
//   - A request for a rendition's playlist or manifest.txt with _HLS_msn=N
//     (and maybe _HLS_part=P) is keyed, in the flight table and in memory,
//     by its path plus the normalized parameters
//     ("/hls/<id>/<r>/index.m3u8?_HLS_msn=N&_HLS_part=P"): all the viewers
//     waiting for one (playlist, N, P) share one upstream request, sent with
//     the same parameters, the leader's token (vouched for with the
//     leader's address, Deps.Vouch) and Shoal-Edge: 1, and every
//     one of them is answered from it. Its 200 is kept (in memory only) for
//     the origin's max-age, so later requests for that key are hits. Other
//     parameters (_HLS_skip among them) are ignored: not in the key, not
//     forwarded. Plain requests are keyed by path, as always.
//   - A request for a position already passed is answered with the newest
//     answer held for that playlist while it is under passedAnswerAge old
//     (blockingMarks): it holds that position.
//   - A playlist or manifest that has ended (#EXT-X-ENDLIST, "ended 1")
//     does not block: the origin answers any N at once with all of it. Its
//     200, to a blocking reload or not, is kept as the plain path's answer
//     only, and every blocking reload of that path is answered from that
//     copy while it is fresh (memory or disk): counting N upwards costs
//     neither an upstream request nor a copy per N.
//   - Malformed parameters (not 1 to 10 decimal digits, given twice, or
//     _HLS_part without _HLS_msn) are answered 400 by the edge without going
//     upstream. The origin's 400 (N too far ahead) and 503 (not there within
//     three target durations) reach every waiter as they are, with
//     no-store, and are not cached.
//   - The origin holds such a request until the playlist has what was asked
//     for, and a request for the preload-hinted part until the part exists:
//     the wait for their headers is bounded by Config.BlockingTimeout
//     (default OriginTimeout + 20s) instead of OriginTimeout; pauses in
//     their bodies still by OriginTimeout.
//   - Parts ("<segment>-p<k>.m4s") are immutable objects cached and
//     coalesced like segments, but fetched from the origin only, never from
//     a sibling (a hinted part may take longer than SiblingTimeout to
//     start). A 404 the origin marks no-store (a part that does not exist
//     yet) is answered with no-store and not remembered.
//   - For signed streams, the per-viewer rewrite of blocking answers adds
//     the token to every URI, URI="..." attributes of EXT-X-PART,
//     EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT and EXT-X-MAP included
//     (RewritePlaylist).
//
// The Cache-Status values, "shoal" being Config.Name:
//
//	shoal; hit                                               from memory or disk
//	shoal; hit; detail=negative                              a remembered 404
//	shoal; fwd=miss; stored; detail=origin                   fetched for this request ("stored": kept)
//	shoal; fwd=miss; stored; detail=sibling-<id>             fetched from a sibling, verified
//	shoal; fwd=miss; fwd-status=404; stored; detail=origin   a 404, remembered
//	shoal; fwd=miss; fwd-status=503; detail=origin           an upstream error, answered 502 (a blocking
//	                                                         reload's 503 is answered 503)
//	shoal; fwd=miss; fwd-status=400; detail=origin           a blocking reload too far ahead, answered 400
//	shoal; fwd=miss; fwd-status=404; detail=origin           a 404 the origin marked no-store: not remembered
//	shoal; fwd=stale; fwd-status=304; stored; detail=origin  revalidated
//	shoal; fwd=miss; collapsed                               waited on another request's fetch
//	shoal; fwd=stale; collapsed                              waited on another request's revalidation
//	shoal; hit; detail=stale-while-revalidate                a playlist a second old, while another request revalidates it
//	shoal; fwd=stale; fwd-status=502; detail=stale-if-error  the origin failed: the last copy, with Age (RFC 5861;
//	                                                         live playlists and manifests for at most MaxLiveStale)
//	shoal; hit; detail=stale-if-error                        that copy again within the next second
//	shoal                                                    OPTIONS, refused method, path or blocking parameters
//	shoal; detail=refused                                    refused by Deps.Access
//
// The disk format is described in disk.go. The http.Server in front of a
// Cache should set MaxHeaderBytes (and ReadHeaderTimeout): header size is
// its job.
//
// The edge meets the packager only over HTTP: this package imports the
// origin package for its path rules and cache constants, never media.
package edgecache

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/originset"
)

// Defaults for Config fields left zero.
const (
	DefaultDiskBytes        int64 = 10 << 30
	DefaultMemoryBytes      int64 = 512 << 20
	DefaultNegativeTTL            = time.Second
	DefaultMaxObjectBytes   int64 = 64 << 20
	DefaultSiblingTimeout         = time.Second
	DefaultOriginTimeout          = 10 * time.Second
	DefaultStaleIfError           = time.Minute
	DefaultMaxInFlightBytes int64 = 256 << 20
	DefaultName                   = "shoal"
)

// Header names of the edge protocol.
const (
	// HeaderSibling marks a request from another edge: the answering edge
	// serves it from its cache or from the origin, never from its siblings.
	HeaderSibling = "Shoal-Sibling"
	// HeaderEdge marks a request from an edge to the origin (the origin then
	// does not rewrite playlists for the viewer's token).
	HeaderEdge = hlspath.EdgeHeader
	// HeaderDigest is the origin's hex SHA-256 of an object's bytes.
	HeaderDigest = hlspath.ContentSHA256Header
	// HeaderPolicy is the origin's playback policy of the stream ("signed").
	HeaderPolicy = hlspath.PolicyHeader
	// HeaderP2P is "off" for a stream whose peer-assisted delivery is
	// off: kept with each object and passed on to viewers (and to the
	// edge's own P2P tracker, which then refuses the stream's swarms).
	HeaderP2P = hlspath.P2PHeader
	// HeaderCacheStatus is the RFC 9211 header every answer carries.
	HeaderCacheStatus = "Cache-Status"
)

// siblingBadFor is how long a failing sibling is skipped.
const siblingBadFor = 30 * time.Second

// Config configures a Cache.
type Config struct {
	// OriginURL is the origin's base URL, e.g. "http://origin:8080", or
	// several separated by commas, the preferred first (see origins.go).
	// Required unless Deps.Origins is set.
	OriginURL string
	// Self is this edge's public URL: its identity among its siblings in
	// rendezvous hashing. Required when Deps.Siblings is set.
	Self string
	// CacheDir holds the disk tier. Required. Objects survive restarts: Run
	// rebuilds the index by scanning it.
	CacheDir string
	// HoldDisk makes Run wait for ReleaseDisk before it indexes the disk
	// tier: until then, nothing stored before this start is served (the
	// memory tier, the origin and what is stored meanwhile are). An edge
	// holds it until it has caught up with the invalidation feed, which
	// may tell it that some of those objects are gone or signed now, or
	// that it missed entries (then it drops them all).
	HoldDisk bool
	// DiskBytes caps the disk tier (default 10 GiB).
	DiskBytes int64
	// MemoryBytes caps the memory tier (default 512 MiB). Objects larger
	// than MemoryBytes/8 are kept on disk only.
	MemoryBytes int64
	// NegativeTTL is how long an upstream 404 is remembered (default 1s).
	NegativeTTL time.Duration
	// MaxObjectBytes is the largest object cached (default 64 MiB); bigger
	// ones are streamed through uncached.
	MaxObjectBytes int64
	// SiblingTimeout bounds the wait for a sibling's first byte and any
	// pause after it (default 1s).
	SiblingTimeout time.Duration
	// OriginTimeout bounds the wait for the origin's answer and any pause
	// in its body (default 10s).
	OriginTimeout time.Duration
	// BlockingTimeout bounds the wait for the origin's answer to a
	// blocking playlist reload (_HLS_msn) and to a part, which the origin
	// holds until the playlist has what was asked for (up to three target
	// durations, then 503) or the part exists. Pauses in their bodies are
	// bounded by OriginTimeout. Default OriginTimeout + 20s; it may not be
	// less than OriginTimeout.
	BlockingTimeout time.Duration
	// Name is this cache's name in Cache-Status (default "shoal"); it must
	// be a structured-field token.
	Name string
	// StaleIfError is how long past its freshness an object may still be
	// served when the origin fails (an error, a 5xx or a timeout), with an
	// Age header (RFC 5861); a stale-if-error directive of the origin's
	// Cache-Control overrides it. Default 1 minute; negative: never.
	StaleIfError time.Duration
	// MaxInFlightBytes caps the memory that bodies on their way from the
	// origin may hold (default 256 MiB): past it, a body larger than 1 MiB
	// is spooled to a file in CacheDir while viewers are streamed from it.
	// When the disk cannot take it (no file can be made, a write fails),
	// the body is held in memory anyway, past this cap.
	MaxInFlightBytes int64
}

// Sibling is another edge of the same region.
type Sibling struct {
	ID  string
	URL string
}

// Deps are the Cache's collaborators.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Client makes upstream requests; default: a pooled client that does
	// not follow redirects.
	Client *http.Client
	// Now is the clock freshness, staleness, marks and the egress rate are
	// reckoned by (default time.Now; tests advance their own).
	Now func() time.Time
	// Origins, when set, are the origins fetched from (Config.OriginURL is
	// then ignored): the edge shares them with its node protocol client,
	// which adds the origins it learns. Nil: the origins of
	// Config.OriginURL, failures reckoned by Now.
	Origins *originset.Set

	// ticks, when set, replaces Run's one-second ticker (tests tick by
	// hand), and ticked, when set, is called once a tick has been handled.
	ticks  <-chan time.Time
	ticked func()

	// onJoin, when set, is called each time a request joins a fetch in
	// flight (tests wait on it).
	onJoin func()
	// spool, when set, makes the spool files (tests wrap them); default:
	// a file of the disk tier's tmp directory.
	spool func() (spooler, error)
	// Siblings returns the live edges of this edge's region, self excluded.
	// Nil: never fetch from siblings.
	Siblings func() []Sibling
	// Access, when set, is asked before anything is served. It gets the
	// request, the stream id and whether the origin marked the stream
	// signed. A non-zero status refuses the request with that status; a
	// non-empty token is added to every URI of the playlists served.
	Access func(r *http.Request, id string, signed bool) (token string, status int)
	// ClientIP, when set, finds a viewer's address (trusted proxies); the
	// default is the TCP peer. Viewers are counted by it, and it is what
	// Vouch vouches for.
	ClientIP func(r *http.Request) string
	// Vouch, when set, is called on each request that carries a viewer's
	// playback token to the origin or a sibling (misses only), to vouch
	// for the viewer at viewerIP (nodeproto.Vouch): target is the
	// request's path and query below the origin's or sibling's URL.
	Vouch func(req *http.Request, target, viewerIP string)
}

// Stats is a snapshot of the cache's counters.
type Stats struct {
	Connections       int64   // requests in flight
	EgressBytesPerSec float64 // body bytes served per second, over the last EgressWindow
	CacheBytes        int64   // memory + disk tiers
	Hits              int64   // answers from the cache (negative hits included)
	Misses            int64   // answers that waited on an upstream fetch (collapsed included)
	OriginFetches     int64   // GETs sent to the origin
	OriginFailovers   int64   // requests sent again to the next origin because one failed
	SiblingFetches    int64   // objects obtained from a sibling and verified
	SiblingFailures   int64   // sibling attempts that failed (error, timeout, bad bytes, refusals in a row of objects the origin has)
	CorruptObjects    int64   // disk objects dropped for not matching their SHA-256
	StaleServed       int64   // answers from a stale copy because the origin failed
	Spooled           int64   // bodies spooled to disk on their way (memory in flight was at its cap)
	SpoolFailures     int64   // bodies the disk could not take on their way (held in memory instead)
	Viewers           int64   // distinct viewer addresses within ViewerWindow (siblings not counted)
	// BytesServed is the bytes served per stream, for the MaxStatsStreams
	// streams that served the most (a heartbeat carries it), and
	// TotalBytesServed the bytes served in all.
	BytesServed      map[string]int64
	TotalBytesServed int64
}

// MaxStatsStreams bounds Stats.BytesServed (what a heartbeat carries).
const MaxStatsStreams = 500

var nameRe = regexp.MustCompile("^[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]*$")

// Cache is an edge cache. It is an http.Handler.
type Cache struct {
	cfg      Config
	origins  *originset.Set
	log      *slog.Logger
	client   *http.Client
	siblings func() []Sibling
	access   func(r *http.Request, id string, signed bool) (string, int)
	clientIP func(r *http.Request) string
	vouch    func(req *http.Request, target, viewerIP string)
	now      func() time.Time
	ticks    <-chan time.Time
	ticked   func()
	onJoin   func()
	newSpool func() (spooler, error)
	m        *metrics
	errLimit *logx.Limiter

	mem  *memTier
	disk *diskTier
	// marks: the newest blocking reload answered, per playlist.
	marks blockingMarks

	flightMu sync.Mutex
	flights  map[string]*fetch

	badMu    sync.Mutex
	bad      map[string]time.Time // sibling id -> skipped until
	refusals map[string]int       // sibling id -> refusals in a row of objects the origin has

	bigMu sync.Mutex
	big   map[string]time.Time // keys found too big to cache -> until

	// gen counts Resets, and each stream's own gen its invalidations
	// (Invalidate): a fetch stores what it got only if neither changed
	// since it started (current), so an answer the origin gave before a
	// deletion or policy change is not kept after the invalidation
	// removed the stream's objects, while fetches of other streams are.
	gen atomic.Uint64

	streamMu       sync.Mutex
	streams        map[string]*streamInfo
	streamsEvicted atomic.Int64

	viewerMu sync.Mutex
	viewers  map[string]int64 // viewer address -> unix seconds last seen

	conns       atomic.Int64
	served      atomic.Int64
	egress      atomic.Uint64 // math.Float64bits of bytes per second
	hits        atomic.Int64
	misses      atomic.Int64
	originGets  atomic.Int64
	failovers   atomic.Int64
	siblingOK   atomic.Int64
	siblingFail atomic.Int64
	corrupt     atomic.Int64
	staleServed atomic.Int64
	spooled     atomic.Int64
	spoolFails  atomic.Int64
	inflight    atomic.Int64 // bytes of bodies held in memory by fetches

	// Precomputed Cache-Status values: a hit, a remembered 404, waiters of
	// another request's fetch, and answers made without the cache (OPTIONS,
	// refused methods and paths, and refusals by Deps.Access).
	csHit, csNegative, csCollapsed, csStaleCollapsed []string
	csStaleHit, csRevalidating                       []string
	csLocal, csRefused                               []string

	cachePrefix string // Name + "; "

	scanned chan struct{} // closed once Run has indexed the disk tier (or given up)
	indexed atomic.Bool   // Run indexed the disk tier (the scan ended)

	// release gets ReleaseDisk's drop (Config.HoldDisk), once.
	release     chan bool
	releaseOnce sync.Once
	// resets counts Reset calls: the scan drops every file it has not
	// indexed yet once one came.
	resets atomic.Uint64
	// scanSkip holds the ids invalidated before the scan indexed the disk
	// tier (nil once it has): their files, older than any invalidation
	// applied by this process, are removed instead.
	scanMu   sync.Mutex
	scanSkip map[string]bool
}

// streamInfo is what the cache remembers per stream id.
type streamInfo struct {
	served atomic.Int64
	signed atomic.Int32 // 0 unknown, 1 open, 2 signed: as the last answer from upstream said
	// forced is the policy the origin's invalidation feed announced (0:
	// none). Signed wins over what cached objects were fetched under;
	// open does not override an object the origin answered as signed
	// (signedFor): the feed may be behind the origin, never the object,
	// which was fetched after the entry (Invalidate removes every object
	// of the id, and a fetch across it stores nothing).
	forced  atomic.Int32
	deleted atomic.Bool
	gen     atomic.Uint64 // its invalidations (see Cache.gen)
}

// generation is the cache's and a stream's invalidation generations at
// some moment (Cache.genOf).
type generation struct {
	all, one uint64
	st       *streamInfo
	never    bool // what was fetched is not to be kept (checkPolicy)
}

// genOf returns the generations of the cache and of stream id now.
func (c *Cache) genOf(id string) generation {
	st := c.stream(id)
	return generation{all: c.gen.Load(), one: st.gen.Load(), st: st}
}

// isSigned tells whether the stream is known to be signed.
func (st *streamInfo) isSigned() bool {
	if f := st.forced.Load(); f != policyUnknown {
		return f == policySigned
	}
	return st.signed.Load() == policySigned
}

// Invalidation tells the cache to drop what it holds of a stream id: it was
// deleted (then every request for it is answered 404), or its playback
// policy changed (then it is enforced on every answer, hits included).
type Invalidation struct {
	ID      string
	Deleted bool
	Signed  bool
}

// Invalidate applies invs in order: the objects of each id are removed
// from both tiers (one pass over each tier for the whole batch).
func (c *Cache) Invalidate(invs []Invalidation) {
	if len(invs) == 0 {
		return
	}
	prefixes := make(map[string]bool, len(invs))
	for _, inv := range invs {
		st := c.stream(inv.ID)
		// Bumped before the objects are removed, under each tier's
		// lock: a fetch of the stream in flight either stored before
		// (and is removed now) or sees the new generation and stores
		// nothing.
		st.gen.Add(1)
		switch {
		case inv.Deleted:
			st.deleted.Store(true)
		case inv.Signed:
			st.forced.Store(policySigned)
		default:
			st.forced.Store(policyOpen)
		}
		prefixes[inv.ID] = true
	}
	c.scanMu.Lock()
	if c.scanSkip != nil {
		for id := range prefixes {
			c.scanSkip[id] = true
		}
	}
	c.scanMu.Unlock()
	match := func(key string) bool {
		rest, ok := strings.CutPrefix(key, "/hls/")
		if !ok {
			return false
		}
		id, _, _ := strings.Cut(rest, "/")
		return prefixes[id]
	}
	n := c.mem.removeMatching(match) + c.disk.removeMatching(match)
	c.log.Info("invalidated cached streams", "ids", len(prefixes), "objects", n)
}

// Reset drops every object of both tiers: the edge missed invalidations
// (its cursor fell behind the feed), so nothing it holds can be trusted.
// The memory tier and the disk tier's index are emptied at once, then the
// disk files are removed (by the caller's goroutine, not under a lock);
// fetches in flight store nothing, and files the scan has not indexed yet
// are removed instead. It returns how many objects were dropped.
func (c *Cache) Reset() int {
	c.resets.Add(1)
	c.gen.Add(1)
	// What the feed said of each stream is as untrustworthy as the
	// objects: a stream made public while the edge missed it stays
	// signed otherwise (refused before the origin is asked). Deletions
	// are kept: ids are never reused.
	c.streamMu.Lock()
	for _, st := range c.streams {
		st.forced.Store(policyUnknown)
		st.signed.Store(policyUnknown)
	}
	c.streamMu.Unlock()
	n := c.mem.removeMatching(func(string) bool { return true })
	files := c.disk.takeAll()
	for _, f := range files {
		_ = os.Remove(f)
	}
	c.log.Warn("dropped every cached object: invalidations were missed", "memory", n, "disk", len(files))
	return n + len(files)
}

// ReleaseDisk lets Run index the disk tier held by Config.HoldDisk; with
// drop, every file found there is removed instead. Calls after the first
// change nothing.
func (c *Cache) ReleaseDisk(drop bool) {
	c.releaseOnce.Do(func() { c.release <- drop })
}

// Indexed reports whether Run has indexed the disk tier (after
// ReleaseDisk, with Config.HoldDisk): what was on disk before this start
// is then indexed or removed, and Reset removes its files.
func (c *Cache) Indexed() bool { return c.indexed.Load() }

// skipScanned reports whether the scan must remove a file of key: a Reset
// came since the scan began (resets differs from at), or its id was
// invalidated since this start.
func (c *Cache) skipScanned(key string, at uint64) bool {
	if c.resets.Load() != at {
		return true
	}
	id := strings.TrimPrefix(key, "/hls/")
	id, _, _ = strings.Cut(id, "/")
	c.scanMu.Lock()
	defer c.scanMu.Unlock()
	return c.scanSkip[id]
}

// current returns whether no invalidation of g's stream, nor a Reset,
// came since g.
func (c *Cache) current(g generation) func() bool {
	return func() bool { return !g.never && c.gen.Load() == g.all && (g.st == nil || g.st.gen.Load() == g.one) }
}

// New validates cfg and returns a Cache. It touches no file: Run indexes
// the disk tier, and the cache serves (from memory and the origin) before
// that is done.
func New(cfg Config, deps Deps) (*Cache, error) {
	var errs []error
	var originURLs []string
	switch {
	case deps.Origins != nil:
	case cfg.OriginURL == "":
		errs = append(errs, errors.New("edgecache: OriginURL is required"))
	default:
		var err error
		if originURLs, err = originset.Parse(cfg.OriginURL); err != nil {
			errs = append(errs, fmt.Errorf("edgecache: OriginURL must be http(s) URLs separated by commas: %w", err))
		}
	}
	if cfg.CacheDir == "" {
		errs = append(errs, errors.New("edgecache: CacheDir is required"))
	}
	size := func(name string, v *int64, def int64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("edgecache: %s must be positive, got %d", name, *v))
		}
	}
	size("DiskBytes", &cfg.DiskBytes, DefaultDiskBytes)
	size("MemoryBytes", &cfg.MemoryBytes, DefaultMemoryBytes)
	size("MaxObjectBytes", &cfg.MaxObjectBytes, DefaultMaxObjectBytes)
	size("MaxInFlightBytes", &cfg.MaxInFlightBytes, DefaultMaxInFlightBytes)
	dur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("edgecache: %s must be positive, got %s", name, *v))
		}
	}
	dur("NegativeTTL", &cfg.NegativeTTL, DefaultNegativeTTL)
	dur("SiblingTimeout", &cfg.SiblingTimeout, DefaultSiblingTimeout)
	dur("OriginTimeout", &cfg.OriginTimeout, DefaultOriginTimeout)
	dur("BlockingTimeout", &cfg.BlockingTimeout, cfg.OriginTimeout+DefaultBlockingMargin)
	if cfg.BlockingTimeout > 0 && cfg.OriginTimeout > 0 && cfg.BlockingTimeout < cfg.OriginTimeout {
		errs = append(errs, fmt.Errorf("edgecache: BlockingTimeout (%s) may not be less than OriginTimeout (%s)", cfg.BlockingTimeout, cfg.OriginTimeout))
	}
	if cfg.StaleIfError == 0 {
		cfg.StaleIfError = DefaultStaleIfError
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if !nameRe.MatchString(cfg.Name) {
		errs = append(errs, fmt.Errorf("edgecache: Name must be a token (letters, digits, -._:/), got %q", cfg.Name))
	}
	if deps.Siblings != nil {
		if su, err := url.Parse(cfg.Self); cfg.Self == "" || err != nil || su.Host == "" {
			errs = append(errs, fmt.Errorf("edgecache: Self must be this edge's public URL when siblings are used, got %q", cfg.Self))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	origins := deps.Origins
	if origins == nil {
		var err error
		if origins, err = originset.New(originURLs, deps.Now); err != nil {
			return nil, fmt.Errorf("edgecache: %w", err)
		}
	}
	client := deps.Client
	if client == nil {
		client = &http.Client{
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:          512,
				MaxIdleConnsPerHost:   128,
				IdleConnTimeout:       90 * time.Second,
				ExpectContinueTimeout: time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	c := &Cache{
		cfg:      cfg,
		origins:  origins,
		log:      deps.Log,
		client:   client,
		siblings: deps.Siblings,
		access:   deps.Access,
		clientIP: deps.ClientIP,
		vouch:    deps.Vouch,
		now:      deps.Now,
		ticks:    deps.ticks,
		ticked:   deps.ticked,
		onJoin:   deps.onJoin,
		newSpool: deps.spool,
		errLimit: logx.NewLimiter(10 * time.Second),
		mem:      newMemTier(cfg.MemoryBytes),
		disk:     newDiskTier(cfg.CacheDir, cfg.DiskBytes),
		flights:  make(map[string]*fetch),
		bad:      make(map[string]time.Time),
		refusals: make(map[string]int),
		big:      make(map[string]time.Time),
		streams:  make(map[string]*streamInfo),
		viewers:  make(map[string]int64),
		scanned:  make(chan struct{}),
		release:  make(chan bool, 1),
		scanSkip: make(map[string]bool),
	}
	if c.newSpool == nil {
		c.newSpool = func() (spooler, error) {
			f, err := c.disk.spoolFile()
			if err != nil {
				return nil, err
			}
			return f, nil
		}
	}
	c.cachePrefix = cfg.Name + "; "
	c.csHit = []string{cfg.Name + "; hit"}
	c.csNegative = []string{cfg.Name + "; hit; detail=negative"}
	c.csCollapsed = []string{cfg.Name + "; fwd=miss; collapsed"}
	c.csStaleCollapsed = []string{cfg.Name + "; fwd=stale; collapsed"}
	c.csStaleHit = []string{cfg.Name + "; hit; detail=stale-if-error"}
	c.csRevalidating = []string{cfg.Name + "; hit; detail=stale-while-revalidate"}
	c.csLocal = []string{cfg.Name}
	c.csRefused = []string{cfg.Name + "; detail=refused"}
	m, err := newMetrics(deps.Registerer, c)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Run indexes the disk tier, then computes the egress rate and prunes
// bookkeeping until ctx is done. Upstream fetches still running when ctx
// ends are cancelled.
func (c *Cache) Run(ctx context.Context) error {
	drop := false
	if c.cfg.HoldDisk {
		select {
		case drop = <-c.release:
		case <-ctx.Done():
			close(c.scanned)
			c.cancelFlights()
			return nil
		}
	}
	if err := c.disk.scan(ctx, c, c.log, drop); err != nil {
		close(c.scanned)
		return fmt.Errorf("edgecache: %w", err)
	}
	c.scanMu.Lock()
	c.scanSkip = nil
	c.scanMu.Unlock()
	c.indexed.Store(ctx.Err() == nil)
	close(c.scanned)
	ticks := c.ticks
	if ticks == nil {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		ticks = t.C
	}
	// The egress rate is taken over the last EgressWindow (samples each
	// second): steady enough for heartbeats every 2 s to report.
	type sample struct {
		served int64
		at     time.Time
	}
	window := []sample{{c.served.Load(), c.now()}}
	for {
		select {
		case <-ctx.Done():
			c.cancelFlights()
			return nil
		case <-ticks:
			now := c.now()
			window = append(window, sample{c.served.Load(), now})
			for len(window) > 2 && now.Sub(window[1].at) >= EgressWindow {
				window = window[1:]
			}
			first, last := window[0], window[len(window)-1]
			if dt := last.at.Sub(first.at).Seconds(); dt > 0 {
				c.setEgress(float64(last.served-first.served) / dt)
			}
			c.prune(now)
			if c.ticked != nil {
				c.ticked()
			}
		}
	}
}

// EgressWindow is the span the egress rate (Stats.EgressBytesPerSec) is
// averaged over.
const EgressWindow = 10 * time.Second

// cancelFlights cancels the upstream fetches in flight.
func (c *Cache) cancelFlights() {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	for _, f := range c.flights {
		f.cancel()
	}
}

// prune forgets expired sibling and size marks.
func (c *Cache) prune(now time.Time) {
	c.badMu.Lock()
	for id, until := range c.bad {
		if now.After(until) {
			delete(c.bad, id)
		}
	}
	c.badMu.Unlock()
	c.bigMu.Lock()
	for k, until := range c.big {
		if now.After(until) {
			delete(c.big, k)
		}
	}
	c.bigMu.Unlock()
}

// Stats returns a snapshot of the cache's counters.
func (c *Cache) Stats() Stats {
	s := Stats{
		Connections:       c.conns.Load(),
		EgressBytesPerSec: c.egressRate(),
		CacheBytes:        c.mem.bytes() + c.disk.bytes(),
		Hits:              c.hits.Load(),
		Misses:            c.misses.Load(),
		OriginFetches:     c.originGets.Load(),
		OriginFailovers:   c.failovers.Load(),
		SiblingFetches:    c.siblingOK.Load(),
		SiblingFailures:   c.siblingFail.Load(),
		CorruptObjects:    c.corrupt.Load(),
		StaleServed:       c.staleServed.Load(),
		Spooled:           c.spooled.Load(),
		SpoolFailures:     c.spoolFails.Load(),
		Viewers:           c.viewerCount(c.now()),
	}
	s.TotalBytesServed = c.served.Load()
	// The top streams by bytes, kept in a min-heap of MaxStatsStreams.
	var top servedHeap
	c.streamMu.Lock()
	for id, st := range c.streams {
		n := st.served.Load()
		switch {
		case n <= 0:
		case len(top) < MaxStatsStreams:
			heap.Push(&top, servedEntry{id, n})
		case n > top[0].n:
			top[0] = servedEntry{id, n}
			heap.Fix(&top, 0)
		}
	}
	c.streamMu.Unlock()
	s.BytesServed = make(map[string]int64, len(top))
	for _, e := range top {
		s.BytesServed[e.id] = e.n
	}
	return s
}

type servedEntry struct {
	id string
	n  int64
}

// servedHeap is a min-heap of streams by bytes served.
type servedHeap []servedEntry

func (h servedHeap) Len() int           { return len(h) }
func (h servedHeap) Less(i, j int) bool { return h[i].n < h[j].n }
func (h servedHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *servedHeap) Push(x any)        { *h = append(*h, x.(servedEntry)) }
func (h *servedHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ViewerWindow is how recently an address must have asked for something
// to count as a viewer.
const ViewerWindow = 30 * time.Second

// maxViewers bounds the viewer bookkeeping.
const maxViewers = 1_000_000

// viewerIP is the address of the viewer of r (Deps.ClientIP).
func (c *Cache) viewerIP(r *http.Request) string {
	if c.clientIP != nil {
		return c.clientIP(r)
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// upstreamRequest makes a request to the origin at base for key with
// token, vouching for the viewer at viewerIP when it carries a token.
func (c *Cache) upstreamRequest(ctx context.Context, base, method, key, token, viewerIP string) (*http.Request, error) {
	u := upstreamURL(base, key, token)
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(HeaderEdge, "1")
	if token != "" && c.vouch != nil && viewerIP != "" {
		c.vouch(req, u[len(base):], viewerIP)
	}
	return req, nil
}

// sawViewer records a request from a viewer at host.
func (c *Cache) sawViewer(host string, now int64) {
	c.viewerMu.Lock()
	if len(c.viewers) < maxViewers || c.viewers[host] != 0 {
		c.viewers[host] = now
	}
	c.viewerMu.Unlock()
}

// viewerCount counts the viewers seen within ViewerWindow, forgetting older ones.
func (c *Cache) viewerCount(now time.Time) int64 {
	cut := now.Add(-ViewerWindow).Unix()
	c.viewerMu.Lock()
	defer c.viewerMu.Unlock()
	for h, at := range c.viewers {
		if at < cut {
			delete(c.viewers, h)
		}
	}
	return int64(len(c.viewers))
}

// maxStreams bounds the per-stream bookkeeping (a heartbeat walks it to
// pick its top MaxStatsStreams). When it is full, the evictStreams that
// served the fewest bytes are forgotten at once, those without an
// invalidation's state (deleted, a policy the origin announced) first: a
// forgotten stream's policy is learned again from the origin, which
// enforces it (and answers 404 for a deleted id) whatever the edge knows.
// Bytes served stay counted in Stats.TotalBytesServed; a forgotten
// stream's per-stream count starts again from zero.
const (
	maxStreams   = 10_000
	evictStreams = maxStreams / 10
)

// stream returns the bookkeeping of stream id.
func (c *Cache) stream(id string) *streamInfo {
	c.streamMu.Lock()
	defer c.streamMu.Unlock()
	if st := c.streams[id]; st != nil {
		return st
	}
	if len(c.streams) >= maxStreams {
		c.evictStreamsLocked()
	}
	st := &streamInfo{}
	c.streams[id] = st
	return st
}

// evictStreamsLocked forgets the evictStreams least valuable streams: by
// invalidation state kept (none first), then by bytes served, then by id.
func (c *Cache) evictStreamsLocked() {
	type cand struct {
		id     string
		kept   bool
		served int64
	}
	all := make([]cand, 0, len(c.streams))
	for id, st := range c.streams {
		all = append(all, cand{id, st.deleted.Load() || st.forced.Load() != policyUnknown, st.served.Load()})
	}
	n := min(evictStreams, len(all))
	slices.SortFunc(all, func(a, b cand) int {
		if a.kept != b.kept {
			if a.kept {
				return 1
			}
			return -1
		}
		if a.served != b.served {
			return cmp.Compare(a.served, b.served)
		}
		return strings.Compare(a.id, b.id)
	})
	for _, e := range all[:n] {
		delete(c.streams, e.id)
	}
	c.streamsEvicted.Add(int64(n))
	c.m.streamsEvicted.Add(float64(n))
}

func (c *Cache) markBad(id string) {
	c.badMu.Lock()
	c.bad[id] = c.now().Add(siblingBadFor)
	c.badMu.Unlock()
}

func (c *Cache) isBad(id string, now time.Time) bool {
	c.badMu.Lock()
	defer c.badMu.Unlock()
	until, ok := c.bad[id]
	return ok && now.Before(until)
}

// maxBigMarks bounds the set of keys known to be too big.
const maxBigMarks = 10000

func (c *Cache) markBig(key string) {
	c.bigMu.Lock()
	if len(c.big) >= maxBigMarks {
		clear(c.big)
	}
	c.big[key] = c.now().Add(10 * time.Minute)
	c.bigMu.Unlock()
}

func (c *Cache) isBig(key string) bool {
	c.bigMu.Lock()
	defer c.bigMu.Unlock()
	until, ok := c.big[key]
	return ok && c.now().Before(until)
}

func (c *Cache) reportError(msg string, args ...any) {
	if ok, n := c.errLimit.Allow(); ok {
		c.log.Warn(msg, append(args, "suppressed_since_last", n)...)
	}
}
