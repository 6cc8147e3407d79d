package origin

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/live"
)

// llPlaylist renders a small LL-HLS playlist whose segment being built is
// msn with parts parts.
func llPlaylist(msn uint64, parts int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-TARGETDURATION:2\n", msn-1)
	b.WriteString("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.5\n")
	fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"init-s-0-0.mp4\"\n#EXTINF:2.000,\ns-0-%d.m4s\n", msn-1)
	for i := 0; i < parts; i++ {
		fmt.Fprintf(&b, "#EXT-X-PART:DURATION=0.5,URI=\"s-0-%d-p%d.m4s\"\n", msn, i)
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s-0-%d-p%d.m4s\"\n", msn, parts)
	return []byte(b.String())
}

func publishLL(reg *live.Registry, msn uint64, parts int) {
	for i := 0; i < parts; i++ {
		reg.AddPart(fmt.Sprintf("abc/720p/s-0-%d-p%d.m4s", msn, i), []byte(fmt.Sprintf("part %d of %d", i, msn)))
	}
	reg.Publish("abc/720p/index.m3u8", live.Snapshot{Data: llPlaylist(msn, parts), NextMSN: msn, Parts: parts,
		Hint: fmt.Sprintf("abc/720p/s-0-%d-p%d.m4s", msn, parts), Target: 2 * time.Second, PartTarget: 500 * time.Millisecond})
}

type answer struct {
	code int
	hdr  http.Header
	body string
}

func getAsync(url string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			ch <- answer{code: -1, body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		ch <- answer{code: resp.StatusCode, hdr: resp.Header, body: string(b)}
	}()
	return ch
}

func newLLServer(t *testing.T) (*live.Registry, *httptest.Server, ed25519.PublicKey) {
	t.Helper()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "abc", "720p"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"init-s-0-0.mp4", "s-0-4.m4s", "s-0-5.m4s", "s-0-6.m4s"} {
		if err := os.WriteFile(filepath.Join(root, "abc", "720p", f), []byte("bytes of "+f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	reg := live.New()
	pub, priv, _ := ed25519.GenerateKey(nil)
	srv := httptest.NewServer(NewHandler(dirStore(t, root), WithLive(reg), WithContentKey(priv)))
	t.Cleanup(srv.Close)
	return reg, srv, pub
}

// A blocking reload waits for the part it names and returns as soon as the
// playlist holds it; one already there returns at once; a far-future msn
// and malformed parameters are refused with 400.
func TestBlockingReload(t *testing.T) {
	t.Parallel()
	reg, srv, _ := newLLServer(t)
	publishLL(reg, 5, 1)
	base := srv.URL + "/hls/abc/720p/index.m3u8"

	now := <-getAsync(base + "?_HLS_msn=5&_HLS_part=0")
	if now.code != 200 || !strings.Contains(now.body, "s-0-5-p0.m4s") || now.hdr.Get("Cache-Control") != "public, max-age=6" {
		t.Fatalf("a satisfied reload: %d %v\n%s", now.code, now.hdr, now.body)
	}
	plain := <-getAsync(base)
	if plain.code != 200 || plain.hdr.Get("Cache-Control") != CacheLivePlaylist || plain.hdr.Get("ETag") == "" {
		t.Fatalf("a plain request: %d %v", plain.code, plain.hdr)
	}

	nextPart := getAsync(base + "?_HLS_msn=5&_HLS_part=1")
	nextSegment := getAsync(base + "?_HLS_msn=5")
	publishLL(reg, 5, 2)
	a := <-nextPart
	if a.code != 200 || !strings.Contains(a.body, "s-0-5-p1.m4s") {
		t.Fatalf("the reload for part 1: %d\n%s", a.code, a.body)
	}
	select {
	case a := <-nextSegment:
		t.Fatalf("the reload for the whole segment 5 returned before it ended: %d\n%s", a.code, a.body)
	default:
	}
	publishLL(reg, 6, 0)
	if a := <-nextSegment; a.code != 200 || !strings.Contains(a.body, "s-0-5.m4s") {
		t.Fatalf("the reload for segment 5: %d\n%s", a.code, a.body)
	}

	for _, q := range []string{"?_HLS_msn=8", "?_HLS_msn=x", "?_HLS_part=1", "?_HLS_msn=5&_HLS_part=-1", "?_HLS_msn=99999999999", "?_HLS_msn=3&_HLS_part=99"} {
		if a := <-getAsync(base + q); a.code != 400 || a.hdr.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: %d %v, want 400 no-store", q, a.code, a.hdr)
		}
	}

	// The stream ends: waiters are answered from the disk.
	if err := os.WriteFile(filepath.Join(srv.Config.Handler.(*Handler).store.(*fsstore.Store).Root(), "abc", "720p", "index.m3u8"),
		[]byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\ns-0-6.m4s\n#EXT-X-ENDLIST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waiting := getAsync(base + "?_HLS_msn=7")
	reg.Remove("abc/720p/index.m3u8")
	if a := <-waiting; a.code != 200 || !strings.Contains(a.body, "#EXT-X-ENDLIST") {
		t.Fatalf("after the end: %d\n%s", a.code, a.body)
	}
}

// A reload that is not satisfied within three target durations gets 503.
func TestBlockingReloadTimesOut(t *testing.T) {
	t.Parallel()
	reg, srv, _ := newLLServer(t)
	reg.Publish("abc/720p/index.m3u8", live.Snapshot{Data: llPlaylist(5, 0), NextMSN: 5, Target: time.Second})
	a := <-getAsync(srv.URL + "/hls/abc/720p/index.m3u8?_HLS_msn=6")
	if a.code != http.StatusServiceUnavailable || a.hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %v", a.code, a.hdr)
	}
}

// The preload-hinted part is held until it exists; parts are immutable and
// carry their SHA-256; a part that is neither there nor hinted is 404.
func TestPartsAndPreloadHint(t *testing.T) {
	t.Parallel()
	reg, srv, _ := newLLServer(t)
	publishLL(reg, 5, 1)
	base := srv.URL + "/hls/abc/720p/"
	hinted := getAsync(base + "s-0-5-p1.m4s")
	if a := <-getAsync(base + "s-0-5-p3.m4s"); a.code != 404 || a.hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("a part that is not announced: %d %v", a.code, a.hdr)
	}
	publishLL(reg, 5, 2)
	a := <-hinted
	sum := sha256.Sum256([]byte("part 1 of 5"))
	if a.code != 200 || a.body != "part 1 of 5" || a.hdr.Get(ContentSHA256Header) != hex.EncodeToString(sum[:]) ||
		a.hdr.Get("Cache-Control") != CacheImmutable {
		t.Fatalf("the hinted part: %d %v %q", a.code, a.hdr, a.body)
	}
	// The hint moves on without the part (the segment ended early).
	gone := getAsync(base + "s-0-5-p2.m4s")
	reg.Publish("abc/720p/index.m3u8", live.Snapshot{Data: llPlaylist(6, 0), NextMSN: 6, Hint: "abc/720p/s-0-6-p0.m4s", Target: 2 * time.Second})
	if a := <-gone; a.code != 404 {
		t.Fatalf("a hint that moved on: %d", a.code)
	}
}

// The manifest lists the parts, and a blocking manifest request answers
// the manifest of the playlist that holds the part it names.
func TestManifestListsParts(t *testing.T) {
	t.Parallel()
	reg, srv, pub := newLLServer(t)
	publishLL(reg, 5, 1)
	waiting := getAsync(srv.URL + "/hls/abc/720p/manifest.txt?_HLS_msn=5&_HLS_part=1")
	publishLL(reg, 5, 2)
	a := <-waiting
	if a.code != 200 || a.hdr.Get("Cache-Control") != "public, max-age=6" {
		t.Fatalf("%d %v\n%s", a.code, a.hdr, a.body)
	}
	m, err := manifest.Verify([]byte(a.body), map[string]ed25519.PublicKey{manifest.KeyID(pub): pub})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		name := fmt.Sprintf("s-0-5-p%d.m4s", i)
		e, ok := m.Lookup(name)
		if !ok || e.Kind != manifest.KindPart || e.Duration != 500*time.Millisecond {
			t.Fatalf("%s: %+v %v\n%s", name, e, ok, a.body)
		}
		if err := e.Check([]byte(fmt.Sprintf("part %d of 5", i))); err != nil {
			t.Fatal(err)
		}
	}
	if e, ok := m.Lookup("s-0-4.m4s"); !ok || e.Kind != manifest.KindSegment || m.Seq != 5 {
		t.Fatalf("segment entry %+v %v, seq %d", e, ok, m.Seq)
	}
}

// A DVR playlist's delta update is answered for _HLS_skip=YES.
func TestDeltaUpdate(t *testing.T) {
	t.Parallel()
	reg, srv, _ := newLLServer(t)
	reg.Publish("abc/720p/dvr.m3u8", live.Snapshot{Data: []byte("#EXTM3U\nfull\n"), Delta: []byte("#EXTM3U\ndelta\n"), NextMSN: 5, Target: 2 * time.Second})
	base := srv.URL + "/hls/abc/720p/dvr.m3u8"
	full, delta := <-getAsync(base), <-getAsync(base+"?_HLS_skip=YES")
	if full.body != "#EXTM3U\nfull\n" || delta.body != "#EXTM3U\ndelta\n" || full.hdr.Get("ETag") == delta.hdr.Get("ETag") {
		t.Fatalf("full %q %v, delta %q %v", full.body, full.hdr, delta.body, delta.hdr)
	}
	if a := <-getAsync(base + "?_HLS_skip=v2&_HLS_msn=4"); a.body != "#EXTM3U\ndelta\n" {
		t.Fatalf("blocking delta: %q", a.body)
	}
}

// Range manifests sign a recording's segments 100 at a time, final once
// all 100 exist or the recording ended.
func TestRangeManifest(t *testing.T) {
	t.Parallel()
	_, srv, pub := newLLServer(t)
	dir := filepath.Join(srv.Config.Handler.(*Handler).store.(*fsstore.Store).Root(), "abc", "720p")
	var rec strings.Builder
	rec.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n")
	for i := 0; i < 150; i++ {
		if i == 0 || i == 120 {
			fmt.Fprintf(&rec, "#EXT-X-MAP:URI=\"init-r-%d.mp4\"\n", i)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("init-r-%d.mp4", i)), []byte("init"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&rec, "#EXTINF:2.000,\nr-%d.m4s\n", i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("r-%d.m4s", i)), []byte(fmt.Sprint("segment ", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "recording.m3u8"), []byte(rec.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	keys := map[string]ed25519.PublicKey{manifest.KeyID(pub): pub}
	fetch := func(n int) (manifest.Manifest, answer) {
		t.Helper()
		a := <-getAsync(fmt.Sprintf("%s/hls/abc/720p/manifest-%d.txt", srv.URL, n))
		if a.code != 200 {
			t.Fatalf("manifest-%d: %d %s", n, a.code, a.body)
		}
		m, err := manifest.Verify([]byte(a.body), keys)
		if err != nil {
			t.Fatal(err)
		}
		return m, a
	}
	m, a := fetch(0)
	range0 := a.body
	if len(m.Entries) != 101 || m.Entries[0].URI != "init-r-0.mp4" || m.Entries[100].URI != "r-99.m4s" || !m.Ended || m.Seq != 100 ||
		a.hdr.Get("Cache-Control") != CacheEndedPlaylist {
		t.Fatalf("range 0: %d entries, ended %v, seq %d, %v", len(m.Entries), m.Ended, m.Seq, a.hdr)
	}
	if err := m.Entries[51].Check([]byte("segment 50")); err != nil {
		t.Fatal(err)
	}
	m, a = fetch(100)
	if len(m.Entries) != 52 || m.Entries[0].URI != "init-r-0.mp4" || m.Entries[21].URI != "init-r-120.mp4" || m.Ended || m.Seq != 150 ||
		a.hdr.Get("Cache-Control") != CacheLivePlaylist {
		t.Fatalf("range 100: %d entries %v, ended %v, seq %d", len(m.Entries), m.Entries[:2], m.Ended, m.Seq)
	}
	for _, n := range []string{"manifest-200.txt", "manifest-50.txt", "manifest-0100.txt"} {
		if a := <-getAsync(srv.URL + "/hls/abc/720p/" + n); a.code != 404 {
			t.Errorf("%s: %d, want 404", n, a.code)
		}
	}
	// A recording that starts mid-range (a rendition that joined late).
	late := strings.Replace(rec.String(), "#EXT-X-MEDIA-SEQUENCE:0", "#EXT-X-MEDIA-SEQUENCE:137", 1)
	if err := os.WriteFile(filepath.Join(dir, "late.m3u8"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	lateDir := filepath.Join(filepath.Dir(dir), "late")
	if err := os.MkdirAll(lateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 150; i++ {
		os.Link(filepath.Join(dir, fmt.Sprintf("r-%d.m4s", i)), filepath.Join(lateDir, fmt.Sprintf("r-%d.m4s", i)))
	}
	for _, f := range []string{"init-r-0.mp4", "init-r-120.mp4"} {
		os.Link(filepath.Join(dir, f), filepath.Join(lateDir, f))
	}
	if err := os.WriteFile(filepath.Join(lateDir, "recording.m3u8"), []byte(late), 0o644); err != nil {
		t.Fatal(err)
	}
	a = <-getAsync(srv.URL + "/hls/abc/late/manifest-100.txt")
	lm, err := manifest.Verify([]byte(a.body), keys)
	if a.code != 200 || err != nil || lm.Seq != 200 || !lm.Ended || lm.Entries[1].URI != "r-0.m4s" || len(lm.Entries) != 64 {
		t.Fatalf("a range the recording starts in: %d %v seq %d ended %v %d entries", a.code, err, lm.Seq, lm.Ended, len(lm.Entries))
	}
	// A final range outlives appends to its recording (it is not made
	// again: a segment it lists is gone, and it is still answered).
	if err := os.Remove(filepath.Join(dir, "r-5.m4s")); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(filepath.Join(dir, "recording.m3u8"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("#EXT-X-ENDLIST\n")
	f.Close()
	if m, _ := fetch(100); !m.Ended || len(m.Entries) != 52 {
		t.Fatalf("range 100 after the end: ended %v", m.Ended)
	}
	if _, a := fetch(0); a.body != range0 {
		t.Fatalf("final range 0 made again after an append:\n%s", a.body)
	}
	// A new broadcast replaces the recording (as long, other segments):
	// its ranges are made from it.
	for i := 0; i < 150; i++ {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("q-%d.m4s", i)), []byte(fmt.Sprint("new segment ", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(dir, "recording.m3u8.tmp")
	if err := os.WriteFile(tmp, []byte(strings.ReplaceAll(rec.String(), "\nr-", "\nq-")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "recording.m3u8")); err != nil {
		t.Fatal(err)
	}
	if m, _ := fetch(0); len(m.Entries) != 101 || m.Entries[1].URI != "q-0.m4s" || m.Entries[1].Check([]byte("new segment 0")) != nil {
		t.Fatalf("range 0 of a new broadcast: %d entries, %+v", len(m.Entries), m.Entries[1])
	}
}
