package playerapi

import "github.com/gin-gonic/gin"

// WebhookStore is the part of the Store that keeps webhooks and their
// delivery logs.
type WebhookStore interface{}

func (a *API) registerWebhooks(v1 gin.IRouter) {}
