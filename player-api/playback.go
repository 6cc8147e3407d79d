package playerapi

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
)

// Playback token lifetimes, in seconds.
const (
	defaultTokenTTL = 3600
	maxTokenTTL     = 7 * 24 * 3600
)

const (
	playbackNotConfigured = "signed playback is not configured on this node"
	playbackIDNotFound    = "no live stream or video with this id"
)

// playbackTokenRequest is the body of POST /v1/playback-tokens.
type playbackTokenRequest struct {
	ID         *string `json:"id"`
	TTLSeconds *int64  `json:"ttl_seconds"`
	IP         *string `json:"ip"`
	Region     *string `json:"region"`
}

// playbackTokenJSON is the answer of POST /v1/playback-tokens.
type playbackTokenJSON struct {
	ID        string    `json:"id"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	// HLSURL is the master playlist's URL with the token, ready to play.
	HLSURL string `json:"hls_url"`
}

func (a *API) registerPlayback(v1 gin.IRouter) {
	v1.POST("/playback-tokens", a.createPlaybackToken)
}

// createPlaybackToken handles POST /v1/playback-tokens {"id",
// "ttl_seconds"?, "ip"?, "region"?}: a token, signed with the origin's
// playback key, that plays the live stream or video id until it expires.
func (a *API) createPlaybackToken(c *gin.Context) {
	if a.playbackKey == nil {
		WriteError(c, http.StatusServiceUnavailable, codeUnavailable, playbackNotConfigured)
		return
	}
	var req playbackTokenRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	if req.ID == nil || *req.ID == "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"id" is required: the id of a live stream or video`)
		return
	}
	id := *req.ID
	ttl := int64(defaultTokenTTL)
	if req.TTLSeconds != nil {
		ttl = *req.TTLSeconds
		if ttl < 1 || ttl > maxTokenTTL {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest,
				fmt.Sprintf(`"ttl_seconds" must be from 1 to %d (7 days), default %d`, maxTokenTTL, defaultTokenTTL))
			return
		}
	}
	claims := playback.Claims{ID: id}
	if req.IP != nil {
		ip, err := playback.NormalizeIP(strings.TrimSpace(*req.IP))
		if err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest,
				`"ip" must be an IP address ("203.0.113.7", "2001:db8::1") or a prefix ("203.0.113.0/24")`)
			return
		}
		claims.IP = ip
	}
	if req.Region != nil {
		if !playback.ValidRegion(*req.Region) {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest, `"region" must be 1 to 64 characters of [A-Za-z0-9._-]`)
			return
		}
		claims.Region = *req.Region
	}
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, playbackIDNotFound)
		return
	}
	if !a.playableExists(c, id) {
		return
	}
	claims.Expires = time.Now().Add(time.Duration(ttl) * time.Second)
	if len(a.playbackKey) != ed25519.PrivateKeySize {
		a.logServerError(c, http.StatusInternalServerError, errors.New("the configured playback key is not an ed25519 private key"))
		WriteError(c, http.StatusInternalServerError, codeInternal, "internal error")
		return
	}
	tok, err := playback.Sign(a.playbackKey, claims)
	if err != nil {
		// Every claim was checked above.
		a.logServerError(c, http.StatusInternalServerError, err)
		WriteError(c, http.StatusInternalServerError, codeInternal, "internal error")
		return
	}
	c.JSON(http.StatusCreated, playbackTokenJSON{
		ID:        id,
		Token:     tok,
		ExpiresAt: time.Unix(claims.Expires.Unix(), 0).UTC(),
		HLSURL:    a.publicURL + "/hls/" + id + "/master.m3u8?" + playback.TokenParam + "=" + tok,
	})
}

// playableExists tells whether id is a live stream or a video; otherwise
// it has answered 404 (or 503/500 when the store failed).
func (a *API) playableExists(c *gin.Context, id string) bool {
	ctx := c.Request.Context()
	_, err := a.store.GetLiveStream(ctx, id)
	if err == nil {
		return true
	}
	if !errors.Is(err, routing.ErrNotFound) {
		a.fail(c, err, playbackIDNotFound)
		return false
	}
	if _, err = a.store.GetVideo(ctx, id); err != nil {
		a.fail(c, err, playbackIDNotFound)
		return false
	}
	return true
}

// validPlaybackPolicy checks a playback policy given in a request; on
// failure it has answered 400.
func validPlaybackPolicy(c *gin.Context, p *string) bool {
	if p == nil || routing.ValidPlaybackPolicy(*p) {
		return true
	}
	WriteError(c, http.StatusBadRequest, codeInvalidRequest,
		`"playback_policy" must be "public" (anyone may watch) or "signed" (playback URLs need ?token=, see POST /v1/playback-tokens)`)
	return false
}

// playbackPublicKey returns the public half of the playback key in the
// form edges parse (playback.PublicKeyString), or "" when signed playback
// is not configured.
func (a *API) playbackPublicKey() string {
	if len(a.playbackKey) != ed25519.PrivateKeySize {
		return ""
	}
	return playback.PublicKeyString(a.playbackKey.Public().(ed25519.PublicKey))
}
