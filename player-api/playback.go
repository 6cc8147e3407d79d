package playerapi

import "github.com/gin-gonic/gin"

func (a *API) registerPlayback(v1 gin.IRouter) {}
