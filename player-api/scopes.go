package playerapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/routing"
)

// Scopes an API key may hold (routing.APIKeyScopes).
const (
	scopeAdmin          = routing.ScopeAdmin
	scopeStreams        = routing.ScopeStreams
	scopeVideos         = routing.ScopeVideos
	scopePlaybackTokens = routing.ScopePlaybackTokens
	scopeReadOnly       = routing.ScopeReadOnly
)

// defaultScopes are the scopes of a key issued without "scopes": everything
// but admin.
var defaultScopes = []string{scopeStreams, scopeVideos, scopePlaybackTokens}

// access is what a route asks of an API key: every one of Scopes, or,
// when Read is set, read-only instead. The admin scope grants every route.
type access struct {
	Scopes []string
	Read   bool
}

var (
	streamsWrite = access{Scopes: []string{scopeStreams}}
	streamsRead  = access{Scopes: []string{scopeStreams}, Read: true}
	videosWrite  = access{Scopes: []string{scopeVideos}}
	videosRead   = access{Scopes: []string{scopeVideos}, Read: true}
	// allItemsRead reads figures of videos and live streams together.
	allItemsRead = access{Scopes: []string{scopeVideos, scopeStreams}, Read: true}
	adminOnly    = access{Scopes: []string{scopeAdmin}}
	adminRead    = access{Scopes: []string{scopeAdmin}, Read: true}
)

// routeScopes says, for every route behind Authenticate ("METHOD
// /v1/path" as Gin registers it), which scope it needs. A route missing
// here is admin-only; TestEveryRouteHasAScope keeps the table complete.
var routeScopes = map[string]access{
	"POST /v1/live-streams":                              streamsWrite,
	"GET /v1/live-streams":                               streamsRead,
	"GET /v1/live-streams/:id":                           streamsRead,
	"PATCH /v1/live-streams/:id":                         streamsWrite,
	"DELETE /v1/live-streams/:id":                        streamsWrite,
	"POST /v1/live-streams/:id/reset-stream-key":         streamsWrite,
	"POST /v1/live-streams/:id/restreams":                streamsWrite,
	"GET /v1/live-streams/:id/restreams":                 streamsRead,
	"DELETE /v1/live-streams/:id/restreams/:restream_id": streamsWrite,
	"POST /v1/videos":                                    videosWrite,
	"GET /v1/videos":                                     videosRead,
	"GET /v1/videos/:id":                                 videosRead,
	"PATCH /v1/videos/:id":                               videosWrite,
	"DELETE /v1/videos/:id":                              videosWrite,
	"PUT /v1/videos/:id/source":                          videosWrite,
	"POST /v1/uploads/":                                  videosWrite,
	"POST /v1/uploads":                                   videosWrite,
	"HEAD /v1/uploads/:upload":                           videosRead,
	"PATCH /v1/uploads/:upload":                          videosWrite,
	"DELETE /v1/uploads/:upload":                         videosWrite,
	"POST /v1/playback-tokens":                           {Scopes: []string{scopePlaybackTokens}},
	"POST /v1/api-keys":                                  adminOnly,
	"GET /v1/api-keys":                                   adminOnly,
	"DELETE /v1/api-keys/:id":                            adminOnly,
	"POST /v1/node-tokens":                               adminOnly,
	"DELETE /v1/node-tokens/:id":                         adminOnly,
	"GET /v1/nodes":                                      adminRead,
	"POST /v1/nodes/:id/release":                         adminOnly,
	"GET /v1/nodes/:id/usage":                            adminRead,
	"GET /v1/operators/epochs":                           adminRead,
	"GET /v1/operators/epochs/:epoch":                    adminRead,
	"POST /v1/webhooks":                                  adminOnly,
	"GET /v1/webhooks":                                   adminOnly,
	"GET /v1/webhooks/:id":                               adminOnly,
	"DELETE /v1/webhooks/:id":                            adminOnly,
	"GET /v1/webhooks/:id/deliveries":                    adminOnly,
	"GET /v1/analytics":                                  allItemsRead,
	"GET /v1/analytics/videos/:id":                       videosRead,
	"GET /v1/analytics/live-streams/:id":                 streamsRead,
	"GET /v1/analytics/nodes/:id":                        allItemsRead,
}

// routeAccess is what the request's route needs of an API key.
func routeAccess(c *gin.Context) access {
	if a, ok := routeScopes[c.Request.Method+" "+c.FullPath()]; ok {
		return a
	}
	return adminOnly
}

// scopesKey is the gin.Context key of the authenticated key's scopes.
const scopesKey = "shoal.scopes"

// allScopes are the admin key's scopes.
var allScopes = routing.APIKeyScopes

// authorize answers 403 unless scopes grant the request's route; it tells
// whether the request may go on.
func authorize(c *gin.Context, scopes []string) bool {
	c.Set(scopesKey, scopes)
	need := routeAccess(c)
	if slices.Contains(scopes, scopeAdmin) || (need.Read && slices.Contains(scopes, scopeReadOnly)) {
		return true
	}
	var lacks []string
	for _, s := range need.Scopes {
		if !slices.Contains(scopes, s) {
			lacks = append(lacks, s)
		}
	}
	switch len(lacks) {
	case 0:
		return true
	case 1:
		WriteError(c, http.StatusForbidden, codeForbidden, fmt.Sprintf("this API key lacks the %q scope", lacks[0]))
	default:
		WriteError(c, http.StatusForbidden, codeForbidden, fmt.Sprintf("this API key lacks the %s scopes", strings.Join(quoteEach(lacks), " and ")))
	}
	return false
}

// hasScope tells whether the request's API key has scope s (admin has
// every scope).
func hasScope(c *gin.Context, s string) bool {
	v, _ := c.Get(scopesKey)
	scopes, _ := v.([]string)
	return slices.Contains(scopes, scopeAdmin) || slices.Contains(scopes, s)
}

// validScopes checks the "scopes" of POST /v1/api-keys: nil gives
// defaultScopes; otherwise a non-empty list of known scopes, returned
// without duplicates in the order given.
func validScopes(scopes *[]string) ([]string, error) {
	if scopes == nil {
		return slices.Clone(defaultScopes), nil
	}
	if len(*scopes) == 0 {
		return nil, fmt.Errorf(`"scopes" must not be empty; give one or more of %s, or leave it out for %s`,
			quoteAll(routing.APIKeyScopes), quoteAll(defaultScopes))
	}
	var out []string
	for _, s := range *scopes {
		if !slices.Contains(routing.APIKeyScopes, s) {
			shown := s
			if len(shown) > 40 {
				shown = shown[:40] + "..."
			}
			return nil, fmt.Errorf(`unknown scope %q; valid scopes are %s`, shown, quoteAll(routing.APIKeyScopes))
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

func quoteAll(list []string) string { return strings.Join(quoteEach(list), ", ") }

func quoteEach(list []string) []string {
	q := make([]string, len(list))
	for i, s := range list {
		q[i] = fmt.Sprintf("%q", s)
	}
	return q
}
