package playerapi

import (
	"errors"
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// apiKeyPrefix is the prefix of keys issued by POST /v1/api-keys; keys
// without this shape are refused without asking Redis.
const apiKeyPrefix = "shoal"

// Authenticate is Gin middleware that lets the request through only with
// "Authorization: Bearer <key>", where key is the admin key or an issued API
// key. It answers 401 for a missing or unknown key and 503 when an issued
// key cannot be checked because Redis is unreachable. Register installs it
// on every route; it is exported for other /v1 routes the lead mounts.
//
// It then answers 403 when the key lacks the scope routeScopes gives the
// route (the admin key has every scope). Issued keys are looked up in Redis
// on every request, never cached, so a revoked key is refused at once by
// every node that shares the store.
//
// Answers carry secrets (stream keys, new API keys), so Authenticate marks
// every answer "Cache-Control: no-store".
func (a *API) Authenticate(c *gin.Context) {
	c.Header("Cache-Control", "no-store")
	key, ok := bearerToken(c.GetHeader("Authorization"))
	if !ok {
		unauthorized(c, missingKeyMessage)
		return
	}
	if ids.Equal(ids.Hash(key), a.adminKeyHash) {
		authorize(c, allScopes)
		return
	}
	if !ids.LooksLikeSecret(apiKeyPrefix, key) {
		unauthorized(c, "invalid API key")
		return
	}
	k, err := a.store.VerifyAPIKey(c.Request.Context(), key)
	if errors.Is(err, routing.ErrNotFound) {
		unauthorized(c, "invalid API key")
		return
	}
	if err != nil {
		a.fail(c, err, "invalid API key")
		return
	}
	authorize(c, k.Scopes)
}

const missingKeyMessage = `missing or malformed Authorization header; send "Authorization: Bearer <api key>"`

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header; the scheme is case-insensitive (RFC 9110, section 11.1).
func bearerToken(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}

func unauthorized(c *gin.Context, msg string) {
	c.Header("WWW-Authenticate", `Bearer realm="shoal"`)
	WriteError(c, http.StatusUnauthorized, codeUnauthorized, msg)
}
