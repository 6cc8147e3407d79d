package vod

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Files is where a node keeps the files of videos: the uploaded sources
// and the published HLS trees in the media store (local disk or S3), and
// the copies of video records and work files on local disk. The control
// API stores and probes sources and removes deleted videos through it.
type Files struct {
	// Store holds the sources (SourceKey) and the HLS trees ("hls/<id>/...",
	// see HLS).
	Store storage.Store
	// RecordDir keeps the copies of video records: <RecordDir>/<id>/record.json.
	RecordDir string
	// WorkDir is local scratch space: sources fetched from a remote store
	// and outputs being built.
	WorkDir string
}

// HLSPrefix is the directory of the media store that holds HLS trees.
const HLSPrefix = "hls"

// SourceKey is the key of video id's source in the media store.
func SourceKey(id string) string { return "videos/" + id + "/source" }

// HLS is the part of the store that holds HLS trees, keyed "<id>/...".
func (f Files) HLS() storage.Store { return storage.Sub(f.Store, HLSPrefix) }

// KeepSource makes the local file at file the source of video id, moving
// it into the store (a rename on local disk, an upload to S3).
func (f Files) KeepSource(ctx context.Context, id, file string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("vod: invalid video id %q", id)
	}
	_, err := storage.PutFile(ctx, f.Store, SourceKey(id), file, true)
	return err
}

// SourceSize is the size of video id's stored source; an error matching
// storage.ErrNotFound when there is none.
func (f Files) SourceSize(ctx context.Context, id string) (int64, error) {
	if !ids.Valid(id) {
		return 0, fmt.Errorf("vod: invalid video id %q", id)
	}
	info, err := f.Store.Stat(ctx, SourceKey(id))
	return info.Size, err
}

// FetchSource returns a local file holding video id's source: the stored
// file itself on local disk, else a copy downloaded into WorkDir, removed
// by done. A missing source is an error matching storage.ErrNotFound.
func (f Files) FetchSource(ctx context.Context, id string) (path string, done func(), err error) {
	if !ids.Valid(id) {
		return "", nil, fmt.Errorf("vod: invalid video id %q", id)
	}
	key := SourceKey(id)
	if p, ok := storage.LocalPath(f.Store, key); ok {
		if _, err := f.Store.Stat(ctx, key); err != nil {
			return "", nil, err
		}
		return p, func() {}, nil
	}
	rc, _, err := f.Store.Get(ctx, key, storage.Range{})
	if err != nil {
		return "", nil, err
	}
	defer rc.Close()
	if err := os.MkdirAll(f.WorkDir, 0o755); err != nil {
		return "", nil, err
	}
	tmp, err := os.CreateTemp(f.WorkDir, id+"-source-*")
	if err != nil {
		return "", nil, err
	}
	done = func() { _ = os.Remove(tmp.Name()) }
	_, err = io.Copy(tmp, rc)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		done()
		return "", nil, fmt.Errorf("vod: fetching the source of %s: %w", id, err)
	}
	return tmp.Name(), done, nil
}

// Probe checks that path holds a video this node can transcode and returns
// its duration and picture size (Bytes is left to the caller). The error
// is a message for the uploader, such as "not a video file: no video
// stream found".
func (f Files) Probe(path string) (routing.SourceInfo, error) {
	info, err := ffmpeg.ProbeFile(path)
	if err != nil {
		if errors.Is(err, ffmpeg.ErrNotVideo) {
			return routing.SourceInfo{}, errors.New(describe(err))
		}
		return routing.SourceInfo{}, fmt.Errorf("the file could not be read: %w", err)
	}
	if err := checkLimits(info); err != nil {
		return routing.SourceInfo{}, err
	}
	return routing.SourceInfo{Duration: info.Duration, Width: info.Width, Height: info.Height, FrameRate: info.FrameRate}, nil
}

// Limits on what a VOD job takes: a file that claims more would hold a
// worker for days (or is lying about itself).
const (
	MaxDuration  = 12 * time.Hour
	MaxFrameRate = 120
	MaxPixels    = 8192 * 4320
)

// checkLimits refuses a source beyond the limits, saying which and what to
// do.
func checkLimits(info ffmpeg.FileInfo) error {
	switch {
	case info.Duration > MaxDuration:
		return fmt.Errorf("the video lasts %s, more than the %s a video may last here: cut it into parts",
			info.Duration.Round(time.Second), MaxDuration)
	case info.FrameRate > MaxFrameRate:
		return fmt.Errorf("the video has %.0f frames per second, more than the %d a video may have here: re-encode it at a lower frame rate",
			info.FrameRate, MaxFrameRate)
	case info.Width*info.Height > MaxPixels:
		return fmt.Errorf("the video is %dx%d, larger than 8192x4320: scale it down", info.Width, info.Height)
	}
	return nil
}

// RemoveVideo deletes the source, the HLS tree and the record copy of
// video id.
func (f Files) RemoveVideo(ctx context.Context, id string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("vod: invalid video id %q", id)
	}
	return errors.Join(
		f.Store.Delete(ctx, SourceKey(id)),
		f.Store.DeletePrefix(ctx, HLSPrefix+"/"+id+"/"),
		os.RemoveAll(filepath.Join(f.RecordDir, id)),
	)
}

// recordFile is the name of the copy of a video's record kept next to its
// source (SaveRecord).
const (
	recordFile = "record.json"
	recordLock = "record.lock"
)

// SaveRecord keeps a copy of video id's record (its fields as Redis holds
// them) next to its source, so that a Redis that lost its data can be
// given it back (Records). Writers (the API, workers) may race: under a
// lock, a copy replaces the one there only when it is as new or newer
// (updated_at), so the last state wins whatever the order of the writes.
func (f Files) SaveRecord(id string, fields map[string]string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("vod: invalid video id %q", id)
	}
	b, err := json.Marshal(fields)
	if err != nil {
		return err
	}
	dir := filepath.Join(f.RecordDir, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(filepath.Join(dir, recordLock))
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(dir, recordFile)
	if old, err := os.ReadFile(path); err == nil {
		var was map[string]string
		if json.Unmarshal(old, &was) == nil && newer(was["updated_at"], fields["updated_at"]) {
			return nil
		}
	}
	// Writers take turns (the lock): one temporary name will do.
	return writeAtomically(path, func(w *bufio.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// DropRecord removes video id's record copy (the video was deleted while
// it was written), and its directory if nothing else is left in it.
func (f Files) DropRecord(id string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("vod: invalid video id %q", id)
	}
	dir := filepath.Join(f.RecordDir, id)
	err := os.Remove(filepath.Join(dir, recordFile))
	_ = os.Remove(filepath.Join(dir, recordLock))
	_ = os.Remove(dir) // only when empty
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// newer tells whether RFC 3339 time a is later than b (unparsable: no).
func newer(a, b string) bool {
	ta, err1 := time.Parse(time.RFC3339Nano, a)
	tb, err2 := time.Parse(time.RFC3339Nano, b)
	return err1 == nil && err2 == nil && ta.After(tb)
}

// lockFile takes an exclusive lock on the file at path (made if missing)
// and returns what releases it.
func lockFile(path string) (func(), error) {
	fl, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(fl.Fd()), syscall.LOCK_EX); err != nil {
		fl.Close()
		return nil, err
	}
	return func() {
		_ = syscall.Flock(int(fl.Fd()), syscall.LOCK_UN)
		fl.Close()
	}, nil
}

// Records calls fn with every video record copy kept (SaveRecord); an
// unreadable one is skipped. It stops at the first error fn returns.
func (f Files) Records(fn func(id string, fields map[string]string) error) error {
	entries, err := os.ReadDir(f.RecordDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() || !ids.Valid(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(f.RecordDir, e.Name(), recordFile))
		if err != nil {
			continue
		}
		var fields map[string]string
		if json.Unmarshal(b, &fields) != nil {
			continue
		}
		if err := fn(e.Name(), fields); err != nil {
			return err
		}
	}
	return nil
}
