package playerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/tus/tusd/v2/pkg/filestore"
	tus "github.com/tus/tusd/v2/pkg/handler"
	expslog "golang.org/x/exp/slog"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// uploadsPath is where the tus 1.0 endpoint is mounted.
const uploadsPath = "/v1/uploads/"

// tusVideoIDKey is the Upload-Metadata key that names the video an upload
// is the source of.
const tusVideoIDKey = "video_id"

// uploadIDRe is the shape of the upload ids Shoal gives out: the video id,
// a dash and a random part. Anything else in an upload URL is refused
// before it reaches tusd's file store.
var uploadIDRe = regexp.MustCompile(`^[a-z0-9]{1,64}-[a-z0-9]{8}$`)

// newTusHandler builds the tus handler; partial uploads live in dir, or
// in a.tusStore when it is set.
// Pages of the origins listed (all when empty or "*") may upload from a
// browser; tusd answers other sites' CORS requests 403.
func (a *API) newTusHandler(dir string, origins []string) (*tus.UnroutedHandler, error) {
	if err := os.MkdirAll(dir, uploadDirPerms); err != nil {
		return nil, fmt.Errorf("playerapi: upload directory: %w", err)
	}
	composer := tus.NewStoreComposer()
	if a.tusStore != nil {
		tusObjects{store: a.tusStore, partMax: &a.tusPartMax, log: a.log, release: func(ctx context.Context, info tus.FileInfo) {
			if vid := info.MetaData[tusVideoIDKey]; ids.Valid(vid) {
				_ = a.store.AbortUpload(ctx, vid, "tus:"+info.ID)
			}
		}}.UseIn(composer)
	} else {
		filestore.New(dir).UseIn(composer)
	}
	a.tusLocks = &tusLocker{locks: a.store.UploadLocker(0, a.log)}
	a.tusLocks.UseIn(composer)
	return tus.NewUnroutedHandler(tus.Config{
		// Absolute, so that Location headers name the public URL even
		// behind a TLS proxy.
		BasePath:                   a.publicURL + uploadsPath,
		StoreComposer:              composer,
		MaxSize:                    a.maxUpload,
		DisableDownload:            true,
		DisableConcatenation:       true,
		Logger:                     tusLogger(a.log),
		PreUploadCreateCallback:    a.tusCreate,
		PreFinishResponseCallback:  a.tusFinish,
		PreUploadTerminateCallback: a.tusTerminate,
		Cors:                       tusCORS(origins),
	})
}

// normalOrigin is o as a browser sends it in Origin: lowercase, without
// the scheme's default port or a trailing slash.
func normalOrigin(o string) string {
	u, err := url.Parse(strings.TrimSpace(o))
	if err != nil || u.Host == "" {
		return strings.TrimSuffix(o, "/")
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if (scheme == "https" && strings.HasSuffix(host, ":443")) || (scheme == "http" && strings.HasSuffix(host, ":80")) {
		host = host[:strings.LastIndex(host, ":")]
	}
	return scheme + "://" + host
}

// tusCORS is tusd's default CORS answer, limited to origins unless they
// are empty or "*".
func tusCORS(origins []string) *tus.CorsConfig {
	c := tus.DefaultCorsConfig
	if len(origins) == 0 || (len(origins) == 1 && origins[0] == "*") {
		return &c
	}
	quoted := make([]string, len(origins))
	for i, o := range origins {
		quoted[i] = regexp.QuoteMeta(normalOrigin(o))
	}
	c.AllowOrigin = regexp.MustCompile(`^(` + strings.Join(quoted, "|") + `)$`)
	return &c
}

// registerUploadOptions answers OPTIONS on the tus endpoint without an API
// key: tus discovery (Tus-Version, Tus-Extension, Tus-Max-Size) and the CORS
// preflight a browser sends before uploading from a page on another site.
func (a *API) registerUploadOptions(r gin.IRouter) {
	h := gin.WrapH(a.tus.Middleware(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})))
	r.OPTIONS(uploadsPath, h)
	r.OPTIONS(strings.TrimSuffix(uploadsPath, "/"), h)
	r.OPTIONS(uploadsPath+":upload", h)
}

// registerUploads mounts the tus endpoint: POST creates an upload, HEAD
// tells its offset, PATCH appends, DELETE terminates.
func (a *API) registerUploads(v1 gin.IRouter) {
	h := a.tus
	wrap := func(f http.Handler) gin.HandlerFunc { return gin.WrapH(h.Middleware(f)) }
	// tusd reads the upload id from a path stripped of the base path.
	checked := func(f http.HandlerFunc) gin.HandlerFunc {
		next := wrap(http.StripPrefix(strings.TrimSuffix(uploadsPath, "/"), f))
		return func(c *gin.Context) {
			if !uploadIDRe.MatchString(c.Param("upload")) {
				WriteError(c, http.StatusNotFound, codeNotFound, "no upload with this id")
				return
			}
			next(c)
		}
	}
	v1.POST("/uploads/", wrap(http.HandlerFunc(h.PostFile)))
	v1.POST("/uploads", wrap(http.HandlerFunc(h.PostFile)))
	v1.HEAD("/uploads/:upload", checked(h.HeadFile))
	v1.PATCH("/uploads/:upload", a.renewing(checked(h.PatchFile)))
	v1.DELETE("/uploads/:upload", checked(h.DelFile))
}

// renewing renews the upload's lease before a PATCH appends to it, and
// refuses the PATCH of an upload whose lease ran out while another upload
// took the video over.
func (a *API) renewing(next gin.HandlerFunc) gin.HandlerFunc {
	return func(c *gin.Context) {
		up := c.Param("upload")
		if !uploadIDRe.MatchString(up) {
			next(c)
			return
		}
		vid, how := up[:len(up)-9], "tus:"+up
		if ok, err := a.store.RenewUpload(c.Request.Context(), vid, how); errors.Is(err, routing.ErrNotFound) {
			WriteError(c, http.StatusNotFound, codeNotFound, videoNotFound) // deleted
			return
		} else if err == nil && !ok {
			WriteError(c, http.StatusConflict, codeConflict, errLeaseLost.Error())
			return
		}
		// A long PATCH (tus clients send the whole file in one) renews the
		// lease while its bytes arrive.
		body := &countingBody{ReadCloser: c.Request.Body}
		c.Request.Body = body
		stop := a.renewWhile(c.Request.Context(), vid, how, body.n.Load, func(error) {
			_ = http.NewResponseController(c.Writer).SetReadDeadline(time.Now())
		})
		defer stop()
		next(c)
	}
}

// tusLocker is tusd's Locker on upload locks leased in Redis, so that two
// origins sharing Redis and the upload directory never write one upload
// at once: a client may resume an upload at any origin.
//
// It is patient: a request waiting for an upload's lock does not ask the
// holder to let go (tusd's requestRelease is called only when the holder's
// own lease is lost, to stop its writes: see tusLock.Lock); it waits, up
// to tusd's lock timeout, for the holder to finish. tusd 2.9.1 handles
// such a request by cancelling the holder from the waiting goroutine,
// which races with the holder's body reader (seen under -race when a
// client whose PATCH dropped comes back with HEAD), and a holder at
// another origin could not be reached anyway. A dropped PATCH ends by
// itself as soon as reading its body fails, so the resume only waits that
// long; a holder whose origin died holds the lease until its TTL runs out.
type tusLocker struct {
	locks *routing.UploadLocker
	// waiting, when set, is called when a request finds an upload's lock
	// held and starts waiting for it (tests).
	waiting func(id string)
}

func (l *tusLocker) UseIn(c *tus.StoreComposer) { c.UseLocker(l) }

func (l *tusLocker) NewLock(id string) (tus.Lock, error) {
	lock, err := l.locks.NewLock(id)
	if errors.Is(err, routing.ErrInvalidUploadID) {
		return nil, tus.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return tusLock{lock: lock, id: id, waiting: l.waiting}, nil
}

type tusLock struct {
	lock    *routing.UploadLock
	id      string
	waiting func(id string)
}

// Lock takes the lock, waiting while it is held; when ctx ends first it
// answers tusd's ErrLockTimeout, as tusd's own lockers do, and 503 when
// Redis is unreachable.
func (l tusLock) Lock(ctx context.Context, requestRelease func()) error {
	// A lease lost while held (Redis lost it, or could not be reached for
	// two thirds of its TTL) stops this request's writes: tusd's
	// requestRelease ends it, as when another request wants the upload.
	l.lock.WhenLost(requestRelease)
	ok, err := l.lock.TryLock(ctx)
	if err == nil && !ok {
		if l.waiting != nil {
			l.waiting(l.id)
		}
		err = l.lock.Lock(ctx)
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return tus.ErrLockTimeout
	case errors.Is(err, routing.ErrUnavailable):
		return tusError(http.StatusServiceUnavailable, codeUnavailable, unavailableMessage)
	default:
		return err
	}
}

// Unlock releases the lock. A lease lost meanwhile, or a Redis that cannot
// be reached (the lease then expires by itself), is not the request's
// failure: tusd ignores Unlock's error, and the loss was logged.
func (l tusLock) Unlock() error { return l.lock.Unlock() }

// tusError makes a tus hook error that answers with Shoal's JSON error
// shape.
func tusError(status int, code, msg string) error {
	body, _ := json.Marshal(errorBody{Error: errorDetail{Code: code, Message: msg}})
	return tus.Error{ErrorCode: code, Message: msg, HTTPResponse: tus.HTTPResponse{
		StatusCode: status, Body: string(body),
		Header: tus.HTTPHeader{"Content-Type": "application/json; charset=utf-8"},
	}}
}

// tusStoreError maps a store error to a tus hook error.
func (a *API) tusStoreError(err error) error {
	switch {
	case errors.Is(err, routing.ErrNotFound):
		return tusError(http.StatusNotFound, codeNotFound, videoNotFound)
	case errors.Is(err, routing.ErrConflict):
		msg := err.Error()
		if i := strings.Index(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return tusError(http.StatusConflict, codeConflict, msg)
	case errors.Is(err, routing.ErrUnavailable):
		return tusError(http.StatusServiceUnavailable, codeUnavailable, unavailableMessage)
	case errors.As(err, new(*mediaStoreError)):
		a.log.Error("tus upload: the media store failed", "err", err)
		return tusError(http.StatusServiceUnavailable, codeUnavailable, "the media store is unavailable: finish the upload again in a moment")
	default:
		a.log.Error("tus upload: store failed", "err", err)
		return tusError(http.StatusInternalServerError, codeInternal, "internal error")
	}
}

// tusCreate reserves the video named in the metadata for this upload and
// gives the upload its id.
func (a *API) tusCreate(hook tus.HookEvent) (tus.HTTPResponse, tus.FileInfoChanges, error) {
	if hook.Upload.SizeIsDeferred {
		// tusd enforces MaxSize only on a declared length.
		return tus.HTTPResponse{}, tus.FileInfoChanges{}, tusError(http.StatusBadRequest, codeInvalidRequest,
			"Upload-Length is required: deferred lengths are not accepted")
	}
	vid := hook.Upload.MetaData[tusVideoIDKey]
	if vid == "" {
		return tus.HTTPResponse{}, tus.FileInfoChanges{}, tusError(http.StatusBadRequest, codeInvalidRequest,
			`Upload-Metadata must name the video: "video_id <base64 of the id from POST /v1/videos>"`)
	}
	if !ids.Valid(vid) {
		return tus.HTTPResponse{}, tus.FileInfoChanges{}, tusError(http.StatusNotFound, codeNotFound, videoNotFound)
	}
	uploadID := vid + "-" + ids.New()[:8]
	if err := a.store.BeginUpload(hook.Context, vid, "tus:"+uploadID); err != nil {
		return tus.HTTPResponse{}, tus.FileInfoChanges{}, a.tusStoreError(err)
	}
	meta := tus.MetaData{tusVideoIDKey: vid}
	if name := hook.Upload.MetaData["filename"]; name != "" && len(name) <= 255 {
		meta["filename"] = name
	}
	return tus.HTTPResponse{}, tus.FileInfoChanges{ID: uploadID, MetaData: meta}, nil
}

// tusFinish runs when the last byte arrived: the file becomes the video's
// source, is probed, and the video is queued (or failed).
func (a *API) tusFinish(hook tus.HookEvent) (tus.HTTPResponse, error) {
	return tus.HTTPResponse{}, a.completeTus(context.WithoutCancel(hook.Context), hook.Upload)
}

// completeTus makes the finished upload info the source of its video. It
// is idempotent, so that RecoverUploads can finish what a crash
// interrupted: a data file already moved is taken from the video's source
// path; parts in the media store are assembled again.
func (a *API) completeTus(ctx context.Context, info tus.FileInfo) error {
	vid := info.MetaData[tusVideoIDKey]
	how := "tus:" + info.ID
	// Only the upload that holds the video's reservation may make its
	// source: one whose lease ran out while another took the video over,
	// or one completed before, must not move a file over the source (nor
	// remove it).
	v, err := a.store.GetVideo(ctx, vid)
	if err != nil && !errors.Is(err, routing.ErrNotFound) {
		return a.tusStoreError(err)
	}
	held := false
	if err == nil && v.HeldBy(how) {
		if held, err = a.store.RenewUpload(ctx, vid, how); err != nil {
			if errors.Is(err, routing.ErrNotFound) {
				a.dropTus(ctx, info, true) // deleted a moment ago
			}
			return a.tusStoreError(err)
		}
	}
	if !held {
		a.dropTus(ctx, info, true)
		if err == nil && v.Status != routing.VideoWaiting {
			return tusError(http.StatusConflict, codeConflict, "this video already has a source (status "+v.Status+"); create a new video to upload another file")
		}
		return tusError(http.StatusConflict, codeConflict, errLeaseLost.Error())
	}
	file, err := a.finishedTusFile(ctx, vid, info)
	if errors.As(err, new(*mediaStoreError)) {
		return a.tusStoreError(err)
	}
	if err != nil {
		return err
	}
	_, err = a.sourceArrived(ctx, vid, how, file, info.Size)
	var nv *notAVideoError
	if errors.As(err, &nv) {
		a.dropTus(ctx, info, false)
		return tusError(http.StatusUnprocessableEntity, codeNotAVideo, nv.msg)
	}
	if err != nil {
		return a.tusStoreError(err)
	}
	a.dropTus(ctx, info, false)
	return nil
}

// finishedTusFile is the local file of a finished upload, synced, or ""
// when it was moved into the media store (the video's source) before a
// crash.
func (a *API) finishedTusFile(ctx context.Context, vid string, info tus.FileInfo) (string, error) {
	if a.tusStore != nil {
		// The parts stay in the store until the video is queued: they
		// are assembled again after a crash.
		return a.assembleTus(ctx, info.ID, info.Size)
	}
	// The data reaches the disk before it is moved into the media store,
	// and the move is journaled by the .info file, removed only once the
	// video is queued: a crash anywhere in between is finished by
	// RecoverUploads at the next start.
	path := info.Storage["Path"]
	switch err := syncPath(path); {
	case err == nil:
		return path, nil
	case errors.Is(err, os.ErrNotExist):
		// Moved into the store before a crash.
		if _, err := a.videos.SourceSize(ctx, vid); err != nil {
			return "", fmt.Errorf("the finished upload is gone: %w", err)
		}
		return "", nil
	default:
		return "", fmt.Errorf("saving the finished upload: %w", err)
	}
}

// dropTus removes what is left of upload info once it is over: its
// journal (the .info file), and with data its data file too; in the media
// store, all its objects (best effort: RecoverUploads removes what is
// left).
func (a *API) dropTus(ctx context.Context, info tus.FileInfo, data bool) {
	if a.tusStore != nil {
		_ = os.Remove(filepath.Join(a.uploadDir, info.ID+tusAssembledSuffix))
		if err := a.tusStore.DeletePrefix(ctx, info.ID+"/"); err != nil {
			a.log.Warn("tus upload: removing its objects from the media store", "upload", info.ID, "err", err)
		}
		return
	}
	path := info.Storage["Path"]
	if data {
		_ = os.Remove(path)
	}
	_ = os.Remove(path + ".info")
}

// RecoverUploads finishes what a crash or a kill interrupted in the tus
// directory, so that no video waits forever for an upload its client
// believes complete: a complete upload (every byte received) whose video
// it still holds is made the video's source, as its last PATCH would have;
// the leftovers of uploads that no longer hold their video are removed.
// Uploads still missing bytes are left for their clients to resume. It
// needs Redis; the origin calls it at start until it succeeds. It returns
// how many uploads it finished.
func (a *API) RecoverUploads(ctx context.Context) (int, error) {
	if a.tusStore != nil {
		return a.recoverStoreUploads(ctx)
	}
	infos, err := filepath.Glob(filepath.Join(a.uploadDir, "*.info"))
	if err != nil {
		return 0, err
	}
	return countEach(infos, func(p string) (bool, error) { return a.recoverUpload(ctx, p) })
}

// recoveryLock takes upload id's lock for RecoverUploads, waiting out a
// lease its dead holder left (recoverLockWait). It returns nil and no
// error when a live request holds the lock: that request finishes the
// upload itself.
func (a *API) recoveryLock(ctx context.Context, id string) (*routing.UploadLock, error) {
	lock, err := a.tusLocks.locks.NewLock(id)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, a.recoverLockWait())
	err = lock.Lock(lctx)
	cancel()
	switch {
	case err != nil && ctx.Err() == nil && lctx.Err() != nil:
		a.log.Info("tus upload: left to the request that holds its lock", "upload", id)
		return nil, nil
	case err != nil:
		return nil, err
	}
	return lock, nil
}

// recoverLockWait is how long RecoverUploads waits for an upload's lock:
// past the lease's TTL, so that a lease left by a dead holder has expired.
func (a *API) recoverLockWait() time.Duration {
	if a.recoverWait > 0 {
		return a.recoverWait
	}
	return a.tusLocks.locks.TTL() + 5*time.Second
}

// recoverUpload recovers the upload whose tusd info file is p.
func (a *API) recoverUpload(ctx context.Context, p string) (bool, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return false, err
	}
	var info tus.FileInfo
	if err := json.Unmarshal(b, &info); err != nil {
		// Not ours to judge: tusd refuses it on its own.
		a.log.Warn("tus upload: unreadable info file left alone", "file", p, "err", err)
		return false, nil
	}
	id := strings.TrimSuffix(filepath.Base(p), ".info")
	vid := info.MetaData[tusVideoIDKey]
	if info.ID != id || !uploadIDRe.MatchString(id) || !ids.Valid(vid) {
		a.log.Warn("tus upload: info file not made by Shoal left alone", "file", p)
		return false, nil
	}
	// The paths are this directory's, whatever the file says.
	data := strings.TrimSuffix(p, ".info")
	info.Storage = map[string]string{"Type": "filestore", "Path": data, "InfoPath": p}
	held, err := a.holds(ctx, vid, id)
	if err != nil {
		return false, err
	}
	// An upload still missing bytes is its client's to resume (checked
	// again below, under the lock): it needs no lock, which a PATCH may
	// hold for as long as the client sends.
	if st, err := os.Stat(data); err == nil && held && !info.SizeIsDeferred && st.Size() < info.Size {
		return false, nil
	}
	// A request for the upload at any origin holds its lock: wait for it.
	// A lease left by a holder that died (this origin, before a restart)
	// expires within the lease's TTL, so the wait outlasts it; a lock
	// still held then belongs to a live request, which finishes the
	// upload itself: leave it be.
	lock, err := a.recoveryLock(ctx, id)
	if lock == nil {
		return false, err
	}
	defer func() { _ = lock.Unlock() }()
	if !exists(p) {
		return false, nil // finished or terminated meanwhile
	}
	if !held {
		// Deleted, taken over, or finished before the crash: remove this
		// upload's own files, never the video's source.
		_ = os.Remove(data)
		_ = os.Remove(p)
		return false, nil
	}
	// tusd's info file keeps the offset of its creation: what arrived is
	// the data file's size (as tusd itself reads it), or, once moved, the
	// source's.
	received := int64(-1)
	if st, err := os.Stat(data); err == nil {
		received = st.Size()
	} else if size, err := a.videos.SourceSize(ctx, vid); err == nil {
		received = size
	}
	switch {
	case received < 0:
		// Its file was removed after a failure that could not release
		// the video: release it now, so that the source can be sent again.
		if err := a.store.AbortUpload(ctx, vid, "tus:"+id); err != nil {
			return false, err
		}
		_ = os.Remove(p)
		return false, nil
	case info.SizeIsDeferred || received != info.Size:
		return false, nil // the client resumes it
	}
	info.Offset = received
	a.log.Info("tus upload: finishing an upload a restart interrupted", "video", vid, "upload", id, "bytes", info.Size)
	err = a.completeTus(ctx, info)
	var te tus.Error
	if errors.As(err, &te) && te.HTTPResponse.StatusCode < 500 {
		// Refused (not a video, lease lost): the video says why.
		return true, nil
	}
	return err == nil, err
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// syncPath flushes the file at path, or a directory's entries (a rename
// into it), to the disk.
func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// tusTerminate releases the video's reservation when its upload is
// terminated, so that the source can be sent again.
func (a *API) tusTerminate(hook tus.HookEvent) (tus.HTTPResponse, error) {
	vid := hook.Upload.MetaData[tusVideoIDKey]
	if ids.Valid(vid) {
		if err := a.store.AbortUpload(hook.Context, vid, "tus:"+hook.Upload.ID); err != nil {
			return tus.HTTPResponse{}, a.tusStoreError(err)
		}
	}
	return tus.HTTPResponse{}, nil
}

// tusLogger passes tusd's warnings and errors on to log (tusd logs through
// golang.org/x/exp/slog); its per-request information records would flood
// the log.
func tusLogger(log *slog.Logger) *expslog.Logger {
	return expslog.New(expslog.NewTextHandler(logWriter{log}, &expslog.HandlerOptions{Level: expslog.LevelWarn}))
}

// logWriter turns each record tusd writes into a warning of log.
type logWriter struct{ log *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.Warn("tus upload", "tusd", strings.TrimSpace(string(p)))
	return len(p), nil
}
