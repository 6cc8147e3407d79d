package edgecache

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/shoal-video/shoal/internal/hlspath"
)

// FuzzDiskHeader feeds arbitrary cache files to readHeader (a disk that was
// tampered with, or a crash mid-write): it never panics, and whatever it
// accepts names a valid /hls/ path stored under its own hash, with a size
// that matches the file.
func FuzzDiskHeader(f *testing.F) {
	good := func(key, body string) []byte {
		hdr := []byte(`{"key":"` + key + `","size":` + strconv.Itoa(len(body)) + `}`)
		b := append([]byte(diskMagic), make([]byte, 4)...)
		binary.BigEndian.PutUint32(b[len(diskMagic):], uint32(len(hdr)))
		return append(append(b, hdr...), body...)
	}
	f.Add(good("/hls/abc/720p/s-0-1.m4s", "data"), "/hls/abc/720p/s-0-1.m4s")
	f.Add(good("/hls/../../etc/passwd", "x"), "/hls/abc/720p/s-0-1.m4s")
	f.Add([]byte(diskMagic+"\xff\xff\xff\xff"), "/hls/abc/720p/s-0-1.m4s")
	f.Add([]byte("garbage"), "/hls/abc/master.m3u8")
	f.Fuzz(func(t *testing.T, data []byte, nameKey string) {
		h := keyHash(nameKey)
		dir := filepath.Join(t.TempDir(), h[:2])
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, h+"-1")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := readHeader(file)
		if err != nil {
			return
		}
		if _, ok := hlspath.Parse(s.m.Key); !ok || keyHash(s.m.Key) != h {
			t.Fatalf("accepted a file for key %q under %s", s.m.Key, h)
		}
		if s.off+s.m.Size != int64(len(data)) {
			t.Fatalf("accepted a size of %d at offset %d in %d bytes", s.m.Size, s.off, len(data))
		}
	})
}
