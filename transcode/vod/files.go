package vod

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
const recordFile = "record.json"

// SaveRecord keeps a copy of video id's record (its fields as Redis holds
// them) next to its source, so that a Redis that lost its data can be
// given it back (Records).
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
	path := filepath.Join(dir, recordFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
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
