package playerapi

import (
	"container/list"
	"context"
	"errors"
	"math"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/playsession"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/uaparse"
)

// AnalyticsStore is the part of the Store that keeps playback sessions and
// viewer analytics.
type AnalyticsStore interface {
	SessionSecret(ctx context.Context) ([]byte, error)
	ReloadSessionSecret(ctx context.Context, current []byte) ([]byte, error)
	OfferSession(ctx context.Context, sid string, nodes []string) error
	UpdateSession(ctx context.Context, sid string, update func(st *routing.SessionState, offered map[string]bool) error) error
	AddAnalytics(ctx context.Context, adds []routing.AnalyticsAdd, retention time.Duration) error
	AnalyticsHours(ctx context.Context, scope string, hours []time.Time) ([]map[string]int64, error)
	UniqueViewers(ctx context.Context, scope string, groups [][]time.Time) ([]int64, error)
	TopItems(ctx context.Context, hours []time.Time, n int) ([]routing.ItemFigures, error)
	AddEpochFigures(ctx context.Context, start time.Time, node string, deltas map[string]int64, retention time.Duration) error
	AddViewerBytes(ctx context.Context, start time.Time, keep time.Duration, node, network string, n, netCap int64, retention time.Duration) (int64, error)
}

// Bounds of beacons.
const (
	maxBeaconBody = 4 << 10
	maxSeq        = 1 << 40
	maxSources    = 8
	// maxViewerBitrate caps the bytes a session is credited: at most this
	// many bytes a second since its page load, plus bytesSlack seconds'
	// worth (a generous 200 Mbit/s).
	maxViewerBitrate = 25_000_000
	bytesSlack       = 10 * time.Second
	// maxBeaconSpan bounds the span a beacon's bytes are shared over
	// between epochs: a player sends one every 30 seconds while anything
	// changes, and bytes fetched after a pause are recent.
	maxBeaconSpan = 45 * time.Second
	// beaconWriteTimeout bounds the writes of one beacon.
	beaconWriteTimeout = 5 * time.Second
	// Event counts (rebuffers, switches, errors, objects verified or
	// failed) are capped at countsPerSecond a second since the page load,
	// plus countsSlack.
	countsPerSecond = 20
	countsSlack     = 100
	// timeSlack is what watch and rebuffer time may exceed the wall time
	// since the page load by (the player's clock, rounding).
	timeSlack = time.Second
	// Beacon rate per network: a burst of beaconBurst, then beaconRate a
	// second. Many viewers may share a network (a player sends one every
	// 30 seconds, and a few more on pause and when hidden): this serves
	// about 500 at once.
	beaconBurst = 600
	beaconRate  = 20.0
)

// Source names other than node ids.
const (
	sourceOrigin = "origin"
	sourceP2P    = "p2p"
)

// beaconRequest is the body of POST /v1/beacons. Every figure is
// cumulative since the page loaded.
type beaconRequest struct {
	Session    string           `json:"session"`
	Seq        int64            `json:"seq"`
	Final      bool             `json:"final"`
	Viewer     string           `json:"viewer"`
	WatchMs    int64            `json:"watch_ms"`
	StartupMs  int64            `json:"startup_ms"`
	Rebuffers  int64            `json:"rebuffers"`
	RebufferMs int64            `json:"rebuffer_ms"`
	Switches   int64            `json:"switches"`
	Errors     int64            `json:"errors"`
	Verified   int64            `json:"verified"`
	Failed     int64            `json:"failed"`
	Bytes      map[string]int64 `json:"bytes"`
}

type beaconJSON struct {
	Accepted bool `json:"accepted"`
}

var viewerRe = regexp.MustCompile(`^[A-Za-z0-9_-]{16,32}$`)

// checkBeacon validates a beacon's shape.
func checkBeacon(b *beaconRequest) string {
	switch {
	case b.Session == "":
		return `"session" is required: the session token of the page`
	case len(b.Session) > playsession.MaxLen:
		return `"session" is too long`
	case b.Seq < 1 || b.Seq > maxSeq:
		return `"seq" must be a positive integer`
	case b.Viewer != "" && !viewerRe.MatchString(b.Viewer):
		return `"viewer" must be 16 to 32 characters of A-Z, a-z, 0-9, '_' and '-'`
	case len(b.Bytes) > maxSources:
		return `"bytes" may name at most 8 sources`
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"watch_ms", b.WatchMs}, {"startup_ms", b.StartupMs}, {"rebuffers", b.Rebuffers}, {"rebuffer_ms", b.RebufferMs},
		{"switches", b.Switches}, {"errors", b.Errors}, {"verified", b.Verified}, {"failed", b.Failed},
	} {
		if f.v < 0 || f.v > maxCount {
			return `"` + f.name + `" must be between 0 and 2^50`
		}
	}
	for k, v := range b.Bytes {
		if k != sourceOrigin && k != sourceP2P && !validNodeID(k) {
			return `"bytes" keys must be node ids, "origin" or "p2p"`
		}
		if v < 0 || v > maxCount {
			return `"bytes" values must be between 0 and 2^50`
		}
	}
	return ""
}

// Outcomes of beacons (shoal_beacons_total's result label).
const (
	beaconAccepted = "accepted"
	beaconIgnored  = "ignored"   // replayed
	beaconInvalid  = "invalid"   // bad body
	beaconBadToken = "unknown"   // garbled or forged session
	beaconExpired  = "expired"   // the session's time is over
	beaconTooLarge = "too_large" // over 4 KiB
	beaconLimited  = "rate_limited"
	beaconFailed   = "error" // the store failed
)

// Why a beacon changed nothing (returned through UpdateSession).
const (
	errBeaconIgnore = beaconError("ignored")
	errBeaconExpire = beaconError("expired")
)

type beaconError string

func (e beaconError) Error() string { return string(e) }

// beaconMetrics are the Prometheus figures of beacons.
type beaconMetrics struct {
	sessions    prometheus.Counter
	watch       prometheus.Counter
	rebuffer    prometheus.Counter
	beacons     *prometheus.CounterVec
	viewerBytes *prometheus.CounterVec
	capped      prometheus.Counter
}

func newBeaconMetrics() *beaconMetrics {
	m := &beaconMetrics{
		sessions: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_playback_sessions_total",
			Help: "Playback sessions that played (views: the first accepted beacon with watch time or a startup time)."}),
		watch: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_watch_seconds_total",
			Help: "Watch time viewers' beacons reported (accepted, clamped)."}),
		rebuffer: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_rebuffer_seconds_total",
			Help: "Rebuffering time viewers' beacons reported (accepted, clamped)."}),
		beacons: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_beacons_total",
			Help: "Playback beacons received, by result (accepted, ignored, invalid, unknown, expired, too_large, rate_limited, error)."},
			[]string{"result"}),
		viewerBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_viewer_bytes_total",
			Help: "Bytes viewers' beacons reported received and verified, by source (edge, origin, p2p)."},
			[]string{"source"}),
		capped: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_viewer_bytes_capped_total",
			Help: "Bytes viewers' beacons reported from edges that were not credited: past what one viewer network may confirm one node sending in an epoch (accounting.viewer_network_mbps)."}),
	}
	for _, r := range []string{beaconAccepted, beaconIgnored, beaconInvalid, beaconBadToken, beaconExpired, beaconTooLarge, beaconLimited, beaconFailed} {
		m.beacons.WithLabelValues(r)
	}
	for _, s := range []string{"edge", sourceOrigin, sourceP2P} {
		m.viewerBytes.WithLabelValues(s)
	}
	return m
}

func (m *beaconMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.sessions, m.watch, m.rebuffer, m.beacons, m.viewerBytes, m.capped}
}

// beaconLimiter bounds beacons per network (a token bucket each). It
// tracks at most max networks (0: maxTracked); when that many are tracked,
// a new network evicts the least recently seen one, in O(1): beacons come
// before any check of their token, and a flood of networks must neither
// lock out new viewers nor make each beacon scan the table.
type beaconLimiter struct {
	mu      sync.Mutex
	max     int
	buckets map[string]*list.Element // network -> its *networkBucket in order
	order   list.List                // least recently seen at the back
}

type networkBucket struct {
	network string
	bucket
}

func (l *beaconLimiter) allow(network string, t time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = map[string]*list.Element{}
		l.order.Init()
	}
	var b *networkBucket
	if el := l.buckets[network]; el != nil {
		l.order.MoveToFront(el)
		b = el.Value.(*networkBucket)
	} else {
		limit := l.max
		if limit <= 0 {
			limit = maxTracked
		}
		if len(l.buckets) >= limit {
			// Reuse the least recently seen network's entry.
			el := l.order.Back()
			b = el.Value.(*networkBucket)
			delete(l.buckets, b.network)
			l.order.MoveToFront(el)
			*b = networkBucket{network: network}
			l.buckets[network] = el
		} else {
			b = &networkBucket{network: network}
			l.buckets[network] = l.order.PushFront(b)
		}
		b.bucket = bucket{tokens: beaconBurst, at: t}
	}
	return b.take(t, beaconBurst, beaconRate)
}

// NewSession mints a playback session token for a page of item id (kind
// "video" or "live"); the watch and embed pages carry it.
func (a *API) NewSession(ctx context.Context, kind, id string) (string, error) {
	return a.sessions.Mint(ctx, kind, id)
}

// parseSession reads a session token. When its signature does not verify,
// the shared secret is read again (at most once a minute) in case the
// origins came to another one, and the token checked against it and the
// one it replaced.
func (a *API) parseSession(ctx context.Context, tok string) (playsession.Claims, error) {
	secret, err := a.sessions.Secret(ctx)
	if err != nil {
		return playsession.Claims{}, err
	}
	cl, err := playsession.Parse(secret, tok)
	if !errors.Is(err, playsession.ErrSignature) {
		return cl, err
	}
	if a.sessions.Refresh(ctx) {
		if secret, err2 := a.sessions.Secret(ctx); err2 == nil {
			cl, err = playsession.Parse(secret, tok)
		}
	}
	if prev := a.sessions.Previous(); errors.Is(err, playsession.ErrSignature) && prev != nil {
		cl, err = playsession.Parse(prev, tok)
	}
	return cl, err
}

// offerSession remembers, for the session named by the route request's
// ?session=, the nodes the route offered. A session that is not for this
// id, garbled, forged or over is ignored: the route is answered anyway.
func (a *API) offerSession(c *gin.Context, id string, nodes []string) {
	tok := c.Query("session")
	// Only nodes chosen for where the viewer is (the front proxy's region
	// header), not for a ?region= the client picked: a node's operator
	// could pick the region of its own node to have it offered.
	if tok == "" || len(nodes) == 0 || c.Query("region") != "" {
		return
	}
	if !a.offerLimits.allow(reporterNetwork(a.clientIP(c.Request)), a.now()) {
		return
	}
	ctx := c.Request.Context()
	cl, err := a.parseSession(ctx, tok)
	if err != nil || cl.ItemID != id || cl.Check(a.now(), true) != nil {
		return
	}
	if err := a.store.OfferSession(ctx, cl.Session, nodes); err != nil {
		a.log.Warn("could not record the nodes offered to a playback session", "err", err)
	}
}

// beacon handles POST /v1/beacons: a player's report of a playback
// session (see beaconRequest). No API key: the session token the page
// carried is the credential.
func (a *API) beacon(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	c.Header("Access-Control-Allow-Origin", "*")
	m := a.beaconMetrics
	now := a.now()
	if !a.beaconLimits.allow(reporterNetwork(a.clientIP(c.Request)), now) {
		m.beacons.WithLabelValues(beaconLimited).Inc()
		c.Header("Retry-After", "30")
		WriteError(c, http.StatusTooManyRequests, "rate_limited", "too many beacons from this network; retry later")
		return
	}
	if ct := c.GetHeader("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && mt != "text/plain") {
			m.beacons.WithLabelValues(beaconInvalid).Inc()
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, "a beacon is JSON, sent as application/json or text/plain")
			return
		}
	}
	body, err := readLimited(c, maxBeaconBody)
	if err != nil {
		m.beacons.WithLabelValues(beaconTooLarge).Inc()
		bodyFailed(c, err, "beacon body larger than 4 KiB")
		return
	}
	var req beaconRequest
	msg := decodeStrict(body, &req)
	if msg == "" {
		msg = checkBeacon(&req)
	}
	if msg != "" {
		m.beacons.WithLabelValues(beaconInvalid).Inc()
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	ctx := c.Request.Context()
	cl, err := a.parseSession(ctx, req.Session)
	if err != nil && !errors.Is(err, playsession.ErrMalformed) && !errors.Is(err, playsession.ErrSignature) {
		m.beacons.WithLabelValues(beaconFailed).Inc()
		a.fail(c, err, "")
		return
	}
	if err != nil {
		m.beacons.WithLabelValues(beaconBadToken).Inc()
		WriteError(c, http.StatusUnauthorized, codeUnauthorized, "unknown playback session: \"session\" must be the token of the page")
		return
	}
	if cl.Check(now, true) != nil {
		m.beacons.WithLabelValues(beaconExpired).Inc()
		WriteError(c, http.StatusForbidden, codeForbidden, "this playback session is over; reload the page for a new one")
		return
	}
	// The session's state and its figures are written even when the
	// player goes (a final beacon at pagehide): both or, on an error,
	// the state alone (the figures are lost, never counted twice).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), beaconWriteTimeout)
	defer cancel()
	var out beaconOutcome
	err = a.store.UpdateSession(ctx, cl.Session, func(st *routing.SessionState, offered map[string]bool) error {
		out = a.applyBeacon(c, cl, &req, now, st, offered)
		return out.err
	})
	switch {
	case errors.Is(err, errBeaconIgnore):
		m.beacons.WithLabelValues(beaconIgnored).Inc()
		c.JSON(http.StatusAccepted, beaconJSON{Accepted: false})
		return
	case errors.Is(err, errBeaconExpire):
		m.beacons.WithLabelValues(beaconExpired).Inc()
		WriteError(c, http.StatusForbidden, codeForbidden, "this playback session was not started within an hour of the page load; reload the page for a new one")
		return
	case err != nil:
		m.beacons.WithLabelValues(beaconFailed).Inc()
		a.fail(c, err, "")
		return
	}
	if err := a.recordBeacon(ctx, now, out); err != nil {
		m.beacons.WithLabelValues(beaconFailed).Inc()
		a.fail(c, err, "")
		return
	}
	m.beacons.WithLabelValues(beaconAccepted).Inc()
	c.JSON(http.StatusAccepted, beaconJSON{Accepted: true})
}

// beaconOutcome is what an accepted beacon adds.
type beaconOutcome struct {
	err error
	// first: the beacon made the session a view (its first with a play:
	// watch time or a startup time).
	first bool
	// from: when the span the beacon reports began (the previous beacon,
	// or the page load).
	from time.Time
	// bytes: the credited delta per source; node: the node the beacon's
	// figures are counted for ("origin" when none).
	bytes map[string]int64
	node  string
	// deltas of the counters (watch_ms, ...).
	deltas map[string]int64
	// startup: the startup time observed (-1: none); ratioFrom, ratioTo:
	// the move of the session's rebuffer ratio bucket (-1: none).
	startup            int64
	ratioFrom, ratioTo int
	st                 routing.SessionState
}

// beaconCounters are the cumulative counters of a beacon, in the session
// state (c:<name>).
var beaconCounters = []string{"watch_ms", "rebuffer_ms", "rebuffers", "switches", "errors", "verified", "failed"}

// applyBeacon updates the session state st with beacon req arriving at now
// and returns what it adds. Deltas are clamped: time by the wall time
// since the page load, counts by a rate, bytes by maxViewerBitrate; a
// counter that went down adds nothing.
func (a *API) applyBeacon(c *gin.Context, cl playsession.Claims, req *beaconRequest, now time.Time, st *routing.SessionState, offered map[string]bool) beaconOutcome {
	out := beaconOutcome{startup: -1, ratioFrom: -1, ratioTo: -1, bytes: map[string]int64{}, deltas: map[string]int64{}}
	// A final beacon does not end the session: the viewer may play again
	// (a replay, the next broadcast, back from the page cache). Every
	// figure is cumulative, so only a seq seen before is ignored.
	if st.Started && req.Seq <= st.Seq {
		out.err = errBeaconIgnore
		return out
	}
	out.from = st.Last
	if !st.Started {
		if cl.Check(now, false) != nil {
			out.err = errBeaconExpire
			return out
		}
		out.from = cl.IssuedAt
		st.Kind, st.Item, st.Start = cl.Kind, cl.ItemID, now
		// Every beacon of the session counts for the network it started
		// on, wherever later ones come from.
		st.Network = reporterNetwork(a.clientIP(c.Request))
		st.Viewer = req.Viewer
		if st.Viewer == "" {
			st.Viewer = "s:" + cl.Session
		}
		st.Country = a.viewerCountry(c)
		ua := uaparse.Parse(c.GetHeader("User-Agent"))
		st.Device, st.OS, st.Browser = ua.Device, ua.OS, ua.Browser
	}
	if st.Network == "" {
		// A session that started before sessions kept their network.
		st.Network = reporterNetwork(a.clientIP(c.Request))
	}
	st.Seq, st.Final, st.Last = req.Seq, req.Final, now
	wall := max(now.Sub(cl.IssuedAt), 0)
	wallMs := (wall + timeSlack).Milliseconds()
	countCap := int64(wall.Seconds())*countsPerSecond + countsSlack
	reported := map[string]int64{
		"watch_ms": min(req.WatchMs, wallMs), "rebuffer_ms": min(req.RebufferMs, wallMs),
		"rebuffers": min(req.Rebuffers, countCap), "switches": min(req.Switches, countCap),
		"errors": min(req.Errors, countCap), "verified": min(req.Verified, countCap), "failed": min(req.Failed, countCap),
	}
	for _, k := range beaconCounters {
		if v, old := reported[k], st.Counters[k]; v > old {
			out.deltas[k] = v - old
			st.Counters[k] = v
		}
	}
	// Bytes: only from the origin, peers, and nodes offered to the
	// session; in all at most maxViewerBitrate since the page load.
	var total int64
	for src, v := range req.Bytes {
		if src != sourceOrigin && src != sourceP2P && !offered[src] {
			continue
		}
		if old := st.Bytes[src]; v > old {
			out.bytes[src] = v - old
			total += v - old
			st.Bytes[src] = v
		}
	}
	room := int64((wall+bytesSlack).Seconds()*maxViewerBitrate) - st.Counters["bytes_credited"]
	if total > room {
		room = max(room, 0)
		var scaled int64
		for src, d := range out.bytes {
			out.bytes[src] = int64(math.Floor(float64(d) * float64(room) / float64(total)))
			scaled += out.bytes[src]
		}
		total = scaled
	}
	st.Counters["bytes_credited"] += total
	// The node that delivered most of this beacon's bytes (the origin
	// counts as one); without bytes, the previous beacon's.
	out.node = st.Home
	var best int64
	srcs := make([]string, 0, len(out.bytes))
	for src := range out.bytes {
		srcs = append(srcs, src)
	}
	sort.Strings(srcs)
	for _, src := range srcs {
		if d := out.bytes[src]; src != sourceP2P && d > best {
			out.node, best = src, d
		}
	}
	if out.node == "" {
		out.node = sourceOrigin
	}
	// The session's node is the one that delivered its first bytes
	// (a page may load before it plays).
	if st.Home == "" && best > 0 {
		st.Home = out.node
	}
	// A view is a session that played (an embed that only buffered is
	// not one); it counts in the hour of that beacon, for the session's
	// node.
	if !st.Viewed && (st.Counters["watch_ms"] > 0 || req.StartupMs > 0) {
		st.Viewed, out.first = true, true
		st.Hour = routing.EpochStart(now, time.Hour)
		if st.Home == "" {
			st.Home = out.node
		}
	}
	if req.StartupMs > 0 && st.Viewed && !st.Startup {
		st.Startup = true
		out.startup = min(req.StartupMs, wallMs)
	}
	if w, r := st.Counters["watch_ms"], st.Counters["rebuffer_ms"]; st.Viewed && w+r > 0 {
		if b := ratioBucket(float64(r) / float64(w+r)); b != st.RatioBucket {
			out.ratioFrom, out.ratioTo = st.RatioBucket, b
			st.RatioBucket = b
		}
	}
	out.st = *st
	return out
}

// viewerCountry is the viewer's country: the region header, else
// "unknown".
func (a *API) viewerCountry(c *gin.Context) string {
	if a.regionHeader != "" {
		if r, err := validRegion(c.GetHeader(a.regionHeader)); err == nil && r != "" {
			return r
		}
	}
	return "unknown"
}

// recordBeacon adds an accepted beacon's figures: the nodes' viewer bytes
// (shared between epochs by the time the beacon's span spent in each, at
// most accounting.viewer_network_mbps from the session's network), the
// analytics, the metrics.
func (a *API) recordBeacon(ctx context.Context, now time.Time, out beaconOutcome) error {
	st := out.st
	netCap := int64(a.acct.Epoch.Seconds() * float64(a.acct.ViewerNetworkMbps) * 125_000)
	// The span the beacon's bytes were fetched over: since the previous
	// beacon, at most maxBeaconSpan; a share that would fall in an epoch
	// already sealed counts in the current one.
	from := out.from
	if from.Before(now.Add(-maxBeaconSpan)) {
		from = now.Add(-maxBeaconSpan)
	}
	current := routing.EpochStart(now, a.acct.Epoch)
	var edge int64
	for src, d := range out.bytes {
		if d <= 0 {
			continue
		}
		switch src {
		case sourceOrigin, sourceP2P:
			a.beaconMetrics.viewerBytes.WithLabelValues(src).Add(float64(d))
			continue
		}
		shares := map[time.Time]int64{}
		for epoch, part := range routing.EpochShares(from, now, a.acct.Epoch, d) {
			if epoch.Before(current) && a.final(epoch) {
				epoch = current
			}
			shares[epoch] += part
		}
		for epoch, part := range shares {
			// The network's counter lives until the epoch is sealed.
			keep := epoch.Add(a.acct.Epoch + a.acct.grace() + time.Minute).Sub(now)
			added, err := a.store.AddViewerBytes(ctx, epoch, keep, src, st.Network, part, netCap, a.acct.Retention)
			if err != nil {
				return err
			}
			edge += added
			a.beaconMetrics.capped.Add(float64(part - added))
		}
	}
	a.beaconMetrics.viewerBytes.WithLabelValues("edge").Add(float64(edge))

	item := st.Kind + ":" + st.Item
	hour := routing.EpochStart(now, time.Hour)
	scopes := []string{routing.ScopeAll, item}
	if out.node != sourceOrigin {
		scopes = append(scopes, "node:"+out.node)
	}
	viewScopes := []string{routing.ScopeAll, item}
	if st.Home != sourceOrigin {
		viewScopes = append(viewScopes, "node:"+st.Home)
	}
	dims := [][2]string{{"country", st.Country}, {"device", st.Device}, {"os", st.OS}, {"browser", st.Browser}}
	var adds []routing.AnalyticsAdd
	// The beacon's deltas, in the hour of its arrival, for the node that
	// delivered it.
	if len(out.deltas) > 0 {
		watch := out.deltas["watch_ms"]
		for _, s := range scopes {
			add := routing.AnalyticsAdd{Scope: s, Hour: hour, Fields: map[string]int64{}}
			for k, v := range out.deltas {
				add.Fields[k] = v
			}
			if watch > 0 {
				for _, d := range dims {
					add.Breakdown = append(add.Breakdown, routing.BreakdownAdd{Dim: d[0], Value: d[1], WatchMs: watch})
				}
			}
			if s == item {
				add.Item, add.ItemWatchMs = true, watch
			}
			adds = append(adds, add)
		}
	}
	// The session's own figures (a view, its startup time and rebuffer
	// ratio) stay in the hour it started, for the node it started on.
	if out.first || out.startup >= 0 || out.ratioTo >= 0 {
		for _, s := range viewScopes {
			add := routing.AnalyticsAdd{Scope: s, Hour: st.Hour, Fields: map[string]int64{}}
			if out.first {
				add.Fields["views"], add.Viewer = 1, st.Viewer
				for _, d := range dims {
					add.Breakdown = append(add.Breakdown, routing.BreakdownAdd{Dim: d[0], Value: d[1], Views: 1})
				}
				if s == item {
					add.Item, add.ItemViews = true, 1
				}
			}
			if out.startup >= 0 {
				add.Fields[startupField(out.startup)]++
			}
			if out.ratioFrom >= 0 {
				add.Fields[ratioField(out.ratioFrom)]--
			}
			if out.ratioTo >= 0 {
				add.Fields[ratioField(out.ratioTo)]++
			}
			adds = append(adds, add)
		}
	}
	if err := a.store.AddAnalytics(ctx, adds, a.acct.Retention); err != nil {
		return err
	}
	if out.first {
		a.beaconMetrics.sessions.Inc()
	}
	a.beaconMetrics.watch.Add(float64(out.deltas["watch_ms"]) / 1000)
	a.beaconMetrics.rebuffer.Add(float64(out.deltas["rebuffer_ms"]) / 1000)
	return nil
}
