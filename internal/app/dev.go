package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// devStreamName is the live stream `shoal dev` creates for a first test.
const devStreamName = "My first stream"

// runDev runs every role in one process. Without SHOAL_ADMIN_KEY it uses
// the key saved in the data dir, generating one on the first start, and it
// prints the URLs a newcomer needs, with the key of a ready-made stream.
func runDev(ctx context.Context, cfg config.Config, log *slog.Logger, stdout io.Writer) error {
	if cfg.AdminKey == "" {
		key, err := devAdminKey(cfg.DataDir)
		if err != nil {
			return err
		}
		cfg.AdminKey = key
	}
	if cfg.WebhookAllowPrivate == "auto" {
		// One machine for trying things out: a webhook receiver on it is
		// the common case.
		cfg.WebhookAllowPrivate = "true"
	}
	g, gctx := errgroup.WithContext(ctx)
	ready := make(chan *originNode, 1)
	g.Go(func() error {
		return runOrigin(gctx, cfg, log, func(o *originNode) { ready <- o }, cfg.VOD.Workers > 0)
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case o := <-ready:
			if cfg.Edge.Addr != config.EdgeOff {
				ecfg := devEdgeConfig(cfg)
				g.Go(func() error {
					return runEdge(gctx, ecfg, false, log.With("role", "edge"), testOptions{})
				})
			}
			return printBanner(gctx, o, log, stdout)
		}
	})
	return g.Wait()
}

// devEdgeConfig is the configuration of the edge shoal dev runs: joined to
// its own origin with the admin key, with a data dir (node key, cache) of
// its own below the origin's.
func devEdgeConfig(cfg config.Config) config.Config {
	e := cfg
	host, port, err := net.SplitHostPort(cfg.HTTPAddr)
	if err != nil {
		port = "8080"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	e.OriginURL = "http://" + net.JoinHostPort(host, port)
	e.NodeToken = cfg.AdminKey
	e.DataDir = filepath.Join(cfg.DataDir, "edge")
	if e.Edge.CacheDir == "" {
		e.Edge.CacheDir = filepath.Join(e.DataDir, "edgecache")
	}
	return e
}

// devAdminKey returns the admin key kept in dataDir/dev-admin-key,
// creating it on first use.
func devAdminKey(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "dev-admin-key")
	b, err := os.ReadFile(path)
	if err == nil {
		if key := strings.TrimSpace(string(b)); len(key) >= 16 {
			return key, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the dev admin key: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", fmt.Errorf("creating the data dir: %w", err)
	}
	key := ids.NewSecret("shoal")
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("saving the dev admin key: %w", err)
	}
	return key, nil
}

// printBanner finds or creates the dev stream (waiting for Redis if needed)
// and prints how to use this node.
func printBanner(ctx context.Context, o *originNode, log *slog.Logger, w io.Writer) error {
	var ls routing.LiveStream
	warned := false
	for {
		var err error
		ls, err = devStream(ctx, o.store, o.cfg.DataDir)
		if err == nil {
			break
		}
		if !warned {
			log.Warn("waiting for redis to create the dev stream", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	c := o.cfg
	fmt.Fprintf(w, `
Shoal %s is running (shoal dev: every role in one process)

  API / origin:    %s
  Dashboard:       %s/    (sign in with the admin key)
  Admin API key:   %s
  Live stream:     %q (id %s)
  OBS server:      %s
  OBS stream key:  %s    (kept in the data dir's dev-stream-key; Redis has only its hash)
  RTSP publish:    %s
  SRT publish:     %s
  WHIP (OBS 30+):  %s/v1/whip    (Bearer Token: the stream key; or "Go live" in the dashboard)
  Watch page:      %s/watch/%s    (plays through the edge, every segment verified)
  Watch (HLS):     %s/hls/%s/master.m3u8    e.g. ffplay or any HLS player
  Edge:            %s    (GET /play/<id> sends viewers there)
  Metrics:         %s/metrics

  Try: curl -H "Authorization: Bearer %s" %s/v1/live-streams
  Publish a test clip with ffmpeg:
    ffmpeg -re -f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine -c:v libx264 -preset veryfast -g 60 -c:a aac -f flv %s/%s
  Upload a video file (VOD): create it, send the file, poll until "ready":
    curl -H "Authorization: Bearer %s" -d '{"title":"My video"}' %s/v1/videos
    curl -H "Authorization: Bearer %s" -T my-video.mp4 %s/v1/videos/<id>/source
  API description (OpenAPI 3.1): %s/v1/openapi.yaml

Press Ctrl-C to stop.
`, Version, c.PublicURL, c.PublicURL, c.AdminKey, ls.Name, ls.ID, c.RTMPPublicURL, ls.StreamKey, devRTSPLine(c, ls.StreamKey), devSRTLine(c, ls.StreamKey),
		c.PublicURL, c.PublicURL, ls.ID, c.PublicURL, ls.ID, devEdgeLine(c), c.PublicURL, c.AdminKey, c.PublicURL, c.RTMPPublicURL, ls.StreamKey,
		c.AdminKey, c.PublicURL, c.AdminKey, c.PublicURL, c.PublicURL)
	return nil
}

// devStreamKeyFile is where shoal dev keeps the dev stream's key, in the
// data dir next to the dev admin key: Redis has only its hash, and the
// banner prints it on every start.
const devStreamKeyFile = "dev-stream-key"

// devStream returns the dev stream with its plain stream key: the one
// saved in dataDir when it is still the stream's key; otherwise (a first
// start, a key reset since, or a stream created before keys were stored
// hashed) the stream is created or its key reset, and the new key saved.
func devStream(ctx context.Context, store *routing.Store, dataDir string) (routing.LiveStream, error) {
	qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	list, err := store.ListLiveStreams(qctx)
	if err != nil {
		return routing.LiveStream{}, err
	}
	path := filepath.Join(dataDir, devStreamKeyFile)
	for _, ls := range list {
		if ls.Name != devStreamName {
			continue
		}
		if b, err := os.ReadFile(path); err == nil {
			if key := strings.TrimSpace(string(b)); key != "" && ids.Equal(ids.Hash(key), ls.StreamKeyHash) {
				ls.StreamKey = key
				return ls, nil
			}
		}
		if ls, err = store.ResetStreamKey(qctx, ls.ID); err != nil {
			return routing.LiveStream{}, err
		}
		return ls, saveDevStreamKey(path, ls.StreamKey)
	}
	ls, err := store.CreateLiveStream(qctx, routing.LiveStreamSpec{Name: devStreamName})
	if err != nil {
		return routing.LiveStream{}, err
	}
	return ls, saveDevStreamKey(path, ls.StreamKey)
}

func saveDevStreamKey(path, key string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating the data dir: %w", err)
	}
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return fmt.Errorf("saving the dev stream key: %w", err)
	}
	return nil
}

func devEdgeLine(c config.Config) string {
	if c.Edge.Addr == config.EdgeOff {
		return "off (SHOAL_EDGE_ADDR=off)"
	}
	return edgePublicURL(c, false)
}

func devRTSPLine(c config.Config, key string) string {
	if c.RTSPAddr == config.Off || c.RTSPPublicURL == "" {
		return "off (SHOAL_RTSP_ADDR=off)"
	}
	return c.RTSPPublicURL + "/" + key
}

func devSRTLine(c config.Config, key string) string {
	if c.SRTAddr == config.Off || c.SRTPublicURL == "" {
		return "off (SHOAL_SRT_ADDR=off)"
	}
	return c.SRTPublicURL + "?streamid=publish:" + key + "    (ffmpeg ... -f mpegts '<this URL>')"
}
