package edgecache

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
)

// On disk, CacheDir holds:
//
//	objects/<hh>/<hash>-<gen>   one file per object, never modified once renamed in place
//	tmp/                        files being written (emptied by the scan)
//
// where <hash> is the hex of the first 16 bytes of SHA-256(key), <hh> its
// first two digits and <gen> a unique generation. A file is
//
//	"SHOALEC1" | uint32 big-endian length of the header | header (JSON meta) | body
//
// and is valid only when its size is exactly the sum of those parts. The
// scan keeps the newest valid file of each key and removes everything else.
const (
	diskMagic     = "SHOALEC1"
	diskPrefixLen = len(diskMagic) + 4
	maxHeaderLen  = 64 << 10
	objectsDir    = "objects"
	tmpDir        = "tmp"
)

// diskMinTTL: objects fresh for less than this (live playlists) are kept in
// memory only.
const diskMinTTL = time.Minute

type diskEntry struct {
	obj  *object // metadata and header values; body nil
	file string
	off  int64 // where the body starts
	size int64 // file size
	hits atomic.Int32
	// checked: the body was read back and matched its SHA-256 since this
	// process indexed the file (files written by this process start checked).
	checked atomic.Bool
	checkMu sync.Mutex // one check at a time
}

type diskTier struct {
	dir  string
	max  int64
	mu   sync.Mutex
	l    *lru[*diskEntry]
	used atomic.Int64
	gen  atomic.Uint64

	dirsMu sync.Mutex
	made   map[string]bool
}

func newDiskTier(dir string, max int64) *diskTier {
	return &diskTier{dir: dir, max: max, l: newLRU[*diskEntry](max), made: make(map[string]bool)}
}

func (t *diskTier) bytes() int64 { return t.used.Load() }

// fits reports whether an object of size bytes may be written (its small
// header is allowed for roughly).
func (t *diskTier) fits(size int64) bool { return size >= 0 && size+1024 <= t.max }

// get returns the entry under key, marking it recently used, or nil.
func (t *diskTier) get(key string) *diskEntry {
	t.mu.Lock()
	e, _ := t.l.get(key)
	t.mu.Unlock()
	return e
}

// drop removes e (a file that vanished or went bad) if key still maps to it.
func (t *diskTier) drop(e *diskEntry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.l.peek(e.obj.Key); ok && cur == e {
		t.l.remove(e.obj.Key)
		t.used.Store(t.l.used)
		_ = os.Remove(e.file)
	}
}

// takeAll empties the index and returns the files it held (the caller
// removes them).
func (t *diskTier) takeAll() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.l.keys(func(string) bool { return true })
	files := make([]string, 0, len(keys))
	for _, k := range keys {
		if e, ok := t.l.remove(k); ok {
			files = append(files, e.file)
		}
	}
	t.used.Store(t.l.used)
	return files
}

// removeMatching removes (and deletes the files of) the entries whose key
// matches; it returns how many.
func (t *diskTier) removeMatching(match func(string) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := t.l.keys(match)
	for _, k := range keys {
		if e, ok := t.l.remove(k); ok {
			_ = os.Remove(e.file)
		}
	}
	t.used.Store(t.l.used)
	return len(keys)
}

func (t *diskTier) mkdir(dir string) error {
	t.dirsMu.Lock()
	defer t.dirsMu.Unlock()
	if t.made[dir] {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	t.made[dir] = true
	return nil
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:16])
}

// store writes o (with its body) to a new file and indexes it, evicting the
// least recently used files past the cap. valid, when not nil, is asked
// under the index's lock before the file is put in place: false drops it
// (an invalidation came since o was fetched).
func (t *diskTier) store(o *object, valid func() bool) error {
	sum := sha256.Sum256(o.body)
	return t.write(o, bytes.NewReader(o.body), int64(len(o.body)), hex.EncodeToString(sum[:]), valid)
}

// spoolFile creates a temporary file in the tier's tmp directory (emptied
// at every start) for a body on its way.
func (t *diskTier) spoolFile() (*os.File, error) {
	tmp := filepath.Join(t.dir, tmpDir)
	if err := t.mkdir(tmp); err != nil {
		return nil, err
	}
	return os.CreateTemp(tmp, "spool-*")
}

// storeSpooled stores o, whose size bytes of body are in spool with the
// given hex SHA-256, as a disk object (copying the body into the object
// file), and indexes it.
func (t *diskTier) storeSpooled(o *object, spool io.ReaderAt, size int64, sum string, valid func() bool) error {
	return t.write(o, io.NewSectionReader(spool, 0, size), size, sum, valid)
}

// write writes o's metadata and the size bytes of body (whose hex SHA-256
// is sum) to a new object file, renames it into place and indexes it,
// evicting the least recently used files past the cap.
func (t *diskTier) write(o *object, body io.Reader, size int64, sum string, valid func() bool) error {
	m := o.meta
	m.SHA256, m.Size = sum, size
	hdr, err := json.Marshal(&m)
	if err != nil {
		return err
	}
	if len(hdr) > maxHeaderLen {
		return fmt.Errorf("object header of %d bytes", len(hdr))
	}
	tmp := filepath.Join(t.dir, tmpDir)
	if err := t.mkdir(tmp); err != nil {
		return err
	}
	h := keyHash(o.Key)
	sub := filepath.Join(t.dir, objectsDir, h[:2])
	if err := t.mkdir(sub); err != nil {
		return err
	}
	f, err := os.CreateTemp(tmp, "obj-*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(tmp, 0o755); err == nil {
			f, err = os.CreateTemp(tmp, "obj-*")
		}
	}
	if err != nil {
		return err
	}
	var prefix [diskPrefixLen]byte
	copy(prefix[:], diskMagic)
	binary.BigEndian.PutUint32(prefix[len(diskMagic):], uint32(len(hdr)))
	_, err = f.Write(prefix[:])
	if err == nil {
		_, err = f.Write(hdr)
	}
	if err == nil {
		var n int64
		if n, err = io.Copy(f, body); err == nil && n != size {
			err = io.ErrUnexpectedEOF
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	name := filepath.Join(sub, h+"-"+strconv.FormatInt(time.Now().UnixNano(), 36)+strconv.FormatUint(t.gen.Add(1), 36))
	off := int64(diskPrefixLen + len(hdr))
	cp := *o
	cp.body = nil
	cp.meta = m
	if cp.hLen == nil {
		cp.hLen = []string{strconv.FormatInt(size, 10)}
	}
	e := &diskEntry{obj: &cp, file: name, off: off, size: off + size}
	e.checked.Store(true)

	t.mu.Lock()
	defer t.mu.Unlock()
	if valid != nil && !valid() {
		_ = os.Remove(f.Name())
		return nil
	}
	err = os.Rename(f.Name(), name)
	if errors.Is(err, fs.ErrNotExist) {
		// The directory went away under us (an operator cleaning up).
		if err = os.MkdirAll(sub, 0o755); err == nil {
			err = os.Rename(f.Name(), name)
		}
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return err
	}
	for _, old := range t.l.add(o.Key, e.size, e, nil) {
		_ = os.Remove(old.file)
	}
	t.used.Store(t.l.used)
	return nil
}

// open opens e's file and checks that it is the file indexed.
func (t *diskTier) open(e *diskEntry) (*os.File, error) {
	f, err := os.Open(e.file)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || st.Size() != e.size {
		f.Close()
		return nil, errors.New("cache file changed size")
	}
	return f, nil
}

// errCorrupt: a disk object whose body does not match its SHA-256.
var errCorrupt = errors.New("cache file does not match its SHA-256")

// errNoSum: a disk object written without a SHA-256 (by an older version):
// it cannot be checked, so it is dropped, but it is not counted as corrupt.
var errNoSum = errors.New("cache file has no SHA-256")

// check hashes e's body from its file and compares it with the SHA-256
// written with it; concurrent callers wait for one check.
func (t *diskTier) check(e *diskEntry) error {
	e.checkMu.Lock()
	defer e.checkMu.Unlock()
	if e.checked.Load() {
		return nil
	}
	if e.obj.SHA256 == "" {
		return errNoSum
	}
	f, err := t.open(e)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, e.off, e.size-e.off)); err != nil {
		return err
	}
	if hex.EncodeToString(h.Sum(nil)) != e.obj.SHA256 {
		return errCorrupt
	}
	e.checked.Store(true)
	return nil
}

// readBody reads e's body whole (checked, or checking it first).
func (t *diskTier) readBody(e *diskEntry) ([]byte, error) {
	if err := t.check(e); err != nil {
		return nil, err
	}
	f, err := t.open(e)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	body := make([]byte, e.size-e.off)
	if _, err := f.ReadAt(body, e.off); err != nil {
		return nil, err
	}
	return body, nil
}

// scanned is one valid file found by the scan.
type scanned struct {
	m    meta
	file string
	off  int64
	size int64
}

// scan rebuilds the index from the files on disk: the newest valid file of
// each key is kept, most recently stored first, until the cap; the rest is
// removed. Entries indexed meanwhile (objects fetched while scanning) win.
// With drop, and for the files of ids invalidated since this start (or of
// every id once c.Reset was called), files not indexed are removed.
func (t *diskTier) scan(ctx context.Context, c *Cache, log *slog.Logger, drop bool) error {
	resets := c.resets.Load()
	for _, d := range []string{t.dir, filepath.Join(t.dir, objectsDir)} {
		if err := t.mkdir(d); err != nil {
			return err
		}
	}
	tmp := filepath.Join(t.dir, tmpDir)
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if err := t.mkdir(tmp); err != nil {
		return err
	}
	subs, err := os.ReadDir(filepath.Join(t.dir, objectsDir))
	if err != nil {
		return err
	}
	newest := make(map[string]scanned)
	removed := 0
	for _, sub := range subs {
		if ctx.Err() != nil {
			return nil
		}
		dir := filepath.Join(t.dir, objectsDir, sub.Name())
		if !sub.IsDir() {
			removed++
			_ = os.Remove(dir)
			continue
		}
		files, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, fe := range files {
			file := filepath.Join(dir, fe.Name())
			s, err := readHeader(file)
			if err != nil {
				removed++
				_ = os.Remove(file)
				continue
			}
			if prev, ok := newest[s.m.Key]; ok {
				if prev.m.Stored > s.m.Stored {
					_ = os.Remove(file)
					continue
				}
				_ = os.Remove(prev.file)
			}
			newest[s.m.Key] = s
		}
		t.dirsMu.Lock()
		t.made[dir] = true
		t.dirsMu.Unlock()
	}
	all := make([]scanned, 0, len(newest))
	for _, s := range newest {
		all = append(all, s)
	}
	slices.SortFunc(all, func(a, b scanned) int { return cmp.Compare(b.m.Stored, a.m.Stored) })
	kept, dropped := 0, 0
	for _, s := range all {
		t.mu.Lock()
		if drop || c.skipScanned(s.m.Key, resets) {
			// Checked under the index's lock: Invalidate and Reset note
			// what they drop before they take it.
			if cur, _ := t.l.peek(s.m.Key); cur == nil || cur.file != s.file {
				_ = os.Remove(s.file)
				dropped++
			}
			t.mu.Unlock()
			continue
		}
		e := &diskEntry{obj: c.diskObject(s.m), file: s.file, off: s.off, size: s.size}
		if t.l.addOldest(s.m.Key, s.size, e) {
			kept++
		} else if cur, _ := t.l.peek(s.m.Key); cur == nil || cur.file != s.file {
			// Over the cap, or a newer copy was fetched while scanning.
			_ = os.Remove(s.file)
		}
		t.used.Store(t.l.used)
		t.mu.Unlock()
	}
	log.Info("disk cache indexed", "dir", t.dir, "objects", kept, "bytes", t.bytes(), "removed", removed, "dropped", dropped)
	return nil
}

// readHeader reads and checks the header of a cache file.
func readHeader(file string) (scanned, error) {
	f, err := os.Open(file)
	if err != nil {
		return scanned{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return scanned{}, err
	}
	var prefix [diskPrefixLen]byte
	if _, err := io.ReadFull(f, prefix[:]); err != nil {
		return scanned{}, err
	}
	if string(prefix[:len(diskMagic)]) != diskMagic {
		return scanned{}, errors.New("not a cache file")
	}
	n := binary.BigEndian.Uint32(prefix[len(diskMagic):])
	if n > maxHeaderLen {
		return scanned{}, errors.New("header too long")
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return scanned{}, err
	}
	var m meta
	if err := json.Unmarshal(hdr, &m); err != nil {
		return scanned{}, err
	}
	off := int64(diskPrefixLen) + int64(n)
	if m.Size < 0 || st.Size() != off+m.Size {
		return scanned{}, errors.New("size mismatch")
	}
	h := keyHash(m.Key)
	if _, ok := hlspath.Parse(m.Key); !ok || filepath.Base(filepath.Dir(file)) != h[:2] || !strings.HasPrefix(filepath.Base(file), h+"-") {
		return scanned{}, errors.New("key mismatch")
	}
	return scanned{m: m, file: file, off: off, size: st.Size()}, nil
}
