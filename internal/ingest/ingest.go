// Package ingest holds what every ingest protocol (ingest/rtmp,
// ingest/rtsp) shares: the stream-key authorizer and hub they depend on,
// the publish path, and the per-protocol metrics, so that a publisher is
// treated the same whatever protocol it speaks.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// App is the path prefix publishers use: <scheme>://HOST/live/KEY.
const App = "live"

// ErrUnknownKey is what an Authorizer returns for a stream key it does not know.
var ErrUnknownKey = errors.New("unknown stream key")

// Authorizer maps a stream key to the id of its live stream.
type Authorizer interface {
	Authorize(ctx context.Context, streamKey string) (streamID string, err error)
}

// AuthorizerFunc is a function that is an Authorizer.
type AuthorizerFunc func(ctx context.Context, streamKey string) (string, error)

// Authorize calls f.
func (f AuthorizerFunc) Authorize(ctx context.Context, key string) (string, error) {
	return f(ctx, key)
}

// ErrNotPermitted is what a StreamAuthorizer returns for a credential it
// knows that may not publish (an API key without the "streams" scope).
var ErrNotPermitted = errors.New(`this API key lacks the "streams" scope`)

// ErrUnknownStream is what a StreamAuthorizer returns for a live stream
// that does not exist.
var ErrUnknownStream = errors.New("unknown live stream")

// ErrLiveElsewhere is matched (errors.Is) by the error an Authorizer or
// StreamAuthorizer returns for a live stream that another origin ingests
// right now (a LiveElsewhereError).
var ErrLiveElsewhere = errors.New("the stream is live at another origin")

// LiveElsewhereError says which origin ingests the stream.
type LiveElsewhereError struct {
	// Origin is the owning origin's public URL.
	Origin string
}

func (e *LiveElsewhereError) Error() string {
	return "this stream is live at another origin (" + e.Origin + "): publish there, or wait until that broadcast ends"
}

// Is makes the error match ErrLiveElsewhere.
func (e *LiveElsewhereError) Is(target error) bool { return target == ErrLiveElsewhere }

// StreamAuthorizer checks a credential other than the stream key (an API
// key) for publishing to the live stream streamID. It returns nil,
// ErrUnknownKey for a credential it does not accept, ErrUnknownStream, or
// another error when it cannot check now.
type StreamAuthorizer interface {
	AuthorizeStream(ctx context.Context, streamID, credential string) error
}

// Hub is the part of the stream hub ingest publishes into.
type Hub interface {
	Publishing(key media.StreamKey) bool
	Publish(key media.StreamKey, tracks []media.Track) (*stream.Publisher, error)
}

// StreamKeyFromPath extracts KEY from "/live/KEY" (leading and trailing
// slashes ignored); scheme names the protocol in the error.
func StreamKeyFromPath(scheme, path string) (string, error) {
	path = strings.Trim(path, "/")
	app, key, ok := strings.Cut(path, "/")
	if !ok || app != App {
		// The path is not echoed: it may hold a stream key.
		return "", fmt.Errorf("publish to %s://HOST/%s/<stream_key>", scheme, App)
	}
	if key == "" || strings.ContainsAny(key, "/?#") {
		return "", errors.New("missing or malformed stream key")
	}
	return key, nil
}

// Describe lists tracks for logs: "h264 1280x720", "aac 48000Hz 2ch".
func Describe(tracks []media.Track) []string {
	out := make([]string, len(tracks))
	for i, t := range tracks {
		if t.IsVideo() {
			out[i] = fmt.Sprintf("%s %dx%d", t.Codec, t.Width, t.Height)
		} else {
			out[i] = fmt.Sprintf("%s %dHz %dch", t.Codec, t.SampleRate, t.Channels)
		}
	}
	return out
}

// Metrics are one protocol's ingest metrics (label protocol).
type Metrics struct {
	Bytes      prometheus.Counter
	Publishers prometheus.Gauge
	Refused    *prometheus.CounterVec // by reason
	Bitrate    *prometheus.GaugeVec   // by stream
}

// NewMetrics makes protocol's ingest metrics and registers them on reg
// (when not nil).
func NewMetrics(protocol string, reg prometheus.Registerer) (Metrics, error) {
	l := prometheus.Labels{"protocol": protocol}
	m := Metrics{
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_ingest_bytes_total", Help: "Media payload bytes received from publishers.", ConstLabels: l,
		}),
		Publishers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_ingest_publishers", Help: "Publishers connected now.", ConstLabels: l,
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_ingest_refused_total", Help: "Publish attempts refused, by reason.", ConstLabels: l,
		}, []string{"reason"}),
		Bitrate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_ingest_bitrate_bits_per_second", Help: "Media bitrate received per live stream, over the last second or more.",
			ConstLabels: l,
		}, []string{"stream"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.Bytes, m.Publishers, m.Refused, m.Bitrate} {
			if err := reg.Register(c); err != nil {
				return Metrics{}, fmt.Errorf("%s ingest: register metrics: %w", protocol, err)
			}
		}
	}
	return m, nil
}

// ConnLimiter bounds the ingest connections held before and after
// authentication, in total and per remote address, so that no client can
// make the node hold more than its share (a flood of idle handshakes). One
// limiter is shared by the ingest protocols. The zero limits mean none.
type ConnLimiter struct {
	maxTotal, maxPerIP int

	mu    sync.Mutex
	total int
	perIP map[string]int
}

// NewConnLimiter makes a limiter; 0 leaves a bound out.
func NewConnLimiter(maxTotal, maxPerIP int) *ConnLimiter {
	return &ConnLimiter{maxTotal: maxTotal, maxPerIP: maxPerIP, perIP: map[string]int{}}
}

// Acquire counts a connection from addr (host:port or a bare host) and
// returns the function that releases it (safe to call more than once), or
// ok false when a bound is reached. A nil limiter admits everything. An
// IPv6 /64 counts as one address, as in the key guard: one subscriber
// holds a whole /64 and could otherwise take every slot.
func (l *ConnLimiter) Acquire(addr string) (release func(), ok bool) {
	if l == nil {
		return func() {}, true
	}
	ip := hostOf(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	if (l.maxTotal > 0 && l.total >= l.maxTotal) || (l.maxPerIP > 0 && l.perIP[ip] >= l.maxPerIP) {
		return nil, false
	}
	l.total++
	l.perIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			l.total--
			if l.perIP[ip]--; l.perIP[ip] <= 0 {
				delete(l.perIP, ip)
			}
		})
	}, true
}

// InUse is how many connections hold a slot now.
func (l *ConnLimiter) InUse() int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// RefusedLimit is the refusal reason (metric label) of a connection over
// the limits.
const RefusedLimit = "too_many_connections"

// AACClock times AAC frames by their sample count. Protocols that carry
// audio with millisecond timestamps (FLV) round each frame's time, so
// 1024-sample frames come out 1023 or 1025 ticks apart, and some encoders
// (GStreamer's avenc_aac) give two frames the same millisecond: taken as
// they come, these make uneven segment durations, or frames dropped as
// going backwards. A frame whose time is within one and a half frames of
// where the last one ended is placed exactly there; one further behind is
// dropped (the source's audio clock runs fast); a larger jump (a gap in the
// source, a reconnect) restarts the count at the frame's own time.
type AACClock struct {
	frame   int64 // samples per frame
	next    int64 // where the next frame should start, in samples
	started bool
}

// NewAACClock makes a clock for frames of the given number of samples
// (1024 for AAC-LC; 960 for the rare 960-sample variant).
func NewAACClock(samplesPerFrame int) *AACClock {
	if samplesPerFrame <= 0 {
		samplesPerFrame = 1024
	}
	return &AACClock{frame: int64(samplesPerFrame)}
}

// Time returns the PTS (in samples) of a frame that arrived with time ts
// (in samples), or ok false when the frame is to be dropped: its time is
// more than one and a half frames (and less than a second) before where
// the last one ended, which is the source's audio running fast against
// its own timestamps (dropping a frame now and then keeps the audio with
// the video; placing it at its own time would go backwards).
func (c *AACClock) Time(ts int64) (pts int64, ok bool) {
	if c.started {
		// One and a half frames: a repeated millisecond puts a frame a
		// whole frame plus the rounding early.
		d, tol := ts-c.next, c.frame*3/2
		switch {
		case d >= -tol && d <= tol:
			ts = c.next
		case d < -tol && d > -c.frame*48: // under a second at any AAC rate
			return 0, false
		}
	}
	c.started = true
	c.next = ts + c.frame
	return ts, true
}
