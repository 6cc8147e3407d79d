package s3store_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// S3 answers one PUT with 503 SlowDown (throttling), as AWS does under
// load: Config.MaxRetries says such a request is tried again (3 times by
// default), so the Put must succeed.
func TestPutRetriesAThrottledRequest(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	target, _ := url.Parse(srv.Endpoint)
	proxy := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	throttled := map[string]bool{} // the first PUT of each object
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		first := r.Method == http.MethodPut && r.URL.Query().Get("uploadId") == "" && !throttled[r.URL.Path]
		throttled[r.URL.Path] = true
		mu.Unlock()
		if first {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	bucket := fmt.Sprintf("shoal-throttle-%d", buckets.Add(1))
	s := newStore(t, srv, func(c *s3store.Config) { c.Bucket = bucket }) // straight at the server
	via, err := s3store.New(s3store.Config{Endpoint: front.URL, Bucket: bucket, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("segment "), 1000)
	if _, err := via.Put(t.Context(), "hls/v1/720p/seg1.m4s", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put with one 503 SlowDown answer (MaxRetries %d): %v", s3store.DefaultMaxRetries, err)
	}
	b, _, err := storage.ReadAll(t.Context(), s, "hls/v1/720p/seg1.m4s")
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("stored object: %d bytes, %v", len(b), err)
	}
	// The same from a file (a source kept, a VOD output published).
	path := filepath.Join(t.TempDir(), "seg2.m4s")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := via.Put(t.Context(), "hls/v1/720p/seg2.m4s", f, int64(len(data))); err != nil {
		t.Fatalf("Put of a file with one 503 SlowDown answer: %v", err)
	}
	if b, _, err := storage.ReadAll(t.Context(), s, "hls/v1/720p/seg2.m4s"); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("stored object from a file: %d bytes, %v", len(b), err)
	}
	// A file shorter than said is refused, as any body is.
	if _, err := f.Seek(10, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := via.Put(t.Context(), "hls/v1/720p/seg3.m4s", f, int64(len(data))); !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("Put of a file 10 bytes short: %v", err)
	}
}
