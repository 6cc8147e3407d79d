package playerapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// VideoStore is the part of the Store that keeps videos.
type VideoStore interface {
	CreateVideo(ctx context.Context, spec routing.VideoSpec) (routing.Video, error)
	GetVideo(ctx context.Context, id string) (routing.Video, error)
	ListVideos(ctx context.Context, cursor string, limit int) (routing.VideoPage, error)
	UpdateVideo(ctx context.Context, id string, u routing.VideoUpdate) (routing.Video, error)
	DeleteVideo(ctx context.Context, id string) error
	BeginUpload(ctx context.Context, id, how string) error
	RenewUpload(ctx context.Context, id, how string) (bool, error)
	AbortUpload(ctx context.Context, id, how string) error
	SourceReceived(ctx context.Context, id, how string, info routing.SourceInfo) error
	FailVideo(ctx context.Context, id, how, msg string) error
	// VideoFields is the record as Redis holds it (for its copy on disk).
	VideoFields(ctx context.Context, id string) (map[string]string, error)
}

// Videos is what the API needs of the media side for uploads.
type Videos interface {
	// Probe checks that the file at path is a usable video and returns its
	// duration and picture size; its error is a message for people ("not
	// a video file: ...").
	Probe(path string) (routing.SourceInfo, error)
	// FetchSource returns a local file holding video id's stored source
	// (a download when the store is remote) and what removes it.
	FetchSource(ctx context.Context, id string) (path string, done func(), err error)
	// KeepSource moves the local file at file into the media store as the
	// source of video id.
	KeepSource(ctx context.Context, id, file string) error
	// SourceSize is the size of video id's stored source (an error
	// matching storage.ErrNotFound when there is none).
	SourceSize(ctx context.Context, id string) (int64, error)
	// RemoveVideo deletes every file of video id (source and outputs).
	RemoveVideo(ctx context.Context, id string) error
	// SaveRecord keeps a copy of video id's record next to its files, for
	// a Redis that loses its data.
	SaveRecord(id string, fields map[string]string) error
	// DropRecord removes that copy (the video was deleted meanwhile).
	DropRecord(id string) error
}

// DefaultMaxUploadBytes is the largest video source accepted when
// Config.MaxUploadBytes is zero (20 GiB).
const DefaultMaxUploadBytes = 20 << 30

const (
	videoNotFound = "no video with this id"

	codeConflict   = "conflict"
	codeNotAVideo  = "not_a_video"
	maxTitleLen    = 200
	defaultPage    = 20
	maxPage        = 100
	uploadDirPerms = 0o755
)

// videoJSON is the JSON form of a video.
type videoJSON struct {
	ID             string            `json:"id"`
	Title          string            `json:"title"`
	Status         string            `json:"status"`
	Progress       int               `json:"progress"`
	Error          string            `json:"error,omitempty"`
	Duration       *float64          `json:"duration"`
	Renditions     []renditionJSON   `json:"renditions"`
	Ladder         string            `json:"ladder,omitempty"`
	PlaybackPolicy string            `json:"playback_policy"`
	P2P            bool              `json:"p2p"`
	SourceBytes    int64             `json:"source_bytes,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	UpdatedAt      time.Time         `json:"updated_at"`
	Upload         *uploadJSON       `json:"upload,omitempty"`
	Playback       videoPlaybackJSON `json:"playback"`
	Attempts       int               `json:"attempts,omitempty"`
	// P2PStats is in the answers of GET (one and the list) only.
	P2PStats *p2pStatsJSON `json:"p2p_stats,omitempty"`
}

type renditionJSON struct {
	Name    string `json:"name"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
	Bitrate int    `json:"bitrate"`
}

type uploadJSON struct {
	// TusURL is the tus 1.0 creation endpoint; send the video id in the
	// Upload-Metadata header ("video_id <base64 id>").
	TusURL string `json:"tus_url"`
	// DirectURL takes the whole file in one PUT (raw body or multipart).
	DirectURL string `json:"direct_url"`
}

type videoPlaybackJSON struct {
	HLSURL        string `json:"hls_url"`
	ThumbnailURL  string `json:"thumbnail_url,omitempty"`
	StoryboardURL string `json:"storyboard_url,omitempty"`
}

type videoListJSON struct {
	Data       []videoJSON `json:"data"`
	NextCursor string      `json:"next_cursor,omitempty"`
}

func (a *API) videoJSON(v routing.Video) videoJSON {
	out := videoJSON{
		ID: v.ID, Title: v.Title, Status: v.Status, Progress: v.Progress, Error: v.Error,
		Renditions: []renditionJSON{}, Ladder: v.Ladder, PlaybackPolicy: v.PlaybackPolicy, P2P: !v.P2POff,
		SourceBytes: v.SourceBytes, CreatedAt: v.CreatedAt, UpdatedAt: v.UpdatedAt, Attempts: v.Attempts,
	}
	if v.Duration > 0 {
		d := v.Duration.Seconds()
		out.Duration = &d
	}
	for _, r := range v.Renditions {
		out.Renditions = append(out.Renditions, renditionJSON(r))
	}
	if v.Status == routing.VideoWaiting && !v.HasSource() {
		out.Upload = &uploadJSON{
			TusURL:    a.publicURL + uploadsPath,
			DirectURL: a.publicURL + "/v1/videos/" + v.ID + "/source",
		}
	}
	base := a.publicURL + "/hls/" + v.ID + "/"
	out.Playback.HLSURL = base + "master.m3u8"
	if v.Status == routing.VideoReady {
		if v.Poster {
			out.Playback.ThumbnailURL = base + "poster.jpg"
		}
		if v.Storyboard {
			out.Playback.StoryboardURL = base + "storyboard.vtt"
		}
	}
	return out
}

func (a *API) registerVideos(v1 gin.IRouter) {
	v1.POST("/videos", a.createVideo)
	v1.GET("/videos", a.listVideos)
	v1.GET("/videos/:id", a.getVideo)
	v1.PATCH("/videos/:id", a.updateVideo)
	v1.DELETE("/videos/:id", a.deleteVideo)
	v1.PUT("/videos/:id/source", a.putSource)
	a.registerUploads(v1)
}

// videoRequest is the body of POST and PATCH /v1/videos.
type videoRequest struct {
	Title          *string `json:"title"`
	Ladder         *string `json:"ladder"`
	PlaybackPolicy *string `json:"playback_policy"`
	P2P            *bool   `json:"p2p"`
}

// validTitle checks a video title ("" is allowed: an untitled video).
func validTitle(t string) (string, error) {
	t = strings.TrimSpace(t)
	if len([]rune(t)) > maxTitleLen {
		return "", fmt.Errorf(`"title" must be at most %d characters`, maxTitleLen)
	}
	if strings.IndexFunc(t, unicode.IsControl) >= 0 {
		return "", errors.New(`"title" must not contain control characters`)
	}
	return t, nil
}

// createVideo handles POST /v1/videos {"title", "ladder"?, "playback_policy"?}.
func (a *API) createVideo(c *gin.Context) {
	var req videoRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	spec := routing.VideoSpec{}
	if req.Title != nil {
		t, err := validTitle(*req.Title)
		if err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
			return
		}
		spec.Title = t
	}
	ladder, ok := validLadder(c, req.Ladder)
	if !ok {
		return
	}
	if ladder != nil {
		spec.Ladder = *ladder
	}
	if !validPlaybackPolicy(c, req.PlaybackPolicy) {
		return
	}
	if req.PlaybackPolicy != nil {
		spec.PlaybackPolicy = *req.PlaybackPolicy
	}
	spec.P2POff = req.P2P != nil && !*req.P2P
	v, err := a.store.CreateVideo(c.Request.Context(), spec)
	if err != nil {
		a.fail(c, err, videoNotFound)
		return
	}
	a.keepRecord(c.Request.Context(), v.ID)
	c.JSON(http.StatusCreated, a.videoJSON(v))
}

// listVideos handles GET /v1/videos?limit=&cursor=.
func (a *API) listVideos(c *gin.Context) {
	limit := defaultPage
	if s := c.Query("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf(`"limit" must be a number from 1 to %d`, maxPage))
			return
		}
		limit = n
	}
	page, err := a.store.ListVideos(c.Request.Context(), c.Query("cursor"), limit)
	if errors.Is(err, routing.ErrInvalidCursor) {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"cursor" is not one this API returned; start again without it`)
		return
	}
	if err != nil {
		a.fail(c, err, videoNotFound)
		return
	}
	idList := make([]string, len(page.Videos))
	for i, v := range page.Videos {
		idList[i] = v.ID
	}
	st, ok := a.p2pStats(c, idList, videoNotFound)
	if !ok {
		return
	}
	out := videoListJSON{Data: make([]videoJSON, 0, len(page.Videos)), NextCursor: page.Next}
	for _, v := range page.Videos {
		j := a.videoJSON(v)
		j.P2PStats = p2pStatsOf(st[v.ID])
		out.Data = append(out.Data, j)
	}
	c.JSON(http.StatusOK, out)
}

func videoID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, videoNotFound)
		return "", false
	}
	return id, true
}

// getVideo handles GET /v1/videos/:id.
func (a *API) getVideo(c *gin.Context) {
	id, ok := videoID(c)
	if !ok {
		return
	}
	v, err := a.store.GetVideo(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, videoNotFound)
		return
	}
	st, ok := a.p2pStats(c, []string{id}, videoNotFound)
	if !ok {
		return
	}
	j := a.videoJSON(v)
	j.P2PStats = p2pStatsOf(st[id])
	c.JSON(http.StatusOK, j)
}

// updateVideo handles PATCH /v1/videos/:id {"title"?, "p2p"?}.
func (a *API) updateVideo(c *gin.Context) {
	id, ok := videoID(c)
	if !ok {
		return
	}
	var req videoRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	if req.Ladder != nil || req.PlaybackPolicy != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `only "title" and "p2p" can be changed after a video is created`)
		return
	}
	if req.Title == nil && req.P2P == nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `nothing to change: send {"title": "..."} and/or {"p2p": true|false}`)
		return
	}
	u := routing.VideoUpdate{P2P: req.P2P}
	if req.Title != nil {
		t, err := validTitle(*req.Title)
		if err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
			return
		}
		u.Title = &t
	}
	v, err := a.store.UpdateVideo(c.Request.Context(), id, u)
	if err != nil {
		a.fail(c, err, videoNotFound)
		return
	}
	a.keepRecord(c.Request.Context(), id)
	c.JSON(http.StatusOK, a.videoJSON(v))
}

// deleteVideo handles DELETE /v1/videos/:id: the record, then the files.
func (a *API) deleteVideo(c *gin.Context) {
	id, ok := videoID(c)
	if !ok {
		return
	}
	if err := a.store.DeleteVideo(c.Request.Context(), id); err != nil {
		a.fail(c, err, videoNotFound)
		return
	}
	if err := a.videos.RemoveVideo(c.Request.Context(), id); err != nil {
		a.logServerError(c, http.StatusInternalServerError, fmt.Errorf("removing the files of deleted video %s: %w", id, err))
	}
	c.Status(http.StatusNoContent)
}

// putSource handles PUT /v1/videos/:id/source: the whole file as the raw
// body, or as the first file part of a multipart/form-data body. The file
// is streamed to local disk (never held in memory), probed, and then moved
// into the media store.
func (a *API) putSource(c *gin.Context) {
	id, ok := videoID(c)
	if !ok {
		return
	}
	if c.Request.ContentLength > a.maxUpload {
		a.tooLarge(c)
		return
	}
	ctx := c.Request.Context()
	// Each PUT holds the reservation under its own name: one that stalled
	// and lost it (its lease ran out) cannot end or overwrite the next.
	tag := ids.New()[:8]
	how := "put:" + tag
	if err := a.store.BeginUpload(ctx, id, how); err != nil {
		a.uploadRefused(c, err)
		return
	}
	// The lease is renewed while bytes arrive; losing it ends the upload
	// (a read blocked on the network included).
	rctx, lost := context.WithCancelCause(ctx)
	body := &countingBody{ReadCloser: c.Request.Body}
	c.Request.Body = body
	stopRenew := a.renewWhile(rctx, id, how, body.n.Load, func(cause error) {
		lost(cause)
		_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now())
	})
	var redisErr error
	file, n, err := a.receive(c.Request.WithContext(rctx), c, id, tag, func() bool {
		ok, rerr := a.store.RenewUpload(ctx, id, how)
		redisErr = rerr
		return ok && rerr == nil
	})
	stopRenew()
	if cause := context.Cause(rctx); errors.Is(cause, errLeaseLost) {
		err = cause
	}
	switch {
	case errors.Is(err, errLeaseLost) && redisErr != nil:
		a.fail(c, redisErr, videoNotFound)
		return
	case errors.Is(err, routing.ErrNotFound):
		a.fail(c, routing.ErrNotFound, videoNotFound) // deleted meanwhile
		return
	case errors.Is(err, errLeaseLost):
		WriteError(c, http.StatusConflict, codeConflict, err.Error())
		return
	}
	if err != nil {
		// The part file is gone (receive).
		// Release the reservation even when the client has gone.
		_ = a.store.AbortUpload(context.WithoutCancel(ctx), id, how)
		var tooLarge *http.MaxBytesError
		var local *localFileError
		switch {
		case errors.As(err, &tooLarge):
			a.tooLarge(c)
		case errors.As(err, &local):
			// This origin's own trouble (its disk full, its upload
			// directory unusable), not the request's: logged, and the
			// client told to send it again later, without our paths.
			a.logServerError(c, http.StatusServiceUnavailable, err)
			c.Header("Retry-After", "30")
			WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "the server could not store the upload; send it again later")
		case errors.Is(err, errNoFilePart):
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		default:
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, "the upload was interrupted: "+err.Error())
		}
		return
	}
	v, err := a.sourceArrived(context.WithoutCancel(ctx), id, how, file, n)
	if err != nil {
		a.answerArrival(c, err)
		return
	}
	c.JSON(http.StatusAccepted, a.videoJSON(v))
}

var errNoFilePart = errors.New("the multipart body has no file part")

// errLeaseLost ends an upload that made no progress for the upload lease
// while another upload took the video over.
var errLeaseLost = fmt.Errorf("this upload stalled for more than %s and another upload of the video took over", routing.UploadLease)

// renewWhile renews the reservation how holds on video id every third of
// the lease, as long as progress (bytes received) moved since the last
// time, until ctx ends or the returned stop is called. An upload that
// stalls lets its lease run out; losing it calls lost with errLeaseLost.
func (a *API) renewWhile(ctx context.Context, id, how string, progress func() int64, lost func(error)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(routing.UploadLease / 3)
		defer t.Stop()
		last := progress()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if now := progress(); now == last {
				continue // stalled: no renewal
			} else {
				last = now
			}
			if ok, err := a.store.RenewUpload(ctx, id, how); errors.Is(err, routing.ErrNotFound) {
				lost(fmt.Errorf("%w: %w", errLeaseLost, err)) // deleted
				return
			} else if err == nil && !ok {
				lost(errLeaseLost)
				return
			}
		}
	}()
	return func() { close(done); <-finished }
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.ReadCloser
}

func (c ctxReader) Close() error { return c.r.Close() }

func (c ctxReader) Read(p []byte) (int, error) {
	if err := context.Cause(c.ctx); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// receive streams the request body (or its first multipart file part) to
// a file of its own in the upload directory, at most a.maxUpload bytes,
// and returns its path once it is synced and the upload still holds the
// video. On failure nothing is left.
func (a *API) receive(req *http.Request, c *gin.Context, id, tag string, stillHeld func() bool) (string, int64, error) {
	dir := filepath.Join(a.uploadDir, putDir)
	if err := os.MkdirAll(dir, uploadDirPerms); err != nil {
		return "", 0, &localFileError{err}
	}
	body := http.MaxBytesReader(c.Writer, ctxReader{req.Context(), req.Body}, a.maxUpload)
	var src io.Reader = body
	if mt, params, err := mime.ParseMediaType(c.GetHeader("Content-Type")); err == nil && mt == "multipart/form-data" {
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				return "", 0, errNoFilePart
			}
			if err != nil {
				return "", 0, err
			}
			if p.FileName() != "" {
				src = p
				break
			}
		}
	}
	tmp := filepath.Join(dir, id+"."+tag+".part")
	f, err := os.Create(tmp)
	if err != nil {
		return "", 0, &localFileError{err}
	}
	n, err := io.Copy(localWriter{f}, src)
	if err == nil {
		if err = f.Sync(); err != nil { // on the disk before the video is queued on it
			err = &localFileError{err}
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &localFileError{cerr}
	}
	if err == nil && !stillHeld() {
		err = errLeaseLost
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", 0, err
	}
	return tmp, n, nil
}

// localFileError is a failure of this origin's own files while an upload
// is received (its disk, its upload directory), as opposed to the
// request's (a body cut off).
type localFileError struct{ err error }

func (e *localFileError) Error() string { return "storing the upload: " + e.err.Error() }
func (e *localFileError) Unwrap() error { return e.err }

// localWriter marks its file's write errors as the origin's own.
type localWriter struct{ f *os.File }

func (w localWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = &localFileError{err}
	}
	return n, err
}

// putDir is the directory of the upload directory where PUT uploads are
// received.
const putDir = "put"

// mediaStoreError is a failure of the media store (S3 down, a full disk)
// while a finished upload was being kept: the uploader may send it again.
type mediaStoreError struct{ err error }

func (e *mediaStoreError) Error() string { return "keeping the uploaded source: " + e.err.Error() }
func (e *mediaStoreError) Unwrap() error { return e.err }

// sourceArrived probes a complete source, moves it into the media store
// and queues the video, or fails it with the probe's message. file is the
// local file received, or "" when it was moved into the store before a
// crash (tus recovery).
func (a *API) sourceArrived(ctx context.Context, id, how, file string, size int64) (routing.Video, error) {
	probed := file
	if file == "" {
		path, done, err := a.videos.FetchSource(ctx, id)
		if err != nil {
			return routing.Video{}, &mediaStoreError{err}
		}
		defer done()
		probed = path
	}
	info, perr := a.videos.Probe(probed)
	if perr != nil {
		if err := a.store.FailVideo(ctx, id, how, perr.Error()); err != nil {
			return routing.Video{}, err
		}
		if file != "" {
			_ = os.Remove(file) // nothing will ever read it
		}
		a.keepRecord(ctx, id)
		return routing.Video{}, &notAVideoError{msg: perr.Error()}
	}
	if file != "" {
		// The probe and the move may take long: the upload must still
		// hold the video, or it would replace the source of the upload
		// that took over.
		if held, err := a.store.RenewUpload(ctx, id, how); err != nil || !held {
			_ = os.Remove(file)
			if err != nil {
				return routing.Video{}, err
			}
			return routing.Video{}, fmt.Errorf("%w: %w", routing.ErrConflict, errLeaseLost)
		}
		if err := a.videos.KeepSource(ctx, id, file); err != nil {
			_ = os.Remove(file)
			_ = a.store.AbortUpload(ctx, id, how)
			return routing.Video{}, &mediaStoreError{err}
		}
	}
	info.Bytes = size
	if err := a.store.SourceReceived(ctx, id, how, info); err != nil {
		if errors.Is(err, routing.ErrNotFound) && file != "" {
			// Deleted while the source was being stored: the delete
			// may have removed the video's files before the source
			// arrived, and nothing refers to it now.
			if rerr := a.videos.RemoveVideo(context.WithoutCancel(ctx), id); rerr != nil {
				a.log.Warn("removing the source of a video deleted during its upload", "video", id, "err", rerr)
			}
		}
		// Let the uploader try again later rather than leave the video
		// reserved by an upload that is over (best effort: Redis may be
		// what failed). The stored source is replaced by the next upload.
		if !errors.Is(err, routing.ErrConflict) {
			_ = a.store.AbortUpload(ctx, id, how)
		}
		return routing.Video{}, err
	}
	a.keepRecord(ctx, id)
	return a.store.GetVideo(ctx, id)
}

// keepRecord saves a copy of video id's record next to its files, so that
// a Redis that lost its data can be given it back (the origin restores
// it, and queues the video again if it was being processed); best effort.
func (a *API) keepRecord(ctx context.Context, id string) {
	fields, err := a.store.VideoFields(ctx, id)
	if err == nil {
		err = a.videos.SaveRecord(id, fields)
	}
	if err == nil {
		// Deleted while the copy was written (a delete removes the
		// record, then the files): the copy must not outlive it.
		if _, err = a.store.VideoFields(ctx, id); errors.Is(err, routing.ErrNotFound) {
			err = a.videos.DropRecord(id)
		}
	}
	if err != nil && !errors.Is(err, routing.ErrNotFound) {
		a.log.Warn("keeping a copy of a video's record", "video", id, "err", err)
	}
}

type notAVideoError struct{ msg string }

func (e *notAVideoError) Error() string { return e.msg }

// answerArrival answers an upload whose arrival could not be recorded.
func (a *API) answerArrival(c *gin.Context, err error) {
	var nv *notAVideoError
	switch {
	case errors.As(err, &nv):
		WriteError(c, http.StatusUnprocessableEntity, codeNotAVideo, nv.msg)
	case errors.Is(err, routing.ErrConflict):
		WriteError(c, http.StatusConflict, codeConflict, "the video was changed while its source was uploading; create a new video")
	case errors.As(err, new(*mediaStoreError)):
		a.logServerError(c, http.StatusServiceUnavailable, err)
		c.Header("Retry-After", "5")
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "the media store is unavailable: send the file again in a moment")
	default:
		a.fail(c, err, videoNotFound)
	}
}

func (a *API) uploadRefused(c *gin.Context, err error) {
	if errors.Is(err, routing.ErrConflict) {
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		WriteError(c, http.StatusConflict, codeConflict, msg)
		return
	}
	a.fail(c, err, videoNotFound)
}

func (a *API) tooLarge(c *gin.Context) {
	WriteError(c, http.StatusRequestEntityTooLarge, codePayloadTooLarge,
		fmt.Sprintf("the file is larger than this server accepts (%d bytes, SHOAL_MAX_UPLOAD_BYTES)", a.maxUpload))
}
