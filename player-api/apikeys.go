package playerapi

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// apiKeyJSON is an API key as the API shows it. Key is only in the answer
// to POST /v1/api-keys, this once; lists never show it (it is not stored).
type apiKeyJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Scopes    []string  `json:"scopes"`
	Key       string    `json:"key,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Legacy: issued before keys had scopes; it has LegacyAPIKeyScopes.
	Legacy bool `json:"legacy,omitempty"`
}

type apiKeyListJSON struct {
	Data []apiKeyJSON `json:"data"`
}

// apiKeyRequest is the body of POST /v1/api-keys.
type apiKeyRequest struct {
	Name   *string   `json:"name"`
	Scopes *[]string `json:"scopes"`
}

const apiKeyNotFound = "no API key with this id"

func toAPIKeyJSON(k routing.APIKey) apiKeyJSON {
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return apiKeyJSON{ID: k.ID, Name: k.Name, Scopes: scopes, CreatedAt: k.CreatedAt, Legacy: k.Legacy}
}

// createAPIKey handles POST /v1/api-keys {"name", "scopes"?}.
func (a *API) createAPIKey(c *gin.Context) {
	var req apiKeyRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	name, err := validName(req.Name)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	scopes, err := validScopes(req.Scopes)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	key, info, err := a.store.CreateAPIKey(c.Request.Context(), name, scopes)
	if err != nil {
		a.fail(c, err, "not found")
		return
	}
	out := toAPIKeyJSON(info)
	out.Key = key
	c.JSON(http.StatusCreated, out)
}

// listAPIKeys handles GET /v1/api-keys: every issued key, oldest first,
// without the keys themselves. The admin key (configuration) is not listed.
func (a *API) listAPIKeys(c *gin.Context) {
	list, err := a.store.ListAPIKeys(c.Request.Context())
	if err != nil {
		a.fail(c, err, apiKeyNotFound)
		return
	}
	out := apiKeyListJSON{Data: make([]apiKeyJSON, 0, len(list))}
	for _, k := range list {
		out.Data = append(out.Data, toAPIKeyJSON(k))
	}
	c.JSON(http.StatusOK, out)
}

// deleteAPIKey handles DELETE /v1/api-keys/:id: the key is refused from
// the next request on, on every node.
func (a *API) deleteAPIKey(c *gin.Context) {
	id := c.Param("id")
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, apiKeyNotFound)
		return
	}
	if err := a.store.DeleteAPIKey(c.Request.Context(), id); err != nil {
		a.fail(c, err, apiKeyNotFound)
		return
	}
	c.Status(http.StatusNoContent)
}
