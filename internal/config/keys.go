package config

import (
	"github.com/shoal-video/shoal/internal/clientip"
	"github.com/shoal-video/shoal/internal/media"

	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// KeyDoc describes one configuration key, for README and --help generation.
type KeyDoc struct {
	YAMLKey string // dotted path in the YAML file, e.g. "hls.segment_duration"
	Env     string // environment variable, e.g. "SHOAL_HLS_SEGMENT_DURATION"
	Default string // the default as written in YAML or the environment; for a derived key, how it is derived
	Help    string // one line: meaning and accepted values
}

// key is one row of the table that drives YAML decoding, environment
// variables, validation and documentation, so that none of them can drift.
type key struct {
	path    string // dotted YAML path
	env     string
	help    string
	derived string // non-empty when the default is derived: the keys it comes from

	get   func(c *Config) string            // current value, formatted for docs
	set   func(c *Config, raw string) error // parse raw text (YAML scalar or env value) into c
	check func(c *Config) error             // validate the current value; nil when fine
}

// field builds a key for one field of type T.
func field[T any](path, env, help string, ptr func(*Config) *T,
	parse func(string) (T, error), format func(T) string, check func(T) error,
) key {
	return key{
		path: path,
		env:  env,
		help: help,
		get:  func(c *Config) string { return format(*ptr(c)) },
		set: func(c *Config, raw string) error {
			v, err := parse(raw)
			if err != nil {
				return err
			}
			*ptr(c) = v
			return nil
		},
		check: func(c *Config) error { return check(*ptr(c)) },
	}
}

func derivedFrom(k key, from string) key { k.derived = from; return k }

// alsoCheck adds a check that needs the whole Config.
func alsoCheck(k key, extra func(c *Config) error) key {
	own := k.check
	k.check = func(c *Config) error {
		if err := own(c); err != nil {
			return err
		}
		return extra(c)
	}
	return k
}

// table lists every key in documentation order. It is never modified.
var table = []key{
	field("redis_url", "SHOAL_REDIS_URL",
		"Redis connection URL (redis:// or rediss://, optional user:password@ and /<db>)",
		func(c *Config) *string { return &c.RedisURL }, parseString, fmtString, checkRedisURL),
	field("data_dir", "SHOAL_DATA_DIR",
		"directory for recordings and packaged HLS",
		func(c *Config) *string { return &c.DataDir }, parseString, fmtString, checkNonEmpty),
	field("http_addr", "SHOAL_HTTP_ADDR",
		"host:port the HTTP server (API, origin HLS, health, metrics) listens on",
		func(c *Config) *string { return &c.HTTPAddr }, parseString, fmtString, checkAddr),
	alsoCheck(field("rtmp_addr", "SHOAL_RTMP_ADDR",
		"host:port the RTMP ingest server listens on",
		func(c *Config) *string { return &c.RTMPAddr }, parseString, fmtString, checkAddr),
		checkAddrConflict),
	field("rtsp_addr", "SHOAL_RTSP_ADDR",
		"host:port the RTSP ingest server (ANNOUNCE/RECORD) listens on; \"off\": no RTSP ingest",
		func(c *Config) *string { return &c.RTSPAddr }, parseString, fmtString, checkOffOrAddr),
	field("srt_addr", "SHOAL_SRT_ADDR",
		"host:port (UDP) the SRT ingest listens on (streamid publish:<stream_key>); \"off\": no SRT ingest",
		func(c *Config) *string { return &c.SRTAddr }, parseString, fmtString, checkOffOrAddr),
	field("admin_key", "SHOAL_ADMIN_KEY",
		"bootstrap admin API key, at least 16 characters; unset by default",
		func(c *Config) *string { return &c.AdminKey }, parseString, fmtString, checkAdminKey),
	derivedFrom(field("public_url", "SHOAL_PUBLIC_URL",
		"absolute http(s) URL others reach this node's HTTP server at, no trailing slash; "+
			"empty derives http://<host of http_addr, or localhost>:<port of http_addr>",
		func(c *Config) *string { return &c.PublicURL }, parseBaseURL, fmtString, checkPublicURL),
		"http_addr"),
	derivedFrom(field("rtmp_public_url", "SHOAL_RTMP_PUBLIC_URL",
		"RTMP URL publishers append /<stream_key> to; "+
			"empty derives rtmp://<host of public_url>:<port of rtmp_addr>/live",
		func(c *Config) *string { return &c.RTMPPublicURL }, parseBaseURL, fmtString, checkRTMPPublicURL),
		"public_url and rtmp_addr"),
	derivedFrom(field("rtsp_public_url", "SHOAL_RTSP_PUBLIC_URL",
		"RTSP URL publishers append /<stream_key> to; "+
			"empty derives rtsp://<host of public_url>:<port of rtsp_addr>/live",
		func(c *Config) *string { return &c.RTSPPublicURL }, parseBaseURL, fmtString, checkRTSPPublicURL),
		"public_url and rtsp_addr"),
	derivedFrom(field("srt_public_url", "SHOAL_SRT_PUBLIC_URL",
		"SRT URL publishers add ?streamid=publish:<stream_key> to; "+
			"empty derives srt://<host of public_url>:<port of srt_addr>",
		func(c *Config) *string { return &c.SRTPublicURL }, parseBaseURL, fmtString, checkSRTPublicURL),
		"public_url and srt_addr"),
	field("log_level", "SHOAL_LOG_LEVEL",
		"minimum log level: debug, info, warn or error",
		func(c *Config) *string { return &c.LogLevel }, parseLower, fmtString, oneOf("debug", "info", "warn", "error")),
	field("log_format", "SHOAL_LOG_FORMAT",
		"log output format: text or json",
		func(c *Config) *string { return &c.LogFormat }, parseLower, fmtString, oneOf("text", "json")),
	field("max_upload_bytes", "SHOAL_MAX_UPLOAD_BYTES",
		"largest video source accepted by PUT /v1/videos/{id}/source or tus, in bytes (1 MiB to 1 TiB); larger uploads get 413; a remote worker refuses a job whose source is larger",
		func(c *Config) *int64 { return &c.MaxUploadBytes }, parseInt64, fmtInt64, int64Range(1<<20, 1<<40)),
	field("upload_expiry", "SHOAL_UPLOAD_EXPIRY",
		"how long a tus upload that receives nothing is kept for its client to resume (its bytes on disk or in the bucket); then it is removed and the video waits for its source again; 0 keeps them forever (else 1h to 720h)",
		func(c *Config) *Duration { return &c.UploadExpiry }, parseDuration, Duration.String,
		func(v Duration) error {
			if v == 0 {
				return nil
			}
			return durationRange(Duration(time.Hour), Duration(720*time.Hour))(v)
		}),
	field("upload_allowed_origins", "SHOAL_UPLOAD_ALLOWED_ORIGINS",
		"web origins (comma-separated scheme://host[:port]) whose pages may upload with tus (the CORS preflight and answers); * allows any site's pages (the API key is still needed)",
		func(c *Config) *string { return &c.UploadAllowedOrigins }, parseString, fmtString, checkOrigins),
	field("origin_url", "SHOAL_ORIGIN_URL",
		"edge role, and a remote worker: the origin's http(s) URL it joins (and an edge fetches from), or several comma-separated (the first preferred; requests fail over to the next), no trailing slash (required by shoal edge); the node also learns the deployment's other origins from its heartbeats; set for shoal worker, it makes a remote worker that never opens Redis or the media store",
		func(c *Config) *string { return &c.OriginURL }, parseOriginURLs, fmtString, checkOriginURLs),
	field("region", "SHOAL_REGION",
		"this node's region, e.g. eu-west (letters, digits, - and _); viewers are routed to edges of their region; origins and workers show theirs in GET /v1/nodes",
		func(c *Config) *string { return &c.Region }, parseLower, fmtString, checkRegion),
	field("node_token", "SHOAL_NODE_TOKEN",
		"edge role and a remote worker: the token it joins with (POST /v1/node-tokens issues one; the admin key works too); unset by default",
		func(c *Config) *string { return &c.NodeToken }, parseString, fmtString, func(string) error { return nil }),
	field("metrics_token", "SHOAL_METRICS_TOKEN",
		"bearer token /metrics asks for (Authorization: Bearer <token>), at least 16 characters; unset: /metrics is open",
		func(c *Config) *string { return &c.MetricsToken }, parseString, fmtString, checkMetricsToken),
	field("trusted_proxies", "SHOAL_TRUSTED_PROXIES",
		"comma-separated CIDR prefixes (or addresses) of front proxies: a request from one of them is taken to come from the rightmost address of X-Forwarded-For that is not a trusted proxy (playback tokens bound to an IP, per-IP limits); empty: X-Forwarded-For is ignored",
		func(c *Config) *string { return &c.TrustedProxies }, parseString, fmtString, checkTrustedProxies),
	field("webhook_allow_private", "SHOAL_WEBHOOK_ALLOW_PRIVATE",
		"let webhooks go to loopback, private and link-local addresses (checked after name resolution): true, false, or auto (allowed by shoal dev, refused by shoal origin, so API users cannot make the origin call into its own network)",
		func(c *Config) *string { return &c.WebhookAllowPrivate }, parseLower, fmtString, oneOf("auto", "true", "false")),
	field("p2p_stun_servers", "SHOAL_P2P_STUN_SERVERS",
		"comma-separated STUN servers (stun:host:port or stuns:host:port) viewers' players use to reach each other across networks for peer-assisted delivery; off: none, host addresses only (viewers on one network)",
		func(c *Config) *string { return &c.P2PSTUNServers }, parseLower, fmtString, checkP2PSTUN),
	field("ingest.reconnect_grace", "SHOAL_INGEST_RECONNECT_GRACE",
		"how long a live stream stays live after its publisher disconnects, waiting for a reconnect (0 to 5m)",
		func(c *Config) *Duration { return &c.Ingest.ReconnectGrace }, parseDuration, Duration.String,
		durationRange(0, Duration(5*time.Minute))),
	field("ingest.read_timeout", "SHOAL_INGEST_READ_TIMEOUT",
		"an ingest connection that sends nothing for this long is closed (1s to 5m)",
		func(c *Config) *Duration { return &c.Ingest.ReadTimeout }, parseDuration, Duration.String,
		durationRange(Duration(time.Second), Duration(5*time.Minute))),
	field("ingest.rtsp_udp_port", "SHOAL_INGEST_RTSP_UDP_PORT",
		"UDP port of RTSP publishers' RTP (RTCP uses the next one): even, 2 to 65534; 0 offers TCP transport only",
		func(c *Config) *int { return &c.Ingest.RTSPUDPPort }, parseInt, strconv.Itoa, checkRTPPort),
	field("ingest.max_connections", "SHOAL_INGEST_MAX_CONNECTIONS",
		"RTMP, RTSP and SRT connections at once, in total, counted from before authentication (1 to 1000000)",
		func(c *Config) *int { return &c.Ingest.MaxConnections }, parseInt, strconv.Itoa, intRange(1, 1_000_000)),
	field("ingest.max_connections_per_ip", "SHOAL_INGEST_MAX_CONNECTIONS_PER_IP",
		"RTMP, RTSP and SRT connections at once from one address, counted from before authentication (1 to 1000000)",
		func(c *Config) *int { return &c.Ingest.MaxConnectionsPerIP }, parseInt, strconv.Itoa, intRange(1, 1_000_000)),
	field("ingest.max_key_failures_per_minute", "SHOAL_INGEST_MAX_KEY_FAILURES_PER_MINUTE",
		"wrong stream keys one address may send a minute over RTMP, RTSP, SRT and WHIP together, then it is refused until its allowance refills (0 to 100000; 0: no limit)",
		func(c *Config) *int { return &c.Ingest.MaxKeyFailuresPerMinute }, parseInt, strconv.Itoa, intRange(0, 100_000)),
	field("ingest.whip_udp_port", "SHOAL_INGEST_WHIP_UDP_PORT",
		"the one UDP port every WebRTC (WHIP) session's media uses; 0 gives each session ephemeral ports",
		func(c *Config) *int { return &c.Ingest.WHIPUDPPort }, parseInt, strconv.Itoa, checkPort),
	field("ingest.whip_public_ips", "SHOAL_INGEST_WHIP_PUBLIC_IPS",
		"comma-separated public IPs announced to WebRTC publishers in place of the local ones (a server behind 1:1 NAT); empty announces the local addresses",
		func(c *Config) *string { return &c.Ingest.WHIPPublicIPs }, parseString, fmtString, checkIPList),
	field("ingest.whip_stun_servers", "SHOAL_INGEST_WHIP_STUN_SERVERS",
		"comma-separated STUN servers (stun:host:port) the WebRTC ingest learns its public address from; empty uses none",
		func(c *Config) *string { return &c.Ingest.WHIPSTUNServers }, parseString, fmtString, checkSTUNList),
	field("ingest.whip_max_sessions", "SHOAL_INGEST_WHIP_MAX_SESSIONS",
		"WebRTC (WHIP) sessions at once, in total (1 to 10000)",
		func(c *Config) *int { return &c.Ingest.WHIPMaxSessions }, parseInt, strconv.Itoa, intRange(1, 10000)),
	field("ingest.whip_max_sessions_per_ip", "SHOAL_INGEST_WHIP_MAX_SESSIONS_PER_IP",
		"WHIP sessions at once from one address, and WHEP sessions likewise (each counted on its own), before any key is checked (1 to 10000)",
		func(c *Config) *int { return &c.Ingest.WHIPMaxSessionsPerIP }, parseInt, strconv.Itoa, intRange(1, 10000)),
	field("ingest.whep_max_viewers", "SHOAL_INGEST_WHEP_MAX_VIEWERS",
		"real-time (WebRTC, WHEP) viewers at once, in total; each address may have whip_max_sessions_per_ip (1 to 100000)",
		func(c *Config) *int { return &c.Ingest.WHEPMaxViewers }, parseInt, strconv.Itoa, intRange(1, 100000)),
	field("ingest.srt_latency", "SHOAL_INGEST_SRT_LATENCY",
		"SRT receiver latency: how long lost packets are waited for (20ms to 10s)",
		func(c *Config) *Duration { return &c.Ingest.SRTLatency }, parseDuration, Duration.String,
		durationRange(Duration(20*time.Millisecond), Duration(10*time.Second))),
	field("ingest.srt_passphrase", "SHOAL_INGEST_SRT_PASSPHRASE",
		"SRT passphrase (10 to 79 characters): publishers must encrypt with it; empty accepts unencrypted SRT",
		func(c *Config) *string { return &c.Ingest.SRTPassphrase }, parseString, fmtString, checkSRTPassphrase),
	field("ingest.max_restreams", "SHOAL_INGEST_MAX_RESTREAMS",
		"restream targets (other RTMP platforms) one live stream may have (0 to 50; 0 turns restreaming off)",
		func(c *Config) *int { return &c.Ingest.MaxRestreams }, parseInt, strconv.Itoa, intRange(0, 50)),
	field("ingest.restream_allow_private", "SHOAL_INGEST_RESTREAM_ALLOW_PRIVATE",
		"let restream targets be on loopback, private or link-local addresses (another Shoal on your network); off, API users cannot reach into the origin's network",
		func(c *Config) *bool { return &c.Ingest.RestreamAllowPrivate }, parseBool, strconv.FormatBool, func(bool) error { return nil }),
	field("ingest.rtsp_pull_allow_private", "SHOAL_INGEST_RTSP_PULL_ALLOW_PRIVATE",
		"let live streams' source URLs (RTSP pulls) be on loopback, private or link-local addresses (cameras on your network); off, API users cannot reach into the origin's network",
		func(c *Config) *bool { return &c.Ingest.RTSPPullAllowPrivate }, parseBool, strconv.FormatBool, func(bool) error { return nil }),
	field("hls.segment_duration", "SHOAL_HLS_SEGMENT_DURATION",
		"target HLS segment duration; segments are cut on the first keyframe after it (500ms to 30s)",
		func(c *Config) *Duration { return &c.HLS.SegmentDuration }, parseDuration, Duration.String,
		durationRange(Duration(500*time.Millisecond), Duration(30*time.Second))),
	field("hls.live_window", "SHOAL_HLS_LIVE_WINDOW",
		"segments listed in the sliding live playlist (3 to 100)",
		func(c *Config) *int { return &c.HLS.LiveWindow }, parseInt, strconv.Itoa, intRange(3, 100)),
	field("hls.format", "SHOAL_HLS_FORMAT",
		"HLS segment container: fmp4 or mpegts",
		func(c *Config) *string { return &c.HLS.Format }, parseLower, fmtString, oneOf("fmp4", "mpegts")),
	alsoCheck(field("hls.part_duration", "SHOAL_HLS_PART_DURATION",
		"LL-HLS partial segment target: players that support LL-HLS (hls.js, Safari) watch at about 2 s of delay; 0 turns LL-HLS off; 100ms up to hls.segment_duration; fmp4 only (ignored with mpegts)",
		func(c *Config) *Duration { return &c.HLS.PartDuration }, parseDuration, Duration.String,
		durationRange(0, Duration(15*time.Second))),
		func(c *Config) error {
			seg := c.HLS.SegmentDuration
			if seg < Duration(500*time.Millisecond) {
				return nil // hls.segment_duration says what is wrong
			}
			if d := c.HLS.PartDuration; d != 0 && (d < Duration(100*time.Millisecond) || d > seg) {
				return fmt.Errorf("%s is out of range 100ms..%s (hls.segment_duration), or 0 for off", d, seg)
			}
			return nil
		}),
	field("hls.dvr_window", "SHOAL_HLS_DVR_WINDOW",
		"how far back viewers of a live stream may seek: a DVR playlist (dvr.m3u8) of that length beside the short live one; 0 turns DVR off (up to 24h)",
		func(c *Config) *Duration { return &c.HLS.DVRWindow }, parseDuration, Duration.String,
		durationRange(0, Duration(24*time.Hour))),
	field("hub.queue_size", "SHOAL_HUB_QUEUE_SIZE",
		"access units buffered per stream subscriber before it drops until the next keyframe (16 to 100000)",
		func(c *Config) *int { return &c.Hub.QueueSize }, parseInt, strconv.Itoa, intRange(16, 100000)),
	field("transcode.hwaccel", "SHOAL_TRANSCODE_HWACCEL",
		"where video is transcoded: auto (probe NVIDIA GPUs, then QSV, else the CPU), software or none (the CPU), cuda (NVDEC + scale_cuda, NVENC where present), nvenc or qsv",
		func(c *Config) *string { return &c.Transcode.HWAccel }, parseLower, fmtString, checkHWAccel),
	field("transcode.max_ladders", "SHOAL_TRANSCODE_MAX_LADDERS",
		"ABR ladders this node encodes at once; more streams are served as they came; 0 turns transcoding off, -1 measures it with a self-benchmark at start, cached in the data directory",
		func(c *Config) *int { return &c.Transcode.MaxLadders }, parseInt, strconv.Itoa, intRange(-1, 1000)),
	field("transcode.ladder", "SHOAL_TRANSCODE_LADDER",
		"the node's ABR ladder, HEIGHTp:BITRATE rungs; a source gets the rungs at or below its height, never upscaled, widths keep its aspect ratio",
		func(c *Config) *string { return &c.Transcode.Ladder }, parseString, fmtString, checkLadder),
	field("transcode.passthrough", "SHOAL_TRANSCODE_PASSTHROUGH",
		"also serve the source as it came, as the \"source\" rendition, next to the ladder: true or false",
		func(c *Config) *bool { return &c.Transcode.Passthrough }, parseBool, strconv.FormatBool, func(bool) error { return nil }),
	field("transcode.preset", "SHOAL_TRANSCODE_PRESET",
		"x264 preset (ultrafast .. veryslow); hardware encoders use their closest preset",
		func(c *Config) *string { return &c.Transcode.Preset }, parseLower, fmtString,
		oneOf("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")),
	field("transcode.verify_fraction", "SHOAL_TRANSCODE_VERIFY_FRACTION",
		"origin: the share of each remote worker's segments (per rendition, at least one) that the origin transcodes again and compares with the worker's before it publishes the output, picked unpredictably for the worker (0 to 1; 0: none, 1: every segment); 3 failed segments quarantine the worker",
		func(c *Config) *float64 { return &c.Transcode.VerifyFraction }, parseFloat, fmtFloat, floatRange(0, 1)),
	field("transcode.remote", "SHOAL_TRANSCODE_REMOTE",
		"who encodes a new live stream's ladder: off (this node), prefer (a joined remote worker with room, else this node) or only (a remote worker; with none free the source is served as it came)",
		func(c *Config) *string { return &c.Transcode.Remote }, parseLower, fmtString, oneOf("off", "prefer", "only")),
	field("vod.workers", "SHOAL_VOD_WORKERS",
		"VOD jobs a worker runs at once (0 to 64); shoal dev runs its in-process worker only when above 0",
		func(c *Config) *int { return &c.VOD.Workers }, parseInt, strconv.Itoa, intRange(0, 64)),
	field("vod.idle_timeout", "SHOAL_VOD_IDLE_TIMEOUT",
		"a VOD job its worker has not touched for this long (the worker died) is taken over by another (2s to 1h)",
		func(c *Config) *Duration { return &c.VOD.IdleTimeout }, parseDuration, Duration.String,
		durationRange(Duration(2*time.Second), Duration(time.Hour))),
	field("vod.max_attempts", "SHOAL_VOD_MAX_ATTEMPTS",
		"attempts at one VOD job (a worker dying counts) before the video fails with the last error (1 to 20)",
		func(c *Config) *int { return &c.VOD.MaxAttempts }, parseInt, strconv.Itoa, intRange(1, 20)),
	field("edge.addr", "SHOAL_EDGE_ADDR",
		"host:port the edge role serves viewers (and its health and metrics) on; shoal dev runs its own edge there too (\"off\": none)",
		func(c *Config) *string { return &c.Edge.Addr }, parseString, fmtString, checkEdgeAddr),
	field("edge.cache_dir", "SHOAL_EDGE_CACHE_DIR",
		"edge role: the disk cache directory (kept across restarts); empty means <data_dir>/edgecache",
		func(c *Config) *string { return &c.Edge.CacheDir }, parseString, fmtString, func(string) error { return nil }),
	field("edge.cache_bytes", "SHOAL_EDGE_CACHE_BYTES",
		"edge role: disk cache size in bytes (16 MiB to 64 TiB), least recently used evicted first",
		func(c *Config) *int64 { return &c.Edge.CacheBytes }, parseInt64, fmtInt64, int64Range(16<<20, 64<<40)),
	field("edge.memory_bytes", "SHOAL_EDGE_MEMORY_BYTES",
		"edge role: memory cache size for hot objects in bytes (1 MiB to 1 TiB)",
		func(c *Config) *int64 { return &c.Edge.MemoryBytes }, parseInt64, fmtInt64, int64Range(1<<20, 1<<40)),
	field("edge.max_viewers", "SHOAL_EDGE_MAX_VIEWERS",
		"edge role: viewers this edge can take, declared to the origin as a cap on what it is sent (0: not declared; up to 10000000)",
		func(c *Config) *int64 { return &c.Edge.MaxViewers }, parseInt64, fmtInt64, int64Range(0, 10_000_000)),
	field("edge.max_egress_mbps", "SHOAL_EDGE_MAX_EGRESS_MBPS",
		"edge role: megabits per second this edge can send, declared to the origin: at 90% of it the edge is sent no more viewers (0: not declared; up to 1000000)",
		func(c *Config) *int64 { return &c.Edge.MaxEgressMbps }, parseInt64, fmtInt64, int64Range(0, 1_000_000)),
	field("route.region_header", "SHOAL_ROUTE_REGION_HEADER",
		"HTTP header a front proxy sets to the viewer's region (e.g. CF-IPCountry); empty: only ?region= is used",
		func(c *Config) *string { return &c.Route.RegionHeader }, parseString, fmtString, func(string) error { return nil }),
	field("route.max_nodes_per_token", "SHOAL_ROUTE_MAX_NODES_PER_TOKEN",
		"node identities (node keys) one node token may hold within 24 hours (1 to 1000); the admin key is not capped",
		func(c *Config) *int { return &c.Route.MaxNodesPerToken }, parseInt, strconv.Itoa, intRange(1, 1000)),
	field("route.quarantine_reports", "SHOAL_ROUTE_QUARANTINE_REPORTS",
		"distinct viewer networks (/24, /48) whose verification failure reports within 10 minutes quarantine an edge (1 to 1000); a confirmed audit quarantines at once",
		func(c *Config) *int { return &c.Route.QuarantineReports }, parseInt, strconv.Itoa, intRange(1, 1000)),
	field("route.audit_interval", "SHOAL_ROUTE_AUDIT_INTERVAL",
		"how often, on average and at random times, the origin fetches from each edge, as a viewer would, a random segment of a public stream or video (half the time one the edge reported serving, otherwise any the origin published) and checks it against what it published (0: never; 1s to 24h); audits cost at most 1% of an edge's traffic plus 8 MiB, but an edge is audited at least every 10 intervals",
		func(c *Config) *Duration { return &c.Route.AuditInterval }, parseDuration, Duration.String,
		func(d Duration) error {
			if d == 0 {
				return nil
			}
			return durationRange(Duration(time.Second), Duration(24*time.Hour))(d)
		}),
	field("route.quarantine_audits", "SHOAL_ROUTE_QUARANTINE_AUDITS",
		"how many of an edge's last 10 audits must find bytes other than the origin published to quarantine it (1 to 10)",
		func(c *Config) *int { return &c.Route.QuarantineAudits }, parseInt, strconv.Itoa, intRange(1, 10)),
	field("accounting.epoch", "SHOAL_ACCOUNTING_EPOCH",
		"how long one accounting period is (10s to 168h; longer than a node's heartbeat timeout, so that its uptime fits in an epoch): per epoch the origin reports, per node, the bytes it claimed and the bytes viewers and audits confirmed, and shares out the reward pool; epochs start at multiples of it since 1970-01-01 UTC",
		func(c *Config) *Duration { return &c.Accounting.Epoch }, parseDuration, Duration.String, durationRange(MinAccountingEpoch, Duration(168*time.Hour))),
	field("accounting.reward_pool", "SHOAL_ACCOUNTING_REWARD_POOL",
		"points shared out among the nodes each epoch, by credited bytes weighted by audit pass rate (0 to 1000000000000; 0: no rewards)",
		func(c *Config) *int64 { return &c.Accounting.RewardPool }, parseInt64, fmtInt64, int64Range(0, 1_000_000_000_000)),
	field("accounting.viewer_network_mbps", "SHOAL_ACCOUNTING_VIEWER_NETWORK_MBPS",
		"megabits per second, on average over an epoch, that the viewers of one network (/24, /48; a session counts for the network it started on) can confirm one node sending them: bounds what a node's operator acting as viewers can confirm for its own node; large audiences behind one NAT need more (1 to 1000000)",
		func(c *Config) *int64 { return &c.Accounting.ViewerNetworkMbps }, parseInt64, fmtInt64, int64Range(1, 1_000_000)),
	alsoCheck(field("accounting.retention", "SHOAL_ACCOUNTING_RETENTION",
		"how long the origin keeps epoch reports and viewer analytics (1h to 87600h, and at most 100000 epochs)",
		func(c *Config) *Duration { return &c.Accounting.Retention }, parseDuration, Duration.String, durationRange(Duration(time.Hour), Duration(87600*time.Hour))),
		checkRetentionEpochs),
	field("storage.backend", "SHOAL_STORAGE_BACKEND",
		"where media objects are kept: fs (under data_dir) or s3 (storage.endpoint and storage.bucket; several origins may share the bucket)",
		func(c *Config) *string { return &c.Storage.Backend }, parseLower, fmtString, oneOf(StorageFS, StorageS3)),
	alsoCheck(field("storage.endpoint", "SHOAL_STORAGE_ENDPOINT",
		"s3: the server's URL, http:// or https://host[:port] (e.g. https://s3.eu-west-1.amazonaws.com); required with s3",
		func(c *Config) *string { return &c.Storage.Endpoint }, parseString, fmtString, checkStorageEndpoint),
		requiredWithS3(func(c *Config) string { return c.Storage.Endpoint })),
	alsoCheck(field("storage.bucket", "SHOAL_STORAGE_BUCKET",
		"s3: the bucket (3 to 63 lowercase letters, digits, dots and hyphens), created when missing; required with s3",
		func(c *Config) *string { return &c.Storage.Bucket }, parseString, fmtString, checkBucket),
		requiredWithS3(func(c *Config) string { return c.Storage.Bucket })),
	field("storage.region", "SHOAL_STORAGE_REGION",
		"s3: the bucket's region",
		func(c *Config) *string { return &c.Storage.Region }, parseString, fmtString, checkNonEmpty),
	field("storage.access_key", "SHOAL_STORAGE_ACCESS_KEY",
		"s3: access key id; empty takes AWS_ACCESS_KEY_ID (and AWS_SECRET_ACCESS_KEY), and with neither, requests are anonymous",
		func(c *Config) *string { return &c.Storage.AccessKey }, parseString, fmtString, func(string) error { return nil }),
	alsoCheck(field("storage.secret_key", "SHOAL_STORAGE_SECRET_KEY",
		"s3: secret access key, given with storage.access_key",
		func(c *Config) *string { return &c.Storage.SecretKey }, parseString, fmtString, func(string) error { return nil }),
		checkStorageKeys),
	field("storage.path_style", "SHOAL_STORAGE_PATH_STYLE",
		"s3: address the bucket as <endpoint>/<bucket> always: true or false (false: virtual-hosted <bucket>.<endpoint> for AWS, path style elsewhere)",
		func(c *Config) *bool { return &c.Storage.PathStyle }, parseBool, strconv.FormatBool, func(bool) error { return nil }),
}

// checkStorageEndpoint checks an S3 endpoint: empty, or scheme://host[:port].
func checkStorageEndpoint(s string) error {
	if s == "" {
		return nil
	}
	if err := checkBaseURL(s, "http", "https"); err != nil {
		return err
	}
	if u, _ := url.Parse(s); u.Path != "" || u.User != nil {
		return fmt.Errorf("%s must be scheme://host[:port], without a path or credentials", quote(s))
	}
	return nil
}

// checkBucket checks an S3 bucket name (the portable rules): empty is
// checked by requiredWithS3.
func checkBucket(s string) error {
	if s == "" {
		return nil
	}
	if len(s) < 3 || len(s) > 63 {
		return fmt.Errorf("%s must be 3 to 63 characters", quote(s))
	}
	for i, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || ((r == '-' || r == '.') && i > 0 && i < len(s)-1)
		if !ok {
			return fmt.Errorf("%s may have only lowercase letters, digits, and dots and hyphens inside", quote(s))
		}
	}
	if strings.Contains(s, "..") || net.ParseIP(s) != nil {
		return fmt.Errorf("%s is not a valid bucket name (no \"..\", not an IP address)", quote(s))
	}
	return nil
}

// requiredWithS3 refuses an empty value when storage.backend is s3.
func requiredWithS3(get func(c *Config) string) func(c *Config) error {
	return func(c *Config) error {
		if c.Storage.Backend == StorageS3 && get(c) == "" {
			return errors.New("required when storage.backend is s3")
		}
		return nil
	}
}

// checkStorageKeys refuses one of access_key and secret_key without the other.
func checkStorageKeys(c *Config) error {
	if (c.Storage.AccessKey == "") != (c.Storage.SecretKey == "") {
		return errors.New("give storage.access_key and storage.secret_key together, or neither (then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used)")
	}
	return nil
}

// Off as a listen address (edge.addr, rtsp_addr) turns that listener off.
const Off = "off"

// EdgeOff as edge.addr keeps shoal dev from running its edge.
const EdgeOff = Off

func checkEdgeAddr(s string) error { return checkOffOrAddr(s) }

func checkOffOrAddr(s string) error {
	if s == Off {
		return nil
	}
	return checkAddr(s)
}

func checkTrustedProxies(s string) error {
	_, err := clientip.ParseTrusted(s)
	return err
}

func checkMetricsToken(s string) error {
	if s != "" && (len(s) < 16 || strings.ContainsAny(s, " \t\r\n")) {
		return errors.New("must be at least 16 characters, without white space")
	}
	return nil
}

func checkPort(p int) error {
	if p < 0 || p > 65535 {
		return fmt.Errorf("%d is not a port from 1 to 65535, or 0", p)
	}
	return nil
}

func checkIPList(s string) error {
	for _, ip := range splitList(s) {
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("%s is not an IP address", quote(ip))
		}
	}
	return nil
}

// checkOrigins checks a list of web origins: "*", or scheme://host[:port]
// with no path.
func checkOrigins(s string) error {
	list := splitList(s)
	if len(list) == 0 {
		return errors.New(`empty: list origins such as https://app.example.com, or * for any`)
	}
	for _, o := range list {
		if o == "*" {
			if len(list) > 1 {
				return errors.New(`* allows every origin: list it alone`)
			}
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
			return fmt.Errorf("%s is not a web origin (scheme://host[:port], no path)", quote(o))
		}
	}
	return nil
}

func checkSTUNList(s string) error {
	for _, u := range splitList(s) {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") {
			return fmt.Errorf("%s is not a STUN server URL (stun:host:port)", quote(u))
		}
	}
	return nil
}

// checkP2PSTUN checks p2p_stun_servers: "off", or STUN URLs with a host
// and a port.
func checkP2PSTUN(s string) error {
	if s == Off || s == "" {
		return nil
	}
	for _, u := range splitList(s) {
		rest, ok := strings.CutPrefix(u, "stun:")
		if !ok {
			rest, ok = strings.CutPrefix(u, "stuns:")
		}
		if _, port, err := net.SplitHostPort(rest); !ok || err != nil || port == "" || strings.ContainsAny(rest, " /?#") {
			return fmt.Errorf("%s is not a STUN server URL (stun:host:port)", quote(u))
		}
	}
	return nil
}

// P2PSTUNList is the STUN servers p2p_stun_servers names (none for "off").
func P2PSTUNList(s string) []string {
	if strings.EqualFold(s, Off) {
		return nil
	}
	return splitList(s)
}

func checkSRTPassphrase(s string) error {
	if s != "" && (len(s) < 10 || len(s) > 79) {
		return fmt.Errorf("an SRT passphrase has 10 to 79 characters, this one has %d", len(s))
	}
	return nil
}

// SplitList splits a comma-separated list, dropping blanks.
func SplitList(s string) []string { return splitList(s) }

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func checkRTPPort(p int) error {
	if p < 0 || p > 65534 || p%2 != 0 {
		return fmt.Errorf("%d is not an even port from 2 to 65534, or 0", p)
	}
	return nil
}

// parseOriginURLs trims each entry of a comma-separated list of base URLs
// (blanks, a trailing slash); empty entries stay for the check to refuse.
func parseOriginURLs(raw string) (string, error) {
	if strings.TrimSpace(raw) == "" {
		return "", nil
	}
	list := strings.Split(raw, ",")
	for i, s := range list {
		list[i] = strings.TrimSuffix(strings.TrimSpace(s), "/")
	}
	return strings.Join(list, ","), nil
}

// checkOriginURLs checks origin_url: empty, or comma-separated http(s)
// base URLs, each once.
func checkOriginURLs(s string) error {
	if s == "" {
		return nil
	}
	seen := map[string]bool{}
	for _, u := range strings.Split(s, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			return errors.New("an empty entry in the list: separate the origins' URLs with single commas")
		}
		if err := checkBaseURL(u, "http", "https"); err != nil {
			return err
		}
		if seen[u] {
			return fmt.Errorf("%s is listed twice", quote(u))
		}
		seen[u] = true
	}
	return nil
}

// OriginURLs are the origins of origin_url, the preferred first.
func (c Config) OriginURLs() []string {
	if c.OriginURL == "" {
		return nil
	}
	list := strings.Split(c.OriginURL, ",")
	for i, u := range list {
		list[i] = strings.TrimSuffix(strings.TrimSpace(u), "/")
	}
	return list
}

func checkRegion(s string) error {
	if len(s) > 64 {
		return fmt.Errorf("%s is longer than 64 characters", quote(s))
	}
	for _, ch := range s {
		if (ch < 'a' || ch > 'z') && (ch < '0' || ch > '9') && ch != '-' && ch != '_' {
			return fmt.Errorf("%s may hold only letters, digits, - and _", quote(s))
		}
	}
	return nil
}

func parseInt64(raw string) (int64, error) {
	v, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a whole number")
	}
	return v, nil
}

func fmtInt64(v int64) string { return strconv.FormatInt(v, 10) }

func parseFloat(raw string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("not a number")
	}
	return v, nil
}

func fmtFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

func floatRange(lo, hi float64) func(float64) error {
	return func(v float64) error {
		if v < lo || v > hi {
			return fmt.Errorf("%s is out of range %s..%s", fmtFloat(v), fmtFloat(lo), fmtFloat(hi))
		}
		return nil
	}
}

func int64Range(lo, hi int64) func(int64) error {
	return func(v int64) error {
		if v < lo || v > hi {
			return fmt.Errorf("%d is out of range %d..%d", v, lo, hi)
		}
		return nil
	}
}

func parseBool(raw string) (bool, error) {
	v, err := strconv.ParseBool(strings.TrimSpace(raw))
	if err != nil {
		return false, fmt.Errorf("not true or false")
	}
	return v, nil
}

func checkHWAccel(s string) error {
	switch s {
	case "auto", "none", "software", "cuda", "nvenc", "qsv":
		return nil
	case "vaapi":
		return fmt.Errorf("vaapi is not supported: VAAPI encoders need hardware frame contexts, which go-astiav v0.16 (the release for FFmpeg 5.1) does not expose; use qsv on Intel GPUs")
	}
	return fmt.Errorf("%s is not one of auto, software, none, cuda, nvenc, qsv", quote(s))
}

func checkLadder(s string) error {
	if _, err := media.ParseLadder(s); err != nil {
		return err
	}
	return nil
}

// schema indexes table for the YAML walk.
type schema struct {
	leaves   map[string]*key     // full path -> key
	sections map[string]bool     // full path of every mapping, e.g. "hls"
	children map[string][]string // prefix ("" or "hls.") -> child names, for suggestions
}

var keySchema = buildSchema()

func buildSchema() schema {
	s := schema{leaves: map[string]*key{}, sections: map[string]bool{}, children: map[string][]string{}}
	for i := range table {
		k := &table[i]
		s.leaves[k.path] = k
		parts := strings.Split(k.path, ".")
		prefix := ""
		for j, p := range parts {
			if !slices.Contains(s.children[prefix], p) {
				s.children[prefix] = append(s.children[prefix], p)
			}
			if j < len(parts)-1 {
				s.sections[prefix+p] = true
			}
			prefix += p + "."
		}
	}
	return s
}

// Keys documents every configuration key, in the order shoal.example.yml
// lists them.
func Keys() []KeyDoc {
	d := Default()
	docs := make([]KeyDoc, 0, len(table))
	for i := range table {
		k := &table[i]
		def := k.get(&d)
		if k.derived != "" {
			def = fmt.Sprintf("derived from %s (%s with the defaults)", k.derived, def)
		}
		docs = append(docs, KeyDoc{YAMLKey: k.path, Env: k.env, Default: def, Help: k.help})
	}
	return docs
}

// Parsers shared by YAML and the environment. Values are trimmed of
// surrounding white space.

func parseString(raw string) (string, error) { return strings.TrimSpace(raw), nil }

func parseLower(raw string) (string, error) { return strings.ToLower(strings.TrimSpace(raw)), nil }

// parseBaseURL strips one trailing slash, so that "https://example.com/"
// becomes "https://example.com".
func parseBaseURL(raw string) (string, error) {
	return strings.TrimSuffix(strings.TrimSpace(raw), "/"), nil
}

func parseInt(raw string) (int, error) {
	v, err := strconv.Atoi(strings.TrimSpace(raw))
	if err != nil {
		return 0, fmt.Errorf("not a whole number")
	}
	return v, nil
}

func fmtString(s string) string { return s }
