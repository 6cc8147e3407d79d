package playerapi

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/netguard"
	"github.com/shoal-video/shoal/internal/routing"
)

const liveStreamNotFound = "live stream not found"

// Live stream statuses.
const (
	statusIdle = "idle"
	statusLive = "live"
)

// liveStreamJSON is the JSON form of a live stream.
type liveStreamJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// StreamKey is in the answers that make one (create and reset) only:
	// only its hash is stored, so it is shown once.
	StreamKey      string    `json:"stream_key,omitempty"`
	Status         string    `json:"status"`
	CreatedAt      time.Time `json:"created_at"`
	PlaybackPolicy string    `json:"playback_policy"`
	// P2P tells whether viewers' players may share segments with each
	// other (peer-assisted delivery); true unless turned off.
	P2P bool `json:"p2p"`
	// Ladder is the stream's own ABR ladder; absent: the node's ladder.
	Ladder string `json:"ladder,omitempty"`
	// Error says what went wrong with the broadcast's processing, if anything.
	Error    string       `json:"error,omitempty"`
	Ingest   ingestJSON   `json:"ingest"`
	Playback playbackJSON `json:"playback"`
	// SourceURL is the RTSP URL the origin pulls the stream from (its
	// password hidden), and Pull the state of that pull.
	SourceURL string     `json:"source_url,omitempty"`
	Pull      *PullState `json:"pull,omitempty"`
	// P2PStats is in the answers of GET (one and the list) only.
	P2PStats *p2pStatsJSON `json:"p2p_stats,omitempty"`
}

// ingestJSON is how to publish. What carries the stream key (stream_key,
// rtsp_url, srt_url) is only in the answers that make the key.
type ingestJSON struct {
	// RTMPURL is the server to publish to; the stream key goes after it
	// (OBS: "Server" and "Stream Key").
	RTMPURL   string `json:"rtmp_url"`
	StreamKey string `json:"stream_key,omitempty"`
	// RTSPURL is the whole URL to publish to over RTSP (ANNOUNCE/RECORD),
	// stream key included; absent when RTSP ingest is off.
	RTSPURL string `json:"rtsp_url,omitempty"`
	// WHIPURL is the WebRTC (WHIP) endpoint; the stream key is the bearer
	// token (OBS 30+: "Bearer Token"), or an API key with ?stream=<id>.
	WHIPURL string `json:"whip_url,omitempty"`
	// SRTURL is the whole URL to publish MPEG-TS to over SRT, stream key
	// included; absent when SRT ingest is off.
	SRTURL string `json:"srt_url,omitempty"`
}

type playbackJSON struct {
	HLSURL string `json:"hls_url"`
	// WHEPURL is real-time playback over WebRTC; absent without WHEP.
	WHEPURL string `json:"whep_url,omitempty"`
}

type liveStreamListJSON struct {
	Data []liveStreamJSON `json:"data"`
}

func (a *API) liveStreamJSON(ls routing.LiveStream) liveStreamJSON {
	status := statusIdle
	if a.status.IsLive(ls.ID) {
		status = statusLive
	}
	return liveStreamJSON{
		ID:             ls.ID,
		Name:           ls.Name,
		StreamKey:      ls.StreamKey,
		Status:         status,
		CreatedAt:      ls.CreatedAt,
		PlaybackPolicy: ls.PlaybackPolicy,
		P2P:            !ls.P2POff,
		Ladder:         ls.Ladder,
		Error:          a.status.Problem(ls.ID),
		Ingest:         a.ingestJSON(ls.StreamKey),
		Playback:       a.livePlayback(ls.ID),
		SourceURL:      ids.RedactURL(ls.SourceURL),
		Pull:           a.pull(ls),
	}
}

// liveStreamJSONFor is ls as the request's API key may see it: a key
// without the streams scope (read-only) is not shown the stream key, nor
// the RTSP and SRT URLs that hold it.
func (a *API) liveStreamJSONFor(c *gin.Context, ls routing.LiveStream) liveStreamJSON {
	j := a.liveStreamJSON(ls)
	if !hasScope(c, scopeStreams) {
		j.StreamKey, j.Ingest.StreamKey, j.Ingest.RTSPURL, j.Ingest.SRTURL = "", "", "", ""
	}
	return j
}

// pull is the state of ls's pull, when it has a source URL.
func (a *API) pull(ls routing.LiveStream) *PullState {
	if ls.SourceURL == "" {
		return nil
	}
	if p, ok := a.status.Pull(ls.ID); ok {
		return &p
	}
	// Not started yet on this node (the puller reads sources every 2 s).
	return &PullState{State: "connecting", Since: time.Now().UTC()}
}

// pathID returns the :id path parameter, or answers 404 when it is not a
// valid id (so that such ids never reach the store).
func pathID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, liveStreamNotFound)
		return "", false
	}
	return id, true
}

// readName decodes a {"name"} body and validates the name; on failure it has
// answered the request.
func (a *API) readName(c *gin.Context) (string, bool) {
	var req nameRequest
	if !a.decodeJSON(c, &req) {
		return "", false
	}
	name, err := validName(req.Name)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return "", false
	}
	return name, true
}

// liveStreamRequest is the body of POST and PATCH /v1/live-streams.
type liveStreamRequest struct {
	Name           *string `json:"name"`
	Ladder         *string `json:"ladder"`
	PlaybackPolicy *string `json:"playback_policy"`
	SourceURL      *string `json:"source_url"`
	P2P            *bool   `json:"p2p"`
}

// validSourceURL checks a source URL ("" stops pulling): one naming a
// loopback or private address outright is refused unless allowPrivate; on
// failure it has answered the request.
func validSourceURL(c *gin.Context, s *string, allowPrivate bool) bool {
	if s == nil || *s == "" {
		return true
	}
	u, err := url.Parse(*s)
	if err != nil || (u.Scheme != "rtsp" && u.Scheme != "rtsps") || u.Host == "" || u.Fragment != "" || len(*s) > 1024 {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest,
			`"source_url" must be an rtsp:// or rtsps:// URL of at most 1024 characters (credentials may be in it: rtsp://user:password@camera/stream), or "" to stop pulling`)
		return false
	}
	if !allowPrivate && netguard.LiteralPrivate(strings.ToLower(u.Hostname())) {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest,
			`"source_url" names a loopback or private address, which this node does not pull from (ingest.rtsp_pull_allow_private)`)
		return false
	}
	return true
}

// validLadder checks and normalizes a ladder ("" keeps the node's ladder);
// on failure it has answered the request.
func validLadder(c *gin.Context, s *string) (*string, bool) {
	if s == nil || *s == "" {
		return s, true
	}
	l, err := media.ParseLadder(*s)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest,
			"ladder: "+err.Error()+` (want rungs like "1080p:5000k,720p:3000k,360p:700k", or "" for the node's ladder)`)
		return nil, false
	}
	norm := l.String()
	return &norm, true
}

// createLiveStream handles POST /v1/live-streams {"name", "ladder"?,
// "playback_policy"?}.
func (a *API) createLiveStream(c *gin.Context) {
	var req liveStreamRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	name, err := validName(req.Name)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	ladder, ok := validLadder(c, req.Ladder)
	if !ok {
		return
	}
	if !validPlaybackPolicy(c, req.PlaybackPolicy) || !validSourceURL(c, req.SourceURL, a.sourcePrivate) {
		return
	}
	spec := routing.LiveStreamSpec{Name: name}
	if req.SourceURL != nil {
		spec.SourceURL = *req.SourceURL
	}
	if ladder != nil {
		spec.Ladder = *ladder
	}
	if req.PlaybackPolicy != nil {
		spec.PlaybackPolicy = *req.PlaybackPolicy
	}
	spec.P2POff = req.P2P != nil && !*req.P2P
	ls, err := a.store.CreateLiveStream(c.Request.Context(), spec)
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	c.JSON(http.StatusCreated, a.liveStreamJSONFor(c, ls))
}

// listLiveStreams handles GET /v1/live-streams.
func (a *API) listLiveStreams(c *gin.Context) {
	list, err := a.store.ListLiveStreams(c.Request.Context())
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	idList := make([]string, len(list))
	for i, ls := range list {
		idList[i] = ls.ID
	}
	st, ok := a.p2pStats(c, idList, liveStreamNotFound)
	if !ok {
		return
	}
	out := liveStreamListJSON{Data: make([]liveStreamJSON, 0, len(list))}
	for _, ls := range list {
		j := a.liveStreamJSONFor(c, ls)
		j.P2PStats = p2pStatsOf(st[ls.ID])
		out.Data = append(out.Data, j)
	}
	c.JSON(http.StatusOK, out)
}

// getLiveStream handles GET /v1/live-streams/:id.
func (a *API) getLiveStream(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	ls, err := a.store.GetLiveStream(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	st, ok := a.p2pStats(c, []string{id}, liveStreamNotFound)
	if !ok {
		return
	}
	j := a.liveStreamJSONFor(c, ls)
	j.P2PStats = p2pStatsOf(st[id])
	c.JSON(http.StatusOK, j)
}

// updateLiveStream handles PATCH /v1/live-streams/:id {"name"?, "ladder"?,
// "playback_policy"?}.
func (a *API) updateLiveStream(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	var req liveStreamRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	if req.Name == nil && req.Ladder == nil && req.PlaybackPolicy == nil && req.SourceURL == nil && req.P2P == nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `nothing to change: give "name", "ladder", "playback_policy", "source_url" and/or "p2p"`)
		return
	}
	var u routing.LiveStreamUpdate
	if req.Name != nil {
		name, err := validName(req.Name)
		if err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
			return
		}
		u.Name = &name
	}
	if u.Ladder, ok = validLadder(c, req.Ladder); !ok {
		return
	}
	if !validPlaybackPolicy(c, req.PlaybackPolicy) || !validSourceURL(c, req.SourceURL, a.sourcePrivate) {
		return
	}
	u.PlaybackPolicy = req.PlaybackPolicy
	u.SourceURL = req.SourceURL
	u.P2P = req.P2P
	ls, err := a.store.UpdateLiveStream(c.Request.Context(), id, u)
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	c.JSON(http.StatusOK, a.liveStreamJSONFor(c, ls))
}

// deleteLiveStream handles DELETE /v1/live-streams/:id.
func (a *API) deleteLiveStream(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	if err := a.store.DeleteLiveStream(c.Request.Context(), id); err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	// The stream no longer exists: its key is already refused; now end a
	// broadcast in progress and remove the recording.
	if err := a.status.Remove(id); err != nil {
		a.log.Error("live stream deleted, but its output could not be removed", "id", id, "err", err)
	}
	c.Status(http.StatusNoContent)
}

// resetStreamKey handles POST /v1/live-streams/:id/reset-stream-key.
func (a *API) resetStreamKey(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	ls, err := a.store.ResetStreamKey(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	// Whoever publishes with the old key is cut off: a reset key is how a
	// leaked key is revoked.
	a.status.Disconnect(id)
	c.JSON(http.StatusOK, a.liveStreamJSONFor(c, ls))
}

// ingestJSON is how to publish; key is the plain stream key when the
// answer makes one, "" otherwise (then nothing that embeds it is given).
func (a *API) ingestJSON(key string) ingestJSON {
	in := ingestJSON{RTMPURL: a.rtmpURL, StreamKey: key}
	if a.rtspURL != "" && key != "" {
		in.RTSPURL = a.rtspURL + "/" + key
	}
	if a.whip != nil {
		in.WHIPURL = a.publicURL + "/v1/whip"
	}
	if a.srtURL != "" && key != "" {
		in.SRTURL = a.srtURL + "?streamid=publish:" + key
	}
	return in
}

func (a *API) livePlayback(id string) playbackJSON {
	p := playbackJSON{HLSURL: a.publicURL + "/hls/" + id + "/master.m3u8"}
	if a.whep != nil {
		p.WHEPURL = a.publicURL + "/v1/whep/" + id
	}
	return p
}
