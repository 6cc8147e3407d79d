package vod

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Files is where a node keeps the files of videos: the uploaded sources
// and the published HLS trees. The control API stores and probes sources
// and removes deleted videos through it.
type Files struct {
	SourceDir string // <SourceDir>/<id>/source
	HLSDir    string // <HLSDir>/<id>/...
}

// SourcePath is where the source of video id is kept.
func (f Files) SourcePath(id string) string { return SourcePath(f.SourceDir, id) }

// Probe checks that path holds a video this node can transcode and returns
// its duration. The error is a message for the uploader, such as "not a
// video file: no video stream found".
func (f Files) Probe(path string) (time.Duration, error) {
	info, err := ffmpeg.ProbeFile(path)
	if err != nil {
		if errors.Is(err, ffmpeg.ErrNotVideo) {
			return 0, errors.New(describe(err))
		}
		return 0, fmt.Errorf("the file could not be read: %w", err)
	}
	if err := checkLimits(info); err != nil {
		return 0, err
	}
	return info.Duration, nil
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

// RemoveVideo deletes the source and the HLS tree of video id.
func (f Files) RemoveVideo(id string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("vod: invalid video id %q", id)
	}
	return errors.Join(
		os.RemoveAll(filepath.Join(f.SourceDir, id)),
		os.RemoveAll(filepath.Join(f.HLSDir, id)),
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
	dir := filepath.Join(f.SourceDir, id)
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
	dir := filepath.Join(f.SourceDir, id)
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
	entries, err := os.ReadDir(f.SourceDir)
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
		b, err := os.ReadFile(filepath.Join(f.SourceDir, e.Name(), recordFile))
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
