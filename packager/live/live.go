// Package live holds what the packager publishes for live streams in memory:
// each media and master playlist as an immutable snapshot with its ETag, and
// the partial segments of LL-HLS. The origin serves from it without reading
// or hashing files, and answers blocking playlist reloads (_HLS_msn,
// _HLS_part) by waiting for the snapshot that satisfies them.
//
// Keys are paths relative to the HLS directory, the same as the files':
// "<id>/master.m3u8", "<id>/<rendition>/index.m3u8" and
// "<id>/<rendition>/<part>.m4s". What is not here is on disk (ended streams,
// VOD, segments).
package live

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"sync"
	"time"
)

// Snapshot is one published version of a playlist. It never changes; a
// newer one replaces it.
type Snapshot struct {
	Data []byte
	// ETag is the quoted entity tag of Data.
	ETag string
	// Delta, when set, is the playlist's delta update (the answer to
	// _HLS_skip=YES), with its own DeltaETag.
	Delta     []byte
	DeltaETag string
	// NextMSN is the media sequence number of the segment being built: the
	// playlist lists every segment before it, and Parts of its partial
	// segments.
	NextMSN uint64
	Parts   int
	// Hint is the path of the partial segment the playlist announces with
	// EXT-X-PRELOAD-HINT ("" when none): a request for it waits until it
	// exists.
	Hint string
	// Target is EXT-X-TARGETDURATION and PartTarget the part target (zero
	// without partial segments).
	Target     time.Duration
	PartTarget time.Duration
	// Ended is set on the last snapshot of a playlist (EXT-X-ENDLIST).
	Ended bool
	// Served are the parts still served, oldest first: those the playlist
	// lists and those of a few segments before (a player holding an older
	// playlist may still ask for them). Signed manifests list them all.
	Served []PartRef

	changed chan struct{} // closed when a newer snapshot replaces this one
}

// Has reports whether the playlist holds segment msn whole (part < 0), or
// partial segment part of segment msn (every part of a finished segment
// counts as there).
func (s *Snapshot) Has(msn uint64, part int) bool {
	if msn < s.NextMSN || s.Ended {
		return true
	}
	return part >= 0 && msn == s.NextMSN && part < s.Parts
}

// TooFar reports whether msn is further ahead than a client may ask to wait
// for (RFC 8216bis 6.2.5.2: more than two past the last segment).
func (s *Snapshot) TooFar(msn uint64) bool {
	return !s.Ended && msn > s.NextMSN+1
}

// PartRef names a partial segment of a playlist (a name in the playlist's
// directory) and its duration.
type PartRef struct {
	Name     string
	Duration time.Duration
}

// Part is a partial segment and the hex SHA-256 of its bytes.
type Part struct {
	Data   []byte
	SHA256 string
}

// Registry holds the published snapshots and parts. The zero value is not
// usable: call New. It is safe for concurrent use.
type Registry struct {
	mu        sync.Mutex
	playlists map[string]*Snapshot
	parts     map[string]Part
}

// New returns an empty registry.
func New() *Registry {
	return &Registry{playlists: map[string]*Snapshot{}, parts: map[string]Part{}}
}

// Publish makes s (Data and the position fields set by the caller) the
// current snapshot of the playlist at key, waking whoever waits on the
// previous one. It sets s.ETag from the bytes.
func (r *Registry) Publish(key string, s Snapshot) {
	s.ETag = ETag(s.Data)
	if s.Delta != nil {
		s.DeltaETag = ETag(s.Delta)
	}
	s.changed = make(chan struct{})
	r.mu.Lock()
	prev := r.playlists[key]
	r.playlists[key] = &s
	r.mu.Unlock()
	if prev != nil {
		close(prev.changed)
	}
}

// ETag is the quoted entity tag of bytes served whole (playlists,
// manifests): the first 12 bytes of their SHA-256, in hex.
func ETag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

// Get returns the current snapshot of key, nil when none.
func (r *Registry) Get(key string) *Snapshot {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.playlists[key]
}

// Wait returns the first snapshot of key for which ok is true, waiting for
// new ones until ctx is done. It returns nil when key has no snapshot (or
// it was removed while waiting), and ctx's error when ctx ended first.
func (r *Registry) Wait(ctx context.Context, key string, ok func(*Snapshot) bool) (*Snapshot, error) {
	for {
		s := r.Get(key)
		if s == nil || ok(s) {
			return s, nil
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Remove forgets the playlist at key and wakes its waiters.
func (r *Registry) Remove(key string) {
	r.mu.Lock()
	prev := r.playlists[key]
	delete(r.playlists, key)
	r.mu.Unlock()
	if prev != nil {
		close(prev.changed)
	}
}

// RemoveStream forgets every playlist and part of stream id.
func (r *Registry) RemoveStream(id string) {
	prefix := id + "/"
	var woken []*Snapshot
	r.mu.Lock()
	for k, s := range r.playlists {
		if strings.HasPrefix(k, prefix) {
			delete(r.playlists, k)
			woken = append(woken, s)
		}
	}
	for k := range r.parts {
		if strings.HasPrefix(k, prefix) {
			delete(r.parts, k)
		}
	}
	r.mu.Unlock()
	for _, s := range woken {
		close(s.changed)
	}
}

// AddPart stores a partial segment at key. Publish the playlist that lists
// it afterwards.
func (r *Registry) AddPart(key string, data []byte) {
	sum := sha256.Sum256(data)
	r.mu.Lock()
	r.parts[key] = Part{Data: data, SHA256: hex.EncodeToString(sum[:])}
	r.mu.Unlock()
}

// DropPart forgets the partial segment at key.
func (r *Registry) DropPart(key string) {
	r.mu.Lock()
	delete(r.parts, key)
	r.mu.Unlock()
}

// LookupPart returns the partial segment at key without waiting.
func (r *Registry) LookupPart(key string) (Part, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.parts[key]
	return p, ok
}

// Part returns the partial segment at key. When key is the preload hint of
// the playlist at playlist, it waits until the part exists, the hint moves
// on, or ctx is done.
func (r *Registry) Part(ctx context.Context, key, playlist string) (Part, bool) {
	for {
		r.mu.Lock()
		p, ok := r.parts[key]
		s := r.playlists[playlist]
		r.mu.Unlock()
		if ok {
			return p, true
		}
		if s == nil || s.Hint != key {
			return Part{}, false
		}
		select {
		case <-s.changed:
		case <-ctx.Done():
			return Part{}, false
		}
	}
}
