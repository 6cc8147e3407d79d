package origin

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
)

// dirStore is the store of the HLS tree in dir.
func dirStore(t testing.TB, dir string) *fsstore.Store {
	t.Helper()
	s, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func setup(t *testing.T) (*httptest.Server, string) {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, "hls")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "abc", "source"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "abc", "master.m3u8"), []byte("#EXTM3U\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "source", "index.m3u8"), []byte("#EXTM3U\n#EXTINF:2,\nx-0.m4s\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "source", "recording.m3u8"), []byte("#EXTM3U\n#EXT-X-ENDLIST\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "source", "x-0.m4s"), []byte("0123456789"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "poster.jpg"), []byte("\xff\xd8jpeg"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "storyboard.vtt"), []byte("WEBVTT\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "abc", "storyboard-0.jpg"), []byte("\xff\xd8jpeg"), 0o644))
	// A secret next to the HLS directory that no path may reach.
	must(os.WriteFile(filepath.Join(root, "secret.m3u8"), []byte("secret"), 0o644))
	srv := httptest.NewServer(NewHandler(dirStore(t, dir)))
	t.Cleanup(srv.Close)
	return srv, dir
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestServesWithHeaders(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)
	cases := []struct {
		path, ctype, cache string
	}{
		{"/hls/abc/master.m3u8", "application/vnd.apple.mpegurl", CacheMaster},
		{"/hls/abc/source/index.m3u8", "application/vnd.apple.mpegurl", CacheLivePlaylist},
		{"/hls/abc/source/recording.m3u8", "application/vnd.apple.mpegurl", CacheEndedPlaylist},
		{"/hls/abc/source/x-0.m4s", "video/iso.segment", CacheImmutable},
		{"/hls/abc/poster.jpg", "image/jpeg", CacheStill},
		{"/hls/abc/storyboard.vtt", "text/vtt; charset=utf-8", CacheStill},
		{"/hls/abc/storyboard-0.jpg", "image/jpeg", CacheStill},
	}
	for _, c := range cases {
		resp, _ := get(t, srv.URL+c.path, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", c.path, resp.StatusCode)
		}
		if got := resp.Header.Get("Content-Type"); got != c.ctype {
			t.Errorf("%s: Content-Type %q, want %q", c.path, got, c.ctype)
		}
		if got := resp.Header.Get("Cache-Control"); got != c.cache {
			t.Errorf("%s: Cache-Control %q, want %q", c.path, got, c.cache)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("ETag") == "" {
			t.Errorf("%s: missing CORS or ETag", c.path)
		}
	}
}

func TestRangeAndConditional(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)
	resp, body := get(t, srv.URL+"/hls/abc/source/x-0.m4s", map[string]string{"Range": "bytes=2-5"})
	if resp.StatusCode != http.StatusPartialContent || body != "2345" || resp.Header.Get("Content-Range") != "bytes 2-5/10" {
		t.Fatalf("range: status %d body %q range %q", resp.StatusCode, body, resp.Header.Get("Content-Range"))
	}
	etag := resp.Header.Get("ETag")
	resp, _ = get(t, srv.URL+"/hls/abc/source/x-0.m4s", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified {
		t.Fatalf("If-None-Match: status %d, want 304", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/hls/abc/master.m3u8", nil)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusNoContent || !strings.Contains(r2.Header.Get("Access-Control-Allow-Headers"), "Range") {
		t.Fatalf("preflight: %d %v", r2.StatusCode, r2.Header)
	}
}

func TestPathTricksRefused(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t)
	for _, p := range []string{
		"/hls/../secret.m3u8", "/hls/abc/../../secret.m3u8", "/hls/%2e%2e/secret.m3u8",
		"/hls/abc%2f..%2f..%2fsecret.m3u8", "/hls/abc/source/..%2f..%2f..%2fsecret.m3u8",
		"/hls/ABC/master.m3u8", "/hls/abc/source/x-0.m4s.tmp", "/hls/abc/source/.hidden.m3u8",
		"/hls/abc", "/hls/", "/hls/abc/source/sub/x-0.m4s", "/hls/abc/master.m3u8%00",
		"/hls/abc/source/missing.m4s", "/hls/abc/poster.png", "/hls/abc/storyboard-x.jpg", "/hls/abc/index.m3u8",
		"/hls/abc/source/poster.jpg", "/hls/abc/.staging",
	} {
		resp, body := get(t, srv.URL+p, nil)
		if resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("%s: status %d, want 400/404", p, resp.StatusCode)
		}
		if strings.Contains(body, "secret") {
			t.Errorf("%s: leaked a file outside the HLS directory", p)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hls/abc/master.m3u8", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/hls/abc/master.m3u8", "/hls/abc/source/a-1.m4s", "/hls/../x", "/hls/a/b/c/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rel, ok := ParsePath(p)
		if !ok {
			return
		}
		clean := filepath.Clean(rel)
		if clean != rel || strings.HasPrefix(clean, "..") || filepath.IsAbs(clean) || strings.ContainsAny(rel, "\\%\x00") {
			t.Fatalf("ParsePath(%q) = %q escapes or is not clean", p, rel)
		}
	})
}

// sha256Hex is the hex SHA-256 of s.
func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func do(t *testing.T, method, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestContentSHA256(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	files := map[string]string{
		"abc/master.m3u8":       "#EXTM3U\n",
		"abc/source/index.m3u8": "#EXTM3U\n",
		"abc/source/x-0.m4s":    "0123456789",
		"abc/source/x-1.ts":     "transport",
		"abc/source/init-0.mp4": "ftypmoov",
		"abc/poster.jpg":        "\xff\xd8jpeg",
		"abc/storyboard.vtt":    "WEBVTT\n",
		"abc/storyboard-3.jpg":  "\xff\xd8sprite",
	}
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := NewHandler(dirStore(t, root))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	immutable := 0
	for name, content := range files {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := do(t, method, srv.URL+"/hls/"+name, nil)
			if resp.StatusCode != 200 {
				t.Fatalf("%s %s: %d", method, name, resp.StatusCode)
			}
			got := resp.Header.Get(ContentSHA256Header)
			if strings.HasSuffix(name, ".m3u8") {
				if got != "" {
					t.Errorf("%s %s: a playlist carries %s", method, name, ContentSHA256Header)
				}
				continue
			}
			if got != sha256Hex(content) {
				t.Errorf("%s %s: %s %q, want %q", method, name, ContentSHA256Header, got, sha256Hex(content))
			}
		}
		if !strings.HasSuffix(name, ".m3u8") {
			immutable++
		}
	}
	// A range and a conditional request carry the whole file's sum.
	resp, body := do(t, http.MethodGet, srv.URL+"/hls/abc/source/x-0.m4s", map[string]string{"Range": "bytes=2-3"})
	if resp.StatusCode != http.StatusPartialContent || body != "23" || resp.Header.Get(ContentSHA256Header) != sha256Hex("0123456789") {
		t.Errorf("range: %d %q %q", resp.StatusCode, body, resp.Header.Get(ContentSHA256Header))
	}
	resp, _ = do(t, http.MethodGet, srv.URL+"/hls/abc/source/x-0.m4s", map[string]string{"If-None-Match": resp.Header.Get("ETag")})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match: %d", resp.StatusCode)
	}
	// A hot segment is hashed once, however many ask at the same time.
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/hls/abc/source/x-1.ts")
			if err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if n := h.hashReads.Load(); n != int64(immutable) {
		t.Errorf("%d files hashed for %d immutable files", n, immutable)
	}
	// A replaced file (another size or time) is hashed again.
	p := filepath.Join(root, "abc", "source", "x-0.m4s")
	if err := os.WriteFile(p, []byte("replaced!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, time.Now(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	resp, _ = do(t, http.MethodGet, srv.URL+"/hls/abc/source/x-0.m4s", nil)
	if got := resp.Header.Get(ContentSHA256Header); got != sha256Hex("replaced!") {
		t.Errorf("after replacement: %q", got)
	}
}

func TestHashCacheBounded(t *testing.T) {
	t.Parallel()
	c := newHashCache(2)
	c.add("a", "1")
	c.add("b", "2")
	if _, ok := c.get("a"); !ok { // a is now the most recent
		t.Fatal("a missing")
	}
	c.add("c", "3") // evicts b
	if _, ok := c.get("b"); ok {
		t.Error("b survived; the least recently used entry must go")
	}
	for k, want := range map[string]string{"a": "1", "c": "3"} {
		if got, ok := c.get(k); !ok || got != want {
			t.Errorf("get(%q) = %q, %v", k, got, ok)
		}
	}
	c.add("c", "4")
	if got, _ := c.get("c"); got != "4" || c.len() != 2 {
		t.Errorf("update: %q, len %d", got, c.len())
	}
	if newHashCache(0).max != DefaultHashCacheEntries {
		t.Error("size 0 is not the default")
	}

	// Through the handler: at most n sums are kept.
	_, dir := setup(t)
	h := NewHandler(dirStore(t, dir), WithHashCacheEntries(1))
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	for _, p := range []string{"/hls/abc/source/x-0.m4s", "/hls/abc/poster.jpg", "/hls/abc/source/x-0.m4s"} {
		resp, _ := do(t, http.MethodGet, hs.URL+p, nil)
		if resp.Header.Get(ContentSHA256Header) == "" {
			t.Fatalf("%s: no sum", p)
		}
	}
	if h.hashes.len() != 1 || h.hashReads.Load() != 3 {
		t.Errorf("cache len %d, reads %d; want 1 and 3", h.hashes.len(), h.hashReads.Load())
	}
}

// Signed playback.

var (
	sigKey   = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	sigPub   = sigKey.Public().(ed25519.PublicKey)
	sigNow   = time.Unix(1900000000, 0)
	sigClock = func() time.Time { return sigNow }
)

const (
	sigMaster = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nsource/index.m3u8\n"
	sigMedia  = "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2,\nx-0.m4s\n#EXT-X-ENDLIST\n"
)

func token(t *testing.T, key ed25519.PrivateKey, c playback.Claims) string {
	t.Helper()
	if c.Expires.IsZero() {
		c.Expires = sigNow.Add(time.Hour)
	}
	tok, err := playback.Sign(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signedSetup serves a tree with a signed id "sig" and a public id "abc".
func signedSetup(t *testing.T, opts ...Option) (*httptest.Server, *Handler) {
	t.Helper()
	root := t.TempDir()
	for name, content := range map[string]string{
		"sig/master.m3u8":       sigMaster,
		"sig/source/index.m3u8": sigMedia,
		"sig/source/init-0.mp4": "ftypmoov",
		"sig/source/x-0.m4s":    "0123456789",
		"sig/poster.jpg":        "\xff\xd8jpeg",
		"sig/storyboard.vtt":    "WEBVTT\n",
		"abc/master.m3u8":       sigMaster,
		"abc/source/x-0.m4s":    "0123456789",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	opts = append([]Option{withClock(sigClock), WithSignedPlayback(func(id string) bool { return id == "sig" }, sigPub)}, opts...)
	h := NewHandler(dirStore(t, root), opts...)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

func TestSignedPlaybackRefusals(t *testing.T) {
	t.Parallel()
	srv, _ := signedSetup(t)
	_, otherKey, _ := ed25519.GenerateKey(nil)
	good := token(t, sigKey, playback.Claims{ID: "sig"})
	cases := []struct {
		name, query, reason string
	}{
		{"missing", "", "required"},
		{"empty", "?token=", "required"},
		{"expired", "?token=" + token(t, sigKey, playback.Claims{ID: "sig", Expires: sigNow}), "expired"},
		{"other id", "?token=" + token(t, sigKey, playback.Claims{ID: "abc"}), "another video"},
		{"other key", "?token=" + token(t, otherKey, playback.Claims{ID: "sig"}), "signature"},
		{"tampered", "?token=" + good[:len(good)-2] + "AA", "signature"},
		{"malformed", "?token=hello", "malformed"},
		{"other ip", "?token=" + token(t, sigKey, playback.Claims{ID: "sig", IP: "192.0.2.1"}), "IP address"},
		{"token in another parameter", "?tok=" + good, "required"},
	}
	for _, c := range cases {
		for _, p := range []string{"master.m3u8", "source/index.m3u8", "source/x-0.m4s", "source/init-0.mp4", "poster.jpg", "storyboard.vtt", "source/missing.m4s"} {
			resp, body := get(t, srv.URL+"/hls/sig/"+p+c.query, nil)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, c.reason) {
				t.Errorf("%s %s: %d %q, want 403 saying %q", c.name, p, resp.StatusCode, body, c.reason)
			}
			if resp.Header.Get(PolicyHeader) != "signed" || resp.Header.Get("Cache-Control") != "no-store" ||
				resp.Header.Get(ContentSHA256Header) != "" || strings.Contains(body, "0123456789") {
				t.Errorf("%s %s: headers %v", c.name, p, resp.Header)
			}
		}
	}
	// HEAD is refused the same way.
	resp, _ := do(t, http.MethodHead, srv.URL+"/hls/sig/source/x-0.m4s", nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("HEAD without a token: %d", resp.StatusCode)
	}
	// Preflights need no token.
	resp, _ = do(t, http.MethodOptions, srv.URL+"/hls/sig/master.m3u8", nil)
	if resp.StatusCode != http.StatusNoContent {
		t.Errorf("OPTIONS: %d", resp.StatusCode)
	}
}

func TestSignedPlaybackServes(t *testing.T) {
	t.Parallel()
	srv, _ := signedSetup(t)
	tok := token(t, sigKey, playback.Claims{ID: "sig", IP: "127.0.0.1"})
	q := "?token=" + tok
	cases := []struct {
		path, cache, body string
	}{
		{"master.m3u8", CacheMaster, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nsource/index.m3u8?token=" + tok + "\n"},
		{"source/index.m3u8", CacheEndedPlaylist, "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4?token=" + tok + "\"\n#EXTINF:2,\nx-0.m4s?token=" + tok + "\n#EXT-X-ENDLIST\n"},
		{"source/x-0.m4s", CacheImmutable, "0123456789"},
		{"source/init-0.mp4", CacheImmutable, "ftypmoov"},
		{"poster.jpg", CacheStill, "\xff\xd8jpeg"},
		{"storyboard.vtt", CacheStill, "WEBVTT\n"},
	}
	for _, c := range cases {
		resp, body := get(t, srv.URL+"/hls/sig/"+c.path+q, nil)
		if resp.StatusCode != 200 || body != c.body {
			t.Fatalf("%s: %d %q, want %q", c.path, resp.StatusCode, body, c.body)
		}
		if resp.Header.Get(PolicyHeader) != "signed" || resp.Header.Get("Cache-Control") != c.cache {
			t.Errorf("%s: policy %q, Cache-Control %q", c.path, resp.Header.Get(PolicyHeader), resp.Header.Get("Cache-Control"))
		}
		etag := resp.Header.Get("ETag")
		if strings.HasSuffix(c.path, ".m3u8") {
			sum := sha256.Sum256([]byte(body))
			if etag != `"`+hex.EncodeToString(sum[:12])+`"` {
				t.Errorf("%s: ETag %s does not match the bytes sent", c.path, etag)
			}
			if resp.Header.Get("Vary") != EdgeHeader {
				t.Errorf("%s: Vary %q", c.path, resp.Header.Get("Vary"))
			}
		} else if resp.Header.Get(ContentSHA256Header) != sha256Hex(c.body) {
			t.Errorf("%s: no content sum", c.path)
		}
		r304, _ := get(t, srv.URL+"/hls/sig/"+c.path+q, map[string]string{"If-None-Match": etag})
		if r304.StatusCode != http.StatusNotModified {
			t.Errorf("%s: If-None-Match: %d", c.path, r304.StatusCode)
		}
	}
	// An edge gets the playlist as stored, with the stored bytes' ETag.
	for path, stored := range map[string]string{"master.m3u8": sigMaster, "source/index.m3u8": sigMedia} {
		resp, body := get(t, srv.URL+"/hls/sig/"+path+q, map[string]string{EdgeHeader: "1"})
		sum := sha256.Sum256([]byte(stored))
		if resp.StatusCode != 200 || body != stored || resp.Header.Get("ETag") != `"`+hex.EncodeToString(sum[:12])+`"` ||
			resp.Header.Get(PolicyHeader) != "signed" {
			t.Errorf("edge %s: %d %q ETag %s", path, resp.StatusCode, body, resp.Header.Get("ETag"))
		}
	}
	// HEAD of a rewritten playlist tells the rewritten length.
	resp, _ := do(t, http.MethodHead, srv.URL+"/hls/sig/master.m3u8"+q, nil)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(cases[0].body)) {
		t.Errorf("HEAD: %d, length %d", resp.StatusCode, resp.ContentLength)
	}
	// A valid token does not make a missing file exist.
	resp, _ = get(t, srv.URL+"/hls/sig/source/missing.m4s"+q, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing file: %d", resp.StatusCode)
	}
}

func TestSignedPlaybackLeavesPublicAlone(t *testing.T) {
	t.Parallel()
	srv, _ := signedSetup(t)
	tok := token(t, sigKey, playback.Claims{ID: "abc"})
	for _, q := range []string{"", "?token=" + tok, "?token=garbage"} {
		resp, body := get(t, srv.URL+"/hls/abc/master.m3u8"+q, nil)
		if resp.StatusCode != 200 || body != sigMaster || resp.Header.Get(PolicyHeader) != "" || resp.Header.Get("Vary") != "" {
			t.Errorf("public master%s: %d %q %v", q, resp.StatusCode, body, resp.Header)
		}
		resp, _ = get(t, srv.URL+"/hls/abc/source/x-0.m4s"+q, nil)
		if resp.StatusCode != 200 {
			t.Errorf("public segment%s: %d", q, resp.StatusCode)
		}
	}
}

func TestSignedPlaybackClientIP(t *testing.T) {
	t.Parallel()
	srv, _ := signedSetup(t, WithClientIP(func(r *http.Request) string { return r.Header.Get("X-Test-Viewer") }))
	tok := token(t, sigKey, playback.Claims{ID: "sig", IP: "198.51.100.0/24"})
	for ip, want := range map[string]int{"198.51.100.9": 200, "198.51.101.9": 403, "": 403} {
		resp, _ := get(t, srv.URL+"/hls/sig/source/x-0.m4s?token="+tok, map[string]string{"X-Test-Viewer": ip})
		if resp.StatusCode != want {
			t.Errorf("viewer %q: %d, want %d", ip, resp.StatusCode, want)
		}
	}
	// A token without an IP works from anywhere.
	resp, _ := get(t, srv.URL+"/hls/sig/source/x-0.m4s?token="+token(t, sigKey, playback.Claims{ID: "sig"}), nil)
	if resp.StatusCode != 200 {
		t.Errorf("unbound token: %d", resp.StatusCode)
	}
}

func TestSignedPlaybackMisconfigured(t *testing.T) {
	t.Parallel()
	srv, _ := signedSetup(t, WithSignedPlayback(func(id string) bool { return id == "sig" }, nil))
	tok := token(t, sigKey, playback.Claims{ID: "sig"})
	resp, body := get(t, srv.URL+"/hls/sig/master.m3u8?token="+tok, nil)
	if resp.StatusCode != http.StatusInternalServerError || strings.Contains(body, "EXTM3U") {
		t.Errorf("no public key: %d %q; want a refusal", resp.StatusCode, body)
	}
	resp, _ = get(t, srv.URL+"/hls/abc/master.m3u8", nil)
	if resp.StatusCode != 200 {
		t.Errorf("public id: %d", resp.StatusCode)
	}
}
