package origin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
	srv := httptest.NewServer(NewHandler(dir))
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
