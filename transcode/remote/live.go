package remote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// EncodeLive is a worker's side of a remote live ladder: it reads a source
// body (nodeproto live framing: a LiveSource header, then the video's
// access units) from src, encodes the header's ladder with a pipeline
// whose keyframe grid is the header's anchor, and writes the renditions
// body to out: a LiveRenditions header once the encoders opened (again
// whenever the source changes size), then every rung's access units, the
// rung's index as their track. base gives the backend and GPU (Accel's
// PipelineConfig); the header gives the rest.
//
// It returns nil when the source body ends cleanly (the encoders are
// flushed first), ctx's error when ctx ends, and any other failure (a bad
// body, an encoder's error, out's) as an error: the origin then hands the
// ladder to another worker or to its own CPU, from the current GOP.
func EncodeLive(ctx context.Context, base ffmpeg.Config, src io.Reader, out *nodeproto.LiveWriter, log *slog.Logger) error {
	return EncodeLiveCheating(ctx, base, src, out, log, nil)
}

// EncodeLiveCheating is EncodeLive with the rungs changed by cheat (when
// set) before the encoders open: a test hook, for the worker a dishonest
// operator modified (say, to encode at a quarter of the bitrate) that the
// origin's sampled checks must catch. The shoal binary never sets it.
func EncodeLiveCheating(ctx context.Context, base ffmpeg.Config, src io.Reader, out *nodeproto.LiveWriter, log *slog.Logger, cheat func(rungs []ffmpeg.Rung)) error {
	if log == nil {
		log = slog.Default()
	}
	r := nodeproto.NewLiveReader(src)
	first, err := r.Next()
	if err != nil {
		return fmt.Errorf("live source: %w", err)
	}
	if first.Source == nil {
		return errors.New("live source: the body does not start with its header")
	}
	h := *first.Source
	ladder, _ := h.ParsedLadder() // checked by the decoder
	video := h.Tracks[h.Video].Track()
	fl := ladder.For(video.Height)
	rungs := make([]ffmpeg.Rung, len(fl))
	for i, g := range fl {
		rungs[i] = ffmpeg.Rung{Name: g.Name(), Height: g.Height, Bitrate: g.Bitrate}
	}
	// The header says what was asked, whatever a cheat encodes.
	asked := slices.Clone(rungs)
	if cheat != nil {
		cheat(rungs)
	}
	cfg := base
	cfg.Preset, cfg.KeyframeInterval = h.Preset, h.Segment()
	cfg.Anchored, cfg.KeyframeAnchor = true, h.KeyframeAnchor
	cfg.Log = log
	p, err := ffmpeg.New(cfg, video, rungs)
	if err != nil {
		return fmt.Errorf("live ladder: %w", err)
	}
	defer p.Close()

	var sent []ffmpeg.Rung // the rungs of the last header written
	var werr error
	emit := func(i int, au *media.AccessUnit) {
		if werr != nil {
			return
		}
		if now := p.OutputRungs(); !slices.Equal(now, sent) {
			hdr := nodeproto.LiveRenditions{Stream: h.Stream}
			for j, g := range now {
				hdr.Rungs = append(hdr.Rungs, nodeproto.LiveRung{Name: g.Name, Width: g.Width, Height: g.Height, Bitrate: asked[j].Bitrate})
			}
			if werr = out.WriteRenditions(hdr); werr != nil {
				return
			}
			sent = now
		}
		o := *au
		o.Track = i
		werr = out.WriteAU(&o)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			if err := p.Flush(emit); err != nil {
				return fmt.Errorf("live ladder: %w", err)
			}
			return werr
		}
		if err != nil {
			return fmt.Errorf("live source: %w", err)
		}
		switch {
		case f.AU != nil && f.AU.Track == h.Video:
			if err := p.Push(f.AU, emit); err != nil {
				return fmt.Errorf("live ladder: %w", err)
			}
		case f.AU != nil:
			return fmt.Errorf("live source: an access unit of track %d, not the video (%d)", f.AU.Track, h.Video)
		case f.Kind != nodeproto.LiveKindTick:
			return errors.New("live source: a second header")
		}
		if werr != nil {
			return fmt.Errorf("live renditions: %w", werr)
		}
	}
}
