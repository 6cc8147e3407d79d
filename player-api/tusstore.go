package playerapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"

	tus "github.com/tus/tusd/v2/pkg/handler"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/storage"
)

// tusObjects is tusd's DataStore on the media store (Config.UploadStore),
// so that every origin sharing the store (an S3 bucket) and Redis (the
// locks) can resume an upload begun at another.
//
// An upload is objects under "<upload id>/" of the store:
//   - "info": tusd's FileInfo as JSON, written when the upload is created
//     (and when a deferred length is declared); its offset is not kept.
//   - "part-<offset, 20 digits>": bytes of a PATCH from that offset: one
//     part per PATCH, or several of at most tusPartMax bytes for a longer
//     one. A part is one Put, so it is stored whole or not at all: an
//     interrupted PATCH keeps the bytes that arrived before it ended (its
//     last part is what arrived), none of a part whose Put failed.
//
// The offset is the end of the parts that follow each other from 0 (a
// part left by a writer that lost its lock, which does not start where
// the others end, is not counted). The upload's objects are deleted once
// its video is queued (or refused), when it is terminated, or by
// RecoverUploads once it no longer holds its video.
type tusObjects struct {
	store storage.Store
	// partMax, when above zero, replaces tusPartMax (tests).
	partMax *atomic.Int64
	// release gives back the video an upload that could not be created
	// had reserved (tusCreate ran first).
	release func(ctx context.Context, info tus.FileInfo)
	log     *slog.Logger
}

// unavailable is the answer to a tus request when the media store fails
// (S3 unreachable): 503, to try again, rather than tusd's 500.
func (s tusObjects) unavailable(op, id string, err error) error {
	if errors.Is(err, tus.ErrNotFound) || errors.Is(err, errBadTusInfo) {
		return err
	}
	s.log.Error("tus upload: the media store failed", "op", op, "upload", id, "err", err)
	e := tusError(http.StatusServiceUnavailable, codeUnavailable, "the media store is unavailable: try again in a moment").(tus.Error)
	e.HTTPResponse.Header["Retry-After"] = "1"
	return e
}

const (
	tusInfoName   = "info"
	tusPartPrefix = "part-"
	// tusPartMax is the most bytes one part holds: a longer PATCH (tus
	// clients send the whole file in one) is stored as several parts, each
	// an object well under what an S3 upload of unknown size can hold
	// (10,000 parts of 16 MiB).
	tusPartMax = 1 << 30
)

func (s tusObjects) UseIn(c *tus.StoreComposer) {
	c.UseCore(s)
	c.UseTerminater(s)
	c.UseLengthDeferrer(s)
}

func tusInfoKey(id string) string { return id + "/" + tusInfoName }

func tusPartKey(id string, offset int64) string {
	return fmt.Sprintf("%s/%s%020d", id, tusPartPrefix, offset)
}

// tusPart is one stored part of an upload.
type tusPart struct {
	key          string
	offset, size int64
}

func (s tusObjects) NewUpload(ctx context.Context, info tus.FileInfo) (tus.Upload, error) {
	if !uploadIDRe.MatchString(info.ID) {
		// tusCreate names every upload; anything else is a bug.
		return nil, fmt.Errorf("playerapi: tus upload id %q is not Shoal's", info.ID)
	}
	info.Offset = 0
	info.Storage = map[string]string{"Type": "shoal-store", "Key": info.ID + "/"}
	u := &tusObject{store: s.store, info: info, partMax: s.maxPart(), fail: s.unavailable}
	if err := u.writeInfo(ctx); err != nil {
		if s.release != nil {
			s.release(context.WithoutCancel(ctx), info)
		}
		return nil, s.unavailable("create", info.ID, err)
	}
	return u, nil
}

func (s tusObjects) GetUpload(ctx context.Context, id string) (tus.Upload, error) {
	if !uploadIDRe.MatchString(id) {
		return nil, tus.ErrNotFound
	}
	info, err := readTusInfo(ctx, s.store, id)
	if err != nil {
		return nil, s.unavailable("get", id, err)
	}
	parts, err := tusParts(ctx, s.store, id)
	if err != nil {
		return nil, s.unavailable("get", id, err)
	}
	info.Offset = partsEnd(parts)
	return &tusObject{store: s.store, info: info, partMax: s.maxPart(), fail: s.unavailable}, nil
}

func (s tusObjects) maxPart() int64 {
	if s.partMax != nil && s.partMax.Load() > 0 {
		return s.partMax.Load()
	}
	return tusPartMax
}

func (s tusObjects) AsTerminatableUpload(u tus.Upload) tus.TerminatableUpload {
	return u.(*tusObject)
}

func (s tusObjects) AsLengthDeclarableUpload(u tus.Upload) tus.LengthDeclarableUpload {
	return u.(*tusObject)
}

// readTusInfo reads upload id's info (tus.ErrNotFound when there is none).
func readTusInfo(ctx context.Context, store storage.Store, id string) (tus.FileInfo, error) {
	b, _, err := storage.ReadAll(ctx, store, tusInfoKey(id))
	if errors.Is(err, storage.ErrNotFound) {
		return tus.FileInfo{}, tus.ErrNotFound
	}
	if err != nil {
		return tus.FileInfo{}, err
	}
	var info tus.FileInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return tus.FileInfo{}, fmt.Errorf("%w: tus upload %s: %w", errBadTusInfo, id, err)
	}
	if info.ID != id {
		return tus.FileInfo{}, fmt.Errorf("%w: tus upload %s: its info names %q", errBadTusInfo, id, info.ID)
	}
	return info, nil
}

// errBadTusInfo: an upload's info object is not one this store wrote.
var errBadTusInfo = errors.New("playerapi: unreadable tus upload info")

// tusParts lists upload id's parts in the order of their offsets.
func tusParts(ctx context.Context, store storage.Store, id string) ([]tusPart, error) {
	var parts []tusPart
	for obj, err := range store.List(ctx, id+"/"+tusPartPrefix, storage.ListOptions{}) {
		if err != nil {
			return nil, err
		}
		off, err := strconv.ParseInt(strings.TrimPrefix(obj.Key, id+"/"+tusPartPrefix), 10, 64)
		if err != nil || off < 0 {
			continue // not a part of ours
		}
		parts = append(parts, tusPart{key: obj.Key, offset: off, size: obj.Size})
	}
	return parts, nil
}

// contiguous is the parts that follow each other from offset 0; the
// others (left by a writer that lost its lock) are not the upload's.
func contiguous(parts []tusPart) []tusPart {
	var out []tusPart
	var end int64
	for _, p := range parts {
		if p.offset == end && p.size > 0 {
			out = append(out, p)
			end += p.size
		}
	}
	return out
}

// partsEnd is the offset of the upload: where its contiguous parts end.
func partsEnd(parts []tusPart) int64 {
	var end int64
	for _, p := range contiguous(parts) {
		end = p.offset + p.size
	}
	return end
}

// tusObject is one upload in the store.
type tusObject struct {
	store   storage.Store
	info    tus.FileInfo
	partMax int64
	fail    func(op, id string, err error) error
}

func (u *tusObject) writeInfo(ctx context.Context) error {
	info := u.info
	info.Offset = 0 // the parts tell it
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	_, err = u.store.Put(ctx, tusInfoKey(info.ID), bytes.NewReader(b), int64(len(b)))
	return err
}

func (u *tusObject) GetInfo(context.Context) (tus.FileInfo, error) { return u.info, nil }

// WriteChunk stores what src holds as parts from offset, of at most
// partMax bytes each. tusd hands it a body that ends (io.EOF) when the
// client's request ends, complete or not, so the last part is what
// arrived; a Put that fails stores nothing of its part, and the bytes of
// the parts stored before it are reported written.
func (u *tusObject) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	var written int64
	for {
		// Nothing is stored for an empty body (a PATCH with no bytes,
		// one dropped before its first).
		first := make([]byte, 1)
		n, err := io.ReadFull(src, first)
		if n == 0 {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = nil
			}
			return written, err
		}
		if written == 0 {
			// Parts from this offset on, left by a writer that lost its
			// lock, must not be counted after this one.
			if err := u.dropPartsFrom(ctx, offset); err != nil {
				return 0, u.fail("write", u.info.ID, err)
			}
		}
		at := offset + written
		part := &countingReader{r: io.MultiReader(bytes.NewReader(first), io.LimitReader(src, u.partMax-1))}
		if _, err := u.store.Put(ctx, tusPartKey(u.info.ID, at), part, storage.UnknownSize); err != nil {
			return written, u.fail("write", u.info.ID, err)
		}
		written += part.n
		u.info.Offset = offset + written
		if part.n < u.partMax {
			return written, nil
		}
	}
}

// countingReader counts the bytes read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// dropPartsFrom deletes the parts that start at offset or after.
func (u *tusObject) dropPartsFrom(ctx context.Context, offset int64) error {
	parts, err := tusParts(ctx, u.store, u.info.ID)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if p.offset >= offset {
			if err := u.store.Delete(ctx, p.key); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetReader reads the upload's bytes received so far (tusd serves no
// downloads here; for completeness).
func (u *tusObject) GetReader(ctx context.Context) (io.ReadCloser, error) {
	parts, err := tusParts(ctx, u.store, u.info.ID)
	if err != nil {
		return nil, err
	}
	return &partsReader{ctx: ctx, store: u.store, parts: contiguous(parts)}, nil
}

// FinishUpload does nothing: tusFinish makes the video's source.
func (u *tusObject) FinishUpload(context.Context) error { return nil }

// Terminate deletes the upload's objects.
func (u *tusObject) Terminate(ctx context.Context) error {
	if err := u.store.DeletePrefix(ctx, u.info.ID+"/"); err != nil {
		return u.fail("terminate", u.info.ID, err)
	}
	return nil
}

func (u *tusObject) DeclareLength(ctx context.Context, length int64) error {
	u.info.Size = length
	u.info.SizeIsDeferred = false
	if err := u.writeInfo(ctx); err != nil {
		return u.fail("declare length", u.info.ID, err)
	}
	return nil
}

// partsReader reads parts one after the other.
type partsReader struct {
	ctx   context.Context
	store storage.Store
	parts []tusPart
	cur   io.ReadCloser
}

func (r *partsReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.parts) == 0 {
				return 0, io.EOF
			}
			rc, _, err := r.store.Get(r.ctx, r.parts[0].key, storage.Range{})
			if err != nil {
				return 0, err
			}
			r.cur, r.parts = rc, r.parts[1:]
		}
		n, err := r.cur.Read(p)
		if errors.Is(err, io.EOF) {
			_ = r.cur.Close()
			r.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *partsReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}

// tusAssembledSuffix names the local file an upload kept in the store is
// assembled into before it becomes the video's source.
const tusAssembledSuffix = ".assembled"

// assembleTus writes the parts of upload id, which must hold size bytes,
// into a local file of the upload directory, synced, and returns its
// path. Run under the upload's lock.
func (a *API) assembleTus(ctx context.Context, id string, size int64) (path string, err error) {
	parts, err := tusParts(ctx, a.tusStore, id)
	if err != nil {
		return "", &mediaStoreError{err}
	}
	parts = contiguous(parts)
	if got := partsEnd(parts); got != size {
		return "", fmt.Errorf("the upload has %d of its %d bytes in the media store", got, size)
	}
	path = filepath.Join(a.uploadDir, id+tusAssembledSuffix)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			_ = os.Remove(path)
			path = ""
		}
	}()
	src := &partsReader{ctx: ctx, store: a.tusStore, parts: parts}
	defer src.Close()
	n, err := io.Copy(f, src)
	switch {
	case err != nil:
		return "", &mediaStoreError{err}
	case n != size:
		return "", fmt.Errorf("the upload's parts held %d bytes, want %d", n, size)
	}
	return path, f.Sync()
}

// recoverStoreUploads is RecoverUploads for uploads kept in the media
// store: those of every origin sharing it, which it handles as the origins
// sharing one upload directory handle theirs (under the upload's lock).
func (a *API) recoverStoreUploads(ctx context.Context) (int, error) {
	var found []string
	for obj, err := range a.tusStore.List(ctx, "", storage.ListOptions{}) {
		if err != nil {
			return 0, err
		}
		id, _, ok := strings.Cut(obj.Key, "/")
		if ok && (len(found) == 0 || found[len(found)-1] != id) {
			found = append(found, id) // keys come in order: an id's are together
		}
	}
	done, err := countEach(found, func(id string) (bool, error) { return a.recoverStoreUpload(ctx, id) })
	a.removeStaleAssembled(ctx)
	return done, err
}

// recoverStoreUpload recovers upload id, kept in the media store: the
// same decisions as recoverUpload, on the upload's objects.
func (a *API) recoverStoreUpload(ctx context.Context, id string) (bool, error) {
	if !uploadIDRe.MatchString(id) {
		a.log.Warn("tus upload: objects not made by Shoal left alone", "key", id+"/")
		return false, nil
	}
	info, err := readTusInfo(ctx, a.tusStore, id)
	// Parts without an info are what an interrupted removal left.
	orphan := errors.Is(err, tus.ErrNotFound)
	switch {
	case errors.Is(err, errBadTusInfo):
		a.log.Warn("tus upload: unreadable info left alone", "key", tusInfoKey(id), "err", err)
		return false, nil
	case err != nil && !orphan:
		return false, err
	}
	vid := info.MetaData[tusVideoIDKey]
	if !orphan && !ids.Valid(vid) {
		a.log.Warn("tus upload: info not made by Shoal left alone", "key", tusInfoKey(id))
		return false, nil
	}
	held := false
	if !orphan {
		if held, err = a.holds(ctx, vid, id); err != nil {
			return false, err
		}
	}
	// An upload still missing bytes is its client's to resume (checked
	// again under the lock), without the lock a PATCH may hold.
	if held && !info.SizeIsDeferred {
		parts, err := tusParts(ctx, a.tusStore, id)
		if err != nil {
			return false, err
		}
		if partsEnd(parts) < info.Size {
			return false, nil
		}
	}
	lock, err := a.recoveryLock(ctx, id)
	if lock == nil {
		return false, err
	}
	defer func() { _ = lock.Unlock() }()
	if orphan || !held {
		// Deleted, taken over, finished before the crash, or half
		// removed: remove this upload's objects, never the video's source.
		a.dropTus(ctx, tus.FileInfo{ID: id}, true)
		return false, nil
	}
	if _, err := readTusInfo(ctx, a.tusStore, id); errors.Is(err, tus.ErrNotFound) {
		return false, nil // finished or terminated meanwhile
	} else if err != nil {
		return false, err
	}
	parts, err := tusParts(ctx, a.tusStore, id)
	if err != nil {
		return false, err
	}
	received := partsEnd(parts)
	if info.SizeIsDeferred || received != info.Size {
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

// removeStaleAssembled removes the assembled files a crash left in the
// upload directory: those of uploads no longer in the store (an upload's
// objects are removed only after its assembled file).
func (a *API) removeStaleAssembled(ctx context.Context) {
	files, _ := filepath.Glob(filepath.Join(a.uploadDir, "*"+tusAssembledSuffix))
	for _, f := range files {
		id := strings.TrimSuffix(filepath.Base(f), tusAssembledSuffix)
		if !uploadIDRe.MatchString(id) {
			continue
		}
		if _, err := readTusInfo(ctx, a.tusStore, id); errors.Is(err, tus.ErrNotFound) {
			_ = os.Remove(f)
		}
	}
}

// UploadObjects is the Config.UploadStore of an origin whose media store
// is media: with shared true (an S3 bucket every origin uses), the part of
// it under "uploads/", so that tus uploads are resumable at any origin;
// otherwise nil (tusd's file store in Config.UploadDir).
func UploadObjects(media storage.Store, shared bool) storage.Store {
	if !shared || media == nil {
		return nil
	}
	return storage.Sub(media, "uploads")
}
