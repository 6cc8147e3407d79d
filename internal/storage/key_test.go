package storage

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

var keyCases = []struct {
	key string
	ok  bool
}{
	{"abc123/720p/seg00042.m4s", true},
	{"abc123/master.m3u8", true},
	{"a", true},
	{"a-b_c~d/e f/ü.ts", true},
	{strings.Repeat("a", 255), true},
	{strings.Repeat("a/", 255) + "a", true}, // 511 bytes
	{"", false},
	{"/abc", false},
	{"abc/", false},
	{"a//b", false},
	{"..", false},
	{"a/../b", false},
	{"a/..", false},
	{"./a", false},
	{"a/./b", false},
	{".tmp/put-1", false},
	{"a/.hidden", false},
	{"a\\..\\b", false},
	{"a/b\x00c", false},
	{"a/b\nc", false},
	{"a\x7f", false},
	{"a\u0085b", false},
	{"a\xffb", false},
	{strings.Repeat("a", 256), false},
	{strings.Repeat("a/", 256) + "a", false}, // 513 bytes
}

func TestCheckKey(t *testing.T) {
	t.Parallel()
	for _, c := range keyCases {
		err := CheckKey(c.key)
		if c.ok && err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", c.key, err)
		}
		if !c.ok && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("CheckKey(%q) = %v, want ErrInvalidKey", c.key, err)
		}
	}
}

func TestCheckPrefix(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		prefix      string
		list, asDir bool
	}{
		{"", true, false},
		{"v1/", true, true},
		{"v1/720p/", true, true},
		{"v1/720p/seg", true, false},
		{"v1", true, false},
		{"/", false, false},
		{"v1//", false, false},
		{"../", false, false},
		{"/v1/", false, false},
	} {
		if err := CheckPrefix(c.prefix); (err == nil) != c.list || (err != nil && !errors.Is(err, ErrInvalidKey)) {
			t.Errorf("CheckPrefix(%q) = %v, want ok=%v", c.prefix, err, c.list)
		}
		if err := CheckDirPrefix(c.prefix); (err == nil) != c.asDir || (err != nil && !errors.Is(err, ErrInvalidKey)) {
			t.Errorf("CheckDirPrefix(%q) = %v, want ok=%v", c.prefix, err, c.asDir)
		}
	}
}

// FuzzCheckKey: a key CheckKey accepts is a clean relative path that stays
// under any root directory, on every backend.
func FuzzCheckKey(f *testing.F) {
	for _, c := range keyCases {
		f.Add(c.key)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := CheckKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("CheckKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		if key == "" || len(key) > MaxKeyLen || strings.HasPrefix(key, "/") || strings.Contains(key, "//") ||
			strings.Contains(key, "\\") || strings.Contains(key, "\x00") {
			t.Fatalf("CheckKey accepted %q", key)
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg == "." || seg == ".." || strings.HasPrefix(seg, ".") {
				t.Fatalf("CheckKey accepted %q (segment %q)", key, seg)
			}
		}
		root := "/srv/shoal/data"
		p := filepath.Join(root, filepath.FromSlash(key))
		if rel, err := filepath.Rel(root, p); err != nil || rel != filepath.FromSlash(key) {
			t.Fatalf("key %q joins to %q (rel %q, %v): not a clean path under the root", key, p, rel, err)
		}
		if err := CheckPrefix(key); err != nil {
			t.Fatalf("CheckPrefix(%q) = %v for a valid key", key, err)
		}
		if err := CheckDirPrefix(key + "/"); err != nil {
			t.Fatalf("CheckDirPrefix(%q) = %v for a valid key", key+"/", err)
		}
	})
}

func TestRangeResolve(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rng         Range
		size        int64
		off, n      int64
		invalidRang bool
	}{
		{Range{}, 100, 0, 100, false},
		{Range{}, 0, 0, 0, false},
		{Range{Offset: 10, Length: 5}, 100, 10, 5, false},
		{Range{Offset: 10}, 100, 10, 90, false},
		{Range{Offset: 95, Length: 10}, 100, 95, 5, false},
		{Range{Offset: 0, Length: 10}, 0, 0, 0, false},
		{Range{Offset: 100}, 100, 0, 0, true},
		{Range{Offset: 1}, 0, 0, 0, true},
		{Range{Offset: -1}, 100, 0, 0, true},
		{Range{Length: -1}, 100, 0, 0, true},
	} {
		off, n, err := c.rng.Resolve(c.size)
		if c.invalidRang {
			if !errors.Is(err, ErrInvalidRange) {
				t.Errorf("%+v of %d: err %v, want ErrInvalidRange", c.rng, c.size, err)
			}
			continue
		}
		if err != nil || off != c.off || n != c.n {
			t.Errorf("%+v of %d = %d, %d, %v; want %d, %d", c.rng, c.size, off, n, err, c.off, c.n)
		}
	}
}

func TestExactReader(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789"), 1000)
	for _, c := range []struct {
		name    string
		r       io.Reader
		size    int64
		wantErr bool
	}{
		{"exact", bytes.NewReader(data), 10000, false},
		{"exact one byte at a time", iotest.OneByteReader(bytes.NewReader(data)), 10000, false},
		{"exact with data and EOF together", iotest.DataErrReader(bytes.NewReader(data)), 10000, false},
		{"unknown size", bytes.NewReader(data), UnknownSize, false},
		{"empty", bytes.NewReader(nil), 0, false},
		{"short", bytes.NewReader(data), 10001, true},
		{"long", bytes.NewReader(data), 9999, true},
		{"long by one byte at a time", iotest.OneByteReader(bytes.NewReader(data)), 9999, true},
		{"long, empty expected", bytes.NewReader(data), 0, true},
	} {
		got, err := io.ReadAll(ExactReader(c.r, c.size))
		if c.wantErr {
			if !errors.Is(err, ErrSizeMismatch) {
				t.Errorf("%s: err %v, want ErrSizeMismatch", c.name, err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, data[:len(got)]) || (c.size >= 0 && int64(len(got)) != c.size) {
			t.Errorf("%s: read %d bytes, %v", c.name, len(got), err)
		}
	}
	// A reader that fails passes its error on.
	boom := errors.New("boom")
	if _, err := io.ReadAll(ExactReader(iotest.ErrReader(boom), 10)); !errors.Is(err, boom) {
		t.Errorf("failing reader: %v, want boom", err)
	}
}

// A writer that reads exactly size bytes (io.ReadFull) still sees a
// longer reader's error: the read that would complete it fails.
func TestExactReaderReadFull(t *testing.T) {
	t.Parallel()
	data := []byte("0123456789")
	for _, size := range []int{1, 5, 9} {
		buf := make([]byte, size)
		if _, err := io.ReadFull(ExactReader(bytes.NewReader(data), int64(size)), buf); !errors.Is(err, ErrSizeMismatch) {
			t.Errorf("ReadFull of %d of 10 bytes: %v, want ErrSizeMismatch", size, err)
		}
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(ExactReader(bytes.NewReader(data), 10), buf); err != nil {
		t.Errorf("ReadFull of exactly 10 bytes: %v", err)
	}
	if err := CheckEmpty(bytes.NewReader(nil)); err != nil {
		t.Errorf("CheckEmpty(empty) = %v", err)
	}
	if err := CheckEmpty(bytes.NewReader(data)); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("CheckEmpty(10 bytes) = %v, want ErrSizeMismatch", err)
	}
}
