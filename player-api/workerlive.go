package playerapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
)

// WorkerLive is the origin's side of remote live ladders
// (transcode/remote.LiveOrigin implements it; internal/nodeproto's
// livework.go has the protocol). node is the authenticated worker's id.
type WorkerLive interface {
	ClaimLive(ctx context.Context, w nodeproto.LiveWorker) (nodeproto.LiveAssignment, bool, error)
	ServeSource(ctx context.Context, node, assignment string, start func(), out *nodeproto.LiveWriter) error
	ReceiveRenditions(ctx context.Context, node, assignment string, body io.Reader) error
}

// streamedBody, as workerAuth's limit, says that the request's body is
// streamed: it is signed as nodeproto.StreamSHA256 and left to the handler.
const streamedBody = -1

func isWorkerLive(c *gin.Context) bool {
	return strings.HasPrefix(c.FullPath(), nodeproto.WorkerPrefix+"/live/")
}

func (a *API) registerWorkerLive(r gin.IRouter) {
	r.POST("/v1/worker/live/claim", a.workerLiveClaim)
	r.GET("/v1/worker/live/:assignment/source", a.workerLiveSource)
	r.POST("/v1/worker/live/:assignment/renditions", a.workerLiveRenditions)
}

// workerLiveAuth authenticates a live worker request (workerAuth) and
// checks the assignment's id. On failure it has answered.
func (a *API) workerLiveAuth(c *gin.Context, limit int64) (workerRequest, bool) {
	if a.workerLive == nil {
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "this origin hands out no live ladders to remote workers (transcode.remote is off)")
		return workerRequest{}, false
	}
	w, ok := a.workerAuth(c, limit)
	if !ok {
		return w, false
	}
	if as := c.Param("assignment"); as != "" && !ids.Valid(as) {
		WriteError(c, http.StatusNotFound, codeNotFound, "no such live assignment")
		return w, false
	}
	return w, true
}

func (a *API) workerLiveClaim(c *gin.Context) {
	w, ok := a.workerLiveAuth(c, nodeproto.MaxMessageBytes)
	if !ok {
		return
	}
	req, err := nodeproto.DecodeClaim(w.body)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	lw := nodeproto.LiveWorker{ID: w.node.ID, Region: w.node.Region, LastSeen: w.node.LastSeen, VODBusy: req.VODBusy}
	if w.node.Load.Transcode != nil {
		lw.Ladders = w.node.Load.Transcode.Ladders
	}
	as, found, err := a.workerLive.ClaimLive(c.Request.Context(), lw)
	a.answerClaim(c, as, found, err)
}

// workerLiveSource streams the assignment's source body for as long as the
// stream lasts.
func (a *API) workerLiveSource(c *gin.Context) {
	w, ok := a.workerLiveAuth(c, 0)
	if !ok {
		return
	}
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetWriteDeadline(time.Time{}) // as long as the stream
	started := false
	start := func() {
		started = true
		c.Header("Content-Type", "application/octet-stream")
		c.Header("Cache-Control", "no-store")
		c.Status(http.StatusOK)
		c.Writer.WriteHeaderNow()
		c.Writer.Flush()
	}
	out := nodeproto.NewLiveWriter(c.Writer, func() error { c.Writer.Flush(); return nil })
	err := a.workerLive.ServeSource(c.Request.Context(), w.node.ID, c.Param("assignment"), start, out)
	if err != nil && !started {
		a.workerError(c, err)
		return
	}
	if err != nil && c.Request.Context().Err() == nil {
		a.log.Info("a live source body to a worker ended early", "node", w.node.ID, "err", err)
	}
}

// workerLiveRenditions receives the assignment's renditions body.
func (a *API) workerLiveRenditions(c *gin.Context) {
	w, ok := a.workerLiveAuth(c, streamedBody)
	if !ok {
		return
	}
	rc := http.NewResponseController(c.Writer)
	_ = rc.SetReadDeadline(time.Time{}) // as long as the stream
	err := a.workerLive.ReceiveRenditions(c.Request.Context(), w.node.ID, c.Param("assignment"), c.Request.Body)
	if err != nil {
		var we *nodeproto.WorkerError
		if errors.As(err, &we) || c.Request.Context().Err() == nil {
			a.workerError(c, err)
		}
		return
	}
	c.Status(http.StatusNoContent)
}
