// Package app wires Shoal's stages into the roles of the shoal binary. It is
// the only package that knows every other one.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

var redisLogOnce sync.Once

// Version is set at build time with -ldflags "-X .../internal/app.Version=...".
var Version = "dev"

const usage = `Shoal: a decentralized video CDN and live-streaming platform.

Usage:
  shoal <role> [--config FILE]

Roles:
  dev       every role in one process (prints URLs, an admin key and a stream key)
  origin    RTMP ingest, HLS packager, origin HTTP, REST API and uploads
  worker    VOD transcoding jobs: from the Redis queue (shares SHOAL_DATA_DIR or S3 with the origin),
            or, with SHOAL_ORIGIN_URL and SHOAL_NODE_TOKEN, from the origin over HTTP (no Redis, no shared disk)
  edge      caching edge node: joins the origin (SHOAL_ORIGIN_URL, SHOAL_NODE_TOKEN), serves /hls/ on SHOAL_EDGE_ADDR
  gc        list (--delete: remove) media store objects no video or live stream owns
  version   print the version
  help      this text

Configuration: defaults, then the YAML file given with --config (or
SHOAL_CONFIG), then SHOAL_* environment variables. See shoal.example.yml.
Environment:
`

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	return run(ctx, args, environ, stdout, stderr, testOptions{})
}

// testOptions change a role's behaviour for tests only: the shoal binary
// never sets them (Main passes none); this package's TestMain does, in
// the processes tests start.
type testOptions struct {
	// claimFactor multiplies the bytes_served an edge's heartbeats claim
	// (a cheating edge); 0 or 1: the truth.
	claimFactor int64
	// liveCheat makes a remote worker encode live ladders at a quarter of
	// their bitrates (a cheating worker).
	liveCheat bool
}

// run is Main with test options.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer, opts testOptions) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return 2
	}
	role, rest := args[0], args[1:]
	switch role {
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "shoal %s\n", Version)
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usageText())
		return 0
	case "gc":
		return runGC(ctx, rest, environ, stdout, stderr)
	case "dev", "origin", "worker", "edge":
	default:
		fmt.Fprintf(stderr, "shoal: unknown role %q\n\n%s", role, usageText())
		return 2
	}

	fs := flag.NewFlagSet("shoal "+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", lookup(environ, "SHOAL_CONFIG"), "YAML configuration file")
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "shoal %s: unexpected argument %q\n", role, fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*cfgPath, environ)
	// Every problem at once: the file's and environment's, then what the
	// role needs on top.
	if rerr := roleProblems(role, cfg); err == nil && rerr != nil {
		err = rerr
	} else if rerr != nil {
		err = errors.Join(err, rerr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "shoal %s: configuration:\n  %s\n", role, strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	log := newLogger(cfg, stderr)
	// The Redis client's logger is process-wide: the first Main sets it.
	redisLogOnce.Do(func() { routing.SetClientLogger(log.With("component", "redis")) })
	// So is FFmpeg's: its warnings go to our log, rate-limited, never to
	// stderr (the encoders' statistics at close included).
	ffmpeg.SetLogger(log.With("component", "ffmpeg"))
	// One process per data dir (a worker on Redis shares its origin's, by
	// design; a remote worker keeps its own identity in its own).
	if role != "worker" || cfg.OriginURL != "" {
		release, err := lockDataDir(cfg.DataDir)
		if err != nil {
			log.Error("shoal cannot start", "role", role, "err", err)
			return 1
		}
		defer release()
	}
	switch role {
	case "dev":
		err = runDev(ctx, cfg, log, stdout)
	case "origin":
		err = runOrigin(ctx, cfg, log, nil, false)
	case "worker":
		err = runWorker(ctx, cfg, log, opts)
	case "edge":
		err = runEdge(ctx, cfg, lookup(environ, "SHOAL_PUBLIC_URL") != "", log, opts)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Error("shoal stopped", "role", role, "err", err)
		return 1
	}
	return 0
}

// roleProblems lists what role needs that cfg lacks (nil when nothing):
// an edge joins an origin with a node token and listens somewhere; a
// worker that joins an origin (a remote worker) has a node token, no
// redis_url of its own, and https origins (plain http to loopback only).
func roleProblems(role string, cfg config.Config) error {
	var errs []error
	if role == "edge" {
		if cfg.Edge.Addr == config.EdgeOff {
			errs = append(errs, errors.New(`edge.addr (SHOAL_EDGE_ADDR) is "off": the edge role needs a listen address`))
		}
		if cfg.OriginURL == "" {
			errs = append(errs, errors.New("origin_url (SHOAL_ORIGIN_URL) is required for the edge role: the origin's http(s) URL"))
		}
		if cfg.NodeToken == "" {
			errs = append(errs, errors.New("node_token (SHOAL_NODE_TOKEN) is required for the edge role: POST /v1/node-tokens on the origin issues one (the admin key works too)"))
		}
	}
	if role == "worker" && cfg.OriginURL != "" && cfg.NodeToken == "" {
		errs = append(errs, errors.New("node_token (SHOAL_NODE_TOKEN) is required for a worker that joins an origin (SHOAL_ORIGIN_URL): POST /v1/node-tokens on the origin issues one (the admin key works too)"))
	}
	if role == "worker" && cfg.OriginURL != "" && cfg.RedisURL != config.Default().RedisURL {
		// origin_url used to be ignored by a worker: an environment shared
		// with a worker on the origin's Redis would now make a remote
		// worker of it, silently.
		errs = append(errs, errors.New("redis_url (SHOAL_REDIS_URL) and origin_url (SHOAL_ORIGIN_URL) are both set: a worker either works on the origin's Redis queue (set redis_url, not origin_url) or is a remote worker that joins an origin over HTTP and never opens Redis (set origin_url and node_token, not redis_url); unset one for this worker (an empty variable is unset)"))
	}
	if role == "worker" && cfg.OriginURL != "" {
		for _, u := range cfg.OriginURLs() {
			if err := nodeproto.CheckWorkerOrigin(u); err != nil {
				errs = append(errs, fmt.Errorf("origin_url (SHOAL_ORIGIN_URL): %w", err))
			}
		}
	}
	return errors.Join(errs...)
}

func usageText() string {
	var b strings.Builder
	b.WriteString(usage)
	for _, k := range config.Keys() {
		fmt.Fprintf(&b, "  %-30s %s\n", k.Env, k.Help)
	}
	return b.String()
}

func lookup(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val
		}
	}
	return v
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
