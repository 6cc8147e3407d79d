package playerapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	tus "github.com/tus/tusd/v2/pkg/handler"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
)

// ExpireUploads removes the tus uploads nothing came to for expiry (their
// client gave up): their bytes, on this origin's disk or in the media
// store, and their hold on the video, which waits for its source again.
// The client's next HEAD answers 404, on which tus clients start over. A
// complete upload that still holds its video is left to RecoverUploads,
// which finishes it; the leftovers of uploads that no longer hold theirs
// (deleted, taken over) go. Each upload is removed under its lock, and
// only if nothing came meanwhile. It returns how many it removed.
func (a *API) ExpireUploads(ctx context.Context, expiry time.Duration) (int, error) {
	if expiry <= 0 {
		return 0, nil
	}
	if a.tusStore != nil {
		return a.expireStoreUploads(ctx, expiry)
	}
	infos, err := filepath.Glob(filepath.Join(a.uploadDir, "*.info"))
	if err != nil {
		return 0, err
	}
	return countEach(infos, func(p string) (bool, error) { return a.expireUpload(ctx, p, expiry) })
}

// holds tells whether tus upload id holds video vid (an unknown video is
// held by nothing).
func (a *API) holds(ctx context.Context, vid, id string) (bool, error) {
	v, err := a.store.GetVideo(ctx, vid)
	if errors.Is(err, routing.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return v.HeldBy("tus:" + id), nil
}

// countEach calls f on each item (an upload's file or id), counting what
// it did and joining its errors, each named by its item.
func countEach(items []string, f func(string) (bool, error)) (int, error) {
	n := 0
	var errs []error
	for _, it := range items {
		ok, err := f(it)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(it), err))
		}
		if ok {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// lastWrite is the latest modification time of the files at paths that
// exist, and whether any does.
func lastWrite(paths ...string) (time.Time, bool) {
	var last time.Time
	found := false
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			found = true
			if st.ModTime().After(last) {
				last = st.ModTime()
			}
		}
	}
	return last, found
}

// expireUpload expires the upload whose tusd info file is p, if it is due.
func (a *API) expireUpload(ctx context.Context, p string, expiry time.Duration) (bool, error) {
	id := strings.TrimSuffix(filepath.Base(p), ".info")
	data := strings.TrimSuffix(p, ".info")
	if !uploadIDRe.MatchString(id) {
		return false, nil
	}
	if last, ok := lastWrite(p, data); !ok || a.now().Sub(last) < expiry {
		return false, nil
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return false, nil // gone meanwhile
	}
	var info tus.FileInfo
	if err := json.Unmarshal(b, &info); err != nil || info.ID != id || !ids.Valid(info.MetaData[tusVideoIDKey]) {
		return false, nil // not Shoal's (RecoverUploads says so)
	}
	lock, err := a.recoveryLock(ctx, id)
	if lock == nil {
		return false, err
	}
	defer func() { _ = lock.Unlock() }()
	// Again under the lock: a PATCH may have come, or finished it.
	last, ok := lastWrite(p, data)
	if !ok || a.now().Sub(last) < expiry {
		return false, nil
	}
	vid := info.MetaData[tusVideoIDKey]
	held, err := a.holds(ctx, vid, id)
	if err != nil {
		return false, err
	}
	if held {
		// Complete (every byte arrived; or its data already moved to
		// be the source, when a crash came before the video was told):
		// RecoverUploads finishes it, as it does at start.
		received := int64(-1)
		if st, err := os.Stat(data); err == nil {
			received = st.Size()
		} else if size, err := a.videos.SourceSize(ctx, vid); err == nil {
			received = size
		}
		if !info.SizeIsDeferred && received == info.Size {
			return false, nil
		}
		if err := a.store.AbortUpload(ctx, vid, "tus:"+id); err != nil {
			return false, err
		}
	}
	_ = os.Remove(data)
	_ = os.Remove(p)
	a.log.Info("tus upload expired: nothing came for "+expiry.String()+"; its bytes were removed and the video waits for its source again",
		"upload", id, "video", vid, "last_write", last.UTC().Format(time.RFC3339))
	return true, nil
}

// expireStoreUploads is ExpireUploads for uploads kept in the media store
// (every origin sharing it sweeps them; the upload's lock and the checks
// under it make that safe).
func (a *API) expireStoreUploads(ctx context.Context, expiry time.Duration) (int, error) {
	var order []string
	latest := map[string]time.Time{}
	for obj, err := range a.tusStore.List(ctx, "", storage.ListOptions{}) {
		if err != nil {
			return 0, err
		}
		id, _, ok := strings.Cut(obj.Key, "/")
		if !ok {
			continue
		}
		t, seen := latest[id]
		if !seen {
			order = append(order, id)
		}
		if !seen || obj.ModTime.After(t) {
			latest[id] = obj.ModTime
		}
	}
	return countEach(order, func(id string) (bool, error) {
		if a.now().Sub(latest[id]) < expiry {
			return false, nil
		}
		return a.expireStoreUpload(ctx, id, expiry)
	})
}

// storeUploadWritten is when the last of upload id's objects was written,
// and whether it has any.
func (a *API) storeUploadWritten(ctx context.Context, id string) (time.Time, bool, error) {
	var last time.Time
	found := false
	for obj, err := range a.tusStore.List(ctx, id+"/", storage.ListOptions{}) {
		if err != nil {
			return time.Time{}, false, err
		}
		found = true
		if obj.ModTime.After(last) {
			last = obj.ModTime
		}
	}
	return last, found, nil
}

// expireStoreUpload expires upload id of the media store, if it is due.
func (a *API) expireStoreUpload(ctx context.Context, id string, expiry time.Duration) (bool, error) {
	if !uploadIDRe.MatchString(id) {
		return false, nil
	}
	info, err := readTusInfo(ctx, a.tusStore, id)
	orphan := errors.Is(err, tus.ErrNotFound) // parts an interrupted removal left
	switch {
	case errors.Is(err, errBadTusInfo):
		return false, nil // not Shoal's (RecoverUploads says so)
	case err != nil && !orphan:
		return false, err
	}
	vid := info.MetaData[tusVideoIDKey]
	if !orphan && !ids.Valid(vid) {
		return false, nil
	}
	lock, err := a.recoveryLock(ctx, id)
	if lock == nil {
		return false, err
	}
	defer func() { _ = lock.Unlock() }()
	last, found, err := a.storeUploadWritten(ctx, id)
	if err != nil || !found || a.now().Sub(last) < expiry {
		return false, err
	}
	if !orphan {
		held, err := a.holds(ctx, vid, id)
		if err != nil {
			return false, err
		}
		if held {
			parts, err := tusParts(ctx, a.tusStore, id)
			if err != nil {
				return false, err
			}
			if !info.SizeIsDeferred && partsEnd(parts) == info.Size {
				return false, nil // complete: RecoverUploads finishes it
			}
			if err := a.store.AbortUpload(ctx, vid, "tus:"+id); err != nil {
				return false, err
			}
		}
	}
	a.dropTus(ctx, tus.FileInfo{ID: id}, true)
	a.log.Info("tus upload expired: nothing came for "+expiry.String()+"; its objects were removed and the video waits for its source again",
		"upload", id, "video", vid, "last_write", last.UTC().Format(time.RFC3339))
	return true, nil
}
