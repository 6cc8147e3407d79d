// Package playerapi is Shoal's control API: the authenticated REST
// endpoints under /v1 that manage live streams, API keys, videos (PUT and
// tus 1.0 uploads) and webhooks, described by the OpenAPI 3.1 document
// served at /v1/openapi.yaml.
//
// Every route but the OpenAPI document needs "Authorization: Bearer <api key>", where the key is
// either the bootstrap admin key from the configuration (accepted without
// Redis) or a key issued by POST /v1/api-keys. An issued key has scopes
// (admin, streams, videos, playback-tokens, read-only); routeScopes says
// which one each route needs, and a key without it is answered 403. The
// admin key has every scope. Every error is JSON:
//
//	{"error":{"code":"not_found","message":"live stream not found"}}
//
// with code one of invalid_request (400), unauthorized (401), forbidden
// (403, the API key lacks the route's scope; see routeScopes), not_found
// (404), conflict (409), payload_too_large (413), not_a_video (422),
// internal (500) and unavailable (503, the state store is unreachable).
package playerapi

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	tus "github.com/tus/tusd/v2/pkg/handler"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/playsession"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
)

// DefaultMaxBodyBytes is the largest JSON request body accepted when
// Config.MaxBodyBytes is zero.
const DefaultMaxBodyBytes = 1 << 20

// minAdminKeyLen is the shortest admin key New accepts.
const minAdminKeyLen = 16

// Store is the state the API reads and writes; *routing.Store implements
// it. Lookups of missing records return routing.ErrNotFound and failures to
// reach Redis wrap routing.ErrUnavailable.
type Store interface {
	CreateLiveStream(ctx context.Context, spec routing.LiveStreamSpec) (routing.LiveStream, error)
	GetLiveStream(ctx context.Context, id string) (routing.LiveStream, error)
	ListLiveStreams(ctx context.Context) ([]routing.LiveStream, error)
	UpdateLiveStream(ctx context.Context, id string, u routing.LiveStreamUpdate) (routing.LiveStream, error)
	DeleteLiveStream(ctx context.Context, id string) error
	ResetStreamKey(ctx context.Context, id string) (routing.LiveStream, error)
	CreateAPIKey(ctx context.Context, name string, scopes []string) (plaintext string, info routing.APIKey, err error)
	VerifyAPIKey(ctx context.Context, key string) (routing.APIKey, error)
	ListAPIKeys(ctx context.Context) ([]routing.APIKey, error)
	DeleteAPIKey(ctx context.Context, id string) error
	// UploadLocker gives out the tus uploads' locks, leased in Redis.
	UploadLocker(ttl time.Duration, log *slog.Logger) *routing.UploadLocker
	VideoStore
	WebhookStore
	NodeStore
	RestreamStore
	P2PStatsStore
	AnalyticsStore
	AccountingStore
}

// Live is what the API needs of the media pipeline.
type Live interface {
	// IsLive tells whether a live stream is being published right now (or
	// waits for its publisher to reconnect).
	IsLive(id string) bool
	// Problem says what is wrong with a live stream's processing right now
	// ("" when nothing is), for the API's "error" field.
	Problem(id string) string
	// Pull tells the state of the pull of a live stream that has a source
	// URL (ok false when it is not being pulled on this node).
	Pull(id string) (p PullState, ok bool)
	// Remove ends a live stream at once, disconnecting its publisher, and
	// deletes its HLS output. It is called after the stream was deleted.
	Remove(id string) error
	// Restreams tells the state of live stream id's restream targets on
	// this node, by target id (a target missing is idle).
	Restreams(id string) map[string]RestreamState
	// Disconnect ends the connection of live stream id's publisher (its
	// stream key was reset).
	Disconnect(id string)
	// RefreshRestreams re-reads live stream id's targets after a change,
	// so that a new one starts and a deleted one stops at once.
	RefreshRestreams(id string)
}

// PullState is the state of a live stream's pull from its source URL.
type PullState struct {
	State     string    `json:"state"` // connecting, live or retrying
	LastError string    `json:"error,omitempty"`
	Since     time.Time `json:"since"`
}

// Config configures the API.
type Config struct {
	// AdminKey is the bootstrap API key (SHOAL_ADMIN_KEY). It is accepted
	// even while Redis is down. Required, at least 16 characters, printable
	// ASCII without spaces.
	AdminKey string
	// PublicURL is how viewers reach this node, for example
	// "http://localhost:8080"; playback URLs are built from it
	// (PublicURL + "/hls/<id>/master.m3u8"). Required, http or https.
	PublicURL string
	// RTMPURL is the RTMP server publishers send to, without the stream
	// key, for example "rtmp://localhost:1935/live". Required, rtmp or
	// rtmps.
	RTMPURL string
	// RTSPURL is the RTSP URL publishers append /<stream_key> to, for
	// example "rtsp://localhost:8554/live"; empty when RTSP ingest is off.
	RTSPURL string
	// SRTURL is the SRT URL publishers add ?streamid=publish:<stream_key>
	// to, for example "srt://localhost:8890"; empty when SRT ingest is off.
	SRTURL string
	// WHIP is the WebRTC ingest's HTTP side, mounted at /v1/whip; nil
	// answers 503 there.
	WHIP WHIP
	// WHEP is real-time playback's HTTP side, mounted at /v1/whep/<id>;
	// nil answers 503 there.
	WHEP WHEP
	// MaxRestreams is how many restream targets one live stream may have;
	// 0 turns restreaming off.
	MaxRestreams int
	// WebhookAllowPrivate accepts webhook URLs naming loopback or private
	// addresses outright (the dispatcher checks every address it dials
	// too).
	WebhookAllowPrivate bool
	// SourceAllowPrivate accepts live streams' source URLs naming loopback
	// or private addresses outright (the puller checks every address it
	// dials too).
	SourceAllowPrivate bool
	// MaxBodyBytes caps JSON request bodies; larger bodies are answered
	// with 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxUploadBytes caps a video source (PUT or tus); larger ones are
	// answered with 413. Zero means DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// UploadAllowedOrigins are the web origins (scheme://host[:port])
	// whose pages may upload with tus; empty or "*": any.
	UploadAllowedOrigins []string
	// UploadDir keeps tus uploads until they complete (unless UploadStore
	// is set), and the finished ones while they are probed. Required.
	UploadDir string
	// UploadStore, when set, keeps tus uploads until they complete instead
	// of UploadDir (tusObjects), so that any origin sharing it and Redis
	// can resume an upload begun at another: the media store when it is
	// shared (S3). Nil: tusd's file store in UploadDir.
	UploadStore storage.Store
	// Videos stores, probes and removes video files. Required.
	Videos Videos
	// PlaybackKey is the origin's ed25519 key that POST /v1/playback-tokens
	// signs tokens with (playback.LoadOrCreateKey). Nil: that endpoint
	// answers 503, signed playback is not configured.
	PlaybackKey ed25519.PrivateKey
	// RegionHeader is the request header a front proxy sets to the
	// viewer's region, for /play and /v1/route ("" uses ?region= only).
	RegionHeader string
	// ClientIP, when set, finds a request's client address (trusted
	// proxies, edges vouching), for per-network quotas; the default is
	// the TCP peer.
	ClientIP func(*http.Request) string
	// Registerer, when set, gets the API's metrics
	// (shoal_node_heartbeats_limited_total, shoal_p2p_reported_bytes_total).
	Registerer prometheus.Registerer
	// OnHeartbeat, when set, is told every node heartbeat (for the origin's
	// per-node metrics).
	OnHeartbeat func(n routing.Node, load routing.NodeLoad)
	// ContentKeys are the public keys manifests are verified with (the
	// first signs), published at GET /v1/keys.
	ContentKeys []ed25519.PublicKey
	// MaxNodesPerToken caps the node identities one node token may hold
	// (0: DefaultMaxNodesPerToken; negative: no cap).
	MaxNodesPerToken int
	// QuarantineReports is how many distinct viewer networks must report
	// verification failures of a node within ReportWindow to quarantine it
	// (0: DefaultQuarantineReports). An audit that confirms a report
	// quarantines at once.
	QuarantineReports int
	// Audit, when set, checks a delivery report against the node itself.
	Audit Auditor
	// OnDeliveryFailure, when set, is told of each verification failure
	// reported for a node (for the origin's metrics).
	OnDeliveryFailure func(nodeID, kind string)
	// AuditSummary, when set, tells what the origin's own audits of an
	// edge found (GET /v1/nodes shows it).
	AuditSummary func(nodeID string) (AuditSummary, bool)
	// Sessions mints and reads playback session tokens; the pages that
	// mint them must share it (nil: one of the API's own).
	Sessions *playsession.Keeper
	// Accounting configures delivery accounting per epoch and signs its
	// reports (epochs.go).
	Accounting Accounting
	// WorkerJobs hands VOD jobs to remote workers (the /v1/worker routes,
	// workers.go); nil: those routes answer 503.
	WorkerJobs WorkerJobs
	// WorkerLive hands live ladders to remote workers (the
	// /v1/worker/live routes); nil: none.
	WorkerLive WorkerLive
}

// API serves the control API. Create it with New and mount it with
// Register.
type API struct {
	adminKeyHash string
	publicURL    string
	rtmpURL      string
	rtspURL      string
	srtURL       string
	whip         WHIP
	whep         WHEP
	maxRestreams int
	restreams    RestreamStore
	// webhookPrivate: see Config.WebhookAllowPrivate.
	webhookPrivate bool
	// sourcePrivate: see Config.SourceAllowPrivate.
	sourcePrivate bool
	maxBody       int64
	maxUpload     int64

	store     Store
	status    Live
	videos    Videos
	tus       *tus.UnroutedHandler
	uploadDir string        // tus uploads in progress (unless tusStore is set)
	tusStore  storage.Store // tus uploads in progress, when they are kept in the media store
	// tusPartMax, when set, bounds the parts of uploads in tusStore
	// (tests).
	tusPartMax atomic.Int64
	tusLocks   *tusLocker // tusd's upload locks (in Redis), also taken by RecoverUploads
	// recoverWait, when set, replaces RecoverUploads' wait for a lock
	// (tests).
	recoverWait time.Duration
	log         *slog.Logger

	playbackKey  ed25519.PrivateKey // nil: signed playback is not configured
	regionHeader string
	clientIP     func(*http.Request) string
	onHeartbeat  func(n routing.Node, load routing.NodeLoad)
	workerJobs   WorkerJobs
	workerLive   WorkerLive
	// completions are the slots of remote workers' completions running at
	// once (their bodies read, their outputs checked).
	completions chan struct{}
	// completionsBy counts the completions being read by node token (at
	// most maxCompletionsPerToken each).
	completionsMu sync.Mutex
	completionsBy map[string]int

	registry          *routing.Registry
	secretMu          sync.Mutex
	secret            []byte
	contentKeys       []ed25519.PublicKey
	maxNodesPerToken  int
	quarantineReports int
	audit             Auditor
	onDeliveryFailure func(nodeID, kind string)
	auditSummary      func(nodeID string) (AuditSummary, bool)
	acct              Accounting
	sealed            sealedCache // parsed sealed epoch reports (epochs.go)
	reports           *reportLimiter
	heartbeats        *heartbeatLimiter
	heartbeatsLimited *prometheus.CounterVec
	p2pReported       *prometheus.CounterVec

	// Playback sessions and beacons (beacons.go, analytics.go).
	now           func() time.Time
	sessions      *playsession.Keeper
	beaconLimits  beaconLimiter
	offerLimits   beaconLimiter // route requests that record a session's offers
	beaconMetrics *beaconMetrics
}

// New checks cfg and returns an API backed by store and status. A nil log
// discards log records.
func New(cfg Config, store Store, status Live, log *slog.Logger) (*API, error) {
	var errs []error
	if err := checkAdminKey(cfg.AdminKey); err != nil {
		errs = append(errs, err)
	}
	publicURL, err := checkURL("PublicURL", cfg.PublicURL, "http", "https")
	if err != nil {
		errs = append(errs, err)
	}
	rtmpURL, err := checkURL("RTMPURL", cfg.RTMPURL, "rtmp", "rtmps")
	if err != nil {
		errs = append(errs, err)
	}
	maxBody := cfg.MaxBodyBytes
	switch {
	case maxBody == 0:
		maxBody = DefaultMaxBodyBytes
	case maxBody < 0:
		errs = append(errs, fmt.Errorf("playerapi: MaxBodyBytes must not be negative, got %d", maxBody))
	}
	maxUpload := cfg.MaxUploadBytes
	switch {
	case maxUpload == 0:
		maxUpload = DefaultMaxUploadBytes
	case maxUpload < 0:
		errs = append(errs, fmt.Errorf("playerapi: MaxUploadBytes must not be negative, got %d", maxUpload))
	}
	if cfg.UploadDir == "" {
		errs = append(errs, errors.New("playerapi: UploadDir is required"))
	}
	if cfg.Videos == nil {
		errs = append(errs, errors.New("playerapi: Videos is required"))
	}
	if store == nil {
		errs = append(errs, errors.New("playerapi: a Store is required"))
	}
	if status == nil {
		errs = append(errs, errors.New("playerapi: a Live pipeline is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{
		adminKeyHash:   ids.Hash(cfg.AdminKey),
		publicURL:      publicURL,
		rtmpURL:        rtmpURL,
		rtspURL:        strings.TrimRight(cfg.RTSPURL, "/"),
		srtURL:         strings.TrimRight(cfg.SRTURL, "/"),
		whip:           cfg.WHIP,
		whep:           cfg.WHEP,
		maxRestreams:   cfg.MaxRestreams,
		webhookPrivate: cfg.WebhookAllowPrivate,
		sourcePrivate:  cfg.SourceAllowPrivate,
		restreams:      store,
		maxBody:        maxBody,
		maxUpload:      maxUpload,
		store:          store,
		status:         status,
		videos:         cfg.Videos,
		log:            log,
		playbackKey:    cfg.PlaybackKey,
		regionHeader:   cfg.RegionHeader,
		clientIP:       cfg.ClientIP,
		onHeartbeat:    cfg.OnHeartbeat,
		workerJobs:     cfg.WorkerJobs,
		workerLive:     cfg.WorkerLive,
		completions:    make(chan struct{}, maxCompletions),
		completionsBy:  map[string]int{},

		contentKeys:       cfg.ContentKeys,
		maxNodesPerToken:  cfg.MaxNodesPerToken,
		quarantineReports: cfg.QuarantineReports,
		audit:             cfg.Audit,
		onDeliveryFailure: cfg.OnDeliveryFailure,
		auditSummary:      cfg.AuditSummary,
		acct:              cfg.Accounting.withDefaults(),
		reports:           newReportLimiter(time.Now),
		heartbeats:        newHeartbeatLimiter(time.Now),
		heartbeatsLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_node_heartbeats_limited_total",
			Help: "Node heartbeats refused for their rate (429) or size (413).",
		}, []string{"reason"}),
		p2pReported: newP2PReported(),

		now:           time.Now,
		sessions:      cmp.Or(cfg.Sessions, playsession.NewKeeper(store.SessionSecret, store.ReloadSessionSecret)),
		beaconMetrics: newBeaconMetrics(),
	}
	if cfg.Registerer != nil {
		for _, m := range append([]prometheus.Collector{a.heartbeatsLimited, a.p2pReported}, a.beaconMetrics.collectors()...) {
			if err := cfg.Registerer.Register(m); err != nil {
				return nil, err
			}
		}
	}
	a.registry = routing.NewRegistry(store.ListNodes, nil)
	if a.clientIP == nil {
		a.clientIP = func(r *http.Request) string { return r.RemoteAddr }
	}
	switch {
	case a.maxNodesPerToken == 0:
		a.maxNodesPerToken = DefaultMaxNodesPerToken
	case a.maxNodesPerToken < 0:
		a.maxNodesPerToken = 0
	}
	if a.quarantineReports <= 0 {
		a.quarantineReports = DefaultQuarantineReports
	}
	a.uploadDir = cfg.UploadDir
	a.tusStore = cfg.UploadStore
	if a.tus, err = a.newTusHandler(cfg.UploadDir, cfg.UploadAllowedOrigins); err != nil {
		return nil, err
	}
	return a, nil
}

func checkAdminKey(k string) error {
	if k == "" {
		return errors.New("playerapi: AdminKey is required (set SHOAL_ADMIN_KEY)")
	}
	for _, r := range k {
		if r <= ' ' || r > '~' {
			return errors.New("playerapi: AdminKey must be printable ASCII without spaces, so that it fits in an Authorization header")
		}
	}
	if len(k) < minAdminKeyLen {
		return fmt.Errorf("playerapi: AdminKey must be at least %d characters long, got %d", minAdminKeyLen, len(k))
	}
	return nil
}

// checkURL parses an absolute URL with one of schemes and returns it
// without a trailing slash.
func checkURL(field, raw string, schemes ...string) (string, error) {
	if raw == "" {
		return "", fmt.Errorf("playerapi: %s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("playerapi: %s: %w", field, err)
	}
	okScheme := false
	for _, s := range schemes {
		okScheme = okScheme || u.Scheme == s
	}
	switch {
	case !okScheme:
		return "", fmt.Errorf("playerapi: %s %q must start with %s://", field, raw, strings.Join(schemes, ":// or "))
	case u.Host == "":
		return "", fmt.Errorf("playerapi: %s %q has no host", field, raw)
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return "", fmt.Errorf("playerapi: %s %q must not contain user info, a query or a fragment", field, raw)
	}
	return strings.TrimRight(raw, "/"), nil
}

// Register mounts every route of the API, under /v1, on r.
func (a *API) Register(r gin.IRouter) {
	// The spec is public: it holds no secrets and clients fetch it first.
	r.GET("/v1/openapi.yaml", serveOpenAPI)
	a.registerUploadOptions(r)
	v1 := r.Group("/v1", a.Authenticate)
	v1.POST("/live-streams", a.createLiveStream)
	v1.GET("/live-streams", a.listLiveStreams)
	v1.GET("/live-streams/:id", a.getLiveStream)
	v1.PATCH("/live-streams/:id", a.updateLiveStream)
	v1.DELETE("/live-streams/:id", a.deleteLiveStream)
	v1.POST("/live-streams/:id/reset-stream-key", a.resetStreamKey)
	v1.POST("/api-keys", a.createAPIKey)
	v1.GET("/api-keys", a.listAPIKeys)
	v1.DELETE("/api-keys/:id", a.deleteAPIKey)
	a.registerRestreams(v1)
	a.registerVideos(v1)
	a.registerWebhooks(v1)
	a.registerPlayback(v1)
	a.registerNodes(r, v1)
	a.registerWorkers(r)
	a.registerAnalytics(v1)
	r.POST("/v1/beacons", a.beacon)
	a.registerEpochs(r, v1)
	a.registerWHIP(r)
	a.registerWHEP(r)
}

// errorBody is the JSON shape of every error response.
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// WriteError answers the request with status and the JSON body
// {"error":{"code":code,"message":msg}} and aborts the handler chain.
func WriteError(c *gin.Context, status int, code, msg string) {
	c.AbortWithStatusJSON(status, errorBody{Error: errorDetail{Code: code, Message: msg}})
}

// Error codes of the API.
const (
	codeInvalidRequest  = "invalid_request"
	codeUnauthorized    = "unauthorized"
	codeForbidden       = "forbidden"
	codeNotFound        = "not_found"
	codePayloadTooLarge = "payload_too_large"
	codeInternal        = "internal"
	codeUnavailable     = "unavailable"
)

const unavailableMessage = "state store (Redis) is unreachable; retry shortly"

// fail answers a request whose store call failed: 404 for ErrNotFound, 503
// when Redis is unreachable, 500 otherwise. Server errors are logged once,
// here.
func (a *API) fail(c *gin.Context, err error, notFound string) {
	switch {
	case errors.Is(err, routing.ErrNotFound):
		WriteError(c, http.StatusNotFound, codeNotFound, notFound)
	case errors.Is(err, routing.ErrUnavailable):
		a.logServerError(c, http.StatusServiceUnavailable, err)
		c.Header("Retry-After", "1")
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, unavailableMessage)
	default:
		a.logServerError(c, http.StatusInternalServerError, err)
		WriteError(c, http.StatusInternalServerError, codeInternal, "internal error")
	}
}

// logServerError logs a 5xx answer. The error comes from the store, whose
// messages carry no secrets; the path carries ids only.
func (a *API) logServerError(c *gin.Context, status int, err error) {
	a.log.LogAttrs(c.Request.Context(), slog.LevelError, "control API request failed",
		slog.Int("status", status),
		slog.String("method", c.Request.Method),
		slog.String("route", c.FullPath()),
		slog.String("path", c.Request.URL.Path),
		slog.String("error", err.Error()),
	)
}

// validName checks a name given to a live stream or API key and returns it
// without surrounding white space.
func validName(name *string) (string, error) {
	if name == nil {
		return "", errors.New(`"name" is required`)
	}
	n := strings.TrimSpace(*name)
	if n == "" {
		return "", errors.New(`"name" must not be empty`)
	}
	if len([]rune(n)) > maxNameLen {
		return "", fmt.Errorf(`"name" must be at most %d characters`, maxNameLen)
	}
	if strings.IndexFunc(n, unicode.IsControl) >= 0 {
		return "", errors.New(`"name" must not contain control characters`)
	}
	return n, nil
}

// maxNameLen is the longest name, in characters, of a live stream or API key.
const maxNameLen = 200
