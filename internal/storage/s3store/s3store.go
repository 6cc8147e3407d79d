// Package s3store is the storage.Store backend on an S3-compatible object
// store (AWS S3, MinIO, SeaweedFS, Ceph, an S3 gateway), with
// github.com/minio/minio-go/v7.
//
// S3 makes a PUT atomic: a reader sees the old object or the new one. A
// Put whose reader fails, or holds fewer or more bytes than its size, is
// aborted before the server commits it.
//
// Not used yet by the packager, workers, uploads or HTTP server (issue 17).
package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/storage"
)

// Defaults for the zero values of Config.
const (
	DefaultRegion         = "us-east-1"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxRetries     = 3
)

// partSize bounds the memory a Put of unknown size buffers (one part).
const partSize = 16 << 20

// Config says where the bucket is and how to reach it.
type Config struct {
	// Endpoint is the server's URL: "https://s3.eu-west-1.amazonaws.com",
	// "http://127.0.0.1:8333". The scheme picks TLS; no path.
	Endpoint string
	// Bucket is created by EnsureBucket when missing.
	Bucket string
	// Region defaults to DefaultRegion.
	Region string
	// AccessKey and SecretKey (and SessionToken for temporary
	// credentials). When AccessKey is empty they come from the standard
	// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; when
	// those are unset too, requests are anonymous (unsigned).
	AccessKey, SecretKey, SessionToken string
	// PathStyle addresses the bucket as <endpoint>/<bucket>/<key> always.
	// Otherwise the client picks: virtual-hosted style
	// (<bucket>.<endpoint>) for AWS, path style elsewhere.
	PathStyle bool
	// DialTimeout bounds connecting (and the TLS handshake); default
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// RequestTimeout bounds the wait for the server's answer to a request
	// once sent (response headers, a List page's too), and the whole of
	// Stat, Delete, DeletePrefix batches and EnsureBucket; it does not cut
	// the transfer of a body (an object, a List page) that stalls after
	// its headers. Default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// MaxRetries is how many times a request that failed on the network or
	// with a 5xx is tried in all (with a short backoff); default
	// DefaultMaxRetries.
	MaxRetries int
}

// Store is a storage.Store on one S3 bucket.
type Store struct {
	client  *minio.Client
	core    minio.Core
	bucket  string
	region  string
	timeout time.Duration
	desc    string // for errors: "s3://bucket at endpoint"
}

var _ storage.Store = (*Store)(nil)

// New checks cfg and returns a Store. It does no I/O: call EnsureBucket
// at start.
func New(cfg Config) (*Store, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("s3store: no endpoint (for example https://s3.eu-west-1.amazonaws.com)")
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("s3store: endpoint %q is not an http:// or https:// URL", cfg.Endpoint)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("s3store: endpoint %q must be scheme://host[:port] only", cfg.Endpoint)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("s3store: no bucket")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = DefaultMaxRetries
	}
	var creds *credentials.Credentials
	switch {
	case cfg.AccessKey != "" || cfg.SecretKey != "":
		if cfg.AccessKey == "" || cfg.SecretKey == "" {
			return nil, errors.New("s3store: give both the access key and the secret key, or neither")
		}
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken)
	case os.Getenv("AWS_ACCESS_KEY_ID") != "" || os.Getenv("AWS_SECRET_ACCESS_KEY") != "":
		creds = credentials.NewEnvAWS()
	default:
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   cfg.DialTimeout,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   64,
		ForceAttemptHTTP2:     true,
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: lookup,
		Transport:    tr,
		MaxRetries:   cfg.MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("s3store: %w", err)
	}
	return &Store{
		client:  client,
		core:    minio.Core{Client: client},
		bucket:  cfg.Bucket,
		region:  cfg.Region,
		timeout: cfg.RequestTimeout,
		desc:    fmt.Sprintf("bucket %s at %s", cfg.Bucket, cfg.Endpoint),
	}, nil
}

var _ storage.Presigner = (*Store)(nil)

// PresignGet returns a URL that GETs the object at key (ranges allowed)
// without credentials until expiry (1 s to 7 days), signed with the store's
// keys; a store without keys (anonymous) has nothing to sign with and
// returns an error. It does no I/O: the object need not exist.
func (s *Store) PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := storage.CheckKey(key); err != nil {
		return "", err
	}
	u, err := s.client.PresignedGetObject(ctx, s.bucket, key, expiry, nil)
	if err != nil {
		return "", s.wrap("presign", key, err)
	}
	return u.String(), nil
}

// EnsureBucket creates the bucket when it does not exist.
func (s *Store) EnsureBucket(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return fmt.Errorf("s3store: %s: check the bucket: %w", s.desc, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.region})
	if code := errCode(err); code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
		err = nil // created by someone else meanwhile
	}
	if err != nil {
		return fmt.Errorf("s3store: %s: create the bucket: %w", s.desc, err)
	}
	return nil
}

func errCode(err error) string {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		return er.Code
	}
	return ""
}

// wrap maps S3 errors onto the storage sentinels.
func (s *Store) wrap(op, key string, err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch {
		case er.Code == "NoSuchBucket":
			return fmt.Errorf("s3store: %s %s: %s does not exist (EnsureBucket creates it): %w", op, key, s.desc, storage.ErrNoBucket)
		case er.Code == "NoSuchKey" || er.StatusCode == http.StatusNotFound:
			return fmt.Errorf("s3store: %s %s: %w", op, key, storage.ErrNotFound)
		case er.Code == "InvalidRange" || er.StatusCode == http.StatusRequestedRangeNotSatisfiable:
			return fmt.Errorf("s3store: %s %s: %w", op, key, storage.ErrInvalidRange)
		}
	}
	return fmt.Errorf("s3store: %s %s (%s): %w", op, key, s.desc, err)
}

// Put implements storage.Store.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, err
	}
	if size < 0 {
		size = storage.UnknownSize
	}
	if size == 0 {
		// minio-go does not read an empty body: look at it here.
		if err := storage.CheckEmpty(r); err != nil {
			return storage.Info{}, fmt.Errorf("s3store: put %s: %w", key, err)
		}
	}
	rec := &errRecorder{r: storage.ExactReader(r, size)}
	body := io.Reader(rec)
	if size >= 0 && size <= partSize {
		// One request: minio-go tries it again (a 5xx, S3's 503
		// SlowDown, a dropped connection) only with a body it can
		// rewind. Larger objects go in parts, each buffered and retried.
		rs, err := rewindable(r, size)
		if err != nil {
			return storage.Info{}, fmt.Errorf("s3store: put %s: %w", key, err)
		}
		body = rs
	}
	up, err := s.client.PutObject(ctx, s.bucket, key, body, size, minio.PutObjectOptions{
		ContentType: contentType(key),
		PartSize:    partSize,
	})
	if err != nil {
		// minio-go does not always wrap the reader's error: report it.
		if rerr := rec.get(); rerr != nil {
			return storage.Info{}, fmt.Errorf("s3store: put %s: %w", key, rerr)
		}
		return storage.Info{}, s.wrap("put", key, err)
	}
	if rerr := rec.get(); rerr != nil {
		// Not expected (ExactReader fails the read that would complete
		// the object), but do not claim success.
		return storage.Info{}, fmt.Errorf("s3store: put %s: stored, but reading the data failed: %w", key, rerr)
	}
	mod := up.LastModified
	if mod.IsZero() {
		mod = time.Now()
	}
	return storage.Info{Key: key, Size: up.Size, ModTime: mod, ETag: quote(up.ETag)}, nil
}

// rewindable returns the next size bytes of r as a reader that can be
// rewound: a regular file's section when r is one (checked to hold exactly
// size bytes), else the bytes read into memory (at most partSize).
func rewindable(r io.Reader, size int64) (io.ReadSeeker, error) {
	if f, ok := r.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			off, err := f.Seek(0, io.SeekCurrent)
			if err != nil {
				return nil, err
			}
			if left := fi.Size() - off; left != size {
				return nil, fmt.Errorf("%w: got %d bytes, expected %d", storage.ErrSizeMismatch, left, size)
			}
			return io.NewSectionReader(f, off, size), nil
		}
	}
	buf := make([]byte, size)
	if _, err := io.ReadFull(storage.ExactReader(r, size), buf); err != nil {
		return nil, err
	}
	return bytes.NewReader(buf), nil
}

// errRecorder remembers the first error of a reader other than io.EOF.
type errRecorder struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return n, err
}

func (e *errRecorder) get() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// Get implements storage.Store.
func (s *Store) Get(ctx context.Context, key string, rng storage.Range) (io.ReadCloser, storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return nil, storage.Info{}, err
	}
	if rng.Offset < 0 || rng.Length < 0 {
		_, _, err := rng.Resolve(0)
		return nil, storage.Info{}, err
	}
	var opts minio.GetObjectOptions
	switch {
	case rng.Length > 0:
		_ = opts.SetRange(rng.Offset, rng.Offset+rng.Length-1)
	case rng.Offset > 0:
		_ = opts.SetRange(rng.Offset, 0)
	}
	rc, oi, hdr, err := s.core.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		err = s.wrap("get", key, err)
		if errors.Is(err, storage.ErrInvalidRange) && rng.Offset == 0 {
			// bytes=0-N of an empty object: S3 says 416, the store
			// contract says an empty body.
			if info, serr := s.Stat(ctx, key); serr == nil && info.Size == 0 {
				return io.NopCloser(bytes.NewReader(nil)), info, nil
			}
		}
		return nil, storage.Info{}, err
	}
	info := storage.Info{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: quote(oi.ETag)}
	if cr := hdr.Get("Content-Range"); cr != "" {
		// "bytes 0-9/100": the whole object's size is after the slash.
		if i := strings.LastIndexByte(cr, '/'); i >= 0 {
			if n, perr := strconv.ParseInt(cr[i+1:], 10, 64); perr == nil {
				info.Size = n
			}
		}
	}
	return rc, info, nil
}

// Stat implements storage.Store.
func (s *Store) Stat(ctx context.Context, key string) (storage.Info, error) {
	if err := storage.CheckKey(key); err != nil {
		return storage.Info{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	oi, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		err = s.wrap("stat", key, err)
		// A HEAD's 404 has no body to say whether the object or the
		// bucket is missing: ask.
		if errors.Is(err, storage.ErrNotFound) {
			if ok, berr := s.client.BucketExists(ctx, s.bucket); berr == nil && !ok {
				err = fmt.Errorf("s3store: stat %s: %s does not exist (EnsureBucket creates it): %w", key, s.desc, storage.ErrNoBucket)
			}
		}
		return storage.Info{}, err
	}
	return storage.Info{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: quote(oi.ETag)}, nil
}

// List implements storage.Store.
func (s *Store) List(ctx context.Context, prefix string, opts storage.ListOptions) iter.Seq2[storage.Info, error] {
	return func(yield func(storage.Info, error) bool) {
		if err := storage.CheckPrefix(prefix); err != nil {
			yield(storage.Info{}, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // stops minio-go's lister when the caller breaks
		for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{
			Prefix:     prefix,
			Recursive:  true,
			StartAfter: opts.StartAfter,
		}) {
			if oi.Err != nil {
				yield(storage.Info{}, s.wrap("list", prefix, oi.Err))
				return
			}
			if strings.HasSuffix(oi.Key, "/") {
				continue // a directory marker, not an object
			}
			if !yield(storage.Info{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified, ETag: quote(oi.ETag)}, nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(storage.Info{}, fmt.Errorf("s3store: list %s: %w", prefix, err))
		}
	}
}

// Delete implements storage.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := storage.CheckKey(key); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(s.wrap("delete", key, err), storage.ErrNotFound) {
		return s.wrap("delete", key, err)
	}
	return nil
}

// deleteBatch is how many keys one multi-object DELETE removes (the S3
// maximum).
const deleteBatch = 1000

// DeletePrefix implements storage.Store: a listing fed to multi-object
// deletes, one batch at a time. Objects put under prefix while it runs
// may stay.
func (s *Store) DeletePrefix(ctx context.Context, prefix string) error {
	if err := storage.CheckDirPrefix(prefix); err != nil {
		return err
	}
	after := ""
	for {
		keys, err := s.listBatch(ctx, prefix, after)
		if err != nil {
			return err
		}
		if len(keys) == 0 {
			return nil
		}
		if err := s.removeBatch(ctx, prefix, keys); err != nil {
			return err
		}
		after = keys[len(keys)-1]
	}
}

func (s *Store) listBatch(ctx context.Context, prefix, after string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var keys []string
	for oi := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{
		Prefix: prefix, Recursive: true, StartAfter: after, MaxKeys: deleteBatch,
	}) {
		if oi.Err != nil {
			return nil, s.wrap("delete", prefix, oi.Err)
		}
		keys = append(keys, oi.Key)
		if len(keys) == deleteBatch {
			break
		}
	}
	return keys, nil
}

func (s *Store) removeBatch(ctx context.Context, prefix string, keys []string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ch := make(chan minio.ObjectInfo, len(keys))
	for _, k := range keys {
		ch <- minio.ObjectInfo{Key: k}
	}
	close(ch)
	var first error
	for e := range s.client.RemoveObjects(ctx, s.bucket, ch, minio.RemoveObjectsOptions{}) {
		if first == nil && e.Err != nil && !errors.Is(s.wrap("", "", e.Err), storage.ErrNotFound) {
			first = s.wrap("delete", prefix+" ("+e.ObjectName+")", e.Err)
		}
	}
	if first == nil {
		first = ctx.Err()
	}
	return first
}

func quote(etag string) string {
	if etag == "" || strings.HasPrefix(etag, `"`) {
		return etag
	}
	return `"` + etag + `"`
}

// contentType is what an HTTP client fetching the object straight from
// the bucket is told.
func contentType(key string) string {
	if t := hlspath.ContentType(key); t != "" {
		return t
	}
	if t := mime.TypeByExtension(path.Ext(key)); t != "" {
		return t
	}
	return "application/octet-stream"
}
