package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-video/shoal/ingest/rtmp"
	"github.com/shoal-video/shoal/ingest/rtsp"
	"github.com/shoal-video/shoal/ingest/srt"
	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	playerapi "github.com/shoal-video/shoal/player-api"
	"github.com/shoal-video/shoal/restream"
	"github.com/shoal-video/shoal/transcode"
)

// pipeline is the API's view of this node's media pipeline.
type pipeline struct {
	hub    *stream.Hub
	ingest *rtmp.Server
	rtsp   *rtsp.Server // nil with rtsp_addr off
	srt    *srt.Server  // nil with srt_addr off
	whip   *whip.Server
	// restream is nil with restreaming off.
	restream *restream.Manager
	keys     *keyAuthorizer
	pull     *rtsp.Puller
	pkg      *packager.Packager
	tc       *transcode.Transcoder // nil with transcoding off
	owners   *liveOwners
}

func (p pipeline) Problem(id string) string {
	if p.tc != nil {
		if msg := p.tc.Problem(id); msg != "" {
			return msg
		}
	}
	return p.pkg.Problem(id)
}

// IsLive tells whether stream id is live here or at another origin.
func (p pipeline) IsLive(id string) bool { return p.owners.isLiveAnywhere(id) }

func (p pipeline) Pull(id string) (playerapi.PullState, bool) {
	st, ok := p.pull.Status(id)
	return playerapi.PullState{State: st.State, LastError: st.LastError, Since: st.Since}, ok
}

// pullSources lists the live streams to pull from their source URL: those
// no other origin ingests (each is claimed here first).
func pullSources(store *routing.Store, owners *liveOwners) func(ctx context.Context) ([]rtsp.Source, error) {
	return func(ctx context.Context) ([]rtsp.Source, error) {
		list, err := store.ListLiveStreams(ctx)
		if err != nil {
			return nil, err
		}
		var out []rtsp.Source
		for _, ls := range list {
			if ls.SourceURL != "" && owners.claim(ctx, ls.ID) == nil {
				out = append(out, rtsp.Source{ID: ls.ID, URL: ls.SourceURL})
			}
		}
		return out, nil
	}
}

// Remove ends the stream without a reconnect grace, disconnects its
// publisher and deletes its HLS output (once the packager has finished).
func (p pipeline) Remove(id string) error {
	// A pull would publish again: it ends (and is not restarted) first.
	p.pull.Stop(id)
	p.hub.End(media.StreamKey{Name: id, Rendition: media.RenditionSource})
	p.Disconnect(id)
	return p.pkg.Remove(id)
}

// streamLadders reads a live stream's own ladder from the store.
type streamLadders struct{ store *routing.Store }

func (s streamLadders) StreamLadder(ctx context.Context, id string) (string, error) {
	ls, err := s.store.GetLiveStream(ctx, id)
	if errors.Is(err, routing.ErrNotFound) {
		return "", nil
	}
	return ls.Ladder, err
}

func (p pipeline) Restreams(id string) map[string]playerapi.RestreamState {
	if p.restream == nil {
		return nil
	}
	out := map[string]playerapi.RestreamState{}
	for rid, st := range p.restream.States(id) {
		out[rid] = playerapi.RestreamState{State: st.State, Error: st.Error, Detail: st.Detail, Since: st.Since, BytesSent: st.BytesSent}
	}
	return out
}

func (p pipeline) RefreshRestreams(id string) {
	if p.restream != nil {
		p.restream.Refresh(id)
	}
}

// restreamTargets reads live streams' restream targets from the store.
type restreamTargets struct{ store *routing.Store }

func (r restreamTargets) Targets(ctx context.Context, id string) ([]restream.Target, error) {
	list, err := r.store.ListRestreams(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]restream.Target, len(list))
	for i, t := range list {
		out[i] = restream.Target{ID: t.ID, Name: t.Name, URL: t.URL, Rendition: t.Rendition}
	}
	return out, nil
}

// restreamEvents announces live_stream.restream.failed once per target
// and failure spell: a target that keeps failing while the stream is live
// (it is retried with a growing delay) is announced again only after it
// was live in between.
type restreamEvents struct {
	store *routing.Store
	log   *slog.Logger
	warn  *logx.Limiter

	mu     sync.Mutex
	failed map[string]bool // stream id + "/" + target id
}

func newRestreamEvents(store *routing.Store, log *slog.Logger) *restreamEvents {
	return &restreamEvents{store: store, log: log, warn: logx.NewLimiter(10 * time.Second), failed: map[string]bool{}}
}

// onState is restream.Deps.OnState.
func (e *restreamEvents) onState(id string, t restream.Target, st restream.State) {
	k := id + "/" + t.ID
	e.mu.Lock()
	switch st.State {
	case restream.StateLive, restream.StateIdle:
		delete(e.failed, k)
		e.mu.Unlock()
		return
	case restream.StateFailed:
		if e.failed[k] {
			e.mu.Unlock()
			return
		}
		e.failed[k] = true
	default:
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	data := map[string]string{"id": id, "restream_id": t.ID, "restream_name": t.Name,
		"url": restream.RedactURL(t.URL), "error": st.Error}
	if err := e.store.PublishEvent(ctx, routing.EventRestreamFailed, data); err != nil {
		if ok, n := e.warn.Allow(); ok {
			e.log.Warn("could not announce a failed restream; webhooks will miss it", "stream", id, "err", err, "suppressed_since_last", n)
		}
	}
}

// Disconnect ends the connection of live stream id's publisher, whatever
// its protocol, and forgets the stream's cached keys: its stream key was
// reset (or the stream deleted), so the publisher has to come back with
// the new one. (Other origins do the same when they read the reset from
// the key revocation feed.)
func (p pipeline) Disconnect(id string) {
	if p.keys != nil {
		p.keys.forget(id)
	}
	p.disconnectPublishers(id)
}

// disconnectPublishers ends the connection of live stream id's publisher
// on this node, whatever its protocol.
func (p pipeline) disconnectPublishers(id string) {
	p.ingest.Disconnect(id)
	if p.rtsp != nil {
		p.rtsp.Disconnect(id)
	}
	if p.srt != nil {
		p.srt.Disconnect(id)
	}
	p.whip.Disconnect(id)
}
