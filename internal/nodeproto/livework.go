package nodeproto

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

// Remote live ladders (liveframe.go has the bodies' framing):
//
//	POST /v1/worker/live/claim                        {}             -> 200 LiveAssignment, 204 none within the wait
//	GET  /v1/worker/live/<assignment>/source                         -> 200 the source body (LiveSource, video, ticks)
//	POST /v1/worker/live/<assignment>/renditions      the renditions body (LiveRenditions, the rungs) -> 204
//
// The claim is a long poll: the origin answers when it hands the worker a
// stream's ladder, or 204 after a bounded wait, and the worker asks again.
// The source body goes on as long as the stream (the origin ends it when
// the source ends); the renditions body is streamed back as it is encoded,
// so its SHA-256 and size cannot be signed beforehand: its request is
// signed with StreamSHA256 and size -1, and the assignment id, handed only
// to the claiming node, binds it to that node.

// StreamSHA256 stands for the SHA-256 in the signature of a request whose
// body is streamed (its size is signed as -1).
const StreamSHA256 = "stream"

// LiveWorker is what the origin knows of a worker that claims live
// ladders (its node record).
type LiveWorker struct {
	ID     string
	Region string
	// Ladders is how many ladders it advertised (its self-benchmark);
	// VODBusy how many of them its VOD jobs take (its claim says).
	Ladders  int
	VODBusy  int
	LastSeen time.Time
}

// LiveAssignment is a claimed live ladder.
type LiveAssignment struct {
	// Assignment names it in the worker's requests about it.
	Assignment string `json:"assignment"`
	// Stream is the live stream's id.
	Stream string `json:"stream"`
}

// Check checks an assignment's fields.
func (a LiveAssignment) Check() error {
	if !ids.Valid(a.Assignment) || !ids.Valid(a.Stream) {
		return fmt.Errorf("the origin answered an unusable live assignment %q", clipMessage(a.Assignment))
	}
	return nil
}

func livePath(assignment, rest string) string {
	return WorkerPrefix + "/live/" + url.PathEscape(assignment) + rest
}

// ClaimLive asks origin for a live ladder; ok is false when none came
// within the origin's wait.
func (c *Client) ClaimLive(ctx context.Context, origin string, req ClaimRequest, hc *http.Client) (a LiveAssignment, ok bool, err error) {
	if hc == nil {
		hc = c.transfer()
	}
	status, err := c.workerJSON(ctx, hc, strings.TrimSuffix(origin, "/"), WorkerPrefix+"/live/claim", req, &a)
	if err != nil || status == http.StatusNoContent {
		return LiveAssignment{}, false, err
	}
	if err := a.Check(); err != nil {
		return LiveAssignment{}, false, err
	}
	return a, true, nil
}

// DefaultLiveSourceIdle is how long a read of a live source body may wait
// for data before the worker gives the ladder up (Client.LiveSourceIdle). The
// origin sends a tick every second while the stream's source is idle, so
// silence means the origin, or the way to it, is gone: across a network
// partition TCP alone would take minutes to say so, and the worker's
// ladder slot would stay taken until then.
const DefaultLiveSourceIdle = 15 * time.Second

// ErrLiveSourceIdle is the error of a live source body that stayed silent
// for the idle limit.
var ErrLiveSourceIdle = errors.New("nothing came on the live source within the idle limit: the origin or the network to it is gone")

// OpenLiveSource opens the source body of assignment: the caller reads it
// (NewLiveReader) and closes it. Once the answer, or a read, has waited
// the client's LiveSourceIdle for data, the request is cancelled and
// reads fail with ErrLiveSourceIdle.
func (c *Client) OpenLiveSource(ctx context.Context, origin, assignment string) (io.ReadCloser, error) {
	idle := c.LiveSourceIdle
	if idle <= 0 {
		idle = DefaultLiveSourceIdle
	}
	ctx, cancel := context.WithCancelCause(ctx)
	after := c.afterFunc
	if after == nil {
		after = func(d time.Duration, f func()) idleTimer { return time.AfterFunc(d, f) }
	}
	timer := after(idle, func() { cancel(fmt.Errorf("%w (%s)", ErrLiveSourceIdle, idle)) })
	resp, err := c.signedDo(ctx, c.transfer(), http.MethodGet, origin, livePath(assignment, "/source"), nil, 0, "", nil)
	if err != nil {
		timer.Stop()
		if cause := context.Cause(ctx); errors.Is(cause, ErrLiveSourceIdle) {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	timer.Stop() // armed again while a read waits
	if resp.StatusCode != http.StatusOK {
		defer cancel(nil)
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, workerError(resp.StatusCode, data)
	}
	return &idleBody{body: resp.Body, ctx: ctx, cancel: cancel, timer: timer, idle: idle}, nil
}

// idleTimer is a *time.Timer made by time.AfterFunc (tests fire their own).
type idleTimer interface {
	Reset(time.Duration) bool
	Stop() bool
}

// idleBody is a live source body whose request is cancelled once a read
// has waited idle for data: the timer runs only while a read waits, so a
// worker slow to read (its encoder, its upload) is not taken for a silent
// origin.
type idleBody struct {
	body   io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  idleTimer
	idle   time.Duration
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.body.Read(p)
	b.timer.Stop()
	if err != nil && !errors.Is(err, io.EOF) {
		if cause := context.Cause(b.ctx); errors.Is(cause, ErrLiveSourceIdle) {
			err = cause
		}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.body.Close()
	b.cancel(nil)
	return err
}

// PostLiveRenditions streams body (a renditions body) to origin as
// assignment's renditions, until body ends.
func (c *Client) PostLiveRenditions(ctx context.Context, origin, assignment string, body io.Reader) error {
	resp, err := c.signedDo(ctx, c.transfer(), http.MethodPost, origin, livePath(assignment, "/renditions"), body, -1, StreamSHA256,
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
