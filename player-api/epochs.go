package playerapi

import (
	"bytes"
	"container/list"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// Delivery accounting per epoch: what each node claimed (its heartbeats),
// what viewers (beacons) and the origin's audits confirmed, and its share
// of the reward pool. Reports are signed with the origin's content key and
// sealed once their epoch is over.

// AccountingStore is the part of the Store that keeps the figures of
// epochs (routing/epochs.go).
type AccountingStore interface {
	AddEpochFigures(ctx context.Context, start time.Time, node string, deltas map[string]int64, retention time.Duration) error
	AccountHeartbeat(ctx context.Context, node string, hb routing.HeartbeatFigures, now time.Time,
		epoch, maxGap, retention time.Duration) (routing.Accounted, error)
	AccountJoin(ctx context.Context, node, tokenID string, now time.Time, retention time.Duration) error
	EpochFigures(ctx context.Context, start time.Time) (map[string]map[string]int64, error)
	Epochs(ctx context.Context, max int) ([]time.Time, error)
	SealEpochReport(ctx context.Context, start time.Time, report []byte, retention time.Duration) ([]byte, error)
	SealedEpochReport(ctx context.Context, start time.Time) ([]byte, error)
	NodeAccountToken(ctx context.Context, node string) (string, error)
}

// Defaults of Accounting.
const (
	DefaultEpoch     = time.Hour
	DefaultRetention = 90 * 24 * time.Hour
	// DefaultViewerNetworkMbps is accounting.viewer_network_mbps's default.
	DefaultViewerNetworkMbps = 200
	// maxSealGrace bounds the time after an epoch's end that late
	// heartbeats and beacons may still arrive before its report is sealed.
	maxSealGrace = 2 * time.Minute
)

// Accounting configures delivery accounting.
type Accounting struct {
	// Epoch is the length of an accounting epoch (0: DefaultEpoch).
	Epoch time.Duration
	// RewardPool is the points shared out per epoch.
	RewardPool int64
	// ViewerNetworkMbps caps what one viewer network confirms one node
	// sending, on average over an epoch (0: DefaultViewerNetworkMbps).
	ViewerNetworkMbps int64
	// Retention is how long figures and reports are kept (0:
	// DefaultRetention).
	Retention time.Duration
	// Key signs the reports (the origin's content key, published at GET
	// /v1/keys). Nil: the report routes answer 503.
	Key ed25519.PrivateKey
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

func (a Accounting) withDefaults() Accounting {
	if a.Epoch <= 0 {
		a.Epoch = DefaultEpoch
	}
	if a.Retention <= 0 {
		a.Retention = DefaultRetention
	}
	if a.ViewerNetworkMbps <= 0 {
		a.ViewerNetworkMbps = DefaultViewerNetworkMbps
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	return a
}

// grace is how long after its end an epoch is sealed.
func (a Accounting) grace() time.Duration { return min(maxSealGrace, a.Epoch) }

// ReportSignatureHeader carries the signature of a report's body.
const ReportSignatureHeader = "Shoal-Signature"

// EpochReport is the answer of GET /v1/operators/epochs/{epoch}.
type EpochReport struct {
	Epoch       string     `json:"epoch"`
	Start       time.Time  `json:"start"`
	End         time.Time  `json:"end"`
	Final       bool       `json:"final"`
	GeneratedAt time.Time  `json:"generated_at"`
	RewardPool  int64      `json:"reward_pool"`
	KeyID       string     `json:"key_id"`
	Nodes       []EpochRow `json:"nodes"`
}

// EpochRow is one node's figures in an epoch.
type EpochRow struct {
	NodeID string `json:"node_id"`
	// Region, Role and State ("active" or "quarantined") are the node's
	// when the report was made, if it was live then.
	Region string `json:"region,omitempty"`
	Role   string `json:"role,omitempty"`
	State  string `json:"state,omitempty"`
	// ClaimedBytes is what the node's heartbeats said it served;
	// ViewerBytes and AuditBytes what viewers and the origin's audits
	// received from it and verified. CreditedBytes is min(claimed,
	// viewer + audit): nothing is credited on a claim alone, nor beyond it.
	ClaimedBytes  int64 `json:"claimed_bytes"`
	ViewerBytes   int64 `json:"viewer_bytes"`
	AuditBytes    int64 `json:"audit_bytes"`
	CreditedBytes int64 `json:"credited_bytes"`
	AuditsPassed  int64 `json:"audits_passed"`
	AuditsFailed  int64 `json:"audits_failed"`
	// AuditPassRate is passed / (passed + failed), 1 without audits.
	AuditPassRate        float64 `json:"audit_pass_rate"`
	UptimeSeconds        float64 `json:"uptime_seconds"`
	QuarantineSeconds    float64 `json:"quarantine_seconds"`
	VerificationFailures int64   `json:"verification_failures"`
	// TranscodedPixels and SegmentsVerified are a remote worker's
	// published outputs' pixels (width x height x frames over the
	// renditions) and their segments the origin transcoded again and
	// found matching, in the epoch; not rewarded (yet).
	TranscodedPixels int64 `json:"transcoded_pixels"`
	SegmentsVerified int64 `json:"segments_verified"`
	// RewardPoints is the node's share of the pool: by CreditedBytes x
	// AuditPassRate x the share of its uptime it was not quarantined, in
	// integers by the largest remainder.
	RewardPoints int64 `json:"reward_points"`
	// uptimeMs and quarantineMs are UptimeSeconds and QuarantineSeconds,
	// exact, for the reward.
	uptimeMs, quarantineMs int64
}

// epochSummary is one entry of GET /v1/operators/epochs.
type epochSummary struct {
	Epoch         string    `json:"epoch"`
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	Final         bool      `json:"final"`
	Nodes         int       `json:"nodes"`
	CreditedBytes int64     `json:"credited_bytes"`
}

// nodeUsage is the answer of GET /v1/nodes/{id}/usage.
type nodeUsage struct {
	NodeID      string      `json:"node_id"`
	GeneratedAt time.Time   `json:"generated_at"`
	KeyID       string      `json:"key_id"`
	Epochs      []usageJSON `json:"epochs"`
}

type usageJSON struct {
	Epoch string    `json:"epoch"`
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	Final bool      `json:"final"`
	EpochRow
}

// Listing bounds.
const (
	defaultEpochsListed = 24
	maxEpochsListed     = 200
)

func (a *API) registerEpochs(r gin.IRouter, v1 gin.IRouter) {
	v1.GET("/operators/epochs", a.listEpochs)
	v1.GET("/operators/epochs/:epoch", a.getEpoch)
	// The node's own token reads its usage too (nodeUsageAuth).
	r.GET("/v1/nodes/:id/usage", a.nodeUsageAuth, a.getNodeUsage)
}

// accountHeartbeat adds a node's heartbeat to the current epoch's figures.
func (a *API) accountHeartbeat(ctx context.Context, n routing.Node, hb nodeproto.Heartbeat) error {
	_, err := a.store.AccountHeartbeat(ctx, n.ID, routing.HeartbeatFigures{Sent: hb.Time, BytesServed: hb.BytesServed, TokenID: n.TokenID},
		a.acct.Now(), a.acct.Epoch, nodeproto.NodeTTL, a.acct.Retention)
	return err
}

// accountJoin records a node's join: its uptime counts from now.
func (a *API) accountJoin(ctx context.Context, n routing.Node) error {
	return a.store.AccountJoin(ctx, n.ID, n.TokenID, a.acct.Now(), a.acct.Retention)
}

// AddFigures adds deltas to node's figures in the current epoch (for the
// origin's audits and viewers' beacons).
func (a *API) AddFigures(ctx context.Context, node string, deltas map[string]int64) error {
	now := a.acct.Now()
	return a.store.AddEpochFigures(ctx, routing.EpochStart(now, a.acct.Epoch), node, deltas, a.acct.Retention)
}

// SealEpochs seals the report of every recent epoch (the latest
// maxEpochsListed with figures) that is over and not sealed yet. The origin
// calls it periodically, so that a report is made soon after its epoch
// ended (with the nodes' state then), whether or not anybody asked for it.
// Epochs known sealed (in the cache) are not fetched again.
func (a *API) SealEpochs(ctx context.Context) error {
	if a.acct.Key == nil {
		return nil
	}
	starts, err := a.store.Epochs(ctx, maxEpochsListed)
	if err != nil {
		return err
	}
	for _, start := range starts {
		if !a.final(start) || !routing.EpochStart(start, a.acct.Epoch).Equal(start) {
			continue
		}
		if _, _, ok := a.sealed.get(routing.EpochID(start)); ok {
			continue
		}
		if _, _, err := a.report(ctx, start); err != nil && !errors.Is(err, errNoFigures) {
			return err
		}
	}
	return nil
}

// SealEvery is how often the origin should call SealEpochs: half an
// epoch, between 1 s and a minute.
func (a *API) SealEvery() time.Duration { return min(max(a.acct.Epoch/2, time.Second), time.Minute) }

// signedReport is a report's body and the value of its signature header.
type signedReport struct {
	body []byte
	sig  string
}

// sign signs body with the accounting key.
func (a *API) sign(body []byte) signedReport {
	pub := a.acct.Key.Public().(ed25519.PublicKey)
	return signedReport{body: body, sig: "keyid=" + manifest.KeyID(pub) + ", sig=" + base64.RawURLEncoding.EncodeToString(ed25519.Sign(a.acct.Key, body))}
}

// VerifyReport checks that body was signed, as header (a Shoal-Signature
// value, "keyid=<key id>, sig=<unpadded base64url>") says, by pub: how an
// operator checks a report it was given (the key is at GET /v1/keys).
func VerifyReport(pub ed25519.PublicKey, body []byte, header string) error {
	if len(pub) != ed25519.PublicKeySize {
		return errors.New("report signature: not an ed25519 public key")
	}
	if len(header) > 512 {
		return errors.New("report signature: header too long")
	}
	var keyID, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		switch {
		case !ok:
			return fmt.Errorf("report signature: %q is not key=value", part)
		case k == "keyid" && keyID == "":
			keyID = v
		case k == "sig" && sig == "":
			sig = v
		default:
			return fmt.Errorf("report signature: unexpected or repeated %q", k)
		}
	}
	if keyID == "" || sig == "" {
		return errors.New(`report signature: want "keyid=<key id>, sig=<signature>"`)
	}
	if want := manifest.KeyID(pub); keyID != want {
		return fmt.Errorf("report signature: signed with key %q, not %q", keyID, want)
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return errors.New("report signature: sig is not an unpadded base64url ed25519 signature")
	}
	if !ed25519.Verify(pub, body, raw) {
		return errors.New("report signature: the body does not match its signature")
	}
	return nil
}

// accountingReady answers 503 when reports cannot be signed.
func (a *API) accountingReady(c *gin.Context) bool {
	if a.acct.Key == nil {
		c.Header("Retry-After", "60")
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "delivery accounting is not configured on this node (no signing key)")
		return false
	}
	return true
}

// final tells whether the epoch that starts at start is over, grace
// included: its report is then sealed.
func (a *API) final(start time.Time) bool {
	return !a.acct.Now().Before(start.Add(a.acct.Epoch + a.acct.grace()))
}

// errNoFigures: a past epoch in which no node has figures.
var errNoFigures = errors.New("no figures")

// sealedCacheSize bounds the sealed reports kept parsed in memory (more
// than maxEpochsListed: a listing's are all kept).
const sealedCacheSize = 256

// sealedCache keeps parsed sealed reports by epoch id, the least recently
// used evicted first. Sealed reports never change: the listing, a node's
// usage and SealEpochs, which read up to maxEpochsListed of them at every
// call, need not fetch and parse them again. Its reports are shared: never
// modify one.
type sealedCache struct {
	mu    sync.Mutex
	max   int
	byID  map[string]*list.Element // of *sealedEntry
	order list.List                // least recently used at the back
}

type sealedEntry struct {
	id     string
	rep    EpochReport
	signed signedReport
}

func (s *sealedCache) get(id string) (EpochReport, signedReport, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	el := s.byID[id]
	if el == nil {
		return EpochReport{}, signedReport{}, false
	}
	s.order.MoveToFront(el)
	e := el.Value.(*sealedEntry)
	return e.rep, e.signed, true
}

func (s *sealedCache) put(id string, rep EpochReport, signed signedReport) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[string]*list.Element{}
		s.order.Init()
	}
	if el := s.byID[id]; el != nil {
		s.order.MoveToFront(el)
		return
	}
	limit := s.max
	if limit <= 0 {
		limit = sealedCacheSize
	}
	for len(s.byID) >= limit {
		old := s.order.Back()
		delete(s.byID, old.Value.(*sealedEntry).id)
		s.order.Remove(old)
	}
	s.byID[id] = s.order.PushFront(&sealedEntry{id: id, rep: rep, signed: signed})
}

// sealedReport parses a stored sealed report and keeps it in the cache.
func (a *API) sealedReport(start time.Time, stored []byte) (EpochReport, signedReport, error) {
	rep, signed, err := parseSealed(stored)
	if err == nil {
		a.sealed.put(routing.EpochID(start), rep, signed)
	}
	return rep, signed, err
}

// report returns the report of the epoch that starts at start, and its
// signed body: the sealed one when the epoch is over (sealing it first if
// nobody has), else one made now. errNoFigures for an epoch that is over
// with no figures (nothing to seal). A sealed report comes from the cache
// when it is there (never modify it).
func (a *API) report(ctx context.Context, start time.Time) (EpochReport, signedReport, error) {
	final := a.final(start)
	if final {
		if rep, signed, ok := a.sealed.get(routing.EpochID(start)); ok {
			return rep, signed, nil
		}
		stored, err := a.store.SealedEpochReport(ctx, start)
		if err == nil {
			return a.sealedReport(start, stored)
		}
		if !errors.Is(err, routing.ErrNotFound) {
			return EpochReport{}, signedReport{}, err
		}
	}
	rep, err := a.makeReport(ctx, start, final)
	if err != nil {
		return EpochReport{}, signedReport{}, err
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return EpochReport{}, signedReport{}, err
	}
	s := a.sign(body)
	if !final {
		return rep, s, nil
	}
	if len(rep.Nodes) == 0 {
		return EpochReport{}, signedReport{}, errNoFigures
	}
	// The first origin to seal wins; every origin serves what it stored.
	stored, err := a.store.SealEpochReport(ctx, start, []byte(s.sig+"\n"+string(body)), a.acct.Retention)
	if err != nil {
		return EpochReport{}, signedReport{}, err
	}
	return a.sealedReport(start, stored)
}

// parseSealed reads a stored sealed report: its signature header, a
// newline, then its body.
func parseSealed(stored []byte) (EpochReport, signedReport, error) {
	sig, body, ok := bytes.Cut(stored, []byte("\n"))
	var rep EpochReport
	if !ok {
		return rep, signedReport{}, errors.New("playerapi: a stored epoch report is corrupt (no signature line)")
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		return rep, signedReport{}, fmt.Errorf("playerapi: a stored epoch report is corrupt: %w", err)
	}
	return rep, signedReport{body: body, sig: string(sig)}, nil
}

// makeReport computes the report of the epoch that starts at start from
// its figures.
func (a *API) makeReport(ctx context.Context, start time.Time, final bool) (EpochReport, error) {
	figures, err := a.store.EpochFigures(ctx, start)
	if err != nil {
		return EpochReport{}, err
	}
	live := map[string]routing.Node{}
	if len(figures) > 0 {
		nodes, err := a.store.ListNodes(ctx)
		if err != nil {
			return EpochReport{}, err
		}
		for _, n := range nodes {
			live[n.ID] = n
		}
	}
	rep := EpochReport{Epoch: routing.EpochID(start), Start: start.UTC(), End: start.Add(a.acct.Epoch).UTC(), Final: final,
		GeneratedAt: a.acct.Now().UTC().Truncate(time.Millisecond), RewardPool: a.acct.RewardPool,
		KeyID: manifest.KeyID(a.acct.Key.Public().(ed25519.PublicKey)), Nodes: epochRows(figures)}
	for i := range rep.Nodes {
		if n, ok := live[rep.Nodes[i].NodeID]; ok {
			rep.Nodes[i].Region, rep.Nodes[i].Role, rep.Nodes[i].State = n.Region, n.Role, "active"
			if n.Quarantine != nil {
				rep.Nodes[i].State = "quarantined"
			}
		}
	}
	rewardPoints(rep.Nodes, a.acct.RewardPool)
	return rep, nil
}

// epochRows turns figures (node -> figure -> value) into rows, by node id,
// with credited bytes and pass rates (reward points left at 0).
func epochRows(figures map[string]map[string]int64) []EpochRow {
	rows := make([]EpochRow, 0, len(figures))
	for node, f := range figures {
		r := EpochRow{NodeID: node, ClaimedBytes: f[routing.FigureClaimedBytes], ViewerBytes: f[routing.FigureViewerBytes],
			AuditBytes: f[routing.FigureAuditBytes], AuditsPassed: f[routing.FigureAuditsPassed], AuditsFailed: f[routing.FigureAuditsFailed],
			UptimeSeconds: float64(f[routing.FigureUptimeMs]) / 1000, QuarantineSeconds: float64(f[routing.FigureQuarantineMs]) / 1000,
			VerificationFailures: f[routing.FigureVerifyFailures], AuditPassRate: 1,
			TranscodedPixels: f[routing.FigureTranscodedPixels], SegmentsVerified: f[routing.FigureSegmentsVerified],
			uptimeMs: f[routing.FigureUptimeMs], quarantineMs: f[routing.FigureQuarantineMs]}
		r.CreditedBytes = min(r.ClaimedBytes, r.ViewerBytes+r.AuditBytes)
		if n := r.AuditsPassed + r.AuditsFailed; n > 0 {
			r.AuditPassRate = float64(r.AuditsPassed) / float64(n)
		}
		rows = append(rows, r)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].NodeID < rows[j].NodeID })
	return rows
}

// rewardPoints shares pool among rows in proportion to credited bytes x
// audit pass rate x the share of the node's uptime it was not quarantined
// (exact fractions), in integers by the largest remainder method (equal
// remainders: by node id), so that they sum to the pool. A pool nobody has
// a weight in is not shared (every row 0). A node quarantined all epoch
// earns nothing: it is not audited then (no audits: a pass rate of 1),
// while viewers sent to it before go on confirming its bytes.
func rewardPoints(rows []EpochRow, pool int64) {
	weights := make([]*big.Rat, len(rows))
	total := new(big.Rat)
	for i, r := range rows {
		rows[i].RewardPoints = 0
		w := new(big.Rat).SetInt64(max(r.CreditedBytes, 0))
		if n := r.AuditsPassed + r.AuditsFailed; n > 0 {
			w.Mul(w, big.NewRat(max(r.AuditsPassed, 0), n))
		}
		switch {
		case r.uptimeMs > 0:
			w.Mul(w, big.NewRat(max(r.uptimeMs-max(r.quarantineMs, 0), 0), r.uptimeMs))
		case r.quarantineMs > 0:
			w.SetInt64(0)
		}
		weights[i] = w
		total.Add(total, w)
	}
	if pool <= 0 || total.Sign() == 0 {
		return
	}
	type remainder struct {
		i int
		r *big.Rat
	}
	rems := make([]remainder, len(rows))
	given := int64(0)
	for i, w := range weights {
		share := new(big.Rat).Mul(w, new(big.Rat).SetInt64(pool))
		share.Quo(share, total)
		whole := new(big.Int).Quo(share.Num(), share.Denom()) // share >= 0: the floor
		rows[i].RewardPoints = whole.Int64()
		given += whole.Int64()
		rems[i] = remainder{i: i, r: share.Sub(share, new(big.Rat).SetInt(whole))}
	}
	sort.SliceStable(rems, func(x, y int) bool {
		if c := rems[x].r.Cmp(rems[y].r); c != 0 {
			return c > 0
		}
		return rows[rems[x].i].NodeID < rows[rems[y].i].NodeID
	})
	for k := 0; given < pool && k < len(rems); k++ {
		rows[rems[k].i].RewardPoints++
		given++
	}
}

// epochParam reads the {epoch} of the request: an epoch of the configured
// length that has started and is within the retention. ok false: answered.
func (a *API) epochParam(c *gin.Context) (time.Time, bool) {
	id := c.Param("epoch")
	start, err := routing.ParseEpochID(id)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return time.Time{}, false
	}
	now := a.acct.Now()
	switch {
	case !routing.EpochStart(start, a.acct.Epoch).Equal(start):
		WriteError(c, http.StatusNotFound, codeNotFound, fmt.Sprintf("no epoch starts at %s: epochs are %s long, from multiples of it since 1970-01-01 UTC", id, a.acct.Epoch))
	case start.After(now):
		WriteError(c, http.StatusNotFound, codeNotFound, fmt.Sprintf("epoch %s has not started", id))
	case start.Add(a.acct.Epoch).Before(now.Add(-a.acct.Retention)):
		WriteError(c, http.StatusNotFound, codeNotFound, fmt.Sprintf("epoch %s is older than the retention (%s)", id, a.acct.Retention))
	default:
		return start, true
	}
	return time.Time{}, false
}

// wantCSV tells whether the request asks for CSV (?format=csv); false
// with an answer for a format it does not know.
func wantCSV(c *gin.Context) (csv, ok bool) {
	switch c.Query("format") {
	case "", "json":
		return false, true
	case "csv":
		return true, true
	}
	WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"format" must be json or csv`)
	return false, false
}

// limitParam reads ?limit= (1 to maxEpochsListed, default
// defaultEpochsListed).
func limitParam(c *gin.Context) (int, bool) {
	s := c.Query("limit")
	if s == "" {
		return defaultEpochsListed, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxEpochsListed {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, fmt.Sprintf(`"limit" must be an integer from 1 to %d`, maxEpochsListed))
		return 0, false
	}
	return n, true
}

// writeSigned answers 200 with body and its signature.
func writeSigned(c *gin.Context, contentType string, s signedReport) {
	c.Header(ReportSignatureHeader, s.sig)
	c.Data(http.StatusOK, contentType, s.body)
}

const csvType = "text/csv; charset=utf-8"

func (a *API) getEpoch(c *gin.Context) {
	if !a.accountingReady(c) {
		return
	}
	start, ok := a.epochParam(c)
	if !ok {
		return
	}
	asCSV, ok := wantCSV(c)
	if !ok {
		return
	}
	rep, signed, err := a.report(c.Request.Context(), start)
	if errors.Is(err, errNoFigures) {
		WriteError(c, http.StatusNotFound, codeNotFound, fmt.Sprintf("no node has figures in epoch %s", routing.EpochID(start)))
		return
	}
	if err != nil {
		a.fail(c, err, "")
		return
	}
	if asCSV {
		writeSigned(c, csvType, a.sign(epochCSV(rep)))
		return
	}
	writeSigned(c, "application/json; charset=utf-8", signed)
}

func (a *API) listEpochs(c *gin.Context) {
	if !a.accountingReady(c) {
		return
	}
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	reps, err := a.recentReports(c.Request.Context(), limit)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	out := make([]epochSummary, 0, len(reps))
	for _, rep := range reps {
		s := epochSummary{Epoch: rep.Epoch, Start: rep.Start, End: rep.End, Final: rep.Final, Nodes: len(rep.Nodes)}
		for _, r := range rep.Nodes {
			s.CreditedBytes += r.CreditedBytes
		}
		out = append(out, s)
	}
	a.writeSignedJSON(c, epochListJSON{Data: out})
}

// recentReports are the reports of the latest limit epochs with figures,
// newest first (epochs of another length, from before the setting
// changed, are left out).
func (a *API) recentReports(ctx context.Context, limit int) ([]EpochReport, error) {
	starts, err := a.store.Epochs(ctx, limit)
	if err != nil {
		return nil, err
	}
	var out []EpochReport
	for _, start := range starts {
		if !routing.EpochStart(start, a.acct.Epoch).Equal(start) {
			continue
		}
		rep, _, err := a.report(ctx, start)
		if errors.Is(err, errNoFigures) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rep)
	}
	return out, nil
}

// writeSignedJSON answers v as JSON, its body signed.
func (a *API) writeSignedJSON(c *gin.Context, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	writeSigned(c, "application/json; charset=utf-8", a.sign(body))
}

// epochListJSON is the answer of GET /v1/operators/epochs.
type epochListJSON struct {
	Data []epochSummary `json:"data"`
}

// nodeUsageAuth lets GET /v1/nodes/{id}/usage through with the admin key,
// an API key that may read nodes, or the node token node {id} joined with.
func (a *API) nodeUsageAuth(c *gin.Context) {
	tok, found := bearerToken(c.GetHeader("Authorization"))
	if !found || !ids.LooksLikeSecret("nt", tok) {
		a.Authenticate(c)
		return
	}
	c.Header("Cache-Control", "no-store")
	ctx := c.Request.Context()
	t, err := a.store.VerifyNodeToken(ctx, tok)
	if errors.Is(err, routing.ErrNotFound) {
		unauthorized(c, "invalid or revoked node token")
		return
	}
	if err != nil {
		a.fail(c, err, "")
		return
	}
	joined, err := a.store.NodeAccountToken(ctx, c.Param("id"))
	if err != nil && !errors.Is(err, routing.ErrNotFound) {
		a.fail(c, err, "")
		return
	}
	if err != nil || !ids.Equal(joined, t.ID) {
		WriteError(c, http.StatusForbidden, codeForbidden, "this node token is not the one the node joined with")
		return
	}
}

func (a *API) getNodeUsage(c *gin.Context) {
	if !a.accountingReady(c) {
		return
	}
	id := c.Param("id")
	if !validNodeID(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, "no node with this id")
		return
	}
	limit, ok := limitParam(c)
	if !ok {
		return
	}
	asCSV, ok := wantCSV(c)
	if !ok {
		return
	}
	reps, err := a.recentReports(c.Request.Context(), limit)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	out := nodeUsage{NodeID: id, GeneratedAt: a.acct.Now().UTC().Truncate(time.Millisecond),
		KeyID: manifest.KeyID(a.acct.Key.Public().(ed25519.PublicKey)), Epochs: []usageJSON{}}
	for _, rep := range reps {
		for _, r := range rep.Nodes {
			if r.NodeID == id {
				out.Epochs = append(out.Epochs, usageJSON{Epoch: rep.Epoch, Start: rep.Start, End: rep.End, Final: rep.Final, EpochRow: r})
			}
		}
	}
	if asCSV {
		writeSigned(c, csvType, a.sign(usageCSV(out)))
		return
	}
	a.writeSignedJSON(c, out)
}

// rowColumns are the CSV columns of a row, named as its JSON fields.
var rowColumns = []string{"node_id", "region", "role", "state", "claimed_bytes", "viewer_bytes", "audit_bytes", "credited_bytes",
	"audits_passed", "audits_failed", "audit_pass_rate", "uptime_seconds", "quarantine_seconds", "verification_failures",
	"transcoded_pixels", "segments_verified", "reward_points"}

func rowRecord(r EpochRow) []string {
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	return []string{r.NodeID, r.Region, r.Role, r.State, i(r.ClaimedBytes), i(r.ViewerBytes), i(r.AuditBytes), i(r.CreditedBytes),
		i(r.AuditsPassed), i(r.AuditsFailed), f(r.AuditPassRate), f(r.UptimeSeconds), f(r.QuarantineSeconds), i(r.VerificationFailures),
		i(r.TranscodedPixels), i(r.SegmentsVerified), i(r.RewardPoints)}
}

// epochColumns name the epoch on every CSV row: a signed CSV says which
// epoch it is, and whether it is the sealed report.
var epochColumns = []string{"epoch", "start", "end", "final"}

func epochRecord(epoch string, start, end time.Time, final bool) []string {
	return []string{epoch, start.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), strconv.FormatBool(final)}
}

// csvColumns are the columns of both CSV answers: the epoch's, then a
// row's.
var csvColumns = append(slices.Clone(epochColumns), rowColumns...)

// epochCSV is an epoch report's rows as CSV, a header line first: each row
// with the epoch's name, start, end and whether it is final.
func epochCSV(rep EpochReport) []byte {
	rows := make([]usageJSON, len(rep.Nodes))
	for i, r := range rep.Nodes {
		rows[i] = usageJSON{Epoch: rep.Epoch, Start: rep.Start, End: rep.End, Final: rep.Final, EpochRow: r}
	}
	return rowsCSV(rows)
}

// usageCSV is a node's usage as CSV: each epoch's row, after the epoch's
// name, start, end and whether it is final.
func usageCSV(u nodeUsage) []byte { return rowsCSV(u.Epochs) }

// rowsCSV is rows as CSV, a header line first.
func rowsCSV(rows []usageJSON) []byte {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	_ = w.Write(csvColumns)
	for _, e := range rows {
		_ = w.Write(append(epochRecord(e.Epoch, e.Start, e.End, e.Final), rowRecord(e.EpochRow)...))
	}
	w.Flush()
	return b.Bytes()
}
