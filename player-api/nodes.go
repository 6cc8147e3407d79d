package playerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// NodeStore is the part of the Store that keeps node tokens and the node
// registry.
type NodeStore interface {
	CreateNodeToken(ctx context.Context, name string) (string, routing.NodeToken, error)
	VerifyNodeToken(ctx context.Context, token string) (routing.NodeToken, error)
	RevokeNodeToken(ctx context.Context, id string) error
	JoinNode(ctx context.Context, n routing.Node, ttl time.Duration) error
	GetNode(ctx context.Context, id string) (routing.Node, error)
	NodeHeartbeat(ctx context.Context, id string, load routing.NodeLoad, ttl time.Duration) error
	ListNodes(ctx context.Context) ([]routing.Node, error)
	JoinNodeCapped(ctx context.Context, n routing.Node, ttl time.Duration, max int) error
	QuarantineNode(ctx context.Context, id, reason string) error
	ReleaseNode(ctx context.Context, id string) error
	AddDeliveryReport(ctx context.Context, id string, r routing.DeliveryReport) error
	AddReporter(ctx context.Context, id, network string, window time.Duration) (int64, error)
	RecentDeliveryReports(ctx context.Context, idList []string, n int) (map[string][]routing.DeliveryReport, error)
	PlacementSecret(ctx context.Context) ([]byte, error)
	InvalidationsAfter(ctx context.Context, cursor string, max int64) (routing.InvalidationPage, error)
	// ListOrigins lists the origins announced on this Redis (heartbeat
	// and join answers carry them: edges fail over to them).
	ListOrigins(ctx context.Context) ([]string, error)
	// AnnouncedNodes lists the origins and workers announced on this
	// Redis (GET /v1/nodes lists them after the joined nodes; they are
	// never routed to).
	AnnouncedNodes(ctx context.Context) ([]routing.AnnouncedNode, error)
	// WorkerStats are what joined workers' VOD jobs came to.
	WorkerStats(ctx context.Context, idList []string) (map[string]routing.WorkerStats, error)
}

const (
	nodeNotFound = "no live node with this id"
	maxRegionLen = 64
	// maxStreamKeys is the most per-stream figures a heartbeat may carry
	// (an edge sends its top edgecache.MaxStatsStreams); a heartbeat with
	// more is taken without them.
	maxStreamKeys = 500
	// maxNodeBody bounds a join or heartbeat body: a heartbeat with
	// maxStreamKeys figures and nodeproto.MaxP2PStreams P2P stats at
	// their longest is about 80 KiB.
	maxNodeBody = 128 << 10
)

type nodeTokenJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

type nodeJSON struct {
	ID                   string           `json:"id"`
	Role                 string           `json:"role"`
	Region               string           `json:"region"`
	PublicURL            string           `json:"public_url"`
	JoinedAt             time.Time        `json:"joined_at"`
	LastHeartbeat        time.Time        `json:"last_heartbeat"`
	Connections          int64            `json:"connections"`
	EgressBytesPerSec    float64          `json:"egress_bytes_per_sec"`
	CacheBytes           int64            `json:"cache_bytes"`
	BytesServed          int64            `json:"bytes_served"`
	HitRatio             float64          `json:"hit_ratio"`
	OriginFetches        int64            `json:"origin_fetches"`
	StreamBytes          map[string]int64 `json:"stream_bytes,omitempty"`
	Viewers              int64            `json:"viewers"`
	MaxViewers           int64            `json:"max_viewers,omitempty"`
	MaxEgressBytesPerSec float64          `json:"max_egress_bytes_per_sec,omitempty"`
	// State is "active", or "quarantined" (not routed to) with the reason.
	State            string     `json:"state"`
	QuarantineReason string     `json:"quarantine_reason,omitempty"`
	QuarantinedAt    *time.Time `json:"quarantined_at,omitempty"`
	// DeliveryReports are the most recent reports viewers sent about it.
	DeliveryReports []routing.DeliveryReport `json:"delivery_reports"`
	// Audits is what the origin's mystery-shopper audits of the edge
	// found; absent before the first.
	Audits *AuditSummary `json:"audits,omitempty"`
	// Transcode is what an origin or a worker transcodes with; absent
	// for edges and for nodes that do not transcode.
	Transcode *nodeproto.Transcoding `json:"transcode,omitempty"`
	// Jobs is what a joined worker's VOD jobs came to; absent for other
	// nodes.
	Jobs *workerJobsJSON `json:"jobs,omitempty"`
}

// workerJobsJSON counts a remote worker's VOD jobs by outcome.
type workerJobsJSON struct {
	Done     int64 `json:"done"`
	Rejected int64 `json:"rejected"`
	Failed   int64 `json:"failed"`
	// SegmentsVerified, VerifyFailed and VerifyErrors count the origin's
	// re-checks of its segments (passed in published outputs, failed,
	// could not be made); TranscodedPixels are its published outputs'
	// pixels (width x height x frames over the renditions).
	SegmentsVerified int64 `json:"segments_verified"`
	VerifyFailed     int64 `json:"verify_failed"`
	VerifyErrors     int64 `json:"verify_errors"`
	TranscodedPixels int64 `json:"transcoded_pixels"`
	// LastRejection is why the origin refused the latest rejected output.
	LastRejection   string     `json:"last_rejection,omitempty"`
	LastRejectionAt *time.Time `json:"last_rejection_at,omitempty"`
}

// AuditSummary is what an origin's audits of an edge found (see
// Config.AuditSummary).
type AuditSummary struct {
	// Passed, Failed and Errors count audits that got the published
	// bytes, other bytes, and no answer to compare.
	Passed int64 `json:"passed"`
	Failed int64 `json:"failed"`
	Errors int64 `json:"errors"`
	// The latest audit: when, what, its result and what it found.
	LastAt      time.Time `json:"last_at"`
	LastPath    string    `json:"last_path"`
	LastResult  string    `json:"last_result"`
	LastFinding string    `json:"last_finding"`
	// TTFBMillis and BytesPerSec are the latest compared audit's time to
	// the first byte and throughput.
	TTFBMillis  int64   `json:"ttfb_ms"`
	BytesPerSec float64 `json:"bytes_per_sec"`
}

type nodeListJSON struct {
	Data []nodeJSON `json:"data"`
}

// routeJSON is the answer of GET /v1/route/{id}.
type routeJSON struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	NodeID string `json:"node_id,omitempty"` // "" when the origin serves
	Region string `json:"region,omitempty"`
	Reason string `json:"reason"`
	// Candidates are where to play from, in order: the choice first, then
	// other edges, the origin last (no node_id).
	Candidates []candidateJSON `json:"candidates"`
}

type candidateJSON struct {
	NodeID string `json:"node_id,omitempty"`
	URL    string `json:"url"`
	Region string `json:"region,omitempty"`
}

// maxCandidates is how many edges a route offers besides the origin.
const maxCandidates = 3

// reportsListed is how many recent delivery reports /v1/nodes shows per node.
const reportsListed = 5

func (a *API) registerNodes(r gin.IRouter, v1 gin.IRouter) {
	v1.POST("/node-tokens", a.createNodeToken)
	v1.DELETE("/node-tokens/:id", a.revokeNodeToken)
	v1.GET("/nodes", a.listNodes)
	v1.POST("/nodes/:id/release", a.releaseNode)
	// Nodes authenticate with a node token and their key, not an API key.
	r.POST("/v1/nodes/join", a.nodeJoin)
	r.POST("/v1/nodes/:id/heartbeat", a.nodeHeartbeat)
	// Viewers: no key (signed playback protects what needs protecting).
	r.GET("/v1/route/:id", a.route)
	r.GET("/play/:id", a.play)
	r.POST("/v1/delivery-reports", a.deliveryReport)
	r.GET("/v1/keys", a.keys)
}

func (a *API) createNodeToken(c *gin.Context) {
	name, ok := a.readName(c)
	if !ok {
		return
	}
	plain, t, err := a.store.CreateNodeToken(c.Request.Context(), name)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	c.JSON(http.StatusCreated, nodeTokenJSON{ID: t.ID, Name: t.Name, Token: plain, CreatedAt: t.CreatedAt})
}

func (a *API) revokeNodeToken(c *gin.Context) {
	id := c.Param("id")
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, "no node token with this id")
		return
	}
	if err := a.store.RevokeNodeToken(c.Request.Context(), id); err != nil {
		a.fail(c, err, "no node token with this id")
		return
	}
	c.Status(http.StatusNoContent)
}

func nodeToJSON(n routing.Node) nodeJSON {
	out := nodeJSON{
		ID: n.ID, Role: n.Role, Region: n.Region, PublicURL: n.PublicURL, JoinedAt: n.JoinedAt, LastHeartbeat: n.LastSeen,
		Connections: n.Load.Connections, EgressBytesPerSec: n.Load.EgressBytesPerSec, CacheBytes: n.Load.CacheBytes,
		BytesServed: n.Load.BytesServed, HitRatio: n.Load.HitRatio(), OriginFetches: n.Load.OriginFetches, StreamBytes: n.Load.StreamBytes,
		Viewers: n.Load.Viewers, MaxViewers: n.Load.MaxViewers, MaxEgressBytesPerSec: n.Load.MaxEgressBytesPerSec, State: "active", DeliveryReports: []routing.DeliveryReport{},
	}
	if q := n.Quarantine; q != nil {
		out.State, out.QuarantineReason = "quarantined", q.Reason
		at := q.At
		out.QuarantinedAt = &at
	}
	out.Transcode = listedTranscode(n.Load.Transcode)
	return out
}

// listedTranscode is t as GET /v1/nodes lists it: lists are [] rather
// than null.
func listedTranscode(t *nodeproto.Transcoding) *nodeproto.Transcoding {
	if t == nil {
		return nil
	}
	tc := *t
	tc.GPUs = make([]nodeproto.GPU, len(t.GPUs))
	for i, g := range t.GPUs {
		if g.NVDEC == nil {
			g.NVDEC = []string{}
		}
		tc.GPUs[i] = g
	}
	return &tc
}

func (a *API) listNodes(c *gin.Context) {
	ctx := c.Request.Context()
	nodes, err := a.store.ListNodes(ctx)
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	idList := make([]string, len(nodes))
	for i, n := range nodes {
		idList[i] = n.ID
	}
	reports, err := a.store.RecentDeliveryReports(ctx, idList, reportsListed)
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	var workers []string
	for _, n := range nodes {
		if n.Role == nodeproto.RoleWorker {
			workers = append(workers, n.ID)
		}
	}
	work, err := a.store.WorkerStats(ctx, workers)
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	out := nodeListJSON{Data: make([]nodeJSON, 0, len(nodes))}
	for _, n := range nodes {
		j := nodeToJSON(n)
		if a.auditSummary != nil {
			if sum, ok := a.auditSummary(n.ID); ok {
				j.Audits = &sum
			}
		}
		j.DeliveryReports = reports[n.ID]
		if n.Role == nodeproto.RoleWorker {
			ws := work[n.ID]
			j.Jobs = &workerJobsJSON{Done: ws.Done, Rejected: ws.Rejected, Failed: ws.Failed, LastRejection: ws.LastRejection,
				SegmentsVerified: ws.SegmentsVerified, VerifyFailed: ws.VerifyFailed, VerifyErrors: ws.VerifyErrors, TranscodedPixels: ws.TranscodedPixels}
			if !ws.LastRejectionAt.IsZero() {
				at := ws.LastRejectionAt
				j.Jobs.LastRejectionAt = &at
			}
		}
		out.Data = append(out.Data, j)
	}
	announced, err := a.store.AnnouncedNodes(ctx)
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	for _, n := range announced {
		out.Data = append(out.Data, announcedToJSON(n))
	}
	c.JSON(http.StatusOK, out)
}

// announcedToJSON is an origin's or a worker's entry in GET /v1/nodes:
// active (never quarantined, never routed to), joined when it started, no
// edge figures.
func announcedToJSON(n routing.AnnouncedNode) nodeJSON {
	out := nodeJSON{ID: n.ID, Role: n.Role, Region: n.Region, PublicURL: n.PublicURL, JoinedAt: n.StartedAt, LastHeartbeat: n.LastSeen,
		State: "active", DeliveryReports: []routing.DeliveryReport{}}
	out.Transcode = listedTranscode(n.Transcode)
	return out
}

// releaseNode lifts a node's quarantine: it is routed to again.
func (a *API) releaseNode(c *gin.Context) {
	id := c.Param("id")
	if !validNodeID(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, "no quarantined node with this id")
		return
	}
	if err := a.store.ReleaseNode(c.Request.Context(), id); err != nil {
		a.fail(c, err, "no quarantined node with this id")
		return
	}
	a.registry.Invalidate()
	a.log.Info("node released from quarantine", "node", id)
	c.Status(http.StatusNoContent)
}

// validNodeID checks the shape of a node id (nodeproto.NodeID).
func validNodeID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for _, ch := range id {
		if (ch < 'a' || ch > 'z') && (ch < '2' || ch > '7') {
			return false
		}
	}
	return true
}

// nodeToken checks the node token of a node's request and returns the
// token id (routing.AdminTokenID for the admin key).
func (a *API) nodeToken(c *gin.Context) (tokenID string, ok bool) {
	c.Header("Cache-Control", "no-store")
	tok, found := bearerToken(c.GetHeader("Authorization"))
	if !found {
		unauthorized(c, `missing node token; send "Authorization: Bearer <node token>" (POST /v1/node-tokens issues one)`)
		return "", false
	}
	if ids.Equal(ids.Hash(tok), a.adminKeyHash) {
		return routing.AdminTokenID, true
	}
	if !ids.LooksLikeSecret("nt", tok) {
		unauthorized(c, "invalid node token")
		return "", false
	}
	t, err := a.store.VerifyNodeToken(c.Request.Context(), tok)
	if errors.Is(err, routing.ErrNotFound) {
		unauthorized(c, "invalid or revoked node token")
		return "", false
	}
	if err != nil {
		a.fail(c, err, "")
		return "", false
	}
	return t.ID, true
}

// nodeAuth checks the node token of a join or heartbeat and returns the
// token id (routing.AdminTokenID for the admin key) and the raw body.
func (a *API) nodeAuth(c *gin.Context) (tokenID string, body []byte, ok bool) {
	tokenID, ok = a.nodeToken(c)
	if !ok {
		return "", nil, false
	}
	body, err := readLimited(c, maxNodeBody)
	if err != nil {
		bodyFailed(c, err, "node request body too large")
		return "", nil, false
	}
	return tokenID, body, true
}

func (a *API) nodeJoin(c *gin.Context) {
	tokenID, body, ok := a.nodeAuth(c)
	if !ok {
		return
	}
	var req nodeproto.JoinRequest
	if msg := decodeStrict(body, &req); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	pub, err := nodeproto.ParsePublicKey(req.PublicKey)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	if err := nodeproto.Verify(pub, body, c.GetHeader(nodeproto.SignatureHeader)); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error()+": the body must be signed with the key it names")
		return
	}
	if err := nodeproto.CheckTime(req.Time, time.Now()); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error())
		return
	}
	token, _ := bearerToken(c.GetHeader("Authorization"))
	if !ids.Equal(req.TokenSHA256, nodeproto.TokenSHA256(token)) {
		WriteError(c, http.StatusForbidden, "forbidden",
			`the join's signed "token_sha256" is not the SHA-256 of the token it was sent with (a join replayed with another token?)`)
		return
	}
	if req.Role != nodeproto.RoleEdge && req.Role != nodeproto.RoleWorker {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"role" must be "edge" or "worker"`)
		return
	}
	region, err := validRegion(req.Region)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	// A worker serves nothing: its public URL is optional.
	publicURL := ""
	if req.Role == nodeproto.RoleEdge || req.PublicURL != "" {
		if publicURL, err = checkURL("public_url", req.PublicURL, "http", "https"); err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
			return
		}
	}
	if req.InvalidationCursor != "" && !cursorRe.MatchString(req.InvalidationCursor) {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"invalidation_cursor" must be a cursor the origin sent`)
		return
	}
	if msg := checkTranscode(req.Role, req.Transcode); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	n := routing.Node{ID: nodeproto.NodeID(pub), Role: req.Role, Region: region, PublicURL: publicURL,
		PublicKey: req.PublicKey, TokenID: tokenID, Load: routing.NodeLoad{Transcode: req.Transcode}}
	switch err := a.store.JoinNodeCapped(c.Request.Context(), n, nodeproto.NodeTTL, a.maxNodesPerToken); {
	case errors.Is(err, routing.ErrTooManyIdentities):
		WriteError(c, http.StatusForbidden, "too_many_identities", fmt.Sprintf(
			"this node token already holds %d node identities (each node key is one; identities unused for %s are freed): reuse the node's data dir (its node.key), or ask the operator for another token",
			a.maxNodesPerToken, routing.IdentityWindow))
		return
	case err != nil:
		a.fail(c, err, "")
		return
	}
	if err := a.accountJoin(c.Request.Context(), n); err != nil {
		a.fail(c, err, "")
		return
	}
	a.registry.Invalidate()
	a.log.Info("node joined", "node", n.ID, "role", n.Role, "region", n.Region, "public_url", n.PublicURL)
	resp, err := a.nodeView(c.Request.Context(), n, req.InvalidationCursor)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	c.JSON(http.StatusCreated, resp)
}

func (a *API) nodeHeartbeat(c *gin.Context) {
	tokenID, body, ok := a.nodeAuth(c)
	if !ok {
		if c.Writer.Status() == http.StatusRequestEntityTooLarge {
			a.heartbeatsLimited.WithLabelValues("size").Inc()
		}
		return
	}
	id := c.Param("id")
	ctx := c.Request.Context()
	n, err := a.store.GetNode(ctx, id)
	if errors.Is(err, routing.ErrNotFound) {
		WriteError(c, http.StatusNotFound, codeNotFound, nodeNotFound+": join again")
		return
	}
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	pub, err := nodeproto.ParsePublicKey(n.PublicKey)
	if err != nil {
		a.fail(c, fmt.Errorf("node %s has a corrupt key: %w", id, err), nodeNotFound)
		return
	}
	// Only the key holder speaks for the node, whatever token it shows.
	if err := nodeproto.Verify(pub, body, c.GetHeader(nodeproto.SignatureHeader)); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error()+": only the node's own key can sign its heartbeats")
		return
	}
	if tokenID != n.TokenID && tokenID != routing.AdminTokenID {
		WriteError(c, http.StatusForbidden, "forbidden", "this node joined with another token")
		return
	}
	var hb nodeproto.Heartbeat
	if msg := decodeStrict(body, &hb); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	if err := nodeproto.CheckTime(hb.Time, time.Now()); err != nil {
		WriteError(c, http.StatusForbidden, "forbidden", err.Error())
		return
	}
	// Counted once fresh: a replayed old heartbeat spends nothing.
	if ok, wait := a.heartbeats.allow(id); !ok {
		a.heartbeatsLimited.WithLabelValues("rate").Inc()
		c.Header("Retry-After", strconv.Itoa(retryAfter(wait)))
		WriteError(c, http.StatusTooManyRequests, "rate_limited",
			fmt.Sprintf("too many heartbeats from this node (more than %d at once, then %g a second); retry later", heartbeatBurst, heartbeatRate))
		return
	}
	if hb.InvalidationCursor != "" && !cursorRe.MatchString(hb.InvalidationCursor) {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"invalidation_cursor" must be a cursor the origin sent`)
		return
	}
	if msg := checkHeartbeat(hb); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	if msg := checkP2PStats(hb); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	if msg := checkTranscode(n.Role, hb.Transcode); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	load := routing.NodeLoad{Connections: hb.Connections, EgressBytesPerSec: hb.EgressBytesPerSec, CacheBytes: hb.CacheBytes,
		BytesServed: hb.BytesServed, Hits: hb.Hits, Misses: hb.Misses, OriginFetches: hb.OriginFetches,
		Viewers: hb.Viewers, MaxViewers: hb.MaxViewers, MaxEgressBytesPerSec: hb.MaxEgressBytesPerSec, Transcode: hb.Transcode}
	if len(hb.StreamBytes) <= maxStreamKeys {
		load.StreamBytes = map[string]int64{}
		for k, v := range hb.StreamBytes {
			if ids.Valid(k) {
				load.StreamBytes[k] = v
			}
		}
	}
	switch err := a.store.NodeHeartbeat(ctx, id, load, nodeproto.NodeTTL); {
	case errors.Is(err, routing.ErrTokenRevoked):
		WriteError(c, http.StatusForbidden, "forbidden", "the node token this node joined with was revoked")
		return
	case errors.Is(err, routing.ErrNotFound):
		WriteError(c, http.StatusNotFound, codeNotFound, nodeNotFound+": join again")
		return
	case err != nil:
		a.fail(c, err, nodeNotFound)
		return
	}
	if err := a.accountHeartbeat(ctx, n, hb); err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	// Answered 200 only once added: a node keeps its batch until then.
	if len(hb.P2PStreamBytes) > 0 {
		if err := a.RecordP2PStats(ctx, id, hb.P2PBatch, p2pDeltas(hb.P2PStreamBytes)); err != nil {
			a.fail(c, err, nodeNotFound)
			return
		}
	}
	if n.Role == nodeproto.RoleEdge {
		a.nodeMetrics(n, load) // the edges' delivery figures
	}
	resp, err := a.nodeView(ctx, n, hb.InvalidationCursor)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	c.JSON(http.StatusOK, resp)
}

// cursorRe is the shape of an invalidation cursor (a Redis stream id).
var cursorRe = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// maxInvalidationsPerAnswer bounds the invalidations in one answer; the
// node gets the rest with its next heartbeats.
const maxInvalidationsPerAnswer = 1000

// nodeView is what a node learns at each join and heartbeat: its
// siblings, the playback key, the invalidations after cursor and the
// origins announced in the registry.
func (a *API) nodeView(ctx context.Context, self routing.Node, cursor string) (nodeproto.JoinResponse, error) {
	nodes, err := a.registry.Nodes(ctx)
	if err != nil && nodes == nil {
		return nodeproto.JoinResponse{}, err
	}
	resp := nodeproto.JoinResponse{ID: self.ID, HeartbeatIntervalSeconds: nodeproto.HeartbeatInterval.Seconds(),
		PlaybackPublicKey: a.playbackPublicKey(), Siblings: []nodeproto.Sibling{}}
	// A worker caches nothing: it has nothing to invalidate.
	if self.Role == nodeproto.RoleEdge {
		page, err := a.store.InvalidationsAfter(ctx, cursor, maxInvalidationsPerAnswer)
		if err != nil {
			return nodeproto.JoinResponse{}, err
		}
		resp.InvalidationCursor, resp.InvalidationsReset, resp.InvalidationsMore = page.Cursor, page.Reset, page.More
		for _, i := range page.Entries {
			resp.Invalidations = append(resp.Invalidations, nodeproto.Invalidation{ID: i.ID, Deleted: i.Deleted, Signed: i.Signed})
		}
	}
	// Without the list, the node keeps the origins it knows: not a
	// reason to fail the heartbeat.
	if origins, err := a.store.ListOrigins(ctx); err == nil {
		resp.Origins = origins
	} else if ctx.Err() == nil {
		a.log.Warn("cannot list the origins for a node", "node", self.ID, "err", err)
	}
	for _, n := range nodes {
		if self.Role == nodeproto.RoleEdge && n.ID != self.ID && n.Role == nodeproto.RoleEdge && n.Region == self.Region && n.Quarantine == nil {
			resp.Siblings = append(resp.Siblings, nodeproto.Sibling{ID: n.ID, URL: n.PublicURL, PublicKey: n.PublicKey})
		}
	}
	return resp, nil
}

// checkTranscode checks what a node says it transcodes with: only workers
// say it, and absurd claims are refused.
func checkTranscode(role string, t *nodeproto.Transcoding) string {
	if t == nil {
		return ""
	}
	if role != nodeproto.RoleWorker {
		return `"transcode" is for workers: an edge does not transcode`
	}
	if err := t.Check(); err != nil {
		return err.Error()
	}
	return ""
}

func validRegion(r string) (string, error) {
	r = strings.ToLower(strings.TrimSpace(r))
	if len(r) > maxRegionLen {
		return "", fmt.Errorf(`"region" must be at most %d characters`, maxRegionLen)
	}
	for _, ch := range r {
		if (ch < 'a' || ch > 'z') && (ch < '0' || ch > '9') && ch != '-' && ch != '_' {
			return "", errors.New(`"region" may hold only letters, digits, '-' and '_' (e.g. "eu-west")`)
		}
	}
	return r, nil
}

// viewerRegion is the region of the viewer: ?region=, else the header a
// front proxy sets (Config.RegionHeader).
func (a *API) viewerRegion(c *gin.Context) string {
	r := c.Query("region")
	if r == "" && a.regionHeader != "" {
		r = c.GetHeader(a.regionHeader)
	}
	r, err := validRegion(r)
	if err != nil {
		return ""
	}
	return r
}

// chooseRoute picks where a viewer of id goes: an ordered list of
// candidates, the origin last. The first is counted as assigned to it.
func (a *API) chooseRoute(c *gin.Context) (routeJSON, bool) {
	id := c.Param("id")
	ctx := c.Request.Context()
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, "no live stream or video with this id")
		return routeJSON{}, false
	}
	if !a.exists(c, id) {
		return routeJSON{}, false
	}
	region := a.viewerRegion(c)
	out := routeJSON{ID: id, Region: region}
	nodes, err := a.registry.Nodes(ctx)
	if err != nil && nodes == nil {
		a.fail(c, err, "")
		return routeJSON{}, false
	}
	secret, err := a.placementSecret(ctx)
	if err != nil {
		a.fail(c, err, "")
		return routeJSON{}, false
	}
	query := ""
	if tok := c.Query("token"); tok != "" {
		query = "?token=" + url.QueryEscape(tok)
	}
	p := routing.Place(nodes, id, region, secret, a.registry, maxCandidates)
	offered := make([]string, 0, len(p.Candidates))
	for _, n := range p.Candidates {
		offered = append(offered, n.ID)
	}
	a.reports.offered(reporterNetwork(a.clientIP(c.Request)), offered)
	a.offerSession(c, id, offered)
	for _, n := range p.Candidates {
		out.Candidates = append(out.Candidates, candidateJSON{NodeID: n.ID, URL: n.PublicURL + "/hls/" + id + "/master.m3u8" + query, Region: n.Region})
	}
	out.Candidates = append(out.Candidates, candidateJSON{URL: a.publicURL + "/hls/" + id + "/master.m3u8" + query})
	out.Reason = p.Reason
	if len(p.Candidates) == 0 {
		out.Reason += ": the origin serves"
	} else {
		a.registry.Assign(p.Candidates[0].ID)
	}
	out.URL, out.NodeID = out.Candidates[0].URL, out.Candidates[0].NodeID
	return out, true
}

// placementSecret returns the key of placement hashing (read once).
func (a *API) placementSecret(ctx context.Context) ([]byte, error) {
	a.secretMu.Lock()
	defer a.secretMu.Unlock()
	if a.secret != nil {
		return a.secret, nil
	}
	s, err := a.store.PlacementSecret(ctx)
	if err != nil {
		return nil, err
	}
	a.secret = s
	return s, nil
}

// Bounds of the figures a heartbeat may carry.
const (
	maxCount  = 1 << 50
	maxEgress = 1e12 // bytes per second
)

// checkHeartbeat validates a heartbeat's figures: what a node says about
// itself is an input, and absurd input is refused, not clamped.
func checkHeartbeat(hb nodeproto.Heartbeat) string {
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"connections", hb.Connections}, {"cache_bytes", hb.CacheBytes}, {"bytes_served", hb.BytesServed},
		{"hits", hb.Hits}, {"misses", hb.Misses}, {"origin_fetches", hb.OriginFetches},
		{"viewers", hb.Viewers}, {"max_viewers", hb.MaxViewers},
	} {
		if f.v < 0 || f.v > maxCount {
			return fmt.Sprintf("%q must be between 0 and %d, got %d", f.name, int64(maxCount), f.v)
		}
	}
	if hb.EgressBytesPerSec < 0 || hb.EgressBytesPerSec > maxEgress {
		return fmt.Sprintf(`"egress_bytes_per_sec" must be between 0 and %g, got %g`, maxEgress, hb.EgressBytesPerSec)
	}
	if hb.MaxEgressBytesPerSec < 0 || hb.MaxEgressBytesPerSec > maxEgress {
		return fmt.Sprintf(`"max_egress_bytes_per_sec" must be between 0 and %g, got %g`, maxEgress, hb.MaxEgressBytesPerSec)
	}
	for k, v := range hb.StreamBytes {
		if v < 0 || v > maxCount {
			return fmt.Sprintf(`"stream_bytes" of %q must be between 0 and %d`, clipString(k, 40), int64(maxCount))
		}
	}
	return ""
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// exists tells whether id is a live stream or a video; otherwise it has
// answered 404 (or 503).
func (a *API) exists(c *gin.Context, id string) bool {
	ctx := c.Request.Context()
	_, err := a.store.GetLiveStream(ctx, id)
	if errors.Is(err, routing.ErrNotFound) {
		_, err = a.store.GetVideo(ctx, id)
	}
	if err != nil {
		a.fail(c, err, "no live stream or video with this id")
		return false
	}
	return true
}

func (a *API) route(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	r, ok := a.chooseRoute(c)
	if !ok {
		return
	}
	c.JSON(http.StatusOK, r)
}

func (a *API) play(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	r, ok := a.chooseRoute(c)
	if !ok {
		return
	}
	c.Header("Shoal-Route-Reason", r.Reason)
	c.Redirect(http.StatusFound, r.URL)
}

// nodeMetrics is a hook for per-node figures (set by the app).
func (a *API) nodeMetrics(n routing.Node, load routing.NodeLoad) {
	if a.onHeartbeat != nil {
		a.onHeartbeat(n, load)
	}
}
