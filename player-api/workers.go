package playerapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
)

// WorkerJobs is the origin's side of remote VOD workers' jobs (the worker
// protocol, see internal/nodeproto's worker.go); transcode/remote.Origin
// implements it. node is the id of the worker asking, authenticated by the
// API. Answers of the protocol other than success are
// *nodeproto.WorkerError (a status, a code, a message); other errors are
// the store's.
type WorkerJobs interface {
	Claim(ctx context.Context, node string) (nodeproto.WorkerJob, bool, error)
	OpenSource(ctx context.Context, node string, ref nodeproto.JobRef, rng storage.Range) (io.ReadCloser, storage.Info, error)
	Progress(ctx context.Context, node string, ref nodeproto.JobRef, progress int) error
	PutFile(ctx context.Context, node string, ref nodeproto.JobRef, path string, size int64, sum string, body io.Reader) error
	Complete(ctx context.Context, node string, ref nodeproto.JobRef, m nodeproto.Complete) error
	Fail(ctx context.Context, node string, ref nodeproto.JobRef, f nodeproto.Failure) (nodeproto.Failed, error)
}

func (a *API) registerWorkers(r gin.IRouter) {
	// Workers authenticate with a node token and their key, not an API key.
	r.POST("/v1/worker/claim", a.workerClaim)
	r.GET("/v1/worker/jobs/:job/source", a.workerSource)
	r.POST("/v1/worker/jobs/:job/progress", a.workerProgress)
	r.PUT("/v1/worker/jobs/:job/files/*path", a.workerPutFile)
	r.POST("/v1/worker/jobs/:job/complete", a.workerComplete)
	r.POST("/v1/worker/jobs/:job/fail", a.workerFail)
	a.registerWorkerLive(r)
}

// workerRequest is an authenticated worker request.
type workerRequest struct {
	node routing.Node
	ref  nodeproto.JobRef // for the routes of a job
	body []byte           // a POST's
}

// workerAuth authenticates a worker request: the node token, then the
// node (joined, a worker, not quarantined, joined with this token or the
// admin key) and its signature over the request (a POST's body read, at
// most limit bytes; a PUT's declared hash and length), within
// nodeproto.MaxSkew of the origin's clock. For a job's route it parses
// the job. On failure it has answered.
func (a *API) workerAuth(c *gin.Context, limit int64) (workerRequest, bool) {
	if a.workerJobs == nil && !isWorkerLive(c) {
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "this origin hands out no VOD jobs to remote workers")
		return workerRequest{}, false
	}
	tokenID, ok := a.nodeToken(c)
	if !ok {
		return workerRequest{}, false
	}
	return a.workerAuthToken(c, limit, tokenID)
}

// workerAuthToken is workerAuth once the node token (tokenID) is checked.
func (a *API) workerAuthToken(c *gin.Context, limit int64, tokenID string) (workerRequest, bool) {
	var w workerRequest
	claimed, err := nodeproto.ParseNodeHeader(c.Request.Header)
	if err != nil || c.GetHeader(nodeproto.SignatureHeader) == "" {
		msg := "a worker request is signed with the node key: send " + nodeproto.NodeHeader + " and " + nodeproto.SignatureHeader
		if err != nil {
			msg = err.Error() + "; " + msg
		}
		unauthorized(c, msg)
		return w, false
	}
	ctx := c.Request.Context()
	n, err := a.store.GetNode(ctx, claimed.ID)
	if errors.Is(err, routing.ErrNotFound) {
		WriteError(c, http.StatusNotFound, "unknown_node", nodeNotFound+": join again")
		return w, false
	}
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return w, false
	}
	pub, err := nodeproto.ParsePublicKey(n.PublicKey)
	if err != nil {
		a.fail(c, fmt.Errorf("node %s has a corrupt key: %w", n.ID, err), nodeNotFound)
		return w, false
	}
	sum, size := nodeproto.EmptySHA256, int64(0)
	switch {
	case limit == streamedBody:
		sum, size = nodeproto.StreamSHA256, -1 // read by the handler
	case c.Request.Method == http.MethodPost:
		if w.body, err = readLimited(c, limit); err != nil {
			bodyFailed(c, err, fmt.Sprintf("the request body is larger than %d bytes", limit))
			return w, false
		}
		h := sha256.Sum256(w.body)
		sum, size = hex.EncodeToString(h[:]), int64(len(w.body))
	case c.Request.Method == http.MethodPut:
		if size = c.Request.ContentLength; size < 0 {
			WriteError(c, http.StatusLengthRequired, codeInvalidRequest, "send the file with its Content-Length (it is signed)")
			return w, false
		}
		sum = c.GetHeader(nodeproto.ContentSHA256Header)
	}
	// Only the key holder speaks for the node, whatever token it shows.
	if err := claimed.VerifyWorkerRequest(pub, c.Request.Method, c.Request.URL.RequestURI(), sum, size, c.GetHeader(nodeproto.SignatureHeader)); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error()+": a worker signs every request with its own key (nodeproto.WorkerMessage)")
		return w, false
	}
	if err := nodeproto.CheckTime(claimed.Time, time.Now()); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error())
		return w, false
	}
	switch {
	case tokenID != n.TokenID && tokenID != routing.AdminTokenID:
		WriteError(c, http.StatusForbidden, "forbidden", "this node joined with another token")
		return w, false
	case n.Role != nodeproto.RoleWorker:
		WriteError(c, http.StatusForbidden, "forbidden", `this node joined as an `+n.Role+`: only nodes that joined with role "worker" take jobs`)
		return w, false
	case n.Quarantine != nil:
		WriteError(c, http.StatusForbidden, "quarantined", "this node is quarantined ("+n.Quarantine.Reason+"): it takes no jobs until an operator releases it")
		return w, false
	}
	w.node = n
	if job := c.Param("job"); job != "" {
		if w.ref, err = nodeproto.ParseJobRef(job); err != nil {
			WriteError(c, http.StatusNotFound, codeNotFound, err.Error())
			return w, false
		}
	}
	return w, true
}

// workerFail answers an error of the worker protocol.
func (a *API) workerError(c *gin.Context, err error) {
	var we *nodeproto.WorkerError
	switch {
	case errors.As(err, &we):
		WriteError(c, we.Status, we.Code, we.Message)
	case errors.Is(err, storage.ErrNotFound):
		WriteError(c, http.StatusNotFound, codeNotFound, "the video's source is not in the media store")
	case errors.Is(err, storage.ErrInvalidRange):
		WriteError(c, http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable", "the range starts at or after the end of the source")
	default:
		a.fail(c, err, "no such job")
	}
}

func (a *API) workerClaim(c *gin.Context) {
	w, ok := a.workerAuth(c, nodeproto.MaxMessageBytes)
	if !ok {
		return
	}
	if _, err := nodeproto.DecodeClaim(w.body); err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	job, found, err := a.workerJobs.Claim(c.Request.Context(), w.node.ID)
	a.answerClaim(c, job, found, err)
}

// answerClaim answers a claim (a VOD job's or a live ladder's): what was
// claimed, 204 when nothing was, or the error.
func (a *API) answerClaim(c *gin.Context, claimed any, found bool, err error) {
	switch {
	case err != nil:
		a.workerError(c, err)
	case !found:
		c.Status(http.StatusNoContent)
	default:
		c.JSON(http.StatusOK, claimed)
	}
}

// workerSource serves the job's source, one range at a time (a download
// that broke resumes with Range: bytes=<offset>-).
func (a *API) workerSource(c *gin.Context) {
	w, ok := a.workerAuth(c, 0)
	if !ok {
		return
	}
	rng, partial, err := singleRange(c.GetHeader("Range"))
	if err != nil {
		WriteError(c, http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable", err.Error())
		return
	}
	rc, info, err := a.workerJobs.OpenSource(c.Request.Context(), w.node.ID, w.ref, rng)
	if err != nil {
		a.workerError(c, err)
		return
	}
	defer rc.Close()
	off, n, err := rng.Resolve(info.Size)
	if err != nil {
		a.workerError(c, err)
		return
	}
	h := c.Writer.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, info.Size))
	}
	c.Status(status)
	if _, err := io.CopyN(c.Writer, rc, n); err != nil && c.Request.Context().Err() == nil {
		a.log.Warn("sending a source to a worker", "node", w.node.ID, "video", w.ref.VideoID, "err", err)
	}
}

// singleRange reads a Range header of one range, "bytes=<first>-" or
// "bytes=<first>-<last>" ("" is the whole object, partial false).
func singleRange(h string) (rng storage.Range, partial bool, err error) {
	if h == "" {
		return storage.Range{}, false, nil
	}
	spec, ok := strings.CutPrefix(h, "bytes=")
	first, last, dash := strings.Cut(spec, "-")
	if !ok || !dash || strings.Contains(spec, ",") {
		return storage.Range{}, false, errors.New(`one range only: "bytes=<first>-" or "bytes=<first>-<last>"`)
	}
	f, err := strconv.ParseInt(first, 10, 64)
	if err != nil || f < 0 {
		return storage.Range{}, false, errors.New("the range's first byte must be a number")
	}
	rng.Offset = f
	if last != "" {
		l, err := strconv.ParseInt(last, 10, 64)
		if err != nil || l < f {
			return storage.Range{}, false, errors.New("the range's last byte must be a number not before its first")
		}
		rng.Length = l - f + 1
	}
	return rng, true, nil
}

func (a *API) workerProgress(c *gin.Context) {
	w, ok := a.workerAuth(c, nodeproto.MaxMessageBytes)
	if !ok {
		return
	}
	p, err := nodeproto.DecodeProgress(w.body)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	if err := a.workerJobs.Progress(c.Request.Context(), w.node.ID, w.ref, p.Progress); err != nil {
		a.workerError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (a *API) workerPutFile(c *gin.Context) {
	w, ok := a.workerAuth(c, 0)
	if !ok {
		return
	}
	path := strings.TrimPrefix(c.Param("path"), "/")
	// An escape in the path ("%2e%2e", "%2f") is never one of an output's
	// names; the names are checked again by the origin's side.
	if c.Request.URL.RawPath != "" || strings.Contains(c.Request.URL.Path, "%") {
		WriteError(c, http.StatusBadRequest, nodeproto.CodeBadOutputPath, "the file's path must be plain (no escapes)")
		return
	}
	size, sum := c.Request.ContentLength, c.GetHeader(nodeproto.ContentSHA256Header)
	if err := a.workerJobs.PutFile(c.Request.Context(), w.node.ID, w.ref, path, size, sum, c.Request.Body); err != nil {
		a.workerError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

// maxCompletions bounds the completion bodies (up to
// nodeproto.MaxCompleteBytes each) this origin reads and decodes at once:
// more are answered 503, to send again later. Waiting for the output's
// checks takes no slot (the origin queues those runs itself). The body
// is read before its signature can be checked, so the requests of one
// node token take at most maxCompletionsPerToken of them (a token's
// holder cannot take every slot from the others), and each body must
// come at readLimited's pace.
const (
	maxCompletions         = 8
	maxCompletionsPerToken = maxCompletions / 2
)

func (a *API) workerComplete(c *gin.Context) {
	m, w, ok := a.completionBody(c)
	if !ok {
		return
	}
	if err := a.workerJobs.Complete(c.Request.Context(), w.node.ID, w.ref, m); err != nil {
		if errors.Is(err, nodeproto.ErrStillChecking) {
			c.JSON(http.StatusAccepted, nodeproto.Completed{Status: nodeproto.CompletionChecking})
			return
		}
		a.workerError(c, err)
		return
	}
	c.JSON(http.StatusOK, nodeproto.Completed{Status: routing.VideoReady})
}

// completionBody reads, authenticates and decodes a completion request's
// body within one of maxCompletions slots, or answers the request.
func (a *API) completionBody(c *gin.Context) (nodeproto.Complete, workerRequest, bool) {
	if a.workerJobs == nil {
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "this origin hands out no VOD jobs to remote workers")
		return nodeproto.Complete{}, workerRequest{}, false
	}
	tokenID, ok := a.nodeToken(c)
	if !ok {
		return nodeproto.Complete{}, workerRequest{}, false
	}
	busy := func() (nodeproto.Complete, workerRequest, bool) {
		c.Header("Retry-After", "5")
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "the origin is reading as many completions as it can at once: send the completion again in a few seconds")
		return nodeproto.Complete{}, workerRequest{}, false
	}
	a.completionsMu.Lock()
	if a.completionsBy[tokenID] >= maxCompletionsPerToken {
		a.completionsMu.Unlock()
		return busy()
	}
	a.completionsBy[tokenID]++
	a.completionsMu.Unlock()
	defer func() {
		a.completionsMu.Lock()
		if a.completionsBy[tokenID]--; a.completionsBy[tokenID] == 0 {
			delete(a.completionsBy, tokenID)
		}
		a.completionsMu.Unlock()
	}()
	select {
	case a.completions <- struct{}{}:
		defer func() { <-a.completions }()
	default:
		return busy()
	}
	w, ok := a.workerAuthToken(c, nodeproto.MaxCompleteBytes, tokenID)
	if !ok {
		return nodeproto.Complete{}, workerRequest{}, false
	}
	m, err := nodeproto.DecodeComplete(w.body)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return nodeproto.Complete{}, workerRequest{}, false
	}
	w.body = nil // decoded: not kept while the checks are waited for
	return m, w, true
}

func (a *API) workerFail(c *gin.Context) {
	w, ok := a.workerAuth(c, nodeproto.MaxMessageBytes)
	if !ok {
		return
	}
	f, err := nodeproto.DecodeFailure(w.body)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	out, err := a.workerJobs.Fail(c.Request.Context(), w.node.ID, w.ref, f)
	if err != nil {
		a.workerError(c, err)
		return
	}
	c.JSON(http.StatusOK, out)
}
