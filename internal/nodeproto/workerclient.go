package nodeproto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/internal/storage"
)

// The worker's side of the worker protocol (worker.go). A claim goes to
// the origins in the client's order (failing over like joins and
// heartbeats); everything about a claimed job goes to the origin that
// answered the claim, which keeps the job's uploads until it completes.

// ErrJobGone is matched (errors.Is) by the error of a request about a job
// the node no longer holds (410): the worker stops and drops its work.
var ErrJobGone = errors.New("the origin took this job away (another worker holds it now, or the video was deleted)")

// CheckWorkerOrigin checks an origin URL a remote worker talks to: https,
// or plain http to a loopback host only (localhost, 127.0.0.0/8, ::1). A
// worker sends its node token and its work to the origin and takes jobs
// that name its files from it: over plain http anyone on the way could
// read the one and forge the other.
func CheckWorkerOrigin(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("origin URL %q: %w", s, err)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || (net.ParseIP(h) != nil && net.ParseIP(h).IsLoopback()) {
			return nil
		}
	}
	return fmt.Errorf("origin URL %q: a remote worker talks to its origins over https:// only (plain http:// to a loopback address is allowed, for tests and a worker beside its origin)", s)
}

// WorkerError is an origin's JSON error answer to a worker request.
type WorkerError struct {
	Status  int
	Code    string
	Message string
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("origin answered %d %s: %s", e.Status, e.Code, e.Message)
}

// Is makes a 410 match ErrJobGone, a refusal of the node ErrRefused, and a
// node the origin does not know ErrUnknownNode.
func (e *WorkerError) Is(target error) bool {
	switch target {
	case ErrJobGone:
		return e.Status == http.StatusGone
	case ErrRefused:
		return e.Status == http.StatusUnauthorized || (e.Status == http.StatusForbidden && e.Code != CodeNotYourJob)
	case ErrUnknownNode:
		return e.Status == http.StatusNotFound && e.Code == "unknown_node"
	}
	return false
}

// Permanent tells whether retrying the same request cannot help.
func (e *WorkerError) Permanent() bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusRequestTimeout && e.Status != http.StatusTooManyRequests
}

func (c *Client) now() time.Time { return time.Now() }

func (c *Client) transfer() *http.Client {
	if c.TransferHTTP != nil {
		return c.TransferHTTP
	}
	return http.DefaultClient
}

func (c *Client) short() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// signedDo sends a signed request to origin (a base URL) for path, with
// body (size bytes, hex SHA-256 sum; nil for none) and the extra headers.
func (c *Client) signedDo(ctx context.Context, hc *http.Client, method, origin, path string, body io.Reader, size int64, sum string, hdr http.Header) (*http.Response, error) {
	u, err := url.Parse(strings.TrimSuffix(origin, "/") + path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.ContentLength = size
	} else {
		sum, size = EmptySHA256, 0
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	SignWorkerRequest(req, c.Key, u.RequestURI(), sum, size, c.now())
	return hc.Do(req)
}

// workerJSON posts in as JSON to origin's path with hc and decodes a
// 200/201 answer into out (nil: none expected). It returns the status.
func (c *Client) workerJSON(ctx context.Context, hc *http.Client, origin, path string, in, out any) (int, error) {
	body, err := json.Marshal(in)
	if err != nil {
		return 0, err
	}
	sum := sha256.Sum256(body)
	resp, err := c.signedDo(ctx, hc, http.MethodPost, origin, path, bytes.NewReader(body), int64(len(body)),
		hex.EncodeToString(sum[:]), http.Header{"Content-Type": {"application/json"}})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated, http.StatusAccepted:
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return resp.StatusCode, fmt.Errorf("the origin's answer to %s: %w", path, err)
			}
		}
		return resp.StatusCode, nil
	case http.StatusNoContent:
		return resp.StatusCode, nil
	}
	return resp.StatusCode, workerError(resp.StatusCode, data)
}

func workerError(status int, data []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) != nil || e.Error.Code == "" {
		e.Error.Code, e.Error.Message = http.StatusText(status), errorMessage(data)
	}
	return &WorkerError{Status: status, Code: e.Error.Code, Message: e.Error.Message}
}

// Claim asks the origins, in the client's order, for a job: ok is false
// when none has one now. origin is the base URL of the origin that handed
// the job out: every request about the job goes to it.
func (c *Client) Claim(ctx context.Context) (job WorkerJob, origin string, ok bool, err error) {
	origins := []string{strings.TrimSuffix(c.OriginURL, "/")}
	if c.Origins != nil {
		origins = c.Origins.Attempts()
	}
	for i, base := range origins {
		var status int
		status, err = c.workerJSON(ctx, c.short(), base, WorkerPrefix+"/claim", ClaimRequest{}, &job)
		failover := err != nil && ctx.Err() == nil && (status == 0 || originset.FailoverStatus(status))
		if c.Origins != nil && ctx.Err() == nil {
			if failover {
				c.Origins.Failed(base)
			} else {
				c.Origins.Succeeded(base)
			}
		}
		if failover && i < len(origins)-1 {
			continue
		}
		if err != nil || status == http.StatusNoContent {
			return WorkerJob{}, "", false, err
		}
		if perr := job.Check(); perr != nil {
			return WorkerJob{}, "", false, fmt.Errorf("the origin answered an unusable job %q: %w", clipMessage(job.Job), perr)
		}
		return job, base, true, nil
	}
	return WorkerJob{}, "", false, err
}

func jobPath(job string, rest string) string {
	return WorkerPrefix + "/jobs/" + url.PathEscape(job) + rest
}

// ReportProgress reports the progress (0 to 100) of job to origin; the
// error matches ErrJobGone when the node no longer holds it.
func (c *Client) ReportProgress(ctx context.Context, origin, job string, progress int) error {
	_, err := c.workerJSON(ctx, c.short(), origin, jobPath(job, "/progress"), Progress{Progress: progress}, nil)
	return err
}

// ReportFailure reports that job failed.
func (c *Client) ReportFailure(ctx context.Context, origin, job string, f Failure) (Failed, error) {
	var out Failed
	_, err := c.workerJSON(ctx, c.short(), origin, jobPath(job, "/fail"), f, &out)
	return out, err
}

// Complete sends the output manifest of job m.Job: the origin checks the
// output and publishes it. A refusal is a *WorkerError with Code
// CodeOutputRejected.
func (c *Client) Complete(ctx context.Context, origin string, m Complete) (Completed, error) {
	// The origin hashes, checks and publishes everything before it
	// answers, or answers CompletionChecking (202) after a while, the
	// checks going on: the manifest is sent again, to wait for them. With
	// the transfer client, up to CompleteTimeout in all; the worker's
	// shutdown abandons the wait (the origin finishes the checks
	// meanwhile).
	ctx, cancel := context.WithTimeout(ctx, CompleteTimeout)
	defer cancel()
	for {
		var out Completed
		status, err := c.workerJSON(ctx, c.transfer(), origin, jobPath(m.Job, "/complete"), m, &out)
		if err != nil || status != http.StatusAccepted {
			return out, err
		}
		// The origin waited before it answered: a short pause will do.
		t := time.NewTimer(completePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return Completed{}, ctx.Err()
		case <-t.C:
		}
	}
}

// completePoll is the pause before a completion still being checked is
// sent again.
const completePoll = 250 * time.Millisecond

// CompleteTimeout bounds the wait for the origin's answer to a completion
// (its checks of a long video's output included).
const CompleteTimeout = time.Hour

// DefaultMaxSourceBytes is the largest source a worker downloads when its
// Client says none (that of max_upload_bytes' default).
const DefaultMaxSourceBytes = 20 << 30

// PutFile uploads the local file at file as path of job's output, with
// its size and SHA-256 (sum, hex) declared and signed.
func (c *Client) PutFile(ctx context.Context, origin, job, path, file, sum string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	resp, err := c.signedDo(ctx, c.transfer(), http.MethodPut, origin, jobPath(job, "/files/"+path), f, st.Size(), sum,
		http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK {
		return nil
	}
	return workerError(resp.StatusCode, data)
}

// FetchSource downloads job's source from origin into the file at dst,
// resuming what an earlier call left there, and checks that it holds
// job.SourceBytes bytes. With a presigned URL it tries that first, then the
// origin.
//
// The node's token and signature go to origin only: an absolute source URL
// on another host (scheme, host and port) is fetched without them, like a
// presigned one. A source larger than MaxSourceBytes, or than the free
// room of dst's file system, is refused before any byte is fetched.
func (c *Client) FetchSource(ctx context.Context, origin string, job WorkerJob, dst string) error {
	limit := c.MaxSourceBytes
	if limit <= 0 {
		limit = DefaultMaxSourceBytes
	}
	if job.SourceBytes > limit {
		return fmt.Errorf("the source is %d bytes, more than the %d this worker takes (max_upload_bytes)", job.SourceBytes, limit)
	}
	if err := checkRoom(dst, job.SourceBytes); err != nil {
		return err
	}
	unsigned := func(u string) func(off int64) (*http.Response, error) {
		return func(off int64) (*http.Response, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return nil, err
			}
			setRange(req, off)
			return c.transfer().Do(req)
		}
	}
	if job.SourcePresignedURL != "" {
		err := c.fetchInto(ctx, dst, job.SourceBytes, unsigned(job.SourcePresignedURL))
		if err == nil || ctx.Err() != nil {
			return err
		}
		// The store may be out of the worker's reach: the origin then.
	}
	base, path := origin, job.SourceURL
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		u, err := url.Parse(path)
		if err != nil {
			return fmt.Errorf("the job's source_url: %w", err)
		}
		if !sameOrigin(u, origin) {
			return c.fetchInto(ctx, dst, job.SourceBytes, unsigned(u.String()))
		}
		base, path = u.Scheme+"://"+u.Host, u.RequestURI()
	}
	return c.fetchInto(ctx, dst, job.SourceBytes, func(off int64) (*http.Response, error) {
		h := http.Header{}
		if off > 0 {
			h.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		}
		return c.signedDo(ctx, c.transfer(), http.MethodGet, base, path, nil, 0, "", h)
	})
}

// sameOrigin tells whether u has the scheme, host and port of base.
func sameOrigin(u *url.URL, base string) bool {
	b, err := url.Parse(base)
	if err != nil {
		return false
	}
	port := func(u *url.URL) string {
		if p := u.Port(); p != "" {
			return p
		}
		if strings.EqualFold(u.Scheme, "https") {
			return "443"
		}
		return "80"
	}
	return strings.EqualFold(u.Scheme, b.Scheme) && strings.EqualFold(u.Hostname(), b.Hostname()) && port(u) == port(b)
}

// checkRoom checks that the file system of the file dst has room for
// size bytes more than dst holds now.
func checkRoom(dst string, size int64) error {
	var have int64
	if st, err := os.Stat(dst); err == nil {
		have = st.Size()
	}
	free, err := storage.FreeBytes(filepath.Dir(dst))
	if err != nil {
		return fmt.Errorf("checking the free disk for the source: %w", err)
	}
	if need := size - have; need > 0 && need > free {
		return fmt.Errorf("the source is %d bytes: the disk of %s has %d free", size, filepath.Dir(dst), free)
	}
	return nil
}

// contentRangeStart is the first byte of a 206's Content-Range
// ("bytes <first>-<last>/<size>"), -1 when it is not that.
func contentRangeStart(h string) int64 {
	rest, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return -1
	}
	first, _, ok := strings.Cut(rest, "-")
	n, err := strconv.ParseInt(first, 10, 64)
	if !ok || err != nil || n < 0 {
		return -1
	}
	return n
}

func setRange(req *http.Request, off int64) {
	if off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
	}
}

// fetchInto appends to dst what get(offset) answers from the current size
// of dst on, until dst holds size bytes.
func (c *Client) fetchInto(ctx context.Context, dst string, size int64, get func(off int64) (*http.Response, error)) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	off, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if off > size {
		if err := f.Truncate(0); err != nil {
			return err
		}
		off = 0
	}
	if off == size && size > 0 {
		return nil
	}
	resp, err := get(off)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent && off > 0:
		if got := contentRangeStart(resp.Header.Get("Content-Range")); got != off {
			// Not the bytes asked for: the next try starts over.
			if err := f.Truncate(0); err != nil {
				return err
			}
			return fmt.Errorf("the source's server answered the range from %d with Content-Range %q: starting over",
				off, clipMessage(resp.Header.Get("Content-Range")))
		}
	case resp.StatusCode == http.StatusOK:
		// The whole object: start over.
		if off > 0 {
			if err := f.Truncate(0); err != nil {
				return err
			}
			if off, err = f.Seek(0, io.SeekStart); err != nil {
				return err
			}
		}
	default:
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return workerError(resp.StatusCode, data)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, size-off+1))
	if err != nil {
		return fmt.Errorf("downloading the source: %w", err)
	}
	if got := off + n; got != size {
		return fmt.Errorf("the source is %d bytes, the job says %d", got, size)
	}
	return f.Sync()
}
