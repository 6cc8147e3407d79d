package app

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	playerapi "github.com/shoal-video/shoal/player-api"
)

// shopper audits edges as a mystery shopper: at random times (on average
// every interval per edge), over a fresh connection that looks like a
// viewer's browser, it fetches a random segment of a stream the edge said
// it served (or of any the origin published: the edge does not choose)
// and checks it against what the origin published (the auditor's check).
// Nobody has to report anything: an edge that serves altered bytes fails
// its audits, and when threshold of its last auditWindow audits found
// wrong bytes it is quarantined; an admin's release starts its record
// over. Audits cost at most 1% of what the edge says it served, plus
// auditAllowance, but an edge is audited at least every auditFloor
// intervals. Signed streams are not audited (see auditor).
//
// What it cannot see: an edge that tells the origin's address apart from
// viewers' can serve the audits honestly; viewers' reports still catch it
// (playerapi). Results are kept in this origin's memory.
type shopper struct {
	// known, when set, tells whether an id is a live stream or video
	// (not deleted).
	known      func(id string) bool
	nodes      func(ctx context.Context) ([]routing.Node, error)
	quarantine func(ctx context.Context, id, reason string) error
	auditor    *auditor
	hlsDir     string
	interval   time.Duration
	threshold  int
	now        func() time.Time
	rand       *rand.Rand
	log        *slog.Logger
	results    *prometheus.CounterVec
	// figures, when set, adds each compared audit to the edge's figures of
	// the current accounting epoch: a pass its bytes
	// (routing.FigureAuditBytes), pass and fail their counts.
	figures func(ctx context.Context, node string, deltas map[string]int64) error

	mu    sync.Mutex
	state map[string]*edgeAudits
	// last fetch's timing (audits run one at a time)
	ttfb, total time.Duration
	fetched     int
}

// edgeAudits is what the shopper knows of one edge.
type edgeAudits struct {
	joined      time.Time
	next        time.Time
	last        time.Time // the latest audit that compared bytes
	quarantined bool      // as last seen: a release starts its record over
	recent      []bool    // the last auditWindow audits that compared bytes: true = wrong bytes
	summary     playerapi.AuditSummary
	auditedByte int64
}

const (
	auditWindow = 10
	// auditAllowance is what audits may cost an edge besides 1% of its
	// traffic: a few segments, so that a new edge is audited at once.
	auditAllowance = 8 << 20
	// auditFloor: an edge is audited at least every auditFloor intervals,
	// whatever it says it served.
	auditFloor = 10
	// auditTimeout bounds one audit.
	auditTimeout = 15 * time.Second
	// shopperUserAgent is a current desktop Chrome's.
	shopperUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)

func newShopper(hlsDir string, contentKey ed25519.PrivateKey, signed func(string) bool, interval time.Duration, threshold int,
	nodes func(ctx context.Context) ([]routing.Node, error), quarantine func(ctx context.Context, id, reason string) error,
	reg prometheus.Registerer, log *slog.Logger) *shopper {
	s := &shopper{nodes: nodes, quarantine: quarantine, hlsDir: hlsDir, interval: interval, threshold: threshold,
		now: time.Now, rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), log: log, state: map[string]*edgeAudits{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_edge_audits_total",
			Help: "Mystery-shopper audits of edges by result: pass (the published bytes), fail (other bytes), error (no answer to compare)."},
			[]string{"result"})}
	reg.MustRegister(s.results)
	a := newAuditor(hlsDir, contentKey, signed)
	// A fresh connection for every audit, as a new viewer's.
	a.client = &http.Client{Timeout: auditTimeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	a.userAgent = shopperUserAgent
	a.timed = func(ttfb, total time.Duration, n int) {
		s.mu.Lock()
		s.ttfb, s.total, s.fetched = ttfb, total, n
		s.mu.Unlock()
	}
	s.auditor = a
	return s
}

// run audits until ctx ends, looking for edges that are due at every tick.
func (s *shopper) run(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			s.round(ctx)
		}
	}
}

// round audits every active edge that is due, one at a time.
func (s *shopper) round(ctx context.Context) {
	nodes, err := s.nodes(ctx)
	if err != nil {
		return
	}
	now := s.now()
	seen := make(map[string]bool, len(nodes))
	var due []routing.Node
	s.mu.Lock()
	for _, n := range nodes {
		if n.Role != "edge" || n.PublicURL == "" {
			continue
		}
		seen[n.ID] = true
		st := s.state[n.ID]
		if st == nil || !st.joined.Equal(n.JoinedAt) {
			// New, or joined again (its traffic counters start over).
			st = &edgeAudits{joined: n.JoinedAt, next: now, last: now}
			s.state[n.ID] = st
		}
		if st.quarantined && n.Quarantine == nil {
			// Released by an admin: earlier failures no longer count.
			st.recent = nil
		}
		st.quarantined = n.Quarantine != nil
		// The edge's own traffic figure bounds the audits' cost, but an
		// edge that says it served little is still audited at least every
		// auditFloor intervals.
		affordable := st.auditedByte <= n.Load.BytesServed/100+auditAllowance || now.Sub(st.last) >= auditFloor*s.interval
		if n.Quarantine == nil && !now.Before(st.next) && affordable {
			due = append(due, n)
		}
	}
	for id := range s.state {
		if !seen[id] {
			delete(s.state, id)
		}
	}
	s.mu.Unlock()
	for _, n := range due {
		if ctx.Err() != nil {
			return
		}
		s.audit(ctx, n)
	}
}

// Kinds of the shopper's audits.
const (
	auditSegment = "segment"
	// playlistFile is a rendition's media playlist.
	playlistFile = "index.m3u8"
)

// target picks a random segment (or, for an ended rendition, now and then
// its playlist), that the origin has published, of a random public stream
// or video: half the time one edge n says it served (its heartbeats),
// otherwise any the origin published, so that an edge cannot keep a
// stream out of its audits by not reporting it. "" when there is none;
// kind is auditSegment or auditPlaylist.
func (s *shopper) target(n routing.Node) (path, kind string) {
	var idList []string
	for id := range n.Load.StreamBytes {
		if ids.Valid(id) {
			idList = append(idList, id)
		}
	}
	if len(idList) == 0 || s.rand.IntN(2) == 0 {
		idList = idList[:0]
		if all, err := os.ReadDir(s.hlsDir); err == nil {
			for _, d := range all {
				if d.IsDir() && ids.Valid(d.Name()) {
					idList = append(idList, d.Name())
				}
			}
		}
	}
	sort.Strings(idList)
	s.rand.Shuffle(len(idList), func(i, j int) { idList[i], idList[j] = idList[j], idList[i] })
	for i, id := range idList {
		// A few ids looked at, signed ones included: each costs a policy
		// lookup.
		if i >= 20 {
			break
		}
		// Signed ids are not audited; deleted ones (files may be left
		// behind) are gone from every edge too.
		if s.auditor.signed(id) || (s.known != nil && !s.known(id)) {
			continue
		}
		rends, err := os.ReadDir(filepath.Join(s.hlsDir, id))
		if err != nil {
			continue
		}
		var dirs []string
		for _, r := range rends {
			if r.IsDir() && !strings.HasPrefix(r.Name(), ".") {
				dirs = append(dirs, r.Name())
			}
		}
		s.rand.Shuffle(len(dirs), func(i, j int) { dirs[i], dirs[j] = dirs[j], dirs[i] })
		for _, r := range dirs {
			files, err := os.ReadDir(filepath.Join(s.hlsDir, id, r))
			if err != nil {
				continue
			}
			var segs []string
			for _, f := range files {
				name := f.Name()
				if f.Type().IsRegular() && (strings.HasSuffix(name, ".m4s") || strings.HasSuffix(name, ".ts")) && !hlspath.IsPart(name) { // parts live a few seconds
					segs = append(segs, name)
				}
			}
			if len(segs) == 0 {
				continue
			}
			// One audit in four of an ended rendition is of its playlist,
			// which must be byte for byte the one published.
			if s.rand.IntN(4) == 0 && s.auditor.ended(id+"/"+r) {
				return hlspath.Prefix + id + "/" + r + "/" + playlistFile, auditPlaylist
			}
			return hlspath.Prefix + id + "/" + r + "/" + segs[s.rand.IntN(len(segs))], auditSegment
		}
	}
	return "", ""
}

// audit checks one object at edge n and acts on the result.
func (s *shopper) audit(ctx context.Context, n routing.Node) {
	path, kind := s.target(n)
	now := s.now()
	// The next audit at a random time around interval from now.
	next := now.Add(time.Duration(float64(s.interval) * (0.5 + s.rand.Float64())))
	if path == "" {
		s.mu.Lock()
		if st := s.state[n.ID]; st != nil {
			st.next = next
		}
		s.mu.Unlock()
		return
	}
	actx, cancel := context.WithTimeout(ctx, auditTimeout)
	wrong, right, finding := s.auditor.check(actx, n, path, kind)
	cancel()
	result := "error"
	switch {
	case wrong:
		result = "fail"
	case right:
		result = "pass"
	}
	s.results.WithLabelValues(result).Inc()
	var reason string
	s.mu.Lock()
	fetched := int64(s.fetched)
	st := s.state[n.ID]
	if st == nil {
		s.mu.Unlock()
		return
	}
	st.next = next
	sum := &st.summary
	sum.LastAt, sum.LastPath, sum.LastResult, sum.LastFinding = now, path, result, finding
	switch result {
	case "pass":
		sum.Passed++
	case "fail":
		sum.Failed++
	default:
		sum.Errors++
	}
	if result != "error" {
		st.last = now
		st.auditedByte += int64(s.fetched)
		sum.TTFBMillis = s.ttfb.Milliseconds()
		if secs := s.total.Seconds(); secs > 0 {
			sum.BytesPerSec = float64(s.fetched) / secs
		}
		st.recent = append(st.recent, wrong)
		if len(st.recent) > auditWindow {
			st.recent = st.recent[len(st.recent)-auditWindow:]
		}
		bad := 0
		for _, w := range st.recent {
			if w {
				bad++
			}
		}
		if wrong && bad >= s.threshold {
			reason = fmt.Sprintf("failed %d of its last %d audits (latest %s: %s)", bad, len(st.recent), path, finding)
		}
	}
	s.mu.Unlock()
	s.log.Debug("edge audited", "node", n.ID, "path", path, "result", result, "finding", finding)
	// An audit the edge did not answer counts as failed in its accounting
	// (its audit pass rate): an edge that refuses audits, or answers
	// them with errors, is not paid as one that passes them. It does not
	// quarantine it (its viewers may be served).
	if result == "error" && strings.HasPrefix(finding, nodeFetchFailed) {
		result = "unanswered"
	}
	s.account(ctx, n.ID, result, fetched)
	if reason == "" {
		return
	}
	if err := s.quarantine(ctx, n.ID, reason); err != nil {
		s.log.Error("an edge failed its audits but could not be quarantined", "node", n.ID, "err", err)
		return
	}
	s.mu.Lock()
	st.quarantined = true // a release seen by the next round starts its record over
	s.mu.Unlock()
	s.log.Warn("node quarantined: it is no longer routed to", "node", n.ID, "reason", reason)
}

// account adds an audit's result (pass, fail, unanswered; an error of the
// origin's adds nothing) to the edge's epoch figures.
func (s *shopper) account(ctx context.Context, node, result string, fetched int64) {
	if s.figures == nil || result == "error" {
		return
	}
	d := map[string]int64{routing.FigureAuditsFailed: 1}
	if result == "pass" {
		d = map[string]int64{routing.FigureAuditsPassed: 1, routing.FigureAuditBytes: fetched}
	}
	if err := s.figures(ctx, node, d); err != nil {
		s.log.Warn("an audit's result could not be added to the edge's accounting figures", "node", node, "err", err)
	}
}

// summary returns what the audits of edge id found, if it was audited.
func (s *shopper) summary(id string) (playerapi.AuditSummary, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[id]
	if st == nil || st.summary.LastAt.IsZero() {
		return playerapi.AuditSummary{}, false
	}
	return st.summary, true
}
