package edgecache

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// meta is what the cache keeps of an upstream answer besides its body. It
// is stored as JSON in each disk object's header.
type meta struct {
	Key          string        `json:"key"` // the cache key: the URL path, "/hls/<id>/...", and a blocking reload's parameters (memory only)
	ContentType  string        `json:"type"`
	ETag         string        `json:"etag,omitempty"`
	CacheControl string        `json:"cache_control,omitempty"`
	Signed       bool          `json:"signed,omitempty"` // Shoal-Playback-Policy: signed
	NoP2P        bool          `json:"no_p2p,omitempty"` // Shoal-P2P: off
	Size         int64         `json:"size"`
	Stored       int64         `json:"stored"` // unix nanoseconds of the fetch or last revalidation
	TTL          time.Duration `json:"ttl"`    // freshness lifetime from Stored
	// SHA256 is the hex SHA-256 of the body, written with a disk object
	// and checked the first time the object is read back (diskEntry.checked).
	SHA256 string `json:"sha256,omitempty"`
	// Ended: a rendition's playlist or manifest that has ended (finished,
	// see blocking.go): it answers every blocking reload of its path.
	Ended bool `json:"ended,omitempty"`
}

// object is one cached answer: a 200 with its body, or a remembered 404.
// It is never modified once published: a refresh makes a new object.
type object struct {
	meta
	status   int    // 200 or 404
	id       string // stream id
	body     []byte // nil for an entry of the disk tier
	expires  int64  // unix nanoseconds
	playlist bool
	stream   *streamInfo
	// stale: a copy served because the origin failed, until staleLimit
	// (unix nanoseconds); its Stored is the original fetch's, for Age.
	stale      bool
	staleLimit int64

	// Header values shared by every answer; net/http never modifies them.
	hType, hCC, hETag, hLen []string
}

func (c *Cache) newObject(m meta, status int, body []byte) *object {
	o := c.makeObject(m, status, body)
	if status == http.StatusOK {
		if m.Signed {
			o.stream.signed.Store(policySigned)
		} else {
			o.stream.signed.Store(policyOpen)
		}
	}
	return o
}

// diskObject is an object the scan found on disk: not an answer from
// upstream now, so it never makes a stream known signed open again (only
// one not known yet).
func (c *Cache) diskObject(m meta) *object {
	o := c.makeObject(m, http.StatusOK, nil)
	if m.Signed {
		o.stream.signed.Store(policySigned)
	} else {
		o.stream.signed.CompareAndSwap(policyUnknown, policyOpen)
	}
	return o
}

// makeObject builds an object of m, leaving its stream's policy alone.
func (c *Cache) makeObject(m meta, status int, body []byte) *object {
	id := m.Key[len("/hls/"):]
	if i := strings.IndexByte(id, '/'); i >= 0 {
		id = id[:i]
	}
	o := &object{
		meta:     m,
		status:   status,
		id:       id,
		body:     body,
		expires:  expiry(m.Stored, m.TTL),
		playlist: strings.HasSuffix(keyPath(m.Key), ".m3u8"),
		stream:   c.stream(id),
	}
	if m.ContentType != "" {
		o.hType = []string{m.ContentType}
	}
	if m.CacheControl != "" {
		o.hCC = []string{m.CacheControl}
	}
	if m.ETag != "" {
		o.hETag = []string{m.ETag}
	}
	if m.Size >= 0 {
		o.hLen = []string{strconv.FormatInt(m.Size, 10)}
	}
	return o
}

// withBody returns a copy of o holding body (of the size o announced, or
// setting it when o did not know it).
func (c *Cache) withBody(o *object, body []byte) *object {
	cp := *o
	cp.body = body
	if cp.Size != int64(len(body)) {
		cp.Size = int64(len(body))
		cp.hLen = []string{strconv.Itoa(len(body))}
	}
	return &cp
}

// Stream playback policies as remembered in streamInfo.signed.
const (
	policyUnknown int32 = iota
	policyOpen
	policySigned
)

func expiry(stored int64, ttl time.Duration) int64 {
	if ttl > time.Duration(math.MaxInt64-stored) {
		return math.MaxInt64
	}
	return stored + int64(ttl)
}

func (o *object) fresh(now time.Time) bool { return now.UnixNano() < o.expires }

// memSize is what an object counts against the memory cap.
func (o *object) memSize() int64 {
	return int64(len(o.body)) + int64(len(o.Key)) + 256
}

// staleIfError returns the stale-if-error directive of a Cache-Control
// value, if any.
func staleIfError(cc string) (time.Duration, bool) {
	for d := range strings.SplitSeq(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		if strings.EqualFold(strings.TrimSpace(name), "stale-if-error") {
			if n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 32); err == nil && n >= 0 {
				return time.Duration(n) * time.Second, true
			}
		}
	}
	return 0, false
}

// noStore reports whether a Cache-Control value forbids a shared cache to
// store the answer (no-store or private).
func noStore(cc string) bool {
	for d := range strings.SplitSeq(cc, ",") {
		name, _, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "no-store", "private":
			return true
		}
	}
	return false
}

// freshness reads a Cache-Control (and Age) header: how long the answer
// may be reused, and whether a shared cache may store it at all.
func freshness(h http.Header) (time.Duration, bool) {
	cc := h.Get("Cache-Control")
	if cc == "" {
		return 0, false
	}
	maxAge, sMaxAge := int64(-1), int64(-1)
	for d := range strings.SplitSeq(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
		val = strings.Trim(strings.TrimSpace(val), `"`)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "no-store", "private":
			return 0, false
		case "no-cache":
			return 0, true
		case "max-age":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 0 {
				maxAge = n
			}
		case "s-maxage":
			if n, err := strconv.ParseInt(val, 10, 64); err == nil && n >= 0 {
				sMaxAge = n
			}
		}
	}
	secs := maxAge
	if sMaxAge >= 0 {
		secs = sMaxAge
	}
	if secs < 0 {
		return 0, false
	}
	if age, err := strconv.ParseInt(h.Get("Age"), 10, 64); err == nil && age > 0 {
		secs = max(0, secs-age)
	}
	if secs > math.MaxInt64/int64(time.Second) {
		secs = math.MaxInt64 / int64(time.Second)
	}
	return time.Duration(secs) * time.Second, true
}

// memTier is the memory LRU.
type memTier struct {
	max  int64
	mu   sync.Mutex
	l    *lru[*object]
	used atomic.Int64
}

func newMemTier(max int64) *memTier { return &memTier{max: max, l: newLRU[*object](max)} }

// get returns the object under key, marking it recently used, or nil.
func (t *memTier) get(key string) *object {
	t.mu.Lock()
	o, _ := t.l.get(key)
	t.mu.Unlock()
	return o
}

// peek returns the object under key without touching its recency, or nil.
func (t *memTier) peek(key string) *object {
	t.mu.Lock()
	o, _ := t.l.peek(key)
	t.mu.Unlock()
	return o
}

// fits reports whether an object of size bytes is kept in memory.
func (t *memTier) fits(size int64) bool { return size >= 0 && size <= t.max/8 }

func (t *memTier) put(o *object) bool { return t.putIf(o, nil) }

// putIf puts o unless valid (when not nil), asked under the tier's lock,
// answers false: an invalidation, which bumps the generation valid checks
// before it removes objects under this lock, cannot miss o.
func (t *memTier) putIf(o *object, valid func() bool) bool {
	if !t.fits(int64(len(o.body))) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if valid != nil && !valid() {
		return false
	}
	t.l.add(o.Key, o.memSize(), o, nil)
	t.used.Store(t.l.used)
	_, ok := t.l.peek(o.Key)
	return ok
}

func (t *memTier) bytes() int64 { return t.used.Load() }

// removeMatching removes the objects whose key matches; it returns how many.
func (t *memTier) removeMatching(match func(string) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.l.keys(match)
	for _, k := range keys {
		t.l.remove(k)
	}
	t.used.Store(t.l.used)
	return len(keys)
}
