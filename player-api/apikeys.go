package playerapi

import (
	"net/http"
	"time"

	"github.com/gin-gonic/gin"
)

// apiKeyJSON is the answer to POST /v1/api-keys; Key is shown this once.
type apiKeyJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Key       string    `json:"key"`
	CreatedAt time.Time `json:"created_at"`
}

// createAPIKey handles POST /v1/api-keys {"name"}.
func (a *API) createAPIKey(c *gin.Context) {
	name, ok := a.readName(c)
	if !ok {
		return
	}
	key, info, err := a.store.CreateAPIKey(c.Request.Context(), name)
	if err != nil {
		a.fail(c, err, "not found")
		return
	}
	c.JSON(http.StatusCreated, apiKeyJSON{ID: info.ID, Name: info.Name, Key: key, CreatedAt: info.CreatedAt})
}
