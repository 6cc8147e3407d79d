package s3store_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/storage/storagetest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// buckets numbers the buckets of the tests on the shared server.
var buckets atomic.Int64

func newStore(t *testing.T, srv *s3test.Server, mod func(*s3store.Config)) *s3store.Store {
	t.Helper()
	cfg := s3store.Config{
		Endpoint:  srv.Endpoint,
		Bucket:    fmt.Sprintf("shoal-test-%d", buckets.Add(1)),
		PathStyle: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureBucket(t.Context()); err != nil {
		t.Fatalf("EnsureBucket: %v\nweed: %s", err, srv.Output())
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t, srv, nil) })
}

func TestEnsureBucketTwice(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	s := newStore(t, srv, func(c *s3store.Config) { c.Bucket = "shoal-twice" })
	if err := s.EnsureBucket(t.Context()); err != nil {
		t.Fatalf("EnsureBucket on an existing bucket: %v", err)
	}
	if _, err := s.Put(t.Context(), "a/b", bytes.NewReader([]byte("x")), 1); err != nil {
		t.Fatal(err)
	}
}

func TestMissingBucket(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	s, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: "shoal-never-created", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	// Not "object not found": a missing bucket is every object gone, a
	// misconfiguration callers must not take for one deleted object.
	ctx := t.Context()
	_, err = s.Stat(ctx, "a/b")
	if !errors.Is(err, storage.ErrNoBucket) || errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat in a missing bucket: %v, want ErrNoBucket", err)
	}
	if _, _, err := s.Get(ctx, "a/b", storage.Range{}); !errors.Is(err, storage.ErrNoBucket) {
		t.Errorf("Get in a missing bucket: %v, want ErrNoBucket", err)
	}
	for _, err := range s.List(ctx, "", storage.ListOptions{}) {
		if !errors.Is(err, storage.ErrNoBucket) {
			t.Errorf("List in a missing bucket: %v, want ErrNoBucket", err)
		}
	}
	if err := s.Delete(ctx, "a/b"); !errors.Is(err, storage.ErrNoBucket) {
		t.Errorf("Delete in a missing bucket: %v, want ErrNoBucket", err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		cfg  s3store.Config
		want string
	}{
		{s3store.Config{Bucket: "b"}, "no endpoint"},
		{s3store.Config{Endpoint: "127.0.0.1:8333", Bucket: "b"}, "not an http"},
		{s3store.Config{Endpoint: "ftp://host", Bucket: "b"}, "not an http"},
		{s3store.Config{Endpoint: "http://host/path", Bucket: "b"}, "scheme://host"},
		{s3store.Config{Endpoint: "http://host"}, "no bucket"},
		{s3store.Config{Endpoint: "http://host", Bucket: "b", AccessKey: "k"}, "both"},
	} {
		if _, err := s3store.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error about %q", c.cfg, err, c.want)
		}
	}
	if _, err := s3store.New(s3store.Config{Endpoint: "https://s3.eu-west-1.amazonaws.com", Bucket: "b", AccessKey: "k", SecretKey: "s"}); err != nil {
		t.Errorf("New with https and keys: %v", err)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Invalid keys are refused before any request: the endpoint does not
// answer, yet the error is ErrInvalidKey at once.
func TestInvalidKeysBeforeIO(t *testing.T) {
	t.Parallel()
	s, err := s3store.New(s3store.Config{Endpoint: "http://" + closedAddr(t), Bucket: "b", PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckInvalidKeys(t, s)
}

// A server that accepts connections and never answers: requests fail after
// RequestTimeout, they do not hang.
func TestHungServerTimesOut(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close(); conns.Wait() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Go(func() { <-done; c.Close() })
		}
	}()
	s, err := s3store.New(s3store.Config{
		Endpoint: "http://" + l.Addr().String(), Bucket: "b", PathStyle: true,
		RequestTimeout: 300 * time.Millisecond, MaxRetries: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Stat(t.Context(), "a/b")
	if err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat against a hung server: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Stat took %v against a 300ms timeout", d)
	}
	_, err = s.Put(t.Context(), "a/b", bytes.NewReader([]byte("x")), 1)
	if err == nil {
		t.Fatal("Put against a hung server succeeded")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("Stat and Put took %v against a 300ms timeout", d)
	}
}

// S3 stopped: every operation fails soon with an error naming the
// endpoint (not ErrNotFound, not a hang); restarted, the data is there
// and the same Store works again.
func TestServerStoppedAndRestarted(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	s := newStore(t, srv, func(c *s3store.Config) {
		c.DialTimeout = time.Second
		c.RequestTimeout = 2 * time.Second
		c.MaxRetries = 2
	})
	ctx := t.Context()
	if _, err := s.Put(ctx, "v1/seg1.m4s", bytes.NewReader([]byte("segment one")), 11); err != nil {
		t.Fatal(err)
	}
	stopAt := time.Now()
	srv.Stop()
	t.Logf("stopped in %v", time.Since(stopAt).Round(time.Millisecond))
	start := time.Now()
	check := func(op string, err error) {
		t.Helper()
		if err == nil {
			t.Errorf("%s with S3 stopped succeeded", op)
			return
		}
		if errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s with S3 stopped: %v, looks like not found", op, err)
		}
		if !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s: error %q does not name the endpoint %s", op, err, srv.Endpoint)
		}
	}
	_, err := s.Put(ctx, "v1/seg2.m4s", bytes.NewReader([]byte("segment two")), 11)
	check("Put", err)
	_, _, err = s.Get(ctx, "v1/seg1.m4s", storage.Range{})
	check("Get", err)
	_, err = s.Stat(ctx, "v1/seg1.m4s")
	check("Stat", err)
	for _, err := range s.List(ctx, "v1/", storage.ListOptions{}) {
		check("List", err)
		break
	}
	check("Delete", s.Delete(ctx, "v1/seg1.m4s"))
	check("EnsureBucket", s.EnsureBucket(ctx))
	if d := time.Since(start); d > 60*time.Second {
		t.Errorf("six operations against a stopped S3 took %v", d)
	}
	t.Logf("six operations failed in %v", time.Since(start).Round(time.Millisecond))

	restartAt := time.Now()
	srv.Restart(t)
	t.Logf("restarted in %v", time.Since(restartAt).Round(time.Millisecond))
	if b, _, err := storage.ReadAll(ctx, s, "v1/seg1.m4s"); err != nil || string(b) != "segment one" {
		t.Fatalf("after the restart: %q, %v", b, err)
	}
	if _, err := s.Put(ctx, "v1/seg2.m4s", bytes.NewReader([]byte("segment two")), 11); err != nil {
		t.Fatalf("Put after the restart: %v", err)
	}
}

// Credentials: explicit keys sign requests; without them the standard AWS
// variables are used; with neither, requests are anonymous, which a server
// with identities refuses; wrong keys are refused with a clear error.
// Not parallel: it sets AWS_* variables.
func TestCredentials(t *testing.T) {
	const access, secret = "SHOALTESTACCESSKEY01", "shoal-test-secret-key-0123456789abcdefgh"
	srv := s3test.StartWithCredentials(t, access, secret)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	ctx := t.Context()
	open := func(bucket, ak, sk string) *s3store.Store {
		t.Helper()
		s, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: ak, SecretKey: sk, PathStyle: true, MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	s := open("shoal-creds", access, secret)
	if err := s.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket with the keys: %v\nweed: %s", err, srv.Output())
	}
	if _, err := s.Put(ctx, "v1/a", bytes.NewReader([]byte("signed")), 6); err != nil {
		t.Fatalf("Put with the keys: %v", err)
	}
	// A presigned URL carries the keys' signature for that object only.
	u, err := s.PresignGet(ctx, "v1/a", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(u string, rng ...string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		for _, r := range rng {
			req.Header.Set("Range", r)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, b := fetch(u); code != http.StatusOK || b != "signed" {
		t.Errorf("GET of the presigned URL: %d %q", code, b)
	}
	if code, b := fetch(u, "bytes=2-"); code != http.StatusPartialContent || b != "gned" {
		t.Errorf("ranged GET of the presigned URL: %d %q", code, b)
	}
	if code, _ := fetch(strings.Replace(u, "/v1/a?", "/v1/b?", 1)); code != http.StatusForbidden {
		t.Errorf("the presigned URL with another key: %d, want 403", code)
	}
	if code, _ := fetch(u[:strings.Index(u, "?")]); code != http.StatusForbidden {
		t.Errorf("the URL without its signature: %d, want 403", code)
	}

	for name, st := range map[string]*s3store.Store{
		"anonymous":  open("shoal-creds", "", ""),
		"wrong keys": open("shoal-creds", access, "not-the-secret-key-0123456789abcdefghijk"),
	} {
		if _, err := st.Put(ctx, "v1/b", bytes.NewReader([]byte("x")), 1); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Put = %v, want a refusal", name, err)
		} else if !strings.Contains(err.Error(), srv.Endpoint) {
			t.Errorf("%s: Put error %q does not name the endpoint", name, err)
		}
		if _, _, err := storage.ReadAll(ctx, st, "v1/a"); err == nil || errors.Is(err, storage.ErrNotFound) {
			t.Errorf("%s: Get = %v, want a refusal", name, err)
		}
	}

	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	env := open("shoal-creds", "", "")
	if b, _, err := storage.ReadAll(ctx, env, "v1/a"); err != nil || string(b) != "signed" {
		t.Fatalf("Get with the keys from AWS_*: %q, %v", b, err)
	}
	if _, err := env.Put(ctx, "v1/c", bytes.NewReader([]byte("env")), 3); err != nil {
		t.Fatalf("Put with the keys from AWS_*: %v", err)
	}
}

// Without keys there is nothing to presign with: PresignGet says so (the
// origin then serves sources itself); an invalid key is refused before any
// I/O. (TestCredentials fetches presigned URLs.)
func TestPresignGetAnonymous(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	s := newStore(t, srv, nil)
	if u, err := s.PresignGet(t.Context(), "videos/abc/source", time.Minute); err == nil || !strings.Contains(err.Error(), "anonymous") {
		t.Errorf("presigning without keys: %q, %v", u, err)
	}
	if _, err := s.PresignGet(t.Context(), "../x", time.Minute); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("presigning ../x: %v", err)
	}
}
