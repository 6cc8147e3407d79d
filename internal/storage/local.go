package storage

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Local is implemented by stores that keep objects as local files
// (fsstore): callers use it to read a file in place (FFmpeg opening an
// upload) or to move a finished file in by a rename instead of a copy.
type Local interface {
	// Path returns the file that holds key's object, and false when the
	// key is invalid or the store cannot say. The file may not exist.
	Path(key string) (string, bool)
	// Import moves the local file at file into the store as key, by a
	// rename when both are on one file system, else by a copy; either
	// way file is gone when it returns nil.
	Import(ctx context.Context, key, file string) (Info, error)
}

// PutFile stores the local file at file as key. With move, the file is
// removed once stored (renamed in place where the store is Local).
func PutFile(ctx context.Context, s Store, key, file string, move bool) (Info, error) {
	if l, ok := s.(Local); ok && move {
		return l.Import(ctx, key, file)
	}
	return putFile(ctx, s, key, file, move)
}

func putFile(ctx context.Context, s Store, key, file string, move bool) (Info, error) {
	f, err := os.Open(file)
	if err != nil {
		return Info{}, fmt.Errorf("storage: put %s from %s: %w", key, file, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Info{}, fmt.Errorf("storage: put %s from %s: %w", key, file, err)
	}
	info, err := s.Put(ctx, key, f, st.Size())
	if err != nil {
		return Info{}, err
	}
	if move {
		_ = os.Remove(file)
	}
	return info, nil
}

// LocalPath returns the local file of key when s keeps its objects as
// local files.
func LocalPath(s Store, key string) (string, bool) {
	if l, ok := s.(Local); ok {
		return l.Path(key)
	}
	return "", false
}

// Seeker reads one object as an io.ReadSeeker (for http.ServeContent):
// each Read after a Seek opens a ranged Get from the current offset, so a
// range request reads only the bytes it asks for. Info gives the size; an
// object whose size changes while it is read fails the read.
type Seeker struct {
	ctx  context.Context
	s    Store
	info Info
	off  int64
	rc   io.ReadCloser
}

// NewSeeker returns a Seeker over the object described by info (from Stat
// or Get). Close it when done.
func NewSeeker(ctx context.Context, s Store, info Info) *Seeker {
	return &Seeker{ctx: ctx, s: s, info: info}
}

// Seek implements io.Seeker.
func (r *Seeker) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.info.Size
	default:
		return r.off, fmt.Errorf("storage: seek: bad whence %d", whence)
	}
	if offset < 0 {
		return r.off, fmt.Errorf("storage: seek to %d: negative offset", offset)
	}
	if offset != r.off && r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	r.off = offset
	return offset, nil
}

// Read implements io.Reader.
func (r *Seeker) Read(p []byte) (int, error) {
	if r.off >= r.info.Size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, info, err := r.s.Get(r.ctx, r.info.Key, Range{Offset: r.off})
		if err != nil {
			return 0, err
		}
		// Sizes only: an Overlay's object moves from one layer to the
		// other (another ETag) with the same bytes; media objects are
		// never rewritten, and a playlist is read whole (ReadAll).
		if info.Size != r.info.Size {
			rc.Close()
			return 0, fmt.Errorf("storage: %s changed while it was read", r.info.Key)
		}
		r.rc = rc
	}
	n, err := r.rc.Read(p)
	r.off += int64(n)
	if err == io.EOF && r.off < r.info.Size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close closes the open read, if any.
func (r *Seeker) Close() error {
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}
