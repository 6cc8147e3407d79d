// Package fsstore is the storage.Store backend on a local directory: the
// object "a/b/c.m4s" is the file <root>/a/b/c.m4s.
//
// Put writes a temporary file under <root>/.tmp, fsyncs it, renames it
// over the object and fsyncs the directory, so a reader (even one that
// opened the old file) never sees a partial object and a crash leaves the
// old object or the new one. Keys never start with "." (storage.CheckKey),
// so .tmp cannot collide with an object.
//
// Unlike S3, a directory cannot also be a file: with an object at "a",
// a Put of "a/b" fails, and the other way round.
package fsstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/shoal-video/shoal/internal/storage"
)

// tmpDir is the directory under the root that holds writes in progress.
const tmpDir = ".tmp"

// Store is a storage.Store on a local directory.
type Store struct {
	root string
}

var _ storage.Store = (*Store)(nil)

// New returns a Store under root (created on the first Put). It does no
// I/O.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, errors.New("fsstore: empty root directory")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("fsstore: root %q: %w", root, err)
	}
	return &Store{root: abs}, nil
}

// Root is the absolute root directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(key string) string {
	return filepath.Join(s.root, filepath.FromSlash(key))
}

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Info{}, fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	info, err := s.put(ctx, key, r, size)
	if err != nil {
		return storage.Info{}, fmt.Errorf("fsstore: put %s: %w", key, err)
	}
	return info, nil
}

func (s *Store) put(ctx context.Context, key string, r io.Reader, size int64) (storage.Info, error) {
	tmp := filepath.Join(s.root, tmpDir)
	f, err := os.CreateTemp(tmp, "put-*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(tmp, 0o755); err == nil {
			f, err = os.CreateTemp(tmp, "put-*")
		}
	}
	if err != nil {
		return storage.Info{}, err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, storage.ExactReader(ctxReader{ctx, r}, size)); err != nil {
		return storage.Info{}, err
	}
	// Readable as files written by other means are (CreateTemp makes
	// them 0600): a worker or a web server may read the data dir.
	if err := f.Chmod(objectPerms); err != nil {
		return storage.Info{}, err
	}
	if err := f.Sync(); err != nil {
		return storage.Info{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		return storage.Info{}, err
	}
	if err := f.Close(); err != nil {
		return storage.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return storage.Info{}, err
	}
	if err := s.place(key, f.Name()); err != nil {
		return storage.Info{}, err
	}
	committed = true
	return info(key, fi), nil
}

// place renames the synced file src to key's file, making (and syncing)
// the directories it needs. src is left where it was when it fails.
func (s *Store) place(key, src string) error {
	dst := s.path(key)
	dir := filepath.Dir(dst)
	// The directories Put makes are synced into their parents too, or an
	// acknowledged object in a new directory could vanish in a crash.
	made := s.missingDirs(dir)
	// A DeletePrefix running at the same time may remove the directory
	// between MkdirAll and Rename: try again.
	var err error
	for range 5 {
		if err = os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err = os.Rename(src, dst); !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	for _, d := range made {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

// Path implements storage.Local.
func (s *Store) Path(key string) (string, bool) {
	if storage.CheckKey(key) != nil {
		return "", false
	}
	return s.path(key), true
}

// Import implements storage.Local: the file is synced and renamed into
// place (copied when it is on another file system).
func (s *Store) Import(ctx context.Context, key, file string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, err
	}
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		return storage.Info{}, fmt.Errorf("fsstore: import %s: %w", key, err)
	}
	err = f.Chmod(objectPerms)
	if err == nil {
		err = f.Sync()
	}
	fi, serr := f.Stat()
	if err == nil {
		err = serr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return storage.Info{}, fmt.Errorf("fsstore: import %s: %w", key, err)
	}
	if err := s.place(key, file); errors.Is(err, syscall.EXDEV) {
		// Another file system: copy, then remove the original.
		f, err := os.Open(file)
		if err != nil {
			return storage.Info{}, fmt.Errorf("fsstore: import %s: %w", key, err)
		}
		defer f.Close()
		inf, err := s.Put(ctx, key, f, fi.Size())
		if err == nil {
			_ = os.Remove(file)
		}
		return inf, err
	} else if err != nil {
		return storage.Info{}, fmt.Errorf("fsstore: import %s: %w", key, err)
	}
	return info(key, fi), nil
}

// objectPerms are the permissions of the objects Put writes.
const objectPerms = 0o644

// missingDirs are dir and those of its parents under the root that do not
// exist yet, deepest first.
func (s *Store) missingDirs(dir string) []string {
	var out []string
	for d := dir; d != s.root && len(d) > len(s.root); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		out = append(out, d)
	}
	return out
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string, rng storage.Range) (io.ReadCloser, storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, storage.Info{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, storage.Info{}, fmt.Errorf("fsstore: get %s: %w", key, err)
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, storage.Info{}, s.err("get", key, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, storage.Info{}, s.err("get", key, err)
	}
	inf := info(key, fi)
	off, n, err := rng.Resolve(fi.Size())
	if err != nil {
		f.Close()
		return nil, inf, fmt.Errorf("fsstore: get %s: %w", key, err)
	}
	return &section{SectionReader: io.NewSectionReader(f, off, n), f: f}, inf, nil
}

type section struct {
	*io.SectionReader
	f *os.File
}

func (s *section) Close() error { return s.f.Close() }

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, err
	}
	fi, err := os.Stat(s.path(key))
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return storage.Info{}, s.err("stat", key, err)
	}
	return info(key, fi), nil
}

// err wraps a file error, mapping "no such file" (also a path through a
// file, ENOTDIR) to storage.ErrNotFound.
func (s *Store) err(op, key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("fsstore: %s %s: %w", op, key, storage.ErrNotFound)
	}
	return fmt.Errorf("fsstore: %s %s: %w", op, key, err)
}

func info(key string, fi fs.FileInfo) storage.Info {
	// Every Put renames a new file in place, so the inode changes with
	// each version even when size and time do not.
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return storage.Info{
		Key:     key,
		Size:    fi.Size(),
		ModTime: fi.ModTime(),
		ETag:    fmt.Sprintf(`"%x-%x-%x"`, ino, fi.Size(), fi.ModTime().UnixNano()),
	}
}

// List implements storage.Store: a walk that visits each directory's
// entries in the byte order of the keys below them, so no sort of the
// whole listing is needed.
func (s *Store) List(ctx context.Context, prefix string, opts storage.ListOptions) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		if err := storage.CheckPrefix(prefix); err != nil {
			yield(storage.Info{}, err)
			return
		}
		dir := ""
		if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
			dir = prefix[:i]
		}
		s.walk(ctx, dir, prefix, opts.StartAfter, yield)
	}
}

type entry struct {
	name, sortKey string
	d             fs.DirEntry
}

// walk lists the directory dir (a key, "" for the root); false when the
// caller stopped or an error was yielded.
func (s *Store) walk(ctx context.Context, dir, prefix, after string, yield func(storage.Info, error) bool) bool {
	if err := ctx.Err(); err != nil {
		return yield(storage.Info{}, fmt.Errorf("fsstore: list %s: %w", prefix, err))
	}
	des, err := os.ReadDir(s.path(dir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return true
		}
		yield(storage.Info{}, fmt.Errorf("fsstore: list %s: %w", prefix, err))
		return false
	}
	ents := make([]entry, 0, len(des))
	for _, d := range des {
		if strings.HasPrefix(d.Name(), ".") {
			continue
		}
		e := entry{name: d.Name(), sortKey: d.Name(), d: d}
		if d.IsDir() {
			e.sortKey += "/"
		}
		ents = append(ents, e)
	}
	slices.SortFunc(ents, func(a, b entry) int { return cmp.Compare(a.sortKey, b.sortKey) })
	for _, e := range ents {
		key := e.name
		if dir != "" {
			key = dir + "/" + e.name
		}
		if e.d.IsDir() {
			sub := key + "/"
			// Skip subtrees outside the prefix, or wholly at or before
			// StartAfter.
			if !strings.HasPrefix(sub, prefix) && !strings.HasPrefix(prefix, sub) {
				continue
			}
			if after > sub && !strings.HasPrefix(after, sub) {
				continue
			}
			if !s.walk(ctx, key, prefix, after, yield) {
				return false
			}
			continue
		}
		if !e.d.Type().IsRegular() || !strings.HasPrefix(key, prefix) || key <= after {
			continue
		}
		fi, err := e.d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			yield(storage.Info{}, fmt.Errorf("fsstore: list %s: %w", prefix, err))
			return false
		}
		if !yield(info(key, fi), nil) {
			return false
		}
	}
	return true
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	p := s.path(key)
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	if fi.IsDir() {
		return nil // no object at key, only objects below it
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fsstore: delete %s: %w", key, err)
	}
	s.removeEmptyParents(filepath.Dir(p))
	return nil
}

// DeletePrefix implements storage.Store.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) error {
	if err := storage.CheckDirPrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: delete %s: %w", prefix, err)
	}
	p := s.path(strings.TrimSuffix(prefix, "/"))
	fi, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			return nil
		}
		return fmt.Errorf("fsstore: delete %s: %w", prefix, err)
	}
	if !fi.IsDir() {
		return nil // an object named like the prefix is not under it
	}
	if err := os.RemoveAll(p); err != nil {
		return fmt.Errorf("fsstore: delete %s: %w", prefix, err)
	}
	s.removeEmptyParents(filepath.Dir(p))
	return nil
}

// removeEmptyParents removes dir and its parents up to the root while
// they are empty (best effort: a concurrent Put may fill one again).
func (s *Store) removeEmptyParents(dir string) {
	for dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}
