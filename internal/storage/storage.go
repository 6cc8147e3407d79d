// Package storage is the interface to media objects (HLS playlists,
// segments, init sections, thumbnails, upload sources) keyed by slash
// paths such as "<id>/<rendition>/<file>", with two backends: fsstore
// (a directory on local disk) and s3store (any S3-compatible server).
//
// The VOD workers, uploads and the origin's HTTP server go through it; the
// live packager writes local files that package mirror copies to the
// store (with S3), and Overlay reads them from either.
//
// Every backend passes the same conformance suite (storagetest.Run):
//   - Put is atomic: a reader sees the old object or the new one, never a
//     part of one; a Put that fails (a reader error, a size that does not
//     match, a cancelled context) leaves the old object in place.
//   - Get, Stat and any operation on a key that does not exist return an
//     error that matches ErrNotFound with errors.Is.
//   - Keys are checked (CheckKey) before any I/O: an invalid key returns an
//     error that matches ErrInvalidKey.
//   - List yields objects in byte order of their keys.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"time"
)

// Errors returned (wrapped) by every backend; test them with errors.Is.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("storage: object not found")
	// ErrInvalidKey: a key or prefix breaks the rules of CheckKey.
	ErrInvalidKey = errors.New("storage: invalid key")
	// ErrInvalidRange: a range starts at or after the end of the object
	// (HTTP 416), or has a negative offset or length.
	ErrInvalidRange = errors.New("storage: invalid range")
	// ErrSizeMismatch: Put was given a size and the reader held fewer or
	// more bytes; nothing was stored.
	ErrSizeMismatch = errors.New("storage: size does not match the data")
	// ErrNoBucket: the store's bucket does not exist (a misconfiguration,
	// or it was deleted): not one object missing, every one.
	ErrNoBucket = errors.New("storage: the bucket does not exist")
)

// UnknownSize is the size to give Put when the length of the data is not
// known in advance.
const UnknownSize int64 = -1

// Info describes a stored object.
type Info struct {
	// Key is the object's key.
	Key string
	// Size is the size of the whole object in bytes (also for a ranged Get).
	Size int64
	// ModTime is when the object was last written.
	ModTime time.Time
	// ETag identifies this version of the object (opaque, quoted as HTTP
	// wants it, for example `"5d41402abc4b2a76b9719d911017c592"`); it
	// changes when the object is overwritten with other content. Backends
	// compute it differently: compare ETags of one backend only.
	ETag string
}

// Range selects bytes of an object for Get. The zero Range is the whole
// object.
type Range struct {
	// Offset is the first byte, from 0. An Offset at or after the end of
	// a non-empty object is ErrInvalidRange.
	Offset int64
	// Length is the most bytes to read; 0 reads to the end. A range that
	// runs past the end stops at the end.
	Length int64
}

// ListOptions tunes List.
type ListOptions struct {
	// StartAfter lists only keys after this one (byte order), to resume a
	// listing where an earlier one stopped (pagination).
	StartAfter string
}

// Store is the media object store. Implementations are safe for
// concurrent use.
type Store interface {
	// Put stores the object at key with the bytes of r, replacing any
	// object there, atomically. size is the length of r in bytes, or
	// UnknownSize; when given, a reader with fewer or more bytes fails
	// with ErrSizeMismatch and nothing is stored.
	Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error)
	// Get opens the object at key for reading the bytes of rng. The Info
	// is that of the whole object. The caller closes the reader.
	Get(ctx context.Context, key string, rng Range) (io.ReadCloser, Info, error)
	// Stat describes the object at key.
	Stat(ctx context.Context, key string) (Info, error)
	// List yields every object whose key starts with prefix (a plain string
	// prefix: "v1/" lists the objects under v1, "v1/seg" those whose file
	// name starts with seg), in byte order of keys. An empty prefix lists
	// everything. It stops at the first error, which it yields.
	List(ctx context.Context, prefix string, opts ListOptions) iter.Seq2[Info, error]
	// Delete removes the object at key. Deleting an object that does not
	// exist is not an error.
	Delete(ctx context.Context, key string) error
	// DeletePrefix removes every object under prefix, which must be a
	// valid key followed by "/" (a "directory"): "v1/" removes v1/a and
	// v1/b/c but not v10/a.
	DeletePrefix(ctx context.Context, prefix string) error
}

// Presigner is a Store whose objects can be fetched over plain HTTP with a
// URL that carries its own authorization (S3's presigned URLs), by a client
// that holds no credentials of the store; the URL expires after expiry.
type Presigner interface {
	PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// ReadAll reads the whole object at key (a small playlist, a manifest).
func ReadAll(ctx context.Context, s Store, key string) ([]byte, Info, error) {
	rc, info, err := s.Get(ctx, key, Range{})
	if err != nil {
		return nil, info, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, info, fmt.Errorf("storage: read %s: %w", key, err)
	}
	return b, info, nil
}

// Resolve checks rng against an object of size bytes and returns the
// offset and the number of bytes to read.
func (rng Range) Resolve(size int64) (offset, n int64, err error) {
	if rng.Offset < 0 || rng.Length < 0 {
		return 0, 0, fmt.Errorf("%w: offset %d, length %d", ErrInvalidRange, rng.Offset, rng.Length)
	}
	if rng.Offset > 0 && rng.Offset >= size {
		return 0, 0, fmt.Errorf("%w: offset %d of an object of %d bytes", ErrInvalidRange, rng.Offset, size)
	}
	n = size - rng.Offset
	if rng.Length > 0 && rng.Length < n {
		n = rng.Length
	}
	return rng.Offset, n, nil
}
