package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/p2p/tracker"
	"github.com/shoal-video/shoal/packager/origin"
	playerapi "github.com/shoal-video/shoal/player-api"
	"github.com/shoal-video/shoal/web"
)

type httpConfig struct {
	Addr       string
	HLS        storage.Store // the HLS trees ("<id>/..."); nil serves no HLS
	HLSOptions []origin.Option
	// WrapHLS, when set, wraps the HLS handler (metrics).
	WrapHLS func(http.Handler) http.Handler
	// MetricsToken, when set, is the bearer token /metrics asks for.
	MetricsToken string
	// P2P mounts the P2P tracker at /p2p/ws (needs HLS); ClientIP is
	// how it tells its peers' addresses apart (trusted proxies).
	P2P      bool
	ClientIP func(*http.Request) string
}

// pinger reports whether the state store is reachable.
type pinger interface {
	Ping(ctx context.Context) error
}

type httpDeps struct {
	Log      *slog.Logger
	API      *playerapi.API // nil serves no API
	Web      *web.Web       // nil serves no pages
	Ready    pinger
	Registry *prometheus.Registry
}

// httpServer serves the API, origin HLS and operations endpoints on one port.
type httpServer struct {
	srv     *http.Server
	ln      net.Listener
	log     *slog.Logger
	tracker *tracker.Tracker // nil without P2P
}

// ginMode sets gin's process-wide mode once (it is a package global).
var ginMode sync.Once

func newHTTPServer(cfg httpConfig, deps httpDeps) (*httpServer, error) {
	ginMode.Do(func() { gin.SetMode(gin.ReleaseMode) })
	r := gin.New()
	r.ContextWithFallback = true
	// gin believes X-Forwarded-For from any peer by default: nothing here
	// may (client addresses come from clientip.Resolver).
	if err := r.SetTrustedProxies(nil); err != nil {
		return nil, err
	}
	r.ForwardedByClientIP = false
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_http_requests_total", Help: "HTTP requests by route, method and status.",
	}, []string{"route", "method", "status"})
	if err := deps.Registry.Register(requests); err != nil {
		return nil, err
	}
	r.Use(gin.CustomRecoveryWithWriter(nil, func(c *gin.Context, rec any) {
		deps.Log.Error("panic while serving a request", "path", c.Request.URL.Path, "panic", fmt.Sprint(rec))
		playerapi.WriteError(c, http.StatusInternalServerError, "internal", "internal error")
	}))
	r.Use(func(c *gin.Context) {
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		requests.WithLabelValues(route, c.Request.Method, strconv.Itoa(c.Writer.Status())).Inc()
	})

	var p2p *tracker.Tracker
	if cfg.HLS != nil {
		var h http.Handler = origin.NewHandler(cfg.HLS, cfg.HLSOptions...)
		if cfg.P2P {
			var err error
			if p2p, err = newTracker(h, cfg.ClientIP, deps.Registry, deps.Log.With("component", "p2p")); err != nil {
				return nil, err
			}
			r.GET(tracker.Path, gin.WrapH(p2p))
		}
		if cfg.WrapHLS != nil {
			h = cfg.WrapHLS(h)
		}
		hls := gin.WrapH(h)
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
			r.Handle(m, "/hls/*path", hls)
		}
	}
	r.GET("/healthz", func(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"status": "ok"}) })
	r.GET("/readyz", func(c *gin.Context) {
		ctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
		defer cancel()
		if err := deps.Ready.Ping(ctx); err != nil {
			c.JSON(http.StatusServiceUnavailable, gin.H{"status": "unavailable", "reason": err.Error()})
			return
		}
		c.JSON(http.StatusOK, gin.H{"status": "ready"})
	})
	r.GET("/metrics", gin.WrapH(metricsHandler(deps.Registry, cfg.MetricsToken)))
	if deps.API != nil {
		deps.API.Register(r)
	}
	if deps.Web != nil {
		deps.Web.Register(r)
	}
	r.NoRoute(func(c *gin.Context) {
		playerapi.WriteError(c, http.StatusNotFound, "not_found", "no such endpoint: "+c.Request.Method+" "+c.Request.URL.Path)
	})
	r.HandleMethodNotAllowed = false

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		if p2p != nil {
			p2p.Close()
		}
		return nil, fmt.Errorf("http: listen on %s: %w", cfg.Addr, err)
	}
	return &httpServer{
		ln:      ln,
		log:     deps.Log,
		tracker: p2p,
		srv: &http.Server{
			Handler:           r,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    16 << 10,
			ErrorLog:          slog.NewLogLogger(deps.Log.Handler(), slog.LevelDebug),
		},
	}, nil
}

// run serves until ctx is done, then shuts down gracefully.
func (s *httpServer) run(ctx context.Context) error {
	errc := make(chan error, 1)
	s.log.Info("http listening", "addr", s.ln.Addr().String())
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("http: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	// Shutdown does not wait for hijacked connections: the tracker's
	// sockets end here.
	if s.tracker != nil {
		s.tracker.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return serr
	}
	return err
}

func (s *httpServer) close() { s.ln.Close() }
