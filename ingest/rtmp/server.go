// Package rtmp is the RTMP ingest: OBS and other encoders publish to
// rtmp://HOST:1935/live/<stream_key>. Each accepted publisher becomes a
// publication of the stream's "source" rendition in the stream hub.
package rtmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// App is the RTMP application name publishers use: rtmp://HOST/live/KEY.
const App = "live"

// ErrUnknownKey is what an Authorizer returns for a stream key it does not know.
var ErrUnknownKey = errors.New("unknown stream key")

// Authorizer maps a stream key to the id of its live stream.
type Authorizer interface {
	Authorize(ctx context.Context, streamKey string) (streamID string, err error)
}

// Hub is the part of the stream hub ingest publishes into.
type Hub interface {
	Publishing(key media.StreamKey) bool
	Publish(key media.StreamKey, tracks []media.Track) (*stream.Publisher, error)
}

// Config configures the RTMP server.
type Config struct {
	// Addr to listen on, e.g. ":1935".
	Addr string
	// ReadTimeout closes a publisher that sends nothing for this long.
	ReadTimeout time.Duration
}

// Deps are the server's collaborators.
type Deps struct {
	Log        *slog.Logger
	Auth       Authorizer
	Hub        Hub
	Registerer prometheus.Registerer
}

// Server accepts RTMP publishers.
type Server struct {
	cfg  Config
	deps Deps
	ln   net.Listener
	m    metrics

	refusedLog *logx.Limiter

	mu         sync.Mutex
	conns      map[net.Conn]struct{}
	publishers map[string]net.Conn // stream id -> its publisher's connection
}

type metrics struct {
	bytes      prometheus.Counter
	publishers prometheus.Gauge
	refused    *prometheus.CounterVec
	bitrate    *prometheus.GaugeVec
}

// New validates cfg and opens the listening socket (so a busy port is
// reported before anything starts); Run serves it.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Hub == nil {
		return nil, errors.New("rtmp ingest: Auth and Hub are required")
	}
	if cfg.ReadTimeout <= 0 {
		return nil, fmt.Errorf("rtmp ingest: read timeout must be positive, got %s", cfg.ReadTimeout)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{
		cfg:        cfg,
		deps:       deps,
		refusedLog: logx.NewLimiter(10 * time.Second),
		conns:      map[net.Conn]struct{}{},
		publishers: map[string]net.Conn{},
		m: metrics{
			bytes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "shoal_ingest_bytes_total", Help: "Media payload bytes received from publishers.",
				ConstLabels: prometheus.Labels{"protocol": "rtmp"},
			}),
			publishers: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "shoal_ingest_publishers", Help: "Publishers connected now.",
				ConstLabels: prometheus.Labels{"protocol": "rtmp"},
			}),
			refused: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "shoal_ingest_refused_total", Help: "Publish attempts refused, by reason.",
				ConstLabels: prometheus.Labels{"protocol": "rtmp"},
			}, []string{"reason"}),
			bitrate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "shoal_ingest_bitrate_bits_per_second", Help: "Media bitrate received per live stream, over the last second or more.",
				ConstLabels: prometheus.Labels{"protocol": "rtmp"},
			}, []string{"stream"}),
		},
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{s.m.bytes, s.m.publishers, s.m.refused, s.m.bitrate} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("rtmp ingest: register metrics: %w", err)
			}
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("rtmp ingest: listen on %s: %w", cfg.Addr, err)
	}
	s.ln = ln
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Run accepts publishers until ctx is done, then closes every connection and
// returns once all of them are finished.
func (s *Server) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		s.ln.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		return nil
	})
	s.deps.Log.Info("rtmp ingest listening", "addr", s.ln.Addr().String())
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.ln.Close()
			_ = g.Wait()
			return fmt.Errorf("rtmp ingest: accept: %w", err)
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			conn.Close()
			break
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		g.Go(func() error {
			defer func() {
				s.mu.Lock()
				delete(s.conns, conn)
				s.mu.Unlock()
				conn.Close()
			}()
			s.handle(ctx, conn)
			return nil
		})
	}
	return g.Wait()
}

// Close closes the listening socket; Run does it too when it returns.
func (s *Server) Close() error { return s.ln.Close() }

// Disconnect closes the connection of stream id's publisher, if one is
// connected, and reports whether there was one.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.publishers[id]
	if ok {
		c.Close()
	}
	return ok
}

// streamKeyFromPath extracts KEY from "/live/KEY" (the path gortmplib builds
// from tcUrl and the publish name). Query strings are ignored.
func streamKeyFromPath(path string) (string, error) {
	path = strings.TrimPrefix(path, "/")
	app, key, ok := strings.Cut(path, "/")
	if !ok || app != App {
		return "", fmt.Errorf("publish to rtmp://HOST/%s/<stream_key>, not /%s", App, path)
	}
	if key == "" || strings.ContainsAny(key, "/?#") {
		return "", errors.New("missing or malformed stream key")
	}
	return key, nil
}

// keyHint identifies a key in logs without revealing it.
func keyHint(key string) string { return ids.Hash(key)[:8] }
