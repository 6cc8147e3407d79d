package vod

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Settings is how a file is transcoded.
type Settings struct {
	Backend string
	// GPU, when set, decodes (NVDEC) and scales the file, and counts the
	// NVENC sessions when Backend is nvenc.
	GPU             *ffmpeg.GPU
	Preset          string
	SegmentDuration time.Duration
	Log             *slog.Logger
	// NewPackager makes the packager that writes the HLS; required.
	NewPackager NewPackager
}

// Packager writes HLS for what a hub publishes until the hub closes.
type Packager interface {
	Run(ctx context.Context) error
}

// NewPackager makes a Packager writing the publications of hub as fMP4
// HLS with segments of the given duration under dir (dir/<id>/...). The
// app hands in the live packager, so that transcoding and packaging meet
// only through the stream hub.
type NewPackager func(dir string, hub *stream.Hub, segment time.Duration, log *slog.Logger) (Packager, error)

// Transcode transcodes the source file src of video id into a complete
// HLS tree (fMP4, the ladder for the source's size, the audio group),
// a poster and a storyboard in root/<id>; root must be empty. progress is
// called with the share of the source done (0 to 1). The HLS is written by
// the packager s.NewPackager makes (the live one), fed through a private
// lossless hub.
func Transcode(ctx context.Context, s Settings, id, src, root string, ladder media.Ladder, progress func(float64)) (routing.JobOutcome, error) {
	info, err := ffmpeg.ProbeFile(src)
	if err != nil {
		return routing.JobOutcome{}, err
	}
	rungs := ladder.For(info.Height)
	frungs := make([]ffmpeg.Rung, len(rungs))
	for i, r := range rungs {
		frungs[i] = ffmpeg.Rung{Name: r.Name(), Height: r.Height, Bitrate: r.Bitrate}
	}

	if s.NewPackager == nil {
		return routing.JobOutcome{}, errors.New("vod: Settings.NewPackager is required")
	}
	hub, err := stream.New(stream.Config{QueueSize: 256, Lossless: true}, stream.Deps{Log: s.Log})
	if err != nil {
		return routing.JobOutcome{}, err
	}
	pkg, err := s.NewPackager(root, hub, s.SegmentDuration, s.Log)
	if err != nil {
		return routing.JobOutcome{}, err
	}
	// The hub ends its publications when hubCtx is done; the packager then
	// drains them and returns: it must not be cancelled before that.
	hubCtx, stopHub := context.WithCancel(ctx)
	defer stopHub()
	var g errgroup.Group
	g.Go(func() error { return hub.Run(hubCtx) })
	g.Go(func() error { return pkg.Run(context.WithoutCancel(ctx)) })

	// The poster and the storyboard are made while the packager runs; the
	// packager starts the stream's directory afresh when its first
	// rendition starts, so they wait next to it until it has finished.
	outDir := filepath.Join(root, id)
	stills := filepath.Join(root, ".stills")
	if err := os.MkdirAll(stills, 0o755); err != nil {
		return routing.JobOutcome{}, err
	}
	o := &fileOutput{id: id, hub: hub, log: s.Log}
	sb := newStoryboard(stills, thumbnailInterval(info.Duration))
	var sbErr, posterErr error
	poster := false
	res, err := ffmpeg.TranscodeFile(ctx, src, ffmpeg.FileConfig{
		Config: ffmpeg.Config{
			Backend: s.Backend, GPU: s.GPU, Preset: s.Preset, KeyframeInterval: s.SegmentDuration, Log: s.Log,
		},
		Rungs:             frungs,
		ThumbnailInterval: sb.interval,
		ThumbnailWidth:    160,
		PosterAt:          posterAt(info.Duration),
		PosterMaxWidth:    1280,
	}, ffmpeg.FileSink{
		Start: o.start,
		Video: o.video,
		Audio: o.audio,
		Thumbnail: func(at time.Duration, img *image.RGBA) {
			if sbErr == nil {
				sbErr = sb.add(at, img)
			}
		},
		Poster: func(img *image.RGBA) {
			posterErr = writeJPEG(filepath.Join(stills, PosterFile), img, 85)
			poster = posterErr == nil
		},
		Progress: func(done time.Duration) {
			if info.Duration > 0 {
				progress(min(float64(done)/float64(info.Duration), 1))
			}
		},
	})
	if err == nil {
		o.flushAudio()
		if o.audioT != nil && o.audioFrames == 0 && s.Log != nil {
			// The packager leaves the empty audio group out of the master
			// playlist: the video plays without sound.
			s.Log.Warn("the source's audio track could not be decoded at all: the video is published without audio", "video", id)
		}
	}
	o.endAll()
	stopHub()
	_ = g.Wait()
	if err != nil {
		return routing.JobOutcome{}, err
	}
	if o.err != nil {
		return routing.JobOutcome{}, o.err
	}
	if len(o.pubs) == 0 {
		return routing.JobOutcome{}, fmt.Errorf("%w: no video frame could be decoded", ffmpeg.ErrNotVideo)
	}
	storyboard, err := sb.finish(res.Duration)
	if err = errors.Join(err, sbErr, posterErr); err != nil {
		return routing.JobOutcome{}, err
	}
	if err := moveAll(stills, outDir); err != nil {
		return routing.JobOutcome{}, err
	}
	out := routing.JobOutcome{Duration: res.Duration, Poster: poster, Storyboard: storyboard}
	for _, r := range o.rungs {
		out.Renditions = append(out.Renditions, routing.VideoRendition{Name: r.Name, Width: r.Width, Height: r.Height, Bitrate: r.Bitrate})
	}
	return out, nil
}

// fileOutput publishes what TranscodeFile produces into the private hub:
// one publication per rung, each created at the rung's first keyframe
// (which carries the parameter sets). The audio rides with the first rung
// and is interleaved behind its video (an audio frame is written once that
// rung's video reached its instant), as the packager cuts the audio at the
// video's cut points.
type fileOutput struct {
	id  string
	hub *stream.Hub
	log *slog.Logger

	rungs  []ffmpeg.Rung
	audioT *media.Track
	pubs   map[int]*stream.Publisher
	queued []*media.AccessUnit // audio not yet written
	// audioFrames counts the audio frames TranscodeFile gave.
	audioFrames int
	err         error
}

func (o *fileOutput) start(rungs []ffmpeg.Rung, audio *media.Track) error {
	o.rungs, o.audioT = rungs, audio
	o.pubs = map[int]*stream.Publisher{}
	return nil
}

func (o *fileOutput) video(i int, au *media.AccessUnit) {
	if i >= len(o.rungs) || o.err != nil {
		return
	}
	p := o.pubs[i]
	if p == nil {
		if !au.Keyframe {
			return
		}
		r := o.rungs[i]
		tracks := []media.Track{r.Track(au)}
		if i == 0 && o.audioT != nil {
			tracks = append(tracks, *o.audioT)
		}
		var err error
		p, err = o.hub.Publish(media.StreamKey{Name: o.id, Rendition: r.Name}, tracks)
		if err != nil {
			o.err = fmt.Errorf("packaging rendition %s: %w", r.Name, err)
			return
		}
		o.pubs[i] = p
	}
	au.Track = 0
	p.Write(au)
	if i == 0 {
		o.releaseAudio(media.Duration(au.DTS, 90000))
	}
}

func (o *fileOutput) audio(au *media.AccessUnit) {
	if o.audioT == nil || o.err != nil {
		return
	}
	o.audioFrames++
	o.queued = append(o.queued, au)
	if p := o.pubs[0]; p == nil && len(o.queued) > 50_000 {
		o.err = errors.New("audio without video: no video frame was encoded")
	}
}

// releaseAudio writes the queued audio up to instant upTo.
func (o *fileOutput) releaseAudio(upTo time.Duration) {
	p := o.pubs[0]
	n := 0
	for _, au := range o.queued {
		if media.Duration(au.DTS, o.audioT.ClockRate) > upTo {
			break
		}
		au.Track = 1
		p.Write(au)
		n++
	}
	o.queued = o.queued[n:]
}

func (o *fileOutput) flushAudio() {
	if o.pubs[0] != nil && o.audioT != nil {
		o.releaseAudio(1<<63 - 1)
	}
}

func (o *fileOutput) endAll() {
	for _, p := range o.pubs {
		p.End()
	}
}

// moveAll moves every file of dir into dst and removes dir.
func moveAll(dir, dst string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.Rename(filepath.Join(dir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return os.Remove(dir)
}
