package app

import (
	"log/slog"
	"net/http"
	"net/url"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/p2p/tracker"
)

// newTracker is the P2P tracker of a node (origin or edge), mounted at
// tracker.Path next to /hls/. A join is admitted when hls, the node's HLS
// handler, would serve the swarm's rendition playlist to the same request
// (its token, its address): the HLS access checks (unknown or deleted id:
// 404, missing or bad token for signed content: 403) are reused as they
// are, and the rendition must exist.
func newTracker(hls http.Handler, clientIP func(*http.Request) string, reg prometheus.Registerer, log *slog.Logger) (*tracker.Tracker, error) {
	return tracker.New(tracker.Config{Authorize: p2pAuthorize(hls), ClientIP: clientIP, Registerer: reg, Log: log})
}

func p2pAuthorize(hls http.Handler) func(r *http.Request, id string) int {
	return func(r *http.Request, id string) int {
		_, rendition, ok := tracker.ParseSwarm(r.URL.Query().Get("swarm"))
		if !ok {
			return http.StatusBadRequest
		}
		q := url.Values{}
		if tok := r.URL.Query().Get(playback.TokenParam); tok != "" {
			q.Set(playback.TokenParam, tok)
		}
		probe := r.Clone(r.Context())
		probe.Method = http.MethodHead
		probe.URL = &url.URL{Path: hlspath.Prefix + id + "/" + rendition + "/index.m3u8", RawQuery: q.Encode()}
		probe.RequestURI = probe.URL.RequestURI()
		for _, h := range []string{"Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions", "Sec-Websocket-Protocol"} {
			probe.Header.Del(h)
		}
		rec := &statusRecorder{header: http.Header{}}
		hls.ServeHTTP(rec, probe)
		switch st := rec.code(); {
		case st < 400 && rec.header.Get(hlspath.P2PHeader) == "off":
			return http.StatusConflict
		case st < 400:
			return http.StatusOK
		case st == http.StatusUnauthorized || st == http.StatusForbidden:
			return http.StatusForbidden
		default:
			return st
		}
	}
}

// statusRecorder keeps the status of an answer and drops its body.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(p), nil
}

func (s *statusRecorder) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}
