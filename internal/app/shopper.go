package app

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
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
	// store holds what the origin published (the auditor's store).
	store     storage.Store
	interval  time.Duration
	threshold int
	now       func() time.Time
	rand      *rand.Rand
	log       *slog.Logger
	results   *prometheus.CounterVec
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
	seen        time.Time // the last round that listed it live
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
	// keepAbsent is how long the record of an edge no longer live is
	// kept: an edge that fails an audit and leaves for a moment (its
	// record in Redis expires 7 s after its last heartbeat) comes back
	// to its wrong answers. maxAbsent bounds how many are kept (the
	// longest gone are forgotten first).
	keepAbsent = 24 * time.Hour
	maxAbsent  = 10_000
	// shopperUserAgent is a current desktop Chrome's.
	shopperUserAgent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)

func newShopper(store storage.Store, contentKey ed25519.PrivateKey, signed func(string) bool, interval time.Duration, threshold int,
	nodes func(ctx context.Context) ([]routing.Node, error), quarantine func(ctx context.Context, id, reason string) error,
	reg prometheus.Registerer, log *slog.Logger) *shopper {
	s := &shopper{nodes: nodes, quarantine: quarantine, store: store, interval: interval, threshold: threshold,
		now: time.Now, rand: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), log: log, state: map[string]*edgeAudits{},
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_edge_audits_total",
			Help: "Mystery-shopper audits of edges by result: pass (the published bytes), fail (other bytes), error (no answer to compare)."},
			[]string{"result"})}
	reg.MustRegister(s.results)
	a := newAuditor(store, contentKey, signed)
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
		switch {
		case st == nil:
			st = &edgeAudits{joined: n.JoinedAt, next: now, last: now}
			s.state[n.ID] = st
		case !st.joined.Equal(n.JoinedAt):
			// Joined again, perhaps after a while away: its traffic
			// counters start over, and so does the audits' share of them.
			// Its record of wrong answers does not (only an admin's
			// release clears it): an edge cannot join again between
			// audits, nor leave for a moment, to keep out of quarantine.
			st.joined, st.auditedByte = n.JoinedAt, 0
		}
		st.seen = now
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
	s.forgetAbsentLocked(now, seen)
	s.mu.Unlock()
	for _, n := range due {
		if ctx.Err() != nil {
			return
		}
		s.audit(ctx, n)
	}
}

// forgetAbsentLocked drops the records of edges not live (not in seen)
// for keepAbsent, and the longest gone beyond maxAbsent; s.mu is held.
func (s *shopper) forgetAbsentLocked(now time.Time, seen map[string]bool) {
	var absent []string
	for id, st := range s.state {
		if seen[id] {
			continue
		}
		if now.Sub(st.seen) >= keepAbsent {
			delete(s.state, id)
			continue
		}
		absent = append(absent, id)
	}
	if len(absent) <= maxAbsent {
		return
	}
	slices.SortFunc(absent, func(a, b string) int { return s.state[a].seen.Compare(s.state[b].seen) })
	for _, id := range absent[:len(absent)-maxAbsent] {
		delete(s.state, id)
	}
}

// prove asks the server at n's public URL to answer for n's identity
// (nodeproto.ProofPath): right when it proves to be n; wrong when it
// answers as another node, with a bad signature, or not at all as a node
// does (a 4xx, not a proof); neither when it could not be asked (a
// network error, a 5xx: unanswered, as a failed fetch is).
func (s *shopper) prove(ctx context.Context, n routing.Node) (wrong, right bool, finding string) {
	pub, err := nodeproto.ParsePublicKey(n.PublicKey)
	if err != nil {
		return false, false, "the node's public key is not known"
	}
	challenge := nodeproto.NewChallenge()
	body, status, err := s.auditor.get(ctx, n, nodeproto.ProofPath+"?challenge="+challenge, 4<<10)
	switch {
	case err != nil || status >= http.StatusInternalServerError:
		return false, false, fetchFinding(ctx, "its proof of identity", err, status, false)
	case status != http.StatusOK:
		return true, false, fmt.Sprintf("the server at its public URL does not answer for its identity (%s %d): it is not this node, or an edge older than its origin", nodeproto.ProofPath, status)
	}
	var p nodeproto.Proof
	if err := json.Unmarshal(body, &p); err != nil {
		return true, false, "the server at its public URL answers no proof of identity: it is not this node"
	}
	if err := nodeproto.CheckProof(pub, challenge, p); err != nil {
		return true, false, "the server at its public URL is not this node: " + err.Error()
	}
	return false, true, ""
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
// stream out of its audits by not reporting it. "" when there is none, or
// the store cannot be listed; kind is auditSegment or auditPlaylist.
func (s *shopper) target(ctx context.Context, n routing.Node) (path, kind string) {
	var reported []string
	for id := range n.Load.StreamBytes {
		if ids.Valid(id) {
			reported = append(reported, id)
		}
	}
	// Any published id: those in the store from a random one on (see
	// publishedIDs), never by listing all of the store.
	published := len(reported) == 0 || s.rand.IntN(2) == 0
	var cands iter.Seq2[string, error]
	if published {
		cands = s.publishedIDs(ctx)
	} else {
		sort.Strings(reported)
		s.rand.Shuffle(len(reported), func(i, j int) { reported[i], reported[j] = reported[j], reported[i] })
		cands = func(yield func(string, error) bool) {
			for _, id := range reported {
				if !yield(id, nil) {
					return
				}
			}
		}
	}
	looked := 0
	for id, err := range cands {
		if err != nil {
			s.log.Debug("no audit: the published streams could not be listed", "node", n.ID, "err", err)
			return "", ""
		}
		// A few ids looked at, signed ones included: each costs a policy
		// lookup (and, published, a short listing).
		if looked++; looked > 20 {
			break
		}
		// Signed ids are not audited; deleted ones (files may be left
		// behind) are gone from every edge too.
		if !ids.Valid(id) || s.auditor.signed(id) || (s.known != nil && !s.known(id)) {
			continue
		}
		rends, err := s.renditions(ctx, id)
		if err != nil {
			s.log.Debug("no audit: a stream's renditions could not be listed", "node", n.ID, "id", id, "err", err)
			return "", ""
		}
		s.rand.Shuffle(len(rends), func(i, j int) { rends[i], rends[j] = rends[j], rends[i] })
		for _, r := range rends {
			segs, err := s.segments(ctx, id+"/"+r)
			if err != nil {
				s.log.Debug("no audit: a rendition could not be listed", "node", n.ID, "rendition", id+"/"+r, "err", err)
				return "", ""
			}
			if len(segs) == 0 {
				continue
			}
			// One audit in four of an ended rendition is of its playlist,
			// which must be byte for byte the one published.
			if s.rand.IntN(4) == 0 && s.auditor.ended(ctx, id+"/"+r) {
				return hlspath.Prefix + id + "/" + r + "/" + playlistFile, auditPlaylist
			}
			return hlspath.Prefix + id + "/" + r + "/" + segs[s.rand.IntN(len(segs))], auditSegment
		}
	}
	return "", ""
}

// idAlphabet holds the characters of ids (ids.Valid), in byte order.
const idAlphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// publishedIDs yields the ids of the published streams and videos in
// key order from a random key on, wrapping around once to those before
// it: one short listing per id (the store is never listed whole). Ids
// are random (ids.New), so which comes first is random too, each id as
// likely as the gap of keys before it is wide.
func (s *shopper) publishedIDs(ctx context.Context) iter.Seq2[string, error] {
	start := make([]byte, 20)
	for i := range start {
		start[i] = idAlphabet[s.rand.IntN(len(idAlphabet))]
	}
	return func(yield func(string, error) bool) {
		after, wrapped := string(start), false
		for {
			id, err := s.nextID(ctx, after)
			switch {
			case err != nil:
				yield("", err)
				return
			case id == "" && wrapped:
				return
			case id == "":
				after, wrapped = "", true
				continue
			case wrapped && id >= string(start):
				return // round to the first one
			}
			if !yield(id, nil) {
				return
			}
			// Every key under "<id>/" is before "<id>0" ("/" is followed
			// by "0" in byte order).
			after = id + "0"
		}
	}
}

// nextID returns the id of the first key after after, "" when there is
// none.
func (s *shopper) nextID(ctx context.Context, after string) (string, error) {
	files := 0
	for info, err := range s.store.List(ctx, "", storage.ListOptions{StartAfter: after}) {
		if err != nil {
			return "", err
		}
		if id, _, ok := strings.Cut(info.Key, "/"); ok {
			return id, nil
		}
		// An object beside the ids, not a stream's: a few are passed over.
		if files++; files >= maxListedFiles {
			break
		}
	}
	return "", nil
}

// Bounds of the shopper's listings of the store.
const (
	// maxListedFiles: objects passed over beside the ids or the renditions.
	maxListedFiles = 100
	// maxRenditions: renditions of one id looked at.
	maxRenditions = 32
	// maxListedSegments: objects of one rendition listed (a recording of
	// a day in 2 s segments has 43,200); a segment is picked among them.
	maxListedSegments = 100_000
)

// renditions lists the renditions of id: one short listing for each,
// which starts past the keys of the one before.
func (s *shopper) renditions(ctx context.Context, id string) ([]string, error) {
	var out []string
	after, files := "", 0
	for len(out) < maxRenditions {
		found := false
		for info, err := range s.store.List(ctx, id+"/", storage.ListOptions{StartAfter: after}) {
			if err != nil {
				return nil, err
			}
			r, _, ok := strings.Cut(strings.TrimPrefix(info.Key, id+"/"), "/")
			if !ok {
				// A file of the id (master.m3u8), not a rendition's.
				if files++; files >= maxListedFiles {
					return out, nil
				}
				after = info.Key
				continue
			}
			out = append(out, r)
			// Every key under "<id>/<r>/" is before "<id>/<r>0" ("/" is
			// followed by "0" in byte order).
			after = id + "/" + r + "0"
			found = true
			break
		}
		if !found {
			break
		}
	}
	return out, nil
}

// segments lists the whole segments of rendition dir (id/rendition): its
// .m4s and .ts files but the LL-HLS parts, which live a few seconds.
func (s *shopper) segments(ctx context.Context, dir string) ([]string, error) {
	var segs []string
	listed := 0
	for info, err := range s.store.List(ctx, dir+"/", storage.ListOptions{}) {
		if err != nil {
			return nil, err
		}
		name := strings.TrimPrefix(info.Key, dir+"/")
		if !strings.Contains(name, "/") && (strings.HasSuffix(name, ".m4s") || strings.HasSuffix(name, ".ts")) && !hlspath.IsPart(name) {
			segs = append(segs, name)
		}
		if listed++; listed >= maxListedSegments {
			break
		}
	}
	return segs, nil
}

// audit checks one object at edge n and acts on the result.
func (s *shopper) audit(ctx context.Context, n routing.Node) {
	actx, cancel := context.WithTimeout(ctx, auditTimeout)
	defer cancel()
	path, kind := s.target(actx, n)
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
	s.mu.Lock()
	s.ttfb, s.total, s.fetched = 0, 0, 0
	s.mu.Unlock()
	// First who answers at its public URL: another server's (an honest
	// edge's, the origin's) would pass the audit for it.
	wrong, right, finding := s.prove(actx, n)
	if !wrong && right {
		wrong, right, finding = s.auditor.check(actx, n, path, kind)
	}
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
