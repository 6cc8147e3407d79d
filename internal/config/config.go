// Package config loads Shoal's configuration: defaults in code, then one
// YAML file, then SHOAL_* environment variables, then derived defaults, then
// validation that reports every problem at once.
//
// One table (see Keys) lists every key with its YAML path, environment
// variable, parser, check and help text; YAML decoding, the environment,
// validation and documentation all read it, so they cannot drift apart.
package config

import (
	"github.com/shoal-video/shoal/internal/media"

	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Config is the whole configuration of a Shoal process.
type Config struct {
	RedisURL      string `yaml:"redis_url"`
	DataDir       string `yaml:"data_dir"`
	HTTPAddr      string `yaml:"http_addr"` // API, origin HLS, health and metrics
	RTMPAddr      string `yaml:"rtmp_addr"`
	RTSPAddr      string `yaml:"rtsp_addr"`       // "off": no RTSP ingest
	SRTAddr       string `yaml:"srt_addr"`        // UDP; "off": no SRT ingest
	AdminKey      string `yaml:"admin_key"`       // empty: no bootstrap key
	PublicURL     string `yaml:"public_url"`      // no trailing slash
	RTMPPublicURL string `yaml:"rtmp_public_url"` // no trailing slash; publishers append /<stream_key>
	RTSPPublicURL string `yaml:"rtsp_public_url"` // no trailing slash; publishers append /<stream_key>
	SRTPublicURL  string `yaml:"srt_public_url"`  // srt://HOST:PORT; publishers add ?streamid=publish:<stream_key>
	LogLevel      string `yaml:"log_level"`
	LogFormat     string `yaml:"log_format"`
	// MaxUploadBytes caps one video source upload (PUT or tus).
	MaxUploadBytes int64 `yaml:"max_upload_bytes"`
	// UploadExpiry is how long a tus upload nothing comes to is kept for
	// its client to resume; 0: forever.
	UploadExpiry Duration `yaml:"upload_expiry"`
	// UploadAllowedOrigins lists the web origins (comma-separated
	// scheme://host[:port]) whose pages may upload with tus; "*": any.
	UploadAllowedOrigins string `yaml:"upload_allowed_origins"`
	// OriginURL, Region and NodeToken are how an edge joins the network.
	OriginURL string `yaml:"origin_url"` // no trailing slash; several comma-separated (OriginURLs)
	Region    string `yaml:"region"`
	NodeToken string `yaml:"node_token"`
	// MetricsToken, when set, is the bearer token /metrics asks for.
	MetricsToken string `yaml:"metrics_token"`
	// TrustedProxies are comma-separated CIDR prefixes of the front
	// proxies whose X-Forwarded-For gives the client's address; empty:
	// none (the client is the TCP peer).
	TrustedProxies string `yaml:"trusted_proxies"`
	// WebhookAllowPrivate lets webhooks go to loopback, private and
	// link-local addresses: "true", "false", or "auto" (allowed by shoal dev
	// only).
	WebhookAllowPrivate string `yaml:"webhook_allow_private"`
	// P2PSTUNServers are the STUN servers viewers' players use to reach
	// each other across networks for peer-assisted delivery (comma-separated
	// stun: URLs; empty: host addresses only, one network).
	P2PSTUNServers string `yaml:"p2p_stun_servers"`

	Ingest     IngestConfig     `yaml:"ingest"`
	HLS        HLSConfig        `yaml:"hls"`
	Hub        HubConfig        `yaml:"hub"`
	Transcode  TranscodeConfig  `yaml:"transcode"`
	VOD        VODConfig        `yaml:"vod"`
	Edge       EdgeConfig       `yaml:"edge"`
	Route      RouteConfig      `yaml:"route"`
	Accounting AccountingConfig `yaml:"accounting"`
	Storage    StorageConfig    `yaml:"storage"`
}

// StorageConfig says where media objects are kept (internal/storage): HLS
// trees, recordings, upload sources and, with s3, tus uploads.
type StorageConfig struct {
	Backend  string `yaml:"backend"`  // "fs" (under DataDir) or "s3"
	Endpoint string `yaml:"endpoint"` // s3: http(s)://host[:port]
	Bucket   string `yaml:"bucket"`   // s3: created when missing
	Region   string `yaml:"region"`
	// AccessKey and SecretKey: empty takes AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY; those unset too, requests are anonymous.
	AccessKey string `yaml:"access_key"`
	SecretKey string `yaml:"secret_key"`
	PathStyle bool   `yaml:"path_style"` // s3: always <endpoint>/<bucket>/<key>
}

// Storage backends (storage.backend).
const (
	StorageFS = "fs"
	StorageS3 = "s3"
)

// EdgeConfig tunes the edge role's cache.
type EdgeConfig struct {
	Addr        string `yaml:"addr"`
	CacheDir    string `yaml:"cache_dir"` // empty: <data_dir>/edgecache
	CacheBytes  int64  `yaml:"cache_bytes"`
	MemoryBytes int64  `yaml:"memory_bytes"`
	MaxViewers  int64  `yaml:"max_viewers"` // declared to the origin; 0: not declared
	// MaxEgressMbps is the egress declared to the origin, in megabits per
	// second; 0: not declared.
	MaxEgressMbps int64 `yaml:"max_egress_mbps"`
}

// RouteConfig tunes viewer routing.
type RouteConfig struct {
	RegionHeader      string `yaml:"region_header"` // a front proxy's header naming the viewer's region
	MaxNodesPerToken  int    `yaml:"max_nodes_per_token"`
	QuarantineReports int    `yaml:"quarantine_reports"`
	// AuditInterval is how often, on average, the origin audits each edge
	// as a viewer would (0: never); QuarantineAudits is how many of an
	// edge's last 10 audits must find wrong bytes to quarantine it.
	AuditInterval    Duration `yaml:"audit_interval"`
	QuarantineAudits int      `yaml:"quarantine_audits"`
}

// AccountingConfig tunes the origin's delivery accounting and viewer
// analytics.
type AccountingConfig struct {
	// Epoch is how long one accounting period is (reports per node, the
	// reward pool shared out); epochs start at multiples of it since the
	// Unix epoch.
	Epoch Duration `yaml:"epoch"`
	// RewardPool is the points shared out among the nodes each epoch, by
	// credited bytes weighted by audit pass rate.
	RewardPool int64 `yaml:"reward_pool"`
	// ViewerNetworkMbps caps what the viewers of one network (/24, /48)
	// confirm one node sending them, on average over an epoch.
	ViewerNetworkMbps int64 `yaml:"viewer_network_mbps"`
	// Retention is how long epoch figures and analytics are kept.
	Retention Duration `yaml:"retention"`
}

// VODConfig tunes the VOD job workers.
type VODConfig struct {
	Workers     int      `yaml:"workers"`      // jobs run at once by a worker (in dev: 0 runs none)
	IdleTimeout Duration `yaml:"idle_timeout"` // a job untouched this long is taken over
	MaxAttempts int      `yaml:"max_attempts"` // attempts at one job before it fails
}

// IngestConfig tunes the ingest servers.
type IngestConfig struct {
	ReconnectGrace Duration `yaml:"reconnect_grace"`
	ReadTimeout    Duration `yaml:"read_timeout"`
	RTSPUDPPort    int      `yaml:"rtsp_udp_port"` // RTP; RTCP is the next port; 0: TCP only
	// RTMP, RTSP and SRT connections at once, in total and per address.
	MaxConnections      int `yaml:"max_connections"`
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// Wrong stream keys one address may send a minute, on every ingest
	// protocol together (a burst of as many, then one every 60/N s); 0:
	// no limit.
	MaxKeyFailuresPerMinute int `yaml:"max_key_failures_per_minute"`
	// WebRTC (WHIP): one muxed UDP port (0: ephemeral ports per session),
	// comma-separated public IPs (NAT 1:1) and STUN servers, and limits.
	WHIPUDPPort          int    `yaml:"whip_udp_port"`
	WHIPPublicIPs        string `yaml:"whip_public_ips"`
	WHIPSTUNServers      string `yaml:"whip_stun_servers"`
	WHIPMaxSessions      int    `yaml:"whip_max_sessions"`
	WHIPMaxSessionsPerIP int    `yaml:"whip_max_sessions_per_ip"`
	// WHEPMaxViewers bounds real-time (WebRTC) viewers in total.
	WHEPMaxViewers int `yaml:"whep_max_viewers"`
	// SRT: the receiver's latency and an optional passphrase (encryption).
	SRTLatency    Duration `yaml:"srt_latency"`
	SRTPassphrase string   `yaml:"srt_passphrase"`
	// MaxRestreams is how many restream targets a live stream may have.
	MaxRestreams int `yaml:"max_restreams"`
	// RestreamAllowPrivate lets restream targets be on private addresses.
	RestreamAllowPrivate bool `yaml:"restream_allow_private"`
	// RTSPPullAllowPrivate lets live streams' source URLs (RTSP pulls) be
	// on private addresses.
	RTSPPullAllowPrivate bool `yaml:"rtsp_pull_allow_private"`
}

// HLSConfig tunes the HLS packager.
type HLSConfig struct {
	SegmentDuration Duration `yaml:"segment_duration"`
	LiveWindow      int      `yaml:"live_window"`   // segments in the sliding live playlist
	Format          string   `yaml:"format"`        // fmp4 or mpegts
	PartDuration    Duration `yaml:"part_duration"` // LL-HLS part target; 0: off
	DVRWindow       Duration `yaml:"dvr_window"`    // seekable live playlist length; 0: off
}

// HubConfig tunes the in-process stream hub.
type HubConfig struct {
	QueueSize int `yaml:"queue_size"` // access units buffered per subscriber
}

// TranscodeConfig tunes the ABR ladder encoder.
type TranscodeConfig struct {
	HWAccel     string `yaml:"hwaccel"`     // auto, software (none), cuda, nvenc or qsv
	MaxLadders  int    `yaml:"max_ladders"` // -1: from the hardware; 0: off
	Ladder      string `yaml:"ladder"`      // "1080p:5000k,720p:3000k,..."
	Passthrough bool   `yaml:"passthrough"` // also serve the source as it came
	Preset      string `yaml:"preset"`      // x264 preset
	// VerifyFraction is the share of the segments of each remote
	// worker's output (per rendition) that the origin transcodes again
	// and compares: a VOD output's before it publishes it, a live
	// ladder's as they come; 0 none, 1 every one.
	VerifyFraction float64 `yaml:"verify_fraction"`
	Remote         string  `yaml:"remote"` // off, prefer or only: live ladders on remote workers
}

// base returns the defaults before derivation: PublicURL and RTMPPublicURL
// are empty so that they follow the final HTTPAddr and RTMPAddr.
func base() Config {
	return Config{
		RedisURL:             "redis://127.0.0.1:6379/0",
		DataDir:              "./data",
		HTTPAddr:             ":8080",
		RTMPAddr:             ":1935",
		RTSPAddr:             ":8554",
		SRTAddr:              ":8890",
		LogLevel:             "info",
		LogFormat:            "text",
		MaxUploadBytes:       20 << 30,
		UploadExpiry:         Duration(24 * time.Hour),
		UploadAllowedOrigins: "*",
		WebhookAllowPrivate:  "auto",
		P2PSTUNServers:       DefaultP2PSTUNServers,
		Ingest: IngestConfig{
			ReconnectGrace:          Duration(10 * time.Second),
			ReadTimeout:             Duration(10 * time.Second),
			RTSPUDPPort:             8000,
			MaxConnections:          1000,
			MaxConnectionsPerIP:     16,
			MaxKeyFailuresPerMinute: 10,
			WHIPUDPPort:             8189,
			WHIPMaxSessions:         100,
			WHIPMaxSessionsPerIP:    8,
			WHEPMaxViewers:          500,
			SRTLatency:              Duration(200 * time.Millisecond),
			MaxRestreams:            5,
		},
		HLS: HLSConfig{
			SegmentDuration: Duration(2 * time.Second),
			LiveWindow:      6,
			Format:          "fmp4",
			PartDuration:    Duration(500 * time.Millisecond),
			DVRWindow:       Duration(2 * time.Hour),
		},
		Hub: HubConfig{QueueSize: 1024},
		Transcode: TranscodeConfig{
			HWAccel:    "auto",
			MaxLadders: -1,
			Ladder:     media.DefaultLadder.String(),
			Preset:     "veryfast",
			// One segment in 50 (at least one per rendition).
			VerifyFraction: 0.02,
			Remote:         "off",
		},
		VOD:        VODConfig{Workers: 1, IdleTimeout: Duration(30 * time.Second), MaxAttempts: 3},
		Edge:       EdgeConfig{Addr: ":8081", CacheBytes: 10 << 30, MemoryBytes: 256 << 20},
		Route:      RouteConfig{MaxNodesPerToken: 4, QuarantineReports: 3, AuditInterval: Duration(time.Minute), QuarantineAudits: 2},
		Accounting: AccountingConfig{Epoch: Duration(time.Hour), RewardPool: 1000, ViewerNetworkMbps: 200, Retention: Duration(90 * 24 * time.Hour)},
		Storage:    StorageConfig{Backend: StorageFS, Region: "us-east-1"},
	}
}

// Default returns the default configuration, derived values filled in
// (PublicURL http://localhost:8080, RTMPPublicURL rtmp://localhost:1935/live).
// It is what Load returns with no file and no SHOAL_* variables, and it is
// valid.
func Default() Config {
	c := base()
	c.derive()
	return c
}

// Load returns the configuration from, in increasing precedence: the
// defaults, the YAML file at path (none when path is ""), and the SHOAL_*
// variables in environ (formatted like os.Environ; a later entry wins over
// an earlier one; an empty value counts as unset; unknown SHOAL_* variables
// are ignored). Empty PublicURL and RTMPPublicURL are then derived, and the
// result validated. The error lists every problem found: unknown or
// malformed YAML keys, unparseable environment values and invalid values.
func Load(path string, environ []string) (Config, error) {
	c := base()
	var errs []error
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		yerrs, fatal := applyYAML(&c, data)
		if fatal != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, fatal)
		}
		for _, e := range yerrs {
			errs = append(errs, fmt.Errorf("config file %s: %w", path, e))
		}
	}
	errs = append(errs, applyEnv(&c, environ)...)
	c.derive()
	errs = append(errs, c.problems()...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Validate checks every key and returns all problems joined, each naming
// the key and its environment variable, e.g.
// "hls.segment_duration (SHOAL_HLS_SEGMENT_DURATION): 40s is out of range 500ms..30s".
// It does not derive: an empty PublicURL is an error here.
func (c Config) Validate() error { return errors.Join(c.problems()...) }

func (c *Config) problems() []error {
	var errs []error
	for i := range table {
		k := &table[i]
		if err := k.check(c); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", k.path, k.env, err))
		}
	}
	return errs
}

// Redacted returns a copy that is safe to log: AdminKey, NodeToken and the
// SRT passphrase, the metrics token and storage.secret_key are "***" when set and the password in RedisURL is
// replaced with "***".
func (c Config) Redacted() Config {
	if c.AdminKey != "" {
		c.AdminKey = "***"
	}
	if c.NodeToken != "" {
		c.NodeToken = "***"
	}
	if c.Ingest.SRTPassphrase != "" {
		c.Ingest.SRTPassphrase = "***"
	}
	if c.MetricsToken != "" {
		c.MetricsToken = "***"
	}
	if c.Storage.SecretKey != "" {
		c.Storage.SecretKey = "***"
	}
	c.RedisURL = redactURL(c.RedisURL)
	return c
}

// redactURL replaces the password of a URL with ***. A string that does not
// parse but might hold credentials is replaced whole.
func redactURL(s string) string {
	if scheme, rest, ok := strings.Cut(s, "://"); ok && strings.HasSuffix(scheme, "+cluster") {
		// Several hosts, which url.Parse refuses: redact the userinfo by
		// hand.
		auth, tail, _ := strings.Cut(rest, "/")
		i := strings.LastIndex(auth, "@")
		if i < 0 {
			return s
		}
		user, _, hasPW := strings.Cut(auth[:i], ":")
		if !hasPW {
			return s
		}
		out := scheme + "://" + user + ":***" + auth[i:]
		if strings.Contains(rest, "/") {
			out += "/" + tail
		}
		return out
	}
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return "***"
		}
		return s
	}
	if u.User == nil {
		return s
	}
	if _, has := u.User.Password(); !has {
		return s
	}
	// url escapes "*" in a password, so write a placeholder and swap it.
	const placeholder = "shoal-redacted-password"
	u.User = url.UserPassword(u.User.Username(), placeholder)
	return strings.Replace(u.String(), ":"+placeholder+"@", ":***@", 1)
}

// derive fills an empty PublicURL from HTTPAddr and an empty RTMPPublicURL
// from PublicURL and RTMPAddr. A value that cannot be derived stays empty,
// and validation reports it.
func (c *Config) derive() {
	if c.PublicURL == "" {
		if host, port, err := splitAddr(c.HTTPAddr); err == nil {
			if isWildcardHost(host) {
				host = "localhost"
			}
			c.PublicURL = "http://" + urlHostPort(host, port)
		}
	}
	if c.RTMPPublicURL == "" {
		u, err := url.Parse(c.PublicURL)
		_, port, aerr := splitAddr(c.RTMPAddr)
		if err == nil && u.Hostname() != "" && aerr == nil {
			c.RTMPPublicURL = "rtmp://" + urlHostPort(u.Hostname(), port) + "/live"
		}
	}
	if c.RTSPPublicURL == "" && c.RTSPAddr != Off {
		u, err := url.Parse(c.PublicURL)
		_, port, aerr := splitAddr(c.RTSPAddr)
		if err == nil && u.Hostname() != "" && aerr == nil {
			c.RTSPPublicURL = "rtsp://" + urlHostPort(u.Hostname(), port) + "/live"
		}
	}
	if c.SRTPublicURL == "" && c.SRTAddr != Off {
		u, err := url.Parse(c.PublicURL)
		_, port, aerr := splitAddr(c.SRTAddr)
		if err == nil && u.Hostname() != "" && aerr == nil {
			c.SRTPublicURL = "srt://" + urlHostPort(u.Hostname(), port)
		}
	}
}

// urlHostPort joins host and port for a URL, bracketing IPv6 addresses and
// escaping a zone's "%".
func urlHostPort(host, port string) string {
	return net.JoinHostPort(strings.ReplaceAll(host, "%", "%25"), port)
}

// DefaultP2PSTUNServers is the public STUN server viewers' players use by
// default (the one most WebRTC P2P players ship with).
const DefaultP2PSTUNServers = "stun:stun.l.google.com:19302"

// applyEnv sets every key whose variable is in environ.
func applyEnv(c *Config, environ []string) []error {
	vals := map[string]string{}
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if ok && strings.HasPrefix(name, "SHOAL_") {
			vals[name] = val // a later entry wins, as with exec.Cmd.Env
		}
	}
	var errs []error
	for i := range table {
		k := &table[i]
		val, ok := vals[k.env]
		if !ok || val == "" {
			continue
		}
		if err := k.set(c, val); err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): invalid value %s: %w", k.env, k.path, quote(val), err))
		}
	}
	return errs
}
