package packager

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
)

// storage writes the packager's files. A finished file is synced before it
// is renamed into place and its directory after the rename, so that after
// a crash or power cut a segment a playlist names is whole and a rename
// that happened stays done (Config.NoSync leaves both out: benchmarks
// only). A write that fails leaves no partial file: writeFile removes its
// temporary file, appendFile cuts the file back to where it was.
type storage struct {
	noSync bool
	// written, when set, is told the path of every file written or
	// appended to.
	written func(path string)
	// failWrite, set by tests only, makes a write fail like a full disk:
	// when it returns an error for the file at path, the first n bytes of
	// data are written and the write fails with that error (mkdirAll asks
	// it with nil data).
	failWrite func(path string, data []byte) (n int, err error)

	// failTruncate, set by tests only, makes cutting a file back fail
	// (a copy-on-write file system out of space).
	failTruncate func(path string) error

	mu sync.Mutex
	// cut holds, per file, the size to cut it back to before the next
	// append, when cutting it back after a failed one failed too (a
	// copy-on-write file system may need space to truncate).
	cut map[string]int64
}

// write writes data to f, opened for the file at path.
func (s *storage) write(f *os.File, path string, data []byte) error {
	if s.failWrite != nil {
		if n, err := s.failWrite(path, data); err != nil {
			_, _ = f.Write(data[:n])
			return err
		}
	}
	_, err := f.Write(data)
	return err
}

// writeFile writes data to path through a temporary file and a rename.
func (s *storage) writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	err = s.write(f, tmp, data)
	if err == nil && !s.noSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	// The file is in place: a failed directory sync makes the rename
	// less durable, not undone, so the write is not reported as failed
	// (that would list a segment that is there as a gap).
	_ = s.syncDir(filepath.Dir(path))
	if s.written != nil {
		s.written(path)
	}
	return nil
}

// appendFile appends data to the file at path. On failure the file is cut
// back to its previous size: a playlist never keeps half a line.
func (s *storage) appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	s.mu.Lock()
	size, pending := s.cut[path]
	s.mu.Unlock()
	if pending {
		if err := f.Truncate(size); err != nil {
			f.Close()
			return err
		}
		s.mu.Lock()
		delete(s.cut, path)
		s.mu.Unlock()
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	err = s.write(f, path, data)
	if err == nil && !s.noSync {
		err = f.Sync()
	}
	if err != nil {
		// Truncating frees blocks: it works on a full disk.
		terr := f.Truncate(st.Size())
		if terr == nil && s.failTruncate != nil {
			terr = s.failTruncate(path)
		}
		if terr != nil {
			err = errors.Join(err, terr)
			s.mu.Lock()
			if s.cut == nil {
				s.cut = map[string]int64{}
			}
			s.cut[path] = st.Size()
			s.mu.Unlock()
		}
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if s.written != nil {
		s.written(path)
	}
	return nil
}

// syncDir makes the renames into dir durable.
func (s *storage) syncDir(dir string) error {
	if s.noSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// mkdirAll makes the directory dir and its parents.
func (s *storage) mkdirAll(dir string) error {
	if s.failWrite != nil {
		if _, err := s.failWrite(dir, nil); err != nil {
			return err
		}
	}
	return os.MkdirAll(dir, 0o755)
}

// copyFile copies the file at from to to (through a temporary file).
func (s *storage) copyFile(from, to string) error {
	data, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return s.writeFile(to, data)
}

// noSpace reports whether err says the disk (or the quota) is full.
func noSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
