package playerapi

import (
	"net/http"

	"github.com/gin-gonic/gin"
)

// WHIP is the WebRTC ingest's HTTP side (RFC 9725): the offer, the session
// resource (trickle ICE with PATCH, the end with DELETE) and CORS. It
// authorizes with the stream key itself, not an API key.
type WHIP interface {
	ServeOffer(w http.ResponseWriter, r *http.Request)
	ServeOptions(w http.ResponseWriter, r *http.Request)
	ServeResource(w http.ResponseWriter, r *http.Request, session string)
}

func (a *API) registerWHIP(r gin.IRouter) {
	r.POST("/v1/whip", a.whipHandler(func(w WHIP, c *gin.Context) { w.ServeOffer(c.Writer, c.Request) }))
	r.OPTIONS("/v1/whip", a.whipHandler(func(w WHIP, c *gin.Context) { w.ServeOptions(c.Writer, c.Request) }))
	res := a.whipHandler(func(w WHIP, c *gin.Context) { w.ServeResource(c.Writer, c.Request, c.Param("session")) })
	for _, m := range []string{http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		r.Handle(m, "/v1/whip/:session", res)
	}
}

func (a *API) whipHandler(serve func(WHIP, *gin.Context)) gin.HandlerFunc {
	return func(c *gin.Context) {
		if a.whip == nil {
			WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "WebRTC (WHIP) ingest is not running on this node")
			return
		}
		serve(a.whip, c)
	}
}

// WHEP is real-time playback's HTTP side (RFC 9725): the offer for a live
// stream, the session resource and CORS. Signed streams take a playback
// token as the bearer.
type WHEP interface {
	ServeOffer(w http.ResponseWriter, r *http.Request, id string)
	ServeOptions(w http.ResponseWriter, r *http.Request)
	ServeResource(w http.ResponseWriter, r *http.Request, id, session string)
}

func (a *API) registerWHEP(r gin.IRouter) {
	serve := func(h func(WHEP, *gin.Context)) gin.HandlerFunc {
		return func(c *gin.Context) {
			if a.whep == nil {
				WriteError(c, http.StatusServiceUnavailable, codeUnavailable, "WebRTC (WHEP) playback is not running on this node")
				return
			}
			h(a.whep, c)
		}
	}
	r.POST("/v1/whep/:id", serve(func(w WHEP, c *gin.Context) { w.ServeOffer(c.Writer, c.Request, c.Param("id")) }))
	r.OPTIONS("/v1/whep/:id", serve(func(w WHEP, c *gin.Context) { w.ServeOptions(c.Writer, c.Request) }))
	res := serve(func(w WHEP, c *gin.Context) { w.ServeResource(c.Writer, c.Request, c.Param("id"), c.Param("session")) })
	for _, m := range []string{http.MethodPatch, http.MethodDelete, http.MethodOptions} {
		r.Handle(m, "/v1/whep/:id/:session", res)
	}
}
