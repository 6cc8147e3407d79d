package playerapi

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/routing"
)

// Defaults of the trust rules.
const (
	// DefaultMaxNodesPerToken is how many node identities a node token may
	// hold when Config.MaxNodesPerToken is zero.
	DefaultMaxNodesPerToken = 4
	// DefaultQuarantineReports is how many distinct viewer networks must
	// report a node within ReportWindow to quarantine it.
	DefaultQuarantineReports = 3
	// ReportWindow is how far back reports count towards a quarantine.
	ReportWindow = 10 * time.Minute
)

// Auditor checks a viewer's delivery report against the node itself: the
// origin fetches the object from the node, as a viewer would, and compares
// it with what it published.
type Auditor func(ctx context.Context, node routing.Node, path, kind string) Audit

// Audit is the outcome of an audit. Confirmed: the node served what the
// origin did not publish. Refuted: it served the published object, so the
// report does not count. Neither: the audit could not tell. Finding says
// what it saw, for the operator.
type Audit struct {
	Confirmed, Refuted bool
	Finding            string
}

// Kinds of delivery reports. The first four are verification failures:
// bytes or manifests that did not match what the origin signed.
var reportKinds = map[string]bool{
	"hash_mismatch":  true, // an object whose size or SHA-256 differs from the manifest
	"unlisted":       true, // a playlist naming an object the manifest does not list
	"bad_manifest":   true, // a manifest that does not verify (or is for another stream)
	"stale_manifest": true, // a live manifest older than the player accepts
	"http_error":     false,
	"timeout":        false,
}

// deliveryReportRequest is the body of POST /v1/delivery-reports.
type deliveryReportRequest struct {
	NodeID   string `json:"node_id"`
	URL      string `json:"url"`
	Kind     string `json:"kind"`
	Expected string `json:"expected_sha256"`
	Received string `json:"received_sha256"`
	Detail   string `json:"detail"`
}

type deliveryReportJSON struct {
	Accepted    bool `json:"accepted"`
	Confirmed   bool `json:"confirmed"`
	Quarantined bool `json:"quarantined"`
}

const maxReportBody = 4 << 10

// deliveryReport handles POST /v1/delivery-reports: a viewer's player tells
// the origin that a node served something that failed verification (or
// failed to serve). No API key: any viewer may report, at a bounded rate
// per network. Verification failures are counted per node; a report the
// audit confirms, or reports from QuarantineReports distinct networks
// within ReportWindow, quarantine the node.
func (a *API) deliveryReport(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	reporter := reporterNetwork(a.clientIP(c.Request))
	if !a.reports.allow(reporter) {
		c.Header("Retry-After", "60")
		WriteError(c, http.StatusTooManyRequests, "rate_limited", "too many delivery reports from this network; retry later")
		return
	}
	body, err := readLimited(c, maxReportBody)
	if err != nil {
		bodyFailed(c, err, "delivery report body too large")
		return
	}
	var req deliveryReportRequest
	if msg := decodeStrict(body, &req); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	path, msg := checkReport(&req)
	if msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	ctx := c.Request.Context()
	n, err := a.store.GetNode(ctx, req.NodeID)
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	if u, _ := url.Parse(req.URL); u == nil || !sameHost(u, n.PublicURL) {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"url" is not on that node's public URL`)
		return
	}
	failure := reportKinds[req.Kind]
	offered := a.reports.wasOffered(reporter, n.ID)
	r := routing.DeliveryReport{At: time.Now().UTC(), Kind: req.Kind, URL: req.URL, Expected: req.Expected,
		Received: req.Received, Detail: req.Detail, Reporter: reporter, Offered: offered}
	if failure && a.audit != nil {
		// One audit per object a minute: later reports of it get its verdict.
		key := n.ID + "\x00" + path
		audit, known := a.reports.audited(key)
		if !known && a.reports.claimAudit(key) {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			audit, known = a.audit(actx, n, path, req.Kind), true
			cancel()
			a.reports.storeAudit(key, audit)
		}
		if known {
			r.Confirmed, r.Refuted, r.Audit = audit.Confirmed, audit.Refuted, audit.Finding
		}
	}
	if err := a.store.AddDeliveryReport(ctx, n.ID, r); err != nil {
		a.fail(c, err, "")
		return
	}
	// The audit's finding stays with the operator (GET /v1/nodes): it may
	// describe the node's network.
	out := deliveryReportJSON{Accepted: true, Confirmed: r.Confirmed}
	if !failure {
		c.JSON(http.StatusAccepted, out)
		return
	}
	if a.onDeliveryFailure != nil {
		a.onDeliveryFailure(n.ID, req.Kind)
	}
	// The epoch's figures count the failures that could be real: the
	// audit confirmed it, or a viewer sent to the node reported it and
	// the audit did not see the node serve the right bytes.
	if r.Confirmed || (offered && !r.Refuted) {
		if err := a.AddFigures(ctx, n.ID, map[string]int64{routing.FigureVerifyFailures: 1}); err != nil {
			a.fail(c, err, "")
			return
		}
	}
	a.log.Warn("delivery verification failure reported", "node", n.ID, "kind", req.Kind, "url", req.URL,
		"reporter", reporter, "offered", offered, "confirmed", r.Confirmed, "refuted", r.Refuted, "audit", r.Audit)
	reason := ""
	switch {
	case r.Confirmed:
		reason = fmt.Sprintf("%s confirmed by the origin's audit of %s: %s", req.Kind, path, r.Audit)
	case offered && !r.Refuted:
		// Only viewers the origin sent to the node count, once per
		// network, and not when the audit saw the node serve the right
		// bytes.
		nets, err := a.store.AddReporter(ctx, n.ID, reporter, ReportWindow)
		if err != nil {
			a.fail(c, err, "")
			return
		}
		if nets >= int64(a.quarantineReports) {
			reason = fmt.Sprintf("verification failures reported from %d viewer networks within %s (latest: %s of %s)",
				nets, ReportWindow, req.Kind, path)
		}
	}
	if reason != "" && n.Quarantine == nil {
		if err := a.store.QuarantineNode(ctx, n.ID, reason); err != nil {
			a.fail(c, err, "")
			return
		}
		a.registry.Invalidate()
		a.log.Warn("node quarantined: it is no longer routed to", "node", n.ID, "reason", reason)
	}
	out.Quarantined = reason != "" || n.Quarantine != nil
	c.JSON(http.StatusAccepted, out)
}

// checkReport validates a report and returns the object's /hls/ path.
func checkReport(r *deliveryReportRequest) (string, string) {
	if !validNodeID(r.NodeID) {
		return "", `"node_id" must be a node id (20 characters of a-z and 2-7)`
	}
	if _, ok := reportKinds[r.Kind]; !ok {
		return "", `"kind" must be one of hash_mismatch, unlisted, bad_manifest, stale_manifest, http_error, timeout`
	}
	if len(r.URL) > 2048 {
		return "", `"url" is too long`
	}
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", `"url" must be the http(s) URL that was fetched`
	}
	if _, ok := hlspath.Parse(u.Path); !ok || u.RawPath != "" {
		return "", `"url" must be a playback URL (/hls/<id>/...)`
	}
	for _, d := range []*string{&r.Expected, &r.Received} {
		*d = strings.ToLower(*d)
		if *d == "" {
			continue
		}
		if b, err := hex.DecodeString(*d); err != nil || len(b) != 32 {
			return "", `"expected_sha256" and "received_sha256" must be 64 hex digits`
		}
	}
	if len(r.Detail) > 300 {
		r.Detail = r.Detail[:300]
	}
	r.Detail = strings.Map(func(ch rune) rune {
		if ch < ' ' || ch == 0x7f {
			return ' '
		}
		return ch
	}, r.Detail)
	return u.Path, ""
}

// sameHost reports whether u is on the base URL's scheme and host.
func sameHost(u *url.URL, base string) bool {
	b, err := url.Parse(base)
	return err == nil && strings.EqualFold(b.Host, u.Host) && b.Scheme == u.Scheme
}

// reporterNetwork is the network a report comes from: the /24 of an IPv4
// address, the /48 of an IPv6 one. Reports from one network count once.
// addr is an address, or host:port.
func reporterNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return "unknown"
	}
	ip = ip.Unmap()
	bits := 48
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p.String()
}

// keysJSON is the answer of GET /v1/keys.
type keysJSON struct {
	ContentKeys  []keyJSON `json:"content_keys"`
	PlaybackKeys []keyJSON `json:"playback_keys"`
}

type keyJSON struct {
	ID        string `json:"id"`
	Algorithm string `json:"algorithm"`
	PublicKey string `json:"public_key"` // unpadded base64url of the 32-byte key
}

// keys handles GET /v1/keys: the origin's public keys. Content keys verify
// segment manifests; the playback key verifies playback tokens. Public.
func (a *API) keys(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=300")
	out := keysJSON{ContentKeys: []keyJSON{}, PlaybackKeys: []keyJSON{}}
	for _, k := range a.contentKeys {
		out.ContentKeys = append(out.ContentKeys, keyJSON{ID: manifest.KeyID(k), Algorithm: "ed25519",
			PublicKey: base64.RawURLEncoding.EncodeToString(k)})
	}
	if a.playbackKey != nil {
		pub := a.playbackKey.Public().(ed25519.PublicKey)
		out.PlaybackKeys = append(out.PlaybackKeys, keyJSON{ID: manifest.KeyID(pub), Algorithm: "ed25519",
			PublicKey: base64.RawURLEncoding.EncodeToString(pub)})
	}
	c.JSON(http.StatusOK, out)
}

// reportLimiter bounds delivery reports per network (a token bucket each),
// remembers recent audits so that one bad object is audited once, and
// which networks the origin offered which nodes (GET /v1/route): only
// those viewers' reports count towards a quarantine.
type reportLimiter struct {
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
	audits  map[string]auditEntry // node id + "\x00" + path
	offers  map[string]time.Time  // network + "\x00" + node id -> last offer
}

type auditEntry struct {
	at     time.Time
	result *Audit // nil while it runs
}

type bucket struct {
	tokens float64
	at     time.Time
}

// refill adds what rate a second earned since the last call, up to burst
// (a clock going back earns nothing).
func (b *bucket) refill(t time.Time, burst, rate float64) {
	if d := t.Sub(b.at); d > 0 {
		b.tokens = min(burst, b.tokens+d.Seconds()*rate)
		b.at = t
	}
}

// take refills the bucket and takes a token if there is one.
func (b *bucket) take(t time.Time, burst, rate float64) bool {
	b.refill(t, burst, rate)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Report rate: a burst of reportBurst, then reportRate per second, per
// network; at most maxTracked networks, audits and offers are remembered.
// When a table is full its stale entries are dropped; if none is, the new
// entry is refused (a report is then refused, an audit skipped, an offer
// not recorded): an attacker filling a table cannot reset anyone's limit.
const (
	reportBurst = 20
	reportRate  = 1.0 / 3
	auditEvery  = time.Minute
	maxTracked  = 50000
)

func newReportLimiter(now func() time.Time) *reportLimiter {
	return &reportLimiter{now: now, buckets: map[string]*bucket{}, audits: map[string]auditEntry{}, offers: map[string]time.Time{}}
}

// fullBucketAfter is how long a bucket takes to refill from empty.
const fullBucketAfter = time.Duration(float64(reportBurst)/reportRate) * time.Second

func (l *reportLimiter) allow(network string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	b := l.buckets[network]
	if b == nil {
		if len(l.buckets) >= maxTracked {
			for k, old := range l.buckets {
				if t.Sub(old.at) >= fullBucketAfter {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxTracked {
				return false
			}
		}
		b = &bucket{tokens: reportBurst, at: t}
		l.buckets[network] = b
	}
	return b.take(t, reportBurst, reportRate)
}

// audited returns the verdict of an audit of key within auditEvery.
func (l *reportLimiter) audited(key string) (Audit, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.audits[key]
	if !ok || e.result == nil || l.now().Sub(e.at) >= auditEvery {
		return Audit{}, false
	}
	return *e.result, true
}

// claimAudit reports whether the caller should audit key now: it was not
// audited (nor claimed) within auditEvery, and there is room to remember.
func (l *reportLimiter) claimAudit(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	if e, ok := l.audits[key]; ok && t.Sub(e.at) < auditEvery {
		return false
	}
	if len(l.audits) >= maxTracked {
		for k, e := range l.audits {
			if t.Sub(e.at) >= auditEvery {
				delete(l.audits, k)
			}
		}
		if len(l.audits) >= maxTracked {
			return false
		}
	}
	l.audits[key] = auditEntry{at: t}
	return true
}

// storeAudit records the verdict of the audit of key.
func (l *reportLimiter) storeAudit(key string, a Audit) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.audits[key]; ok {
		e.result = &a
		l.audits[key] = e
	}
}

// offered records that network was offered the nodes.
func (l *reportLimiter) offered(network string, nodes []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	for _, n := range nodes {
		if !makeRoom(l.offers, t, ReportWindow) {
			return
		}
		l.offers[network+"\x00"+n] = t
	}
}

// wasOffered tells whether network was offered node within ReportWindow.
func (l *reportLimiter) wasOffered(network, node string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.offers[network+"\x00"+node]
	return ok && l.now().Sub(at) < ReportWindow
}

// makeRoom makes room for one more entry in m (entries are times), dropping
// those older than maxAge when it is full; false when there is no room.
func makeRoom(m map[string]time.Time, now time.Time, maxAge time.Duration) bool {
	if len(m) < maxTracked {
		return true
	}
	for k, at := range m {
		if now.Sub(at) >= maxAge {
			delete(m, k)
		}
	}
	return len(m) < maxTracked
}
