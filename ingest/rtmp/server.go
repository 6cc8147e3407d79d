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
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
)

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
	Auth       ingest.Authorizer
	Hub        ingest.Hub
	Registerer prometheus.Registerer
	// Limits, when set, bounds connections in total and per address
	// (shared with the other ingest protocols).
	Limits *ingest.ConnLimiter
}

// Server accepts RTMP publishers.
type Server struct {
	cfg  Config
	deps Deps
	ln   net.Listener
	m    ingest.Metrics

	refusedLog *logx.Limiter

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	// publishers: by stream id, the connections whose key for it was
	// accepted, publishing or still reading their tracks.
	publishers map[string]map[net.Conn]struct{}
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
		publishers: map[string]map[net.Conn]struct{}{},
	}
	m, err := ingest.NewMetrics("rtmp", deps.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m
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
		release, ok := s.deps.Limits.Acquire(conn.RemoteAddr().String())
		if !ok {
			s.refuse(s.deps.Log.With("remote", conn.RemoteAddr().String()), ingest.RefusedLimit)
			conn.Close()
			continue
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			release()
			conn.Close()
			break
		}
		s.conns[conn] = struct{}{}
		s.mu.Unlock()
		g.Go(func() error {
			defer release()
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

// Disconnect closes the connections whose key for stream id was accepted,
// publishing or not yet (a key reset or a deleted stream must stop those
// still reading their tracks too), and reports whether there was any.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.publishers[id] {
		c.Close()
	}
	return len(s.publishers[id]) > 0
}

// streamKeyFromPath extracts KEY from "/live/KEY" (the path gortmplib builds
// from tcUrl and the publish name). Query strings are ignored.
func streamKeyFromPath(path string) (string, error) { return ingest.StreamKeyFromPath("rtmp", path) }

// keyHint identifies a key in logs without revealing it.
func keyHint(key string) string { return ids.Hash(key)[:8] }
