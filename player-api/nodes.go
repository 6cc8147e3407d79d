package playerapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
}

const (
	nodeNotFound  = "no live node with this id"
	maxNodeBody   = 64 << 10
	maxRegionLen  = 64
	maxStreamKeys = 1000
)

type nodeTokenJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Token     string    `json:"token,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

type nodeJSON struct {
	ID                string           `json:"id"`
	Role              string           `json:"role"`
	Region            string           `json:"region"`
	PublicURL         string           `json:"public_url"`
	JoinedAt          time.Time        `json:"joined_at"`
	LastHeartbeat     time.Time        `json:"last_heartbeat"`
	Connections       int64            `json:"connections"`
	EgressBytesPerSec float64          `json:"egress_bytes_per_sec"`
	CacheBytes        int64            `json:"cache_bytes"`
	BytesServed       int64            `json:"bytes_served"`
	HitRatio          float64          `json:"hit_ratio"`
	OriginFetches     int64            `json:"origin_fetches"`
	StreamBytes       map[string]int64 `json:"stream_bytes,omitempty"`
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
}

func (a *API) registerNodes(r gin.IRouter, v1 gin.IRouter) {
	v1.POST("/node-tokens", a.createNodeToken)
	v1.DELETE("/node-tokens/:id", a.revokeNodeToken)
	v1.GET("/nodes", a.listNodes)
	// Nodes authenticate with a node token and their key, not an API key.
	r.POST("/v1/nodes/join", a.nodeJoin)
	r.POST("/v1/nodes/:id/heartbeat", a.nodeHeartbeat)
	// Viewers: no key (signed playback protects what needs protecting).
	r.GET("/v1/route/:id", a.route)
	r.GET("/play/:id", a.play)
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
	return nodeJSON{
		ID: n.ID, Role: n.Role, Region: n.Region, PublicURL: n.PublicURL, JoinedAt: n.JoinedAt, LastHeartbeat: n.LastSeen,
		Connections: n.Load.Connections, EgressBytesPerSec: n.Load.EgressBytesPerSec, CacheBytes: n.Load.CacheBytes,
		BytesServed: n.Load.BytesServed, HitRatio: n.Load.HitRatio(), OriginFetches: n.Load.OriginFetches, StreamBytes: n.Load.StreamBytes,
	}
}

func (a *API) listNodes(c *gin.Context) {
	nodes, err := a.store.ListNodes(c.Request.Context())
	if err != nil {
		a.fail(c, err, nodeNotFound)
		return
	}
	out := nodeListJSON{Data: make([]nodeJSON, 0, len(nodes))}
	for _, n := range nodes {
		out.Data = append(out.Data, nodeToJSON(n))
	}
	c.JSON(http.StatusOK, out)
}

// nodeAuth checks the node token of a join or heartbeat and returns the
// token id (routing.AdminTokenID for the admin key) and the raw body.
func (a *API) nodeAuth(c *gin.Context) (tokenID string, body []byte, ok bool) {
	c.Header("Cache-Control", "no-store")
	tok, found := bearerToken(c.GetHeader("Authorization"))
	if !found {
		unauthorized(c, `missing node token; send "Authorization: Bearer <node token>" (POST /v1/node-tokens issues one)`)
		return "", nil, false
	}
	if ids.Equal(ids.Hash(tok), a.adminKeyHash) {
		tokenID = routing.AdminTokenID
	} else {
		if !ids.LooksLikeSecret("nt", tok) {
			unauthorized(c, "invalid node token")
			return "", nil, false
		}
		t, err := a.store.VerifyNodeToken(c.Request.Context(), tok)
		if errors.Is(err, routing.ErrNotFound) {
			unauthorized(c, "invalid or revoked node token")
			return "", nil, false
		}
		if err != nil {
			a.fail(c, err, "")
			return "", nil, false
		}
		tokenID = t.ID
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, maxNodeBody))
	if err != nil {
		WriteError(c, http.StatusRequestEntityTooLarge, codePayloadTooLarge, "node request body too large")
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
	if req.Role != "edge" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"role" must be "edge"`)
		return
	}
	region, err := validRegion(req.Region)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	publicURL, err := checkURL("public_url", req.PublicURL, "http", "https")
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	n := routing.Node{ID: nodeproto.NodeID(pub), Role: req.Role, Region: region, PublicURL: publicURL,
		PublicKey: req.PublicKey, TokenID: tokenID}
	if err := a.store.JoinNode(c.Request.Context(), n, nodeproto.NodeTTL); err != nil {
		a.fail(c, err, "")
		return
	}
	a.log.Info("node joined", "node", n.ID, "role", n.Role, "region", n.Region, "public_url", n.PublicURL)
	resp, err := a.nodeView(c.Request.Context(), n)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	c.JSON(http.StatusCreated, resp)
}

func (a *API) nodeHeartbeat(c *gin.Context) {
	tokenID, body, ok := a.nodeAuth(c)
	if !ok {
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
	load := routing.NodeLoad{Connections: hb.Connections, EgressBytesPerSec: hb.EgressBytesPerSec, CacheBytes: hb.CacheBytes,
		BytesServed: hb.BytesServed, Hits: hb.Hits, Misses: hb.Misses, OriginFetches: hb.OriginFetches}
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
	a.nodeMetrics(n, load)
	resp, err := a.nodeView(ctx, n)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	c.JSON(http.StatusOK, resp)
}

// nodeView is what a node learns at each join and heartbeat.
func (a *API) nodeView(ctx context.Context, self routing.Node) (nodeproto.JoinResponse, error) {
	nodes, err := a.store.ListNodes(ctx)
	if err != nil {
		return nodeproto.JoinResponse{}, err
	}
	resp := nodeproto.JoinResponse{ID: self.ID, HeartbeatIntervalSeconds: nodeproto.HeartbeatInterval.Seconds(),
		PlaybackPublicKey: a.playbackPublicKey(), Siblings: []nodeproto.Sibling{}}
	for _, n := range nodes {
		if n.ID != self.ID && n.Role == "edge" && n.Region == self.Region {
			resp.Siblings = append(resp.Siblings, nodeproto.Sibling{ID: n.ID, URL: n.PublicURL})
		}
	}
	return resp, nil
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

// chooseRoute picks where a viewer of id goes.
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
	nodes, err := a.store.ListNodes(ctx)
	if err != nil {
		a.fail(c, err, "")
		return routeJSON{}, false
	}
	base := a.publicURL
	n, reason, ok := routing.ChooseEdge(nodes, id, region)
	if ok {
		base, out.NodeID = n.PublicURL, n.ID
	} else {
		reason += ": the origin serves"
	}
	out.Reason = reason
	u := base + "/hls/" + id + "/master.m3u8"
	if tok := c.Query("token"); tok != "" {
		u += "?token=" + url.QueryEscape(tok)
	}
	out.URL = u
	return out, true
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
