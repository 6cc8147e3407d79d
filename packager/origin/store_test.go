package origin

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// vodTree is a finished video as the packager leaves it: a master
// playlist, a rendition's playlist, its init section and segments, and a
// poster.
func vodTree() map[string][]byte {
	seg := func(n int) []byte {
		b := make([]byte, 3000+n*517)
		for i := range b {
			b[i] = byte(i*7 + n)
		}
		return b
	}
	return map[string][]byte{
		"vod1/master.m3u8":         []byte("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n720p/index.m3u8\n"),
		"vod1/720p/index.m3u8":     []byte("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2.000,\ns-0-0.m4s\n#EXTINF:2.000,\ns-0-1.m4s\n#EXTINF:1.500,\ns-0-2.m4s\n#EXT-X-ENDLIST\n"),
		"vod1/720p/init-s-0-0.mp4": []byte("ftyp....moov...."),
		"vod1/720p/s-0-0.m4s":      seg(0),
		"vod1/720p/s-0-1.m4s":      seg(1),
		"vod1/720p/s-0-2.m4s":      seg(2),
		"vod1/poster.jpg":          []byte("\xff\xd8poster"),
		"vod1/720p/recording.m3u8": []byte("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2.000,\ns-0-0.m4s\n#EXTINF:2.000,\ns-0-1.m4s\n#EXTINF:1.500,\ns-0-2.m4s\n#EXT-X-ENDLIST\n"),
	}
}

// A VOD stored in S3 (a real SeaweedFS) is served as from a directory:
// bodies, byte ranges (206), HEAD, conditional requests, the store's ETag
// and time, Shoal-Content-SHA256, signed manifests, 404 for what is not
// there, a new hash for an overwritten object; with S3 stopped, 503 with
// Retry-After.
func TestServesFromS3(t *testing.T) {
	t.Parallel()
	start := time.Now()
	srv := s3test.Start(t)
	t.Logf("SeaweedFS started in %v", time.Since(start).Round(time.Millisecond))
	s, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: "shoal-origin-test", PathStyle: true,
		DialTimeout: time.Second, RequestTimeout: 2 * time.Second, MaxRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket: %v\nweed: %s", err, srv.Output())
	}
	tree := vodTree()
	for key, data := range tree {
		if _, err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	h := NewHandler(s, WithContentKey(priv))
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)

	for key, data := range tree {
		resp, body := get(t, hs.URL+"/hls/"+key, nil)
		if resp.StatusCode != 200 || body != string(data) {
			t.Fatalf("%s: %d, %d bytes, want 200 and %d bytes", key, resp.StatusCode, len(body), len(data))
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Content-Type") != hlspath.ContentType(key) {
			t.Errorf("%s: headers %v", key, resp.Header)
		}
		if strings.HasSuffix(key, ".m3u8") {
			if resp.Header.Get(ContentSHA256Header) != "" || resp.Header.Get("ETag") == "" {
				t.Errorf("%s: playlist headers %v", key, resp.Header)
			}
			continue
		}
		info, err := s.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Header.Get(ContentSHA256Header); got != sha256Hex(string(data)) {
			t.Errorf("%s: %s %q, want %q", key, ContentSHA256Header, got, sha256Hex(string(data)))
		}
		if resp.Header.Get("ETag") != info.ETag || resp.Header.Get("Last-Modified") != info.ModTime.UTC().Format(http.TimeFormat) {
			t.Errorf("%s: ETag %q Last-Modified %q, want the store's %q %v", key, resp.Header.Get("ETag"), resp.Header.Get("Last-Modified"), info.ETag, info.ModTime)
		}
		want := CacheImmutable
		if strings.HasSuffix(key, ".jpg") {
			want = CacheStill
		}
		if resp.Header.Get("Cache-Control") != want {
			t.Errorf("%s: Cache-Control %q", key, resp.Header.Get("Cache-Control"))
		}
	}
	if resp, _ := get(t, hs.URL+"/hls/vod1/720p/index.m3u8", nil); resp.Header.Get("Cache-Control") != CacheEndedPlaylist {
		t.Errorf("ended playlist: Cache-Control %q", resp.Header.Get("Cache-Control"))
	}

	segURL := hs.URL + "/hls/vod1/720p/s-0-1.m4s"
	seg := tree["vod1/720p/s-0-1.m4s"]
	size := strconv.Itoa(len(seg))
	resp, body := get(t, segURL, map[string]string{"Range": "bytes=100-1099"})
	if resp.StatusCode != http.StatusPartialContent || body != string(seg[100:1100]) ||
		resp.Header.Get("Content-Range") != "bytes 100-1099/"+size || resp.Header.Get(ContentSHA256Header) != sha256Hex(string(seg)) {
		t.Errorf("range: %d, %d bytes, Content-Range %q, sum %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"), resp.Header.Get(ContentSHA256Header))
	}
	resp, body = get(t, segURL, map[string]string{"Range": "bytes=-10"})
	if resp.StatusCode != http.StatusPartialContent || body != string(seg[len(seg)-10:]) {
		t.Errorf("suffix range: %d %q", resp.StatusCode, body)
	}
	resp, body = do(t, http.MethodHead, segURL, nil)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != size || resp.Header.Get(ContentSHA256Header) != sha256Hex(string(seg)) {
		t.Errorf("HEAD: %d, %d bytes, length %q, sum %q", resp.StatusCode, len(body), resp.Header.Get("Content-Length"), resp.Header.Get(ContentSHA256Header))
	}
	resp, _ = get(t, segURL, map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	for _, p := range []string{"vod1/720p/s-0-9.m4s", "vod1/360p/index.m3u8", "nope/master.m3u8", "vod1/storyboard.vtt"} {
		if resp, _ := get(t, hs.URL+"/hls/"+p, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", p, resp.StatusCode)
		}
	}

	// The signed manifests hash the objects in the bucket.
	pub := priv.Public().(ed25519.PublicKey)
	keys := map[string]ed25519.PublicKey{manifest.KeyID(pub): pub}
	for _, name := range []string{"manifest.txt", "manifest-0.txt"} {
		resp, body := get(t, hs.URL+"/hls/vod1/720p/"+name, nil)
		m, err := manifest.Verify([]byte(body), keys)
		if resp.StatusCode != 200 || err != nil || !m.Ended || len(m.Entries) != 4 || resp.Header.Get("Cache-Control") != CacheEndedPlaylist {
			t.Fatalf("%s: %d %v %+v", name, resp.StatusCode, err, m)
		}
		for _, e := range m.Entries {
			if err := e.Check(tree["vod1/720p/"+e.URI]); err != nil {
				t.Errorf("%s: %s: %v", name, e.URI, err)
			}
		}
	}

	// Overwritten with as many bytes (only the ETag differs): hashed
	// again, the new sum.
	reads := h.hashReads.Load()
	replaced := strings.Repeat("r", len(seg))
	if _, err := s.Put(ctx, "vod1/720p/s-0-1.m4s", strings.NewReader(replaced), int64(len(replaced))); err != nil {
		t.Fatal(err)
	}
	resp, body = get(t, segURL, nil)
	if body != replaced || resp.Header.Get(ContentSHA256Header) != sha256Hex(replaced) || h.hashReads.Load() != reads+1 {
		t.Errorf("overwritten: %.20q, sum %q, %d hash reads", body, resp.Header.Get(ContentSHA256Header), h.hashReads.Load()-reads)
	}

	// S3 stopped: unavailable, retry soon; never a 404 or a 500.
	srv.Stop()
	stopped := time.Now()
	defer func() { t.Logf("requests with S3 stopped answered in %v", time.Since(stopped).Round(time.Millisecond)) }()
	for _, p := range []string{"vod1/720p/s-0-0.m4s", "vod1/720p/index.m3u8", "vod1/master.m3u8", "vod1/720p/manifest.txt", "vod1/720p/manifest-0.txt"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := do(t, method, hs.URL+"/hls/"+p, nil)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s %s with S3 stopped: %d %v", method, p, resp.StatusCode, resp.Header)
			}
		}
	}
}

// A store that fails with an error other than not found (here a real I/O
// error: the store's root is a symbolic link to itself, ELOOP) answers
// 503 with Retry-After and no-store, for every kind of object; a missing
// object is still 404.
func TestStoreUnavailable(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "hls")
	if err := os.Symlink(root, root); err != nil {
		t.Fatal(err)
	}
	s := dirStore(t, root)
	if _, err := s.Stat(t.Context(), "vod1/master.m3u8"); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the looping store's Stat: %v, want an error other than not found", err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	hs := httptest.NewServer(NewHandler(s, WithContentKey(priv)))
	t.Cleanup(hs.Close)
	for _, p := range []string{"vod1/master.m3u8", "vod1/720p/index.m3u8", "vod1/720p/s-0-0.m4s", "vod1/720p/init-s-0-0.mp4",
		"vod1/poster.jpg", "vod1/storyboard.vtt", "vod1/720p/manifest.txt", "vod1/720p/manifest-0.txt"} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, body := do(t, method, hs.URL+"/hls/"+p, nil)
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
				resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get(ContentSHA256Header) != "" || resp.Header.Get("ETag") != "" {
				t.Errorf("%s %s: %d %v", method, p, resp.StatusCode, resp.Header)
			}
			if method == http.MethodGet && body != "unavailable\n" {
				t.Errorf("%s %s: body %q", method, p, body)
			}
		}
	}

	// A store that answers: 404 for what is missing, 503 only where the
	// store failed. A manifest whose segment the store cannot read is
	// unavailable too.
	ok := t.TempDir()
	for key, data := range vodTree() {
		p := filepath.Join(ok, filepath.FromSlash(key))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// s-0-2.m4s is a link to itself: reading it fails with ELOOP.
	loop := filepath.Join(ok, "vod1", "720p", "s-0-2.m4s")
	if err := os.Remove(loop); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	hs2 := httptest.NewServer(NewHandler(dirStore(t, ok), WithContentKey(priv)))
	t.Cleanup(hs2.Close)
	for p, want := range map[string]int{
		"vod1/720p/s-0-0.m4s": 200, "vod1/720p/s-0-9.m4s": 404, "vod1/720p/s-0-2.m4s": 503,
		"vod1/720p/manifest.txt": 503, "vod1/720p/manifest-0.txt": 503, "vod1/360p/manifest.txt": 404,
	} {
		if resp, _ := get(t, hs2.URL+"/hls/"+p, nil); resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", p, resp.StatusCode, want)
		}
	}
}
