package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/remote"
)

// remoteLive is a remote worker's side of live ladders: slots loops, each
// claiming a ladder from the origin (a long poll), reading its source body
// and posting its renditions body while EncodeLive encodes, until the
// stream ends or the origin takes the ladder away.
type remoteLive struct {
	client  *nodeproto.Client
	origins *originset.Set
	accel   transcode.Accel
	preset  string
	log     *slog.Logger
	// cheat, a test option, changes the rungs before they are encoded.
	cheat func(rungs []ffmpeg.Rung)
	// budget shares the worker's ladders with its VOD jobs.
	budget *ladderBudget
}

// quarterBitrates is a cheating worker's change to its rungs (testOptions).
func quarterBitrates(rungs []ffmpeg.Rung) {
	for i := range rungs {
		rungs[i].Bitrate /= 4
	}
}

// run claims and encodes live ladders, slots at once, until ctx ends.
func (r *remoteLive) run(ctx context.Context, slots int) error {
	var g errgroup.Group
	for range max(1, slots) {
		g.Go(func() error {
			r.loop(ctx)
			return nil
		})
	}
	return g.Wait()
}

func (r *remoteLive) loop(ctx context.Context) {
	backoff, lastErr := time.Second, ""
	for ctx.Err() == nil {
		origin := r.origins.Attempts()[0]
		a, ok, err := r.client.ClaimLive(ctx, origin, nodeproto.ClaimRequest{VODBusy: r.budget.vodBusy()}, nil)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if err.Error() != lastErr { // once per kind of failure
				r.log.Warn("claiming a live ladder", "origin", origin, "err", err)
				lastErr = err.Error()
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff, lastErr = time.Second, ""
		if !ok {
			continue
		}
		log := r.log.With("stream", a.Stream, "assignment", a.Assignment)
		log.Info("encoding a live ladder")
		release := r.budget.liveStarted()
		if err := r.encode(ctx, origin, a, log); err != nil && ctx.Err() == nil {
			log.Warn("the live ladder ended with an error", "err", err)
		} else {
			log.Info("the live ladder ended")
		}
		release()
	}
}

// encode runs one assignment: the source body in, the renditions body out.
func (r *remoteLive) encode(ctx context.Context, origin string, a nodeproto.LiveAssignment, log *slog.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	src, err := r.client.OpenLiveSource(ctx, origin, a.Assignment)
	if err != nil {
		return fmt.Errorf("the source: %w", err)
	}
	defer src.Close()
	pr, pw := io.Pipe()
	posted := make(chan error, 1)
	go func() { // waited for below
		err := r.client.PostLiveRenditions(ctx, origin, a.Assignment, pr)
		pr.CloseWithError(errors.New("the renditions request ended"))
		cancel() // the origin stopped taking renditions: stop reading
		posted <- err
	}()
	base := r.accel.PipelineConfig(r.preset, time.Second, log)
	err = remote.EncodeLiveCheating(ctx, base, src, nodeproto.NewLiveWriter(pw, nil), log, r.cheat)
	pw.CloseWithError(err) // nil: the body ends cleanly
	perr := <-posted
	if err == nil {
		err = perr
	}
	return err
}
