package edgecache

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shoal-video/shoal/packager/origin"
)

// discardWriter is a ResponseWriter that keeps one header map, cleared per
// request, so that the benchmark counts the cache's own allocations.
type discardWriter struct {
	h    http.Header
	n    int64
	code int
}

func (d *discardWriter) Header() http.Header { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) {
	d.n += int64(len(p))
	return len(p), nil
}
func (d *discardWriter) WriteHeader(code int) { d.code = code }

func benchHit(b *testing.B, path string, body []byte, cc string) {
	o := newFakeOrigin(&testing.T{})
	defer o.srv.Close()
	o.put(path, body, cc)
	c, err := New(Config{OriginURL: o.srv.URL, CacheDir: b.TempDir()}, Deps{Log: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	// Fill the cache.
	c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
	req := httptest.NewRequest(http.MethodGet, path, nil)
	w := &discardWriter{h: http.Header{}}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clear(w.h)
		c.ServeHTTP(w, req)
	}
	if w.code != http.StatusOK || w.h.Get("Cache-Status") != "shoal; hit" {
		b.Fatalf("status %d %q", w.code, w.h.Get("Cache-Status"))
	}
}

func BenchmarkHitSegment2MB(b *testing.B) {
	benchHit(b, segPath, segment(2<<20, 1), origin.CacheImmutable)
}

func BenchmarkHitPlaylist1KB(b *testing.B) {
	benchHit(b, livePath, segment(1<<10, 1), "public, max-age=3600")
}
