package app

import (
	"context"
	"errors"

	"github.com/shoal-video/shoal/ingest/rtmp"
	"github.com/shoal-video/shoal/ingest/rtsp"
	"github.com/shoal-video/shoal/ingest/srt"
	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	playerapi "github.com/shoal-video/shoal/player-api"
	"github.com/shoal-video/shoal/transcode"
)

// pipeline is the API's view of this node's media pipeline.
type pipeline struct {
	hub    *stream.Hub
	ingest *rtmp.Server
	rtsp   *rtsp.Server // nil with rtsp_addr off
	srt    *srt.Server  // nil with srt_addr off
	whip   *whip.Server
	pull   *rtsp.Puller
	pkg    *packager.Packager
	tc     *transcode.Transcoder // nil with transcoding off
}

func (p pipeline) Problem(id string) string {
	if p.tc == nil {
		return ""
	}
	return p.tc.Problem(id)
}

func (p pipeline) IsLive(id string) bool { return p.hub.IsLive(id) }

func (p pipeline) Pull(id string) (playerapi.PullState, bool) {
	st, ok := p.pull.Status(id)
	return playerapi.PullState{State: st.State, LastError: st.LastError, Since: st.Since}, ok
}

// pullSources lists the live streams to pull from their source URL.
func pullSources(store *routing.Store) func(ctx context.Context) ([]rtsp.Source, error) {
	return func(ctx context.Context) ([]rtsp.Source, error) {
		list, err := store.ListLiveStreams(ctx)
		if err != nil {
			return nil, err
		}
		var out []rtsp.Source
		for _, ls := range list {
			if ls.SourceURL != "" {
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
	p.ingest.Disconnect(id)
	if p.rtsp != nil {
		p.rtsp.Disconnect(id)
	}
	if p.srt != nil {
		p.srt.Disconnect(id)
	}
	p.whip.Disconnect(id)
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
