package vod

import (
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
	return info.Duration, nil
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
