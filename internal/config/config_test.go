package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// writeFile writes a config file into a fresh temp dir and returns its path.
func writeFile(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shoal.yml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// errLines splits a joined error into its messages.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

func requireErrContains(t *testing.T, err error, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one containing %q", wants)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q; error:\n%v", w, err)
		}
	}
}

func TestDefaultIsValid(t *testing.T) {
	t.Parallel()
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	want := Config{
		RedisURL:            "redis://127.0.0.1:6379/0",
		DataDir:             "./data",
		HTTPAddr:            ":8080",
		RTMPAddr:            ":1935",
		PublicURL:           "http://localhost:8080",
		RTMPPublicURL:       "rtmp://localhost:1935/live",
		RTSPAddr:            ":8554",
		SRTAddr:             ":8890",
		RTSPPublicURL:       "rtsp://localhost:8554/live",
		SRTPublicURL:        "srt://localhost:8890",
		LogLevel:            "info",
		LogFormat:           "text",
		WebhookAllowPrivate: "auto",
		P2PSTUNServers:      DefaultP2PSTUNServers,
		Ingest: IngestConfig{ReconnectGrace: Duration(10 * time.Second), ReadTimeout: Duration(10 * time.Second), RTSPUDPPort: 8000,
			MaxConnections: 1000, MaxConnectionsPerIP: 16, MaxKeyFailuresPerMinute: 10,
			WHIPUDPPort: 8189, WHIPMaxSessions: 100, WHIPMaxSessionsPerIP: 8, WHEPMaxViewers: 500, SRTLatency: Duration(200 * time.Millisecond), MaxRestreams: 5},
		HLS: HLSConfig{SegmentDuration: Duration(2 * time.Second), LiveWindow: 6, Format: "fmp4", PartDuration: Duration(500 * time.Millisecond), DVRWindow: Duration(2 * time.Hour)},
		Hub: HubConfig{QueueSize: 1024},
		Transcode: TranscodeConfig{HWAccel: "auto", MaxLadders: -1, Ladder: "1080p:5000k,720p:3000k,480p:1200k,360p:700k",
			Preset: "veryfast", VerifyFraction: 0.02, Remote: "off"},
		MaxUploadBytes:       20 << 30,
		UploadExpiry:         Duration(24 * time.Hour),
		UploadAllowedOrigins: "*",
		VOD:                  VODConfig{Workers: 1, IdleTimeout: Duration(30 * time.Second), MaxAttempts: 3},
		Edge:                 EdgeConfig{Addr: ":8081", CacheBytes: 10 << 30, MemoryBytes: 256 << 20},
		Route:                RouteConfig{MaxNodesPerToken: 4, QuarantineReports: 3, AuditInterval: Duration(time.Minute), QuarantineAudits: 2},
		Accounting:           AccountingConfig{Epoch: Duration(time.Hour), RewardPool: 1000, ViewerNetworkMbps: 200, Retention: Duration(90 * 24 * time.Hour)},
		Storage:              StorageConfig{Backend: "fs", Region: "us-east-1"},
	}
	if d != want {
		t.Errorf("Default() =\n%+v\nwant\n%+v", d, want)
	}
	got, err := Load("", nil)
	if err != nil {
		t.Fatalf("Load(\"\", nil): %v", err)
	}
	if got != d {
		t.Errorf("Load(\"\", nil) =\n%+v\nwant Default()\n%+v", got, d)
	}
}

func TestEmptyFiles(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"empty":         "",
		"blank lines":   "\n\n  \n",
		"comments only": "# nothing here\n# at all\n",
		"bare document": "---\n",
		"null document": "~\n",
		"empty section": "hls:\nhub: ~\n",
		"null values":   "admin_key:\npublic_url: ~\nhls:\n  live_window: null\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got, err := Load(writeFile(t, content), nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got != Default() {
				t.Errorf("Load = %+v, want Default()", got)
			}
		})
	}
}

func TestMissingFileIsAnError(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "nope.yml")
	_, err := Load(p, nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load(missing) = %v, want fs.ErrNotExist", err)
	}
	requireErrContains(t, err, "nope.yml")
}

func TestYAMLThenEnvPrecedence(t *testing.T) {
	t.Parallel()
	p := writeFile(t, `
http_addr: ":9000"
log_level: debug
log_format: json
admin_key: from-yaml-0123456789
hls:
  live_window: 10
  segment_duration: 4s
ingest:
  read_timeout: 30s
`)
	env := []string{
		"PATH=/usr/bin",
		"SHOAL_HLS_LIVE_WINDOW=12",                 // env beats YAML
		"SHOAL_LOG_FORMAT=",                        // empty counts as unset: YAML's json stays
		"SHOAL_RTMP_ADDR=:1936",                    // env over a default
		"SHOAL_HUB_QUEUE_SIZE=64",                  // overridden below
		"SHOAL_HUB_QUEUE_SIZE=128",                 // the later entry wins
		"SHOAL_TEST_SOMETHING=whatever",            // unknown SHOAL_ variables are ignored
		"SHOAL_HLS_FORMAT_TYPO=xml",                // also unknown
		"shoal_log_level=error",                    // names are case-sensitive
		"NOEQUALSSIGN",                             // malformed entries are skipped
		"SHOAL_INGEST_RECONNECT_GRACE= 1m30s ",     // values are trimmed
		"SHOAL_ADMIN_KEY=from-env-abcdefghijklmno", // env beats YAML
	}
	got, err := Load(p, env)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := Default()
	want.HTTPAddr = ":9000"
	want.RTMPAddr = ":1936"
	want.PublicURL = "http://localhost:9000"          // derived from the YAML http_addr
	want.RTMPPublicURL = "rtmp://localhost:1936/live" // and the env rtmp_addr
	want.LogLevel = "debug"
	want.LogFormat = "json"
	want.AdminKey = "from-env-abcdefghijklmno"
	want.HLS.LiveWindow = 12
	want.HLS.SegmentDuration = Duration(4 * time.Second)
	want.Ingest.ReadTimeout = Duration(30 * time.Second)
	want.Ingest.ReconnectGrace = Duration(90 * time.Second)
	want.Hub.QueueSize = 128
	if got != want {
		t.Errorf("Load =\n%+v\nwant\n%+v", got, want)
	}
}

func TestEnvWithoutFile(t *testing.T) {
	t.Parallel()
	got, err := Load("", []string{
		"SHOAL_PUBLIC_URL=https://video.example.com/",
		"SHOAL_REDIS_URL=rediss://user:pw@redis.internal:6380/2",
		"SHOAL_LOG_LEVEL=WARN",
		"SHOAL_HLS_FORMAT=mpegts",
	})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.PublicURL != "https://video.example.com" {
		t.Errorf("PublicURL = %q, want the trailing slash stripped", got.PublicURL)
	}
	if got.RTMPPublicURL != "rtmp://video.example.com:1935/live" {
		t.Errorf("RTMPPublicURL = %q", got.RTMPPublicURL)
	}
	if got.LogLevel != "warn" {
		t.Errorf("LogLevel = %q, want lower-cased warn", got.LogLevel)
	}
	if got.HLS.Format != "mpegts" || got.RedisURL != "rediss://user:pw@redis.internal:6380/2" {
		t.Errorf("got %+v", got)
	}
}

func TestUnknownKeys(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"top level typo", "http_addr: \":8080\"\n\nhsl:\n  live_window: 6\n",
			[]string{`unknown key "hsl" at line 3 (did you mean "hls"?)`}},
		{"nested", "hls:\n  live_window: 6\n  segment_duraton: 2s\n",
			[]string{`unknown key "hls.segment_duraton" at line 3 (did you mean "hls.segment_duration"?)`}},
		{"no suggestion", "colour: blue\n", []string{`unknown key "colour" at line 1`}},
		{"key of another section", "hub:\n  format: fmp4\n", []string{`unknown key "hub.format" at line 2`}},
		{"leaf used as section", "hls:\n  format:\n    kind: fmp4\n",
			[]string{`hls.format at line 3 must be a single value, not a mapping`}},
		{"section used as leaf", "hls: fmp4\n", []string{`"hls" at line 1 must be a mapping of keys, not the value "fmp4"`}},
		{"list at top", "- a\n- b\n", []string{`the top level at line 1 must be a mapping of keys, not a list`}},
		{"duplicate", "log_level: info\nlog_level: debug\n", []string{`key "log_level" at line 2 is already set at line 1`}},
		{"every unknown key is reported", "a: 1\nb: 2\nhls:\n  c: 3\n",
			[]string{`unknown key "a" at line 1`, `unknown key "b" at line 2`, `unknown key "hls.c" at line 4`}},
		{"merge key", "base: &b\n  format: fmp4\nhls:\n  <<: *b\n", []string{`unknown key "base" at line 1`, `merge key "<<" at line 4 is not supported`}},
		{"two documents", "log_level: info\n---\nlog_level: debug\n", []string{"a second YAML document starts at line 2"}},
		{"syntax error", "hls:\n  live_window: [6\n", []string{"yaml:"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := writeFile(t, tc.yaml)
			_, err := Load(p, nil)
			requireErrContains(t, err, append([]string{p}, tc.want...)...)
		})
	}
}

func TestAliasesAreFollowed(t *testing.T) {
	t.Parallel()
	got, err := Load(writeFile(t, "log_level: &lvl debug\nhls:\n  format: mpegts\nhub: &h\n  queue_size: 32\n"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.LogLevel != "debug" || got.HLS.Format != "mpegts" || got.Hub.QueueSize != 32 {
		t.Errorf("got %+v", got)
	}
}

func TestBadValuesCollectEveryError(t *testing.T) {
	t.Parallel()
	p := writeFile(t, `
redis_url: "http://localhost:6379"
http_addr: "8080"
admin_key: short
public_url: "ftp://example.com"
log_level: verbose
ingest:
  reconnect_grace: 10
hls:
  segment_duration: 40s
  live_window: six
  format: webm
hub:
  queue_size: 8
`)
	_, err := Load(p, []string{
		"SHOAL_INGEST_READ_TIMEOUT=soon",
		"SHOAL_LOG_FORMAT=xml",
		"SHOAL_HUB_QUEUE_SIZE=1e3",
	})
	want := []string{
		p + `: ingest.reconnect_grace at line 8: invalid value "10": not a duration`,
		p + `: hls.live_window at line 11: invalid value "six": not a whole number`,
		`SHOAL_INGEST_READ_TIMEOUT (ingest.read_timeout): invalid value "soon": not a duration`,
		`SHOAL_HUB_QUEUE_SIZE (hub.queue_size): invalid value "1e3": not a whole number`,
		`redis_url (SHOAL_REDIS_URL): "http://localhost:6379" must start with redis://, rediss://, redis+cluster:// or rediss+cluster://`,
		`http_addr (SHOAL_HTTP_ADDR): "8080" is not a host:port listen address: missing port in address`,
		`admin_key (SHOAL_ADMIN_KEY): must be at least 16 characters, got 5`,
		`public_url (SHOAL_PUBLIC_URL): "ftp://example.com" must be an absolute http:// or https:// URL`,
		`log_level (SHOAL_LOG_LEVEL): "verbose" is not one of debug, info, warn, error`,
		`log_format (SHOAL_LOG_FORMAT): "xml" is not one of text, json`,
		`hls.segment_duration (SHOAL_HLS_SEGMENT_DURATION): 40s is out of range 500ms..30s`,
		`hls.format (SHOAL_HLS_FORMAT): "webm" is not one of fmp4, mpegts`,
	}
	requireErrContains(t, err, want...)
	// The env value 1e3 failed to parse, so the YAML value 8 is what was
	// validated.
	requireErrContains(t, err, `hub.queue_size (SHOAL_HUB_QUEUE_SIZE): 8 is out of range 16..100000`)
	if n := len(errLines(err)); n != len(want)+1 {
		t.Errorf("got %d messages, want %d:\n%v", n, len(want)+1, err)
	}
}

func TestValidateMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string // "" means valid
	}{
		{"segment too long", func(c *Config) { c.HLS.SegmentDuration = Duration(40 * time.Second) },
			`hls.segment_duration (SHOAL_HLS_SEGMENT_DURATION): 40s is out of range 500ms..30s`},
		{"segment too short", func(c *Config) { c.HLS.SegmentDuration = Duration(100 * time.Millisecond) },
			`hls.segment_duration (SHOAL_HLS_SEGMENT_DURATION): 100ms is out of range 500ms..30s`},
		{"segment min", func(c *Config) { c.HLS.SegmentDuration = Duration(500 * time.Millisecond) }, ""},
		{"segment max", func(c *Config) { c.HLS.SegmentDuration = Duration(30 * time.Second) }, ""},
		{"part longer than a segment", func(c *Config) { c.HLS.PartDuration = Duration(3 * time.Second) },
			`hls.part_duration (SHOAL_HLS_PART_DURATION): 3s is out of range 100ms..2s (hls.segment_duration), or 0 for off`},
		{"part too short", func(c *Config) { c.HLS.PartDuration = Duration(50 * time.Millisecond) },
			`hls.part_duration (SHOAL_HLS_PART_DURATION): 50ms is out of range 100ms..2s (hls.segment_duration), or 0 for off`},
		{"parts off", func(c *Config) { c.HLS.PartDuration = 0 }, ""},
		{"grace zero", func(c *Config) { c.Ingest.ReconnectGrace = 0 }, ""},
		{"upload origins", func(c *Config) { c.UploadAllowedOrigins = "https://app.example.com, http://localhost:3000" }, ""},
		{"upload origin with a path", func(c *Config) { c.UploadAllowedOrigins = "https://app.example.com/upload" },
			`upload_allowed_origins (SHOAL_UPLOAD_ALLOWED_ORIGINS): "https://app.example.com/upload" is not a web origin (scheme://host[:port], no path)`},
		{"upload origins star and more", func(c *Config) { c.UploadAllowedOrigins = "*,https://a.example" },
			`upload_allowed_origins (SHOAL_UPLOAD_ALLOWED_ORIGINS): * allows every origin: list it alone`},
		{"upload origins empty", func(c *Config) { c.UploadAllowedOrigins = " , " },
			`upload_allowed_origins (SHOAL_UPLOAD_ALLOWED_ORIGINS): empty: list origins such as https://app.example.com, or * for any`},
		{"origin urls", func(c *Config) { c.OriginURL = "http://origin-a.internal:8080,https://origin-b.example" }, ""},
		{"origin urls with an empty entry", func(c *Config) { c.OriginURL = "http://origin-a.internal:8080,,https://origin-b.example" },
			`origin_url (SHOAL_ORIGIN_URL): an empty entry in the list: separate the origins' URLs with single commas`},
		{"origin urls not http", func(c *Config) { c.OriginURL = "http://origin-a.internal:8080,ftp://origin-b.example" },
			`origin_url (SHOAL_ORIGIN_URL): "ftp://origin-b.example" must be an absolute http:// or https:// URL`},
		{"origin urls twice", func(c *Config) { c.OriginURL = "https://origin-b.example,https://origin-b.example" },
			`origin_url (SHOAL_ORIGIN_URL): "https://origin-b.example" is listed twice`},
		{"whip public ips", func(c *Config) { c.Ingest.WHIPPublicIPs = "203.0.113.7, 2001:db8::1" }, ""},
		{"whip public ip bad", func(c *Config) { c.Ingest.WHIPPublicIPs = "203.0.113.7,example.com" },
			`ingest.whip_public_ips (SHOAL_INGEST_WHIP_PUBLIC_IPS): "example.com" is not an IP address`},
		{"whip stun bad", func(c *Config) { c.Ingest.WHIPSTUNServers = "stun.l.google.com:19302" },
			`ingest.whip_stun_servers (SHOAL_INGEST_WHIP_STUN_SERVERS): "stun.l.google.com:19302" is not a STUN server URL (stun:host:port)`},
		{"whip port bad", func(c *Config) { c.Ingest.WHIPUDPPort = 70000 },
			`ingest.whip_udp_port (SHOAL_INGEST_WHIP_UDP_PORT): 70000 is not a port from 1 to 65535, or 0`},
		{"srt passphrase short", func(c *Config) { c.Ingest.SRTPassphrase = "short" },
			`ingest.srt_passphrase (SHOAL_INGEST_SRT_PASSPHRASE): an SRT passphrase has 10 to 79 characters, this one has 5`},
		{"srt off", func(c *Config) { c.SRTAddr, c.SRTPublicURL = Off, "" }, ""},
		{"metrics token short", func(c *Config) { c.MetricsToken = "short" },
			`metrics_token (SHOAL_METRICS_TOKEN): must be at least 16 characters, without white space`},
		{"metrics token", func(c *Config) { c.MetricsToken = "0123456789abcdef" }, ""},
		{"trusted proxies", func(c *Config) { c.TrustedProxies = "10.0.0.0/8, 192.0.2.7" }, ""},
		{"trusted proxies bad", func(c *Config) { c.TrustedProxies = "10.0.0.0/8,proxy.example" },
			`trusted_proxies (SHOAL_TRUSTED_PROXIES): "proxy.example" is not a CIDR prefix or IP address`},
		{"grace negative", func(c *Config) { c.Ingest.ReconnectGrace = Duration(-time.Second) },
			`ingest.reconnect_grace (SHOAL_INGEST_RECONNECT_GRACE): -1s is out of range 0s..5m`},
		{"grace too long", func(c *Config) { c.Ingest.ReconnectGrace = Duration(6 * time.Minute) },
			`ingest.reconnect_grace (SHOAL_INGEST_RECONNECT_GRACE): 6m is out of range 0s..5m`},
		{"read timeout too short", func(c *Config) { c.Ingest.ReadTimeout = Duration(999 * time.Millisecond) },
			`ingest.read_timeout (SHOAL_INGEST_READ_TIMEOUT): 999ms is out of range 1s..5m`},
		{"window too small", func(c *Config) { c.HLS.LiveWindow = 2 },
			`hls.live_window (SHOAL_HLS_LIVE_WINDOW): 2 is out of range 3..100`},
		{"window max", func(c *Config) { c.HLS.LiveWindow = 100 }, ""},
		{"queue too big", func(c *Config) { c.Hub.QueueSize = 100001 },
			`hub.queue_size (SHOAL_HUB_QUEUE_SIZE): 100001 is out of range 16..100000`},
		{"empty data dir", func(c *Config) { c.DataDir = "" }, `data_dir (SHOAL_DATA_DIR): must not be empty`},
		{"empty http addr", func(c *Config) { c.HTTPAddr = "" }, `http_addr (SHOAL_HTTP_ADDR): must not be empty`},
		{"bad port", func(c *Config) { c.RTMPAddr = ":70000" },
			`rtmp_addr (SHOAL_RTMP_ADDR): ":70000" is not a host:port listen address: port "70000" is not a number from 0 to 65535`},
		{"named port", func(c *Config) { c.RTMPAddr = "localhost:rtmp" },
			`rtmp_addr (SHOAL_RTMP_ADDR): "localhost:rtmp" is not a host:port listen address`},
		{"random ports", func(c *Config) { c.HTTPAddr, c.RTMPAddr = "127.0.0.1:0", "127.0.0.1:0" }, ""},
		{"same port", func(c *Config) { c.RTMPAddr = "127.0.0.1:8080" },
			`rtmp_addr (SHOAL_RTMP_ADDR): port 8080 is also used by http_addr (:8080)`},
		{"same port other interfaces", func(c *Config) { c.HTTPAddr, c.RTMPAddr = "127.0.0.1:8080", "10.0.0.1:8080" }, ""},
		{"admin key ok", func(c *Config) { c.AdminKey = "0123456789abcdef" }, ""},
		{"admin key short", func(c *Config) { c.AdminKey = "0123456789abcde" },
			`admin_key (SHOAL_ADMIN_KEY): must be at least 16 characters, got 15`},
		{"admin key space", func(c *Config) { c.AdminKey = "0123456789 abcdef" },
			`admin_key (SHOAL_ADMIN_KEY): must not contain white space or control characters`},
		{"redis no host", func(c *Config) { c.RedisURL = "redis:///0" }, `redis_url (SHOAL_REDIS_URL): "redis:///0" has no host`},
		{"redis bad db", func(c *Config) { c.RedisURL = "redis://:secret@localhost/x" },
			`redis_url (SHOAL_REDIS_URL): "redis://:***@localhost/x": the path must be /<database number>, got "/x"`},
		{"redis tls", func(c *Config) { c.RedisURL = "rediss://default:pw@cache:6380" }, ""},
		{"redis unparseable", func(c *Config) { c.RedisURL = "redis://user:pw@host:port/0" },
			`redis_url (SHOAL_REDIS_URL): "***" is not a URL`},
		{"redis cluster", func(c *Config) { c.RedisURL = "redis+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7000,[::1]:7001/" }, ""},
		{"redis cluster tls one node", func(c *Config) { c.RedisURL = "rediss+cluster://cache:6380?dial_timeout=2s" }, ""},
		{"redis cluster db", func(c *Config) { c.RedisURL = "redis+cluster://:pw@a:7000,b:7000/1" },
			`redis_url (SHOAL_REDIS_URL): "redis+cluster://:***@a:7000,b:7000/1": a Redis Cluster has no database number, got path "/1"`},
		{"redis cluster no port", func(c *Config) { c.RedisURL = "redis+cluster://a:7000,b/" },
			`redis_url (SHOAL_REDIS_URL): "redis+cluster://a:7000,b/": each node must be host:port, got "b"`},
		{"redis cluster empty node", func(c *Config) { c.RedisURL = "redis+cluster://a:7000,,b:1/" },
			`redis_url (SHOAL_REDIS_URL): "redis+cluster://a:7000,,b:1/": each node must be host:port, got ""`},
		{"redis cluster no host", func(c *Config) { c.RedisURL = "redis+cluster:///" },
			`redis_url (SHOAL_REDIS_URL): "redis+cluster:///" has no host`},
		{"redis cluster bad port", func(c *Config) { c.RedisURL = "redis+cluster://a:99999/" },
			`redis_url (SHOAL_REDIS_URL): "redis+cluster://a:99999/": bad port in "a:99999"`},
		{"public url empty", func(c *Config) { c.PublicURL = "" },
			`public_url (SHOAL_PUBLIC_URL): must not be empty (it could not be derived from http_addr)`},
		{"public url relative", func(c *Config) { c.PublicURL = "/shoal" },
			`public_url (SHOAL_PUBLIC_URL): "/shoal" must be an absolute http:// or https:// URL`},
		{"public url slash", func(c *Config) { c.PublicURL = "https://example.com/" },
			`public_url (SHOAL_PUBLIC_URL): "https://example.com/" must not end with a slash`},
		{"public url query", func(c *Config) { c.PublicURL = "https://example.com?a=b" },
			`public_url (SHOAL_PUBLIC_URL): "https://example.com?a=b" must not have a query or fragment`},
		{"public url with path", func(c *Config) { c.PublicURL = "https://example.com/shoal" }, ""},
		{"public url no host", func(c *Config) { c.PublicURL = "https://:443" },
			`public_url (SHOAL_PUBLIC_URL): "https://:443" has no host`},
		{"rtmp url http", func(c *Config) { c.RTMPPublicURL = "http://example.com/live" },
			`rtmp_public_url (SHOAL_RTMP_PUBLIC_URL): "http://example.com/live" must be an absolute rtmp:// or rtmps:// URL`},
		{"rtmps url", func(c *Config) { c.RTMPPublicURL = "rtmps://live.example.com:443/app" }, ""},
		{"epoch min", func(c *Config) {
			c.Accounting.Epoch, c.Accounting.Retention = Duration(10*time.Second), Duration(24*time.Hour)
		}, ""},
		{"epoch shorter than a node's TTL", func(c *Config) { c.Accounting.Epoch = Duration(5 * time.Second) },
			`accounting.epoch (SHOAL_ACCOUNTING_EPOCH): 5s is out of range 10s..168h`},
		{"epoch of a second", func(c *Config) { c.Accounting.Epoch = Duration(time.Second) },
			`accounting.epoch (SHOAL_ACCOUNTING_EPOCH): 1s is out of range 10s..168h`},
		{"retention of 100000 epochs", func(c *Config) {
			c.Accounting.Epoch, c.Accounting.Retention = Duration(36*time.Second), Duration(1000*time.Hour)
		}, ""},
		{"retention of more than 100000 epochs", func(c *Config) {
			c.Accounting.Epoch, c.Accounting.Retention = Duration(36*time.Second), Duration(1000*time.Hour+time.Second)
		}, `accounting.retention (SHOAL_ACCOUNTING_RETENTION): 1000h0m1s is more than 100000 epochs of 36s (accounting.epoch): shorten it to 1000h or less, or lengthen the epoch`},
		{"default retention, short epochs", func(c *Config) { c.Accounting.Epoch = Duration(10 * time.Second) },
			`accounting.retention (SHOAL_ACCOUNTING_RETENTION): 2160h is more than 100000 epochs of 10s (accounting.epoch)`},
		{"s3 storage", func(c *Config) {
			c.Storage = StorageConfig{Backend: "s3", Endpoint: "http://127.0.0.1:8333", Bucket: "shoal-media", Region: "us-east-1"}
		}, ""},
		{"s3 storage with keys", func(c *Config) {
			c.Storage = StorageConfig{Backend: "s3", Endpoint: "https://s3.eu-west-1.amazonaws.com", Bucket: "my.bucket-1", Region: "eu-west-1", AccessKey: "AKIA", SecretKey: "secret"}
		}, ""},
		{"unknown storage backend", func(c *Config) { c.Storage.Backend = "gcs" },
			`storage.backend (SHOAL_STORAGE_BACKEND): "gcs" is not one of fs, s3`},
		{"s3 without endpoint", func(c *Config) { c.Storage.Backend = "s3"; c.Storage.Bucket = "media" },
			`storage.endpoint (SHOAL_STORAGE_ENDPOINT): required when storage.backend is s3`},
		{"s3 without bucket", func(c *Config) { c.Storage.Backend = "s3"; c.Storage.Endpoint = "http://s3.local" },
			`storage.bucket (SHOAL_STORAGE_BUCKET): required when storage.backend is s3`},
		{"endpoint without scheme", func(c *Config) { c.Storage.Endpoint = "s3.local:8333" },
			`storage.endpoint (SHOAL_STORAGE_ENDPOINT):`},
		{"endpoint with a path", func(c *Config) { c.Storage.Endpoint = "http://s3.local/bucket" },
			`storage.endpoint (SHOAL_STORAGE_ENDPOINT): "http://s3.local/bucket" must be scheme://host[:port]`},
		{"bucket with capitals", func(c *Config) { c.Storage.Bucket = "Media" },
			`storage.bucket (SHOAL_STORAGE_BUCKET): "Media" may have only lowercase letters`},
		{"bucket too short", func(c *Config) { c.Storage.Bucket = "ab" },
			`storage.bucket (SHOAL_STORAGE_BUCKET): "ab" must be 3 to 63 characters`},
		{"bucket an IP", func(c *Config) { c.Storage.Bucket = "10.0.0.1" },
			`storage.bucket (SHOAL_STORAGE_BUCKET): "10.0.0.1" is not a valid bucket name`},
		{"empty region", func(c *Config) { c.Storage.Region = "" },
			`storage.region (SHOAL_STORAGE_REGION): must not be empty`},
		{"access key alone", func(c *Config) { c.Storage.AccessKey = "AKIA" },
			`storage.secret_key (SHOAL_STORAGE_SECRET_KEY): give storage.access_key and storage.secret_key together`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want %q", tc.want)
			}
			lines := errLines(err)
			if len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
				t.Errorf("Validate =\n%v\nwant exactly one message starting with\n%s", err, tc.want)
			}
		})
	}
}

func TestDerivation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                 string
		env                  []string
		wantPublic, wantRTMP string
	}{
		{"defaults", nil, "http://localhost:8080", "rtmp://localhost:1935/live"},
		{"loopback host", []string{"SHOAL_HTTP_ADDR=127.0.0.1:9000"}, "http://127.0.0.1:9000", "rtmp://127.0.0.1:1935/live"},
		{"port only", []string{"SHOAL_HTTP_ADDR=:8080"}, "http://localhost:8080", "rtmp://localhost:1935/live"},
		{"ipv4 wildcard", []string{"SHOAL_HTTP_ADDR=0.0.0.0:80"}, "http://localhost:80", "rtmp://localhost:1935/live"},
		{"ipv6 wildcard", []string{"SHOAL_HTTP_ADDR=[::]:8080"}, "http://localhost:8080", "rtmp://localhost:1935/live"},
		{"ipv6 loopback", []string{"SHOAL_HTTP_ADDR=[::1]:8080"}, "http://[::1]:8080", "rtmp://[::1]:1935/live"},
		{"ipv6 zone", []string{"SHOAL_HTTP_ADDR=[fe80::1%eth0]:8080"}, "http://[fe80::1%25eth0]:8080", "rtmp://[fe80::1%25eth0]:1935/live"},
		{"host name", []string{"SHOAL_HTTP_ADDR=node1.example.net:8080", "SHOAL_RTMP_ADDR=:19350"},
			"http://node1.example.net:8080", "rtmp://node1.example.net:19350/live"},
		{"explicit public url", []string{"SHOAL_PUBLIC_URL=https://video.example.com/"},
			"https://video.example.com", "rtmp://video.example.com:1935/live"},
		{"explicit public url with port", []string{"SHOAL_PUBLIC_URL=https://video.example.com:8443/base", "SHOAL_RTMP_ADDR=0.0.0.0:1936"},
			"https://video.example.com:8443/base", "rtmp://video.example.com:1936/live"},
		{"explicit rtmp url", []string{"SHOAL_RTMP_PUBLIC_URL=rtmps://ingest.example.com:443/app/"},
			"http://localhost:8080", "rtmps://ingest.example.com:443/app"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Load("", tc.env)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if got.PublicURL != tc.wantPublic || got.RTMPPublicURL != tc.wantRTMP {
				t.Errorf("PublicURL, RTMPPublicURL = %q, %q; want %q, %q",
					got.PublicURL, got.RTMPPublicURL, tc.wantPublic, tc.wantRTMP)
			}
		})
	}
}

func TestDerivationFollowsYAML(t *testing.T) {
	t.Parallel()
	got, err := Load(writeFile(t, "http_addr: \"127.0.0.1:9000\"\nrtmp_addr: \"127.0.0.1:0\"\n"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.PublicURL != "http://127.0.0.1:9000" || got.RTMPPublicURL != "rtmp://127.0.0.1:0/live" {
		t.Errorf("got %q, %q", got.PublicURL, got.RTMPPublicURL)
	}
}

func TestUnderivableIsReportedOnce(t *testing.T) {
	t.Parallel()
	_, err := Load("", []string{"SHOAL_HTTP_ADDR=nonsense"})
	requireErrContains(t, err,
		`http_addr (SHOAL_HTTP_ADDR): "nonsense" is not a host:port listen address`,
		`public_url (SHOAL_PUBLIC_URL): must not be empty (it could not be derived from http_addr)`,
		`rtmp_public_url (SHOAL_RTMP_PUBLIC_URL): must not be empty (it could not be derived from public_url and rtmp_addr)`)
}

func TestRedacted(t *testing.T) {
	t.Parallel()
	c := Default()
	c.AdminKey = "adm_0123456789abcdefghij"
	c.RedisURL = "rediss://user:s3cr%40t@redis.example.com:6380/1"
	c.Ingest.SRTPassphrase = "correct horse battery"
	c.Storage.AccessKey, c.Storage.SecretKey = "AKIAEXAMPLE", "wJalrXUtnFEMI"
	r := c.Redacted()
	if r.Storage.SecretKey != "***" || strings.Contains(fmt.Sprintf("%+v", r), "wJalr") {
		t.Errorf("the storage secret key shows: %+v", r.Storage)
	}
	if r.AdminKey != "***" {
		t.Errorf("AdminKey = %q", r.AdminKey)
	}
	if r.Ingest.SRTPassphrase != "***" || strings.Contains(fmt.Sprintf("%+v", r), "horse") {
		t.Errorf("the SRT passphrase shows: %+v", r.Ingest)
	}
	if r.RedisURL != "rediss://user:***@redis.example.com:6380/1" {
		t.Errorf("RedisURL = %q", r.RedisURL)
	}
	if c.AdminKey != "adm_0123456789abcdefghij" {
		t.Error("Redacted modified its receiver")
	}
	if d := Default().Redacted(); d != Default() {
		t.Errorf("nothing to redact, but Redacted changed %+v", d)
	}
	for in, want := range map[string]string{
		"redis://localhost:6379/0":       "redis://localhost:6379/0",
		"redis://alice@localhost:6379":   "redis://alice@localhost:6379", // a user name alone is no secret
		"redis://:pw@localhost:6379":     "redis://:***@localhost:6379",
		"redis://u:pw@host:notaport/0":   "***", // unparseable, with credentials
		"redis://host:notaport/0":        "redis://host:notaport/0",
		"redis://u:p@h/0?dial_timeout=1": "redis://u:***@h/0?dial_timeout=1",
		"redis+cluster://u:p@a:1,b:2/":   "redis+cluster://u:***@a:1,b:2/",
		"redis+cluster://u@a:1,b:2/":     "redis+cluster://u@a:1,b:2/",
		"rediss+cluster://:p@w@a:1?x=1":  "rediss+cluster://:***@a:1?x=1",
		"redis+cluster://a:1,b:2":        "redis+cluster://a:1,b:2",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// yamlPaths returns the dotted yaml paths of every leaf field of a struct
// type, from its yaml tags.
func yamlPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.Type.Kind() == reflect.Struct {
			out = append(out, yamlPaths(f.Type, prefix+name+".")...)
			continue
		}
		out = append(out, prefix+name)
	}
	return out
}

func TestKeysMatchStructAndNaming(t *testing.T) {
	t.Parallel()
	var fromKeys []string
	envs := map[string]bool{}
	for _, k := range Keys() {
		fromKeys = append(fromKeys, k.YAMLKey)
		if want := "SHOAL_" + strings.ToUpper(strings.ReplaceAll(k.YAMLKey, ".", "_")); k.Env != want {
			t.Errorf("key %s: env %s, want %s", k.YAMLKey, k.Env, want)
		}
		if envs[k.Env] {
			t.Errorf("env %s listed twice", k.Env)
		}
		envs[k.Env] = true
		if k.Help == "" {
			t.Errorf("key %s has no help", k.YAMLKey)
		}
	}
	fromStruct := yamlPaths(reflect.TypeFor[Config](), "")
	if !reflect.DeepEqual(fromKeys, fromStruct) {
		t.Errorf("Keys() paths\n%q\ndiffer from Config's yaml tags\n%q", fromKeys, fromStruct)
	}
}

func TestKeysDefaults(t *testing.T) {
	t.Parallel()
	got := map[string]string{}
	for _, k := range Keys() {
		got[k.YAMLKey] = k.Default
	}
	for key, want := range map[string]string{
		"redis_url":              "redis://127.0.0.1:6379/0",
		"admin_key":              "",
		"public_url":             "derived from http_addr (http://localhost:8080 with the defaults)",
		"rtmp_public_url":        "derived from public_url and rtmp_addr (rtmp://localhost:1935/live with the defaults)",
		"ingest.reconnect_grace": "10s",
		"hls.segment_duration":   "2s",
		"hls.live_window":        "6",
		"hls.part_duration":      "500ms",
		"hls.dvr_window":         "2h",
		"hub.queue_size":         "1024",
		"storage.backend":        "fs",
		"storage.endpoint":       "",
		"storage.region":         "us-east-1",
	} {
		if got[key] != want {
			t.Errorf("Keys() default of %s = %q, want %q", key, got[key], want)
		}
	}
}

// Every key can be set through the environment, with the value its own
// default formats to, and through YAML: the table's get and set agree.
func TestEveryKeySettable(t *testing.T) {
	t.Parallel()
	d := Default()
	for i := range table {
		k := &table[i]
		var c Config
		if err := k.set(&c, k.get(&d)); err != nil {
			t.Errorf("%s: set(get(Default())) = %v", k.path, err)
			continue
		}
		if k.get(&c) != k.get(&d) {
			t.Errorf("%s: round trip gave %q, want %q", k.path, k.get(&c), k.get(&d))
		}
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()
	c := Default()
	c.AdminKey = "0123456789abcdefgh"
	c.Ingest.ReconnectGrace = Duration(90 * time.Second)
	c.HLS.SegmentDuration = Duration(1500 * time.Millisecond)
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"reconnect_grace: 1m30s\n", "segment_duration: 1.5s\n", "read_timeout: 10s\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("marshaled YAML lacks %q:\n%s", want, out)
		}
	}
	got, err := Load(writeFile(t, string(out)), nil)
	if err != nil {
		t.Fatalf("Load(marshaled): %v\n%s", err, out)
	}
	if got != c {
		t.Errorf("round trip =\n%+v\nwant\n%+v", got, c)
	}
}

func TestDuration(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"0": 0, "500ms": 500 * time.Millisecond, "2s": 2 * time.Second, " 1m30s ": 90 * time.Second, "1h": time.Hour,
	} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err != nil || d.Std() != want {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"", "10", "2 s", "soon", "1e3s"} {
		var d Duration
		if err := d.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("UnmarshalText(%q) = %v, want an error", in, d)
		}
	}
	for d, want := range map[time.Duration]string{
		5 * time.Minute: "5m", time.Hour: "1h", 90 * time.Minute: "1h30m", 90 * time.Second: "1m30s",
		10 * time.Second: "10s", 0: "0s", 500 * time.Millisecond: "500ms", time.Hour + time.Second: "1h0m1s",
	} {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v).String() = %q, want %q", d, got, want)
		}
	}
	var v struct {
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("d: 250ms\n"), &v); err != nil || v.D.Std() != 250*time.Millisecond {
		t.Errorf("yaml.Unmarshal = %v, %v", v.D, err)
	}
	err := yaml.Unmarshal([]byte("d: [1s]\n"), &v)
	requireErrContains(t, err, "line 1: a duration must be a single value")
	err = yaml.Unmarshal([]byte("d: 10\n"), &v)
	requireErrContains(t, err, `line 1: invalid value "10": not a duration`)
}

func TestTranscodeKeys(t *testing.T) {
	t.Parallel()
	c, err := Load("", []string{"SHOAL_TRANSCODE_HWACCEL=NONE", "SHOAL_TRANSCODE_MAX_LADDERS=0",
		"SHOAL_TRANSCODE_LADDER=480p:1M,720p:2500k", "SHOAL_TRANSCODE_PASSTHROUGH=true", "SHOAL_TRANSCODE_PRESET=superfast",
		"SHOAL_TRANSCODE_VERIFY_FRACTION= 0.5 ", "SHOAL_TRANSCODE_REMOTE=Only"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Transcode != (TranscodeConfig{HWAccel: "none", MaxLadders: 0, Ladder: "480p:1M,720p:2500k", Passthrough: true, Preset: "superfast", VerifyFraction: 0.5, Remote: "only"}) {
		t.Fatalf("transcode config %+v", c.Transcode)
	}
	_, err = Load("", []string{"SHOAL_TRANSCODE_HWACCEL=vaapi", "SHOAL_TRANSCODE_LADDER=720p", "SHOAL_TRANSCODE_PASSTHROUGH=maybe", "SHOAL_TRANSCODE_PRESET=quick",
		"SHOAL_TRANSCODE_VERIFY_FRACTION=2%", "SHOAL_TRANSCODE_REMOTE=always"})
	for _, want := range []string{"transcode.hwaccel (SHOAL_TRANSCODE_HWACCEL): vaapi is not supported", "transcode.ladder (SHOAL_TRANSCODE_LADDER)", "SHOAL_TRANSCODE_PASSTHROUGH", "transcode.preset (SHOAL_TRANSCODE_PRESET)",
		`SHOAL_TRANSCODE_VERIFY_FRACTION (transcode.verify_fraction): invalid value "2%": not a number`, "transcode.remote (SHOAL_TRANSCODE_REMOTE)"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	// 0 turns the check off, 1 checks every segment; an empty variable
	// is unset; outside 0..1, NaN and infinities are refused.
	for env, want := range map[string]float64{"0": 0, "1": 1, "": 0.02, "1e-3": 0.001} {
		c, err := Load("", []string{"SHOAL_TRANSCODE_VERIFY_FRACTION=" + env})
		if err != nil || c.Transcode.VerifyFraction != want {
			t.Errorf("SHOAL_TRANSCODE_VERIFY_FRACTION=%q: %v, %v; want %v", env, c.Transcode.VerifyFraction, err, want)
		}
	}
	for env, want := range map[string]string{"1.5": "1.5 is out of range 0..1", "-0.1": "-0.1 is out of range 0..1", "NaN": "not a number", "inf": "not a number"} {
		_, err := Load("", []string{"SHOAL_TRANSCODE_VERIFY_FRACTION=" + env})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SHOAL_TRANSCODE_VERIFY_FRACTION=%q: %v, want %q", env, err, want)
		}
	}
	c, err = Load(writeFile(t, "transcode:\n  verify_fraction: 1\n"), nil)
	if err != nil || c.Transcode.VerifyFraction != 1 {
		t.Errorf("transcode.verify_fraction: 1 in YAML: %v, %v", c.Transcode.VerifyFraction, err)
	}
}

// TestP2PSTUNServers: STUN servers by default, "off" for none (an empty
// variable means unset), and URLs without a host and port refused.
func TestP2PSTUNServers(t *testing.T) {
	t.Parallel()
	c, err := Load("", nil)
	if err != nil || len(P2PSTUNList(c.P2PSTUNServers)) != 1 {
		t.Fatalf("default: %q, %v", c.P2PSTUNServers, err)
	}
	c, err = Load("", []string{"SHOAL_P2P_STUN_SERVERS=OFF"})
	if err != nil || P2PSTUNList(c.P2PSTUNServers) != nil {
		t.Fatalf("off: %q %v, %v", c.P2PSTUNServers, P2PSTUNList(c.P2PSTUNServers), err)
	}
	c, err = Load("", []string{"SHOAL_P2P_STUN_SERVERS=stun:a.example:3478, stuns:b.example:5349"})
	if got := P2PSTUNList(c.P2PSTUNServers); err != nil || len(got) != 2 || got[1] != "stuns:b.example:5349" {
		t.Fatalf("two servers: %v, %v", got, err)
	}
	for _, bad := range []string{"stun:", "stun:a b:1", "turn:a.example:3478", "stun:a.example", "a.example:3478"} {
		if _, err := Load("", []string{"SHOAL_P2P_STUN_SERVERS=" + bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestMinEpochOutlastsNodeTTL: an accounting epoch is longer than the
// time a node stays registered without a heartbeat, so that the uptime a
// heartbeat accounts fits in one epoch.
func TestMinEpochOutlastsNodeTTL(t *testing.T) {
	t.Parallel()
	if MinAccountingEpoch.Std() <= nodeproto.NodeTTL {
		t.Fatalf("MinAccountingEpoch %s, not longer than nodeproto.NodeTTL %s", MinAccountingEpoch, nodeproto.NodeTTL)
	}
}

// SHOAL_ORIGIN_URL takes several origins: blanks and trailing slashes
// are dropped from each, and OriginURLs lists them in order.
func TestOriginURLList(t *testing.T) {
	t.Parallel()
	got, err := Load("", []string{"SHOAL_ORIGIN_URL= http://origin-a.internal:8080/ , https://origin-b.example/"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got.OriginURL != "http://origin-a.internal:8080,https://origin-b.example" {
		t.Errorf("OriginURL = %q", got.OriginURL)
	}
	if l := got.OriginURLs(); len(l) != 2 || l[0] != "http://origin-a.internal:8080" || l[1] != "https://origin-b.example" {
		t.Errorf("OriginURLs() = %q", l)
	}
	if l := Default().OriginURLs(); l != nil {
		t.Errorf("OriginURLs() of the default = %q, want none", l)
	}
	if _, err := Load("", []string{"SHOAL_ORIGIN_URL=http://origin-a.internal:8080,origin-b:8080"}); err == nil ||
		!strings.Contains(err.Error(), "origin_url (SHOAL_ORIGIN_URL)") {
		t.Errorf("an entry without a scheme: %v", err)
	}
}
