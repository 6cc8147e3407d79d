package srt

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

var (
	errShutdown     = errors.New("the server is shutting down")
	errDisconnected = errors.New("disconnected by the server")
)

// conn is one accepted SRT publisher.
type conn struct {
	s      *Server
	log    *slog.Logger
	remote string
	id     string // the live stream, once the key is authorized

	admitted time.Time // when the server admitted it (under Server.mu)

	mu      sync.Mutex
	sc      gosrt.Conn // once accepted
	stopErr error      // why the server closed the connection, if it did

	published atomic.Bool
	pub       *stream.Publisher // owned by serve's goroutine

	errLog      *logx.Limiter
	windowStart time.Time
	windowBytes int
}

// attach records the accepted connection (closing it at once when the
// server already asked to stop).
func (c *conn) attach(sc gosrt.Conn) {
	c.mu.Lock()
	c.sc = sc
	stopped := c.stopErr != nil
	c.mu.Unlock()
	if stopped {
		sc.Close()
	}
}

// stop closes the connection for err; the first reason given wins.
func (c *conn) stop(err error) {
	c.mu.Lock()
	if c.stopErr == nil {
		c.stopErr = err
	}
	sc := c.sc
	c.mu.Unlock()
	if sc != nil {
		sc.Close()
	}
}

func (c *conn) stopReason() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopErr
}

// serve reads the publisher's MPEG-TS until it leaves, goes silent or
// sends something that cannot be published.
func (c *conn) serve() {
	c.errLog = logx.NewLimiter(5 * time.Second)
	rt := c.s.cfg.ReadTimeout
	idle := time.AfterFunc(rt, func() { c.stop(fmt.Errorf("no data for %s", rt)) })
	defer idle.Stop()
	start := time.AfterFunc(startTimeout, func() {
		if !c.published.Load() {
			c.stop(&setupError{"start_timeout", fmt.Errorf("no publishable stream (tracks, parameter sets, keyframe) within %s", startTimeout)})
		}
	})
	defer start.Stop()

	d := &demuxer{start: c.start, warn: c.warn, skipped: c.skipped}
	err := d.run(readerFunc(func(p []byte) (int, error) {
		n, err := c.sc.Read(p)
		if n > 0 {
			idle.Reset(rt)
		}
		return n, err
	}))
	var se *setupError
	if stopped := c.stopReason(); stopped != nil && !errors.As(err, &se) {
		err = stopped // the server closed it: say why
	}
	c.end(err)
}

// start publishes the tracks into the hub.
func (c *conn) start(tracks []media.Track) (func(*media.AccessUnit), error) {
	pub, err := c.s.deps.Hub.Publish(media.StreamKey{Name: c.id, Rendition: media.RenditionSource}, tracks)
	if err != nil {
		reason := "already_publishing"
		if !errors.Is(err, stream.ErrBusy) {
			reason = "hub_unavailable"
		}
		return nil, &setupError{reason, err}
	}
	c.pub = pub
	c.published.Store(true)
	c.s.m.Publishers.Inc()
	c.log.Info("publisher connected", "protocol", "srt", "tracks", ingest.Describe(tracks))
	return c.write, nil
}

func (c *conn) write(au *media.AccessUnit) {
	n := au.Size()
	c.s.m.Bytes.Add(float64(n))
	c.pub.Write(au)
	c.windowBytes += n
	now := time.Now()
	if c.windowStart.IsZero() {
		c.windowStart = now
	} else if el := now.Sub(c.windowStart); el >= time.Second {
		c.s.m.Bitrate.WithLabelValues(c.id).Set(float64(c.windowBytes*8) / el.Seconds())
		c.windowStart, c.windowBytes = now, 0
	}
}

func (c *conn) warn(msg string, err error) {
	if ok, n := c.errLog.Allow(); ok {
		c.log.Warn(msg, "err", err, "suppressed_since_last", n)
	}
}

func (c *conn) skipped(codecs []string) {
	if ok, n := c.s.skipLog.Allow(); ok {
		c.log.Warn("ignoring tracks of unsupported codecs", "codecs", strings.Join(codecs, ","), "suppressed_since_last", n)
	}
}

// end closes the publication, if there was one, and reports why the
// publisher left.
func (c *conn) end(err error) {
	if c.pub == nil {
		var se *setupError
		switch {
		case errors.As(err, &se):
			c.s.refused(c.log, se.reason, "err", se.err)
		case !errors.Is(err, errShutdown):
			c.log.Info("srt publisher left before publishing", "err", quiet(err))
		}
		return
	}
	c.s.m.Publishers.Dec()
	c.s.m.Bitrate.DeleteLabelValues(c.id)
	c.pub.Close()
	c.log.Info("publisher disconnected", "protocol", "srt", "err", quiet(err))
}

// quiet is nil for the end of a stream, err otherwise.
func quiet(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil
	}
	return err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
