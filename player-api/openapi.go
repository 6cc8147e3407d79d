package playerapi

import (
	_ "embed"
	"net/http"

	"github.com/gin-gonic/gin"
)

// openAPISpec is the OpenAPI 3.1 description of every route Register mounts.
//
//go:embed openapi.yaml
var openAPISpec []byte

// serveOpenAPI handles GET /v1/openapi.yaml.
func serveOpenAPI(c *gin.Context) {
	c.Header("Cache-Control", "public, max-age=300")
	c.Data(http.StatusOK, "application/yaml; charset=utf-8", openAPISpec)
}
