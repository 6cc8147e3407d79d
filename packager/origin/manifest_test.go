package origin

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/manifest"
)

func TestManifest(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("abc/720p/init-s-0-0.mp4", "ftypmoov")
	write("abc/720p/s-0-7.m4s", "segment seven")
	write("abc/720p/s-0-8.m4s", "segment eight")
	write("abc/720p/index.m3u8", "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2,\ns-0-7.m4s\n#EXTINF:2,\ns-0-8.m4s\n")
	write("abc/bad/index.m3u8", "#EXTM3U\n#EXTINF:2,\n../../secret.m4s\n")
	_, priv, _ := ed25519.GenerateKey(nil)
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC).UnixMilli())
	h := NewHandler(dirStore(t, root), WithContentKey(priv), withClock(func() time.Time { return time.UnixMilli(clock.Load()) }))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	keys := map[string]ed25519.PublicKey{manifest.KeyID(priv.Public().(ed25519.PublicKey)): priv.Public().(ed25519.PublicKey)}

	fetch := func() (*http.Response, manifest.Manifest, []byte) {
		t.Helper()
		resp, body := get(t, srv.URL+"/hls/abc/720p/manifest.txt", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("manifest: %d %s", resp.StatusCode, body)
		}
		m, err := manifest.Verify([]byte(body), keys)
		if err != nil {
			t.Fatalf("verify: %v\n%s", err, body)
		}
		return resp, m, []byte(body)
	}
	resp, m, first := fetch()
	if resp.Header.Get("Cache-Control") != CacheLivePlaylist || resp.Header.Get("Content-Type") != manifest.ContentType ||
		resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("headers: %v", resp.Header)
	}
	if m.ID != "abc" || m.Rendition != "720p" || m.Seq != 9 || m.Ended || len(m.Entries) != 3 ||
		m.Time.UnixMilli() != clock.Load() {
		t.Fatalf("manifest: %+v", m)
	}
	for _, c := range []struct{ uri, content string }{{"init-s-0-0.mp4", "ftypmoov"}, {"s-0-7.m4s", "segment seven"}, {"s-0-8.m4s", "segment eight"}} {
		e, ok := m.Lookup(c.uri)
		if !ok || e.Check([]byte(c.content)) != nil {
			t.Errorf("%s: %+v %v", c.uri, e, ok)
		}
	}
	// Within a second the same bytes; after it, signed again with a new time.
	if _, _, again := fetch(); !bytes.Equal(again, first) {
		t.Error("manifest re-signed within its TTL")
	}
	clock.Add(1500)
	if _, m2, _ := fetch(); m2.Time.UnixMilli() != clock.Load() {
		t.Errorf("live manifest not re-signed after its TTL: %v", m2.Time)
	}
	// A new segment and ENDLIST: the ended manifest lists it.
	write("abc/720p/s-0-9.m4s", "nine")
	write("abc/720p/index.m3u8", "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2,\ns-0-7.m4s\n#EXTINF:2,\ns-0-8.m4s\n#EXTINF:2,\ns-0-9.m4s\n#EXT-X-ENDLIST\n")
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(root, "abc/720p/index.m3u8"), future, future); err != nil {
		t.Fatal(err)
	}
	resp, m, _ = fetch()
	if !m.Ended || m.Seq != 10 || len(m.Entries) != 4 || resp.Header.Get("Cache-Control") != CacheEndedPlaylist {
		t.Errorf("ended manifest: %+v %q", m, resp.Header.Get("Cache-Control"))
	}
	// A playlist naming something outside its directory gets no manifest;
	// a rendition without playlist is 404.
	if resp, _ := get(t, srv.URL+"/hls/abc/bad/manifest.txt", nil); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("path trick in playlist: %d", resp.StatusCode)
	}
	if resp, _ := get(t, srv.URL+"/hls/abc/none/manifest.txt", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("missing rendition: %d", resp.StatusCode)
	}
	// Without a content key there is no manifest.
	plain := httptest.NewServer(NewHandler(dirStore(t, root)))
	t.Cleanup(plain.Close)
	if resp, _ := get(t, plain.URL+"/hls/abc/720p/manifest.txt", nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("no key: %d", resp.StatusCode)
	}
}

// TestLiveManifestReachesBeforeTheWindow: a live manifest also lists the
// segments just before the window (from recording.m3u8).
func TestLiveManifestReachesBeforeTheWindow(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "abc", "720p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	rec := "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n"
	for i := range 9 {
		name := fmt.Sprintf("s-0-%d.m4s", i)
		rec += "#EXTINF:2,\n" + name + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"init-s-0-0.mp4": "init",
		"recording.m3u8": rec,
		"index.m3u8":     "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2,\ns-0-7.m4s\n#EXTINF:2,\ns-0-8.m4s\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	srv := httptest.NewServer(NewHandler(dirStore(t, root), WithContentKey(priv)))
	t.Cleanup(srv.Close)
	_, body := get(t, srv.URL+"/hls/abc/720p/manifest.txt", nil)
	pub := priv.Public().(ed25519.PublicKey)
	m, err := manifest.Verify([]byte(body), map[string]ed25519.PublicKey{manifest.KeyID(pub): pub})
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, e := range m.Entries {
		uris = append(uris, e.URI)
	}
	if got := strings.Join(uris, " "); got != "init-s-0-0.mp4 s-0-3.m4s s-0-4.m4s s-0-5.m4s s-0-6.m4s s-0-7.m4s s-0-8.m4s" || m.Seq != 9 {
		t.Fatalf("live manifest lists %s (seq %d)", got, m.Seq)
	}
}

// TestLiveManifestLongRecording: with a recording far longer than the tail
// a manifest reads (its only EXT-X-MAP cut off), the live manifest still
// lists the window, the segments before it and the window's init section.
func TestLiveManifestLongRecording(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "abc", "720p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 3000
	var rec strings.Builder
	rec.WriteString("#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n")
	for i := range n {
		fmt.Fprintf(&rec, "#EXTINF:2.000,\ns-0-%d.m4s\n", i)
	}
	files := map[string]string{
		"init-s-0-0.mp4": "init",
		"recording.m3u8": rec.String(),
		"index.m3u8": fmt.Sprintf("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2.000,\ns-0-%d.m4s\n#EXTINF:2.000,\ns-0-%d.m4s\n",
			n-3, n-3, n-2), // the recording is one segment ahead
	}
	for i := n - 8; i < n; i++ {
		files[fmt.Sprintf("s-0-%d.m4s", i)] = "seg"
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	srv := httptest.NewServer(NewHandler(dirStore(t, root), WithContentKey(priv)))
	t.Cleanup(srv.Close)
	_, body := get(t, srv.URL+"/hls/abc/720p/manifest.txt", nil)
	pub := priv.Public().(ed25519.PublicKey)
	m, err := manifest.Verify([]byte(body), map[string]ed25519.PublicKey{manifest.KeyID(pub): pub})
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	var uris []string
	for _, e := range m.Entries {
		uris = append(uris, e.URI)
	}
	want := "init-s-0-0.mp4 s-0-2993.m4s s-0-2994.m4s s-0-2995.m4s s-0-2996.m4s s-0-2997.m4s s-0-2998.m4s s-0-2999.m4s"
	if got := strings.Join(uris, " "); got != want || m.Seq != n {
		t.Fatalf("live manifest lists %s (seq %d), want %s (seq %d)", got, m.Seq, want, n)
	}
}

// Segments a full disk kept from being written are listed as gaps
// (EXT-X-GAP) in the playlists: the manifests list them as gap entries at
// their place (no 500 for the missing file), live, from the recording and
// in range manifests, and the segment's URI answers 404.
func TestManifestWithGaps(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "abc", "720p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	head := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n"
	seg := func(i int) string {
		if i == 6 || i == 8 {
			return fmt.Sprintf("#EXT-X-GAP\n#EXTINF:2.000,\ns-0-%d.m4s\n", i)
		}
		return fmt.Sprintf("#EXTINF:2.000,\ns-0-%d.m4s\n", i)
	}
	rec := head + "#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n"
	for i := range 10 {
		rec += seg(i)
	}
	index := head + "#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n" + seg(7) + seg(8) + seg(9)
	files := map[string]string{"init-s-0-0.mp4": "init", "recording.m3u8": rec, "index.m3u8": index}
	for i := range 10 {
		if i != 6 && i != 8 {
			files[fmt.Sprintf("s-0-%d.m4s", i)] = fmt.Sprint("segment ", i)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	srv := httptest.NewServer(NewHandler(dirStore(t, root), WithContentKey(priv)))
	t.Cleanup(srv.Close)
	pub := priv.Public().(ed25519.PublicKey)
	keys := map[string]ed25519.PublicKey{manifest.KeyID(pub): pub}
	fetch := func(name string) manifest.Manifest {
		t.Helper()
		resp, body := get(t, srv.URL+"/hls/abc/720p/"+name, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", name, resp.StatusCode, body)
		}
		m, err := manifest.Verify([]byte(body), keys)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, body)
		}
		return m
	}
	list := func(m manifest.Manifest) string {
		var out []string
		for _, e := range m.Entries {
			out = append(out, e.Kind+":"+e.URI)
		}
		return strings.Join(out, " ")
	}
	m := fetch("manifest.txt")
	want := "init:init-s-0-0.mp4 seg:s-0-3.m4s seg:s-0-4.m4s seg:s-0-5.m4s gap:s-0-6.m4s seg:s-0-7.m4s gap:s-0-8.m4s seg:s-0-9.m4s"
	if got := list(m); got != want || m.Seq != 10 {
		t.Fatalf("live manifest: %s (seq %d), want %s", got, m.Seq, want)
	}
	if e, _ := m.Lookup("s-0-8.m4s"); e.Duration != 2*time.Second || e.Size != 0 {
		t.Fatalf("gap entry %+v", e)
	}
	r := fetch("manifest-0.txt")
	if got := list(r); !strings.Contains(got, "seg:s-0-5.m4s gap:s-0-6.m4s seg:s-0-7.m4s gap:s-0-8.m4s seg:s-0-9.m4s") || r.Seq != 10 {
		t.Fatalf("range manifest: %s (seq %d)", got, r.Seq)
	}
	if resp, _ := get(t, srv.URL+"/hls/abc/720p/s-0-8.m4s", nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a gap segment answers %d, want 404", resp.StatusCode)
	}
}
