package playerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/netguard"
	"github.com/shoal-video/shoal/internal/routing"
)

// WebhookStore is the part of the Store that keeps webhooks and their
// delivery logs.
type WebhookStore interface {
	CreateWebhook(ctx context.Context, spec routing.WebhookSpec) (routing.Webhook, error)
	GetWebhook(ctx context.Context, id string) (routing.Webhook, error)
	ListWebhooks(ctx context.Context) ([]routing.Webhook, error)
	DeleteWebhook(ctx context.Context, id string) error
	ListWebhookDeliveries(ctx context.Context, id string) ([]routing.WebhookDelivery, error)
}

const webhookNotFound = "webhook not found"

// maxWebhookURLLen is the longest webhook URL accepted, in bytes.
const maxWebhookURLLen = 2048

// registerWebhooks mounts the webhook routes on v1.
func (a *API) registerWebhooks(v1 gin.IRouter) {
	v1.POST("/webhooks", a.createWebhook)
	v1.GET("/webhooks", a.listWebhooks)
	v1.GET("/webhooks/:id", a.getWebhook)
	v1.DELETE("/webhooks/:id", a.deleteWebhook)
	v1.GET("/webhooks/:id/deliveries", a.listWebhookDeliveries)
}

// webhookJSON is the JSON form of a webhook. The secret is shown by POST
// and by GET of one webhook (API keys are admin-level), not in the list.
type webhookJSON struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"`
	Secret    string    `json:"secret,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

type webhookListJSON struct {
	Data []webhookJSON `json:"data"`
}

// deliveryJSON is the JSON form of a webhook delivery.
type deliveryJSON struct {
	ID            string     `json:"id"`
	WebhookID     string     `json:"webhook_id"`
	EventID       string     `json:"event_id"`
	Type          string     `json:"type"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	LastStatus    int        `json:"last_status,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

type deliveryListJSON struct {
	Data []deliveryJSON `json:"data"`
}

func toWebhookJSON(w routing.Webhook, withSecret bool) webhookJSON {
	out := webhookJSON{ID: w.ID, URL: w.URL, Events: w.Events, CreatedAt: w.CreatedAt}
	if out.Events == nil {
		out.Events = []string{}
	}
	if withSecret {
		out.Secret = w.Secret
	}
	return out
}

func toDeliveryJSON(d routing.WebhookDelivery) deliveryJSON {
	out := deliveryJSON{
		ID: d.ID, WebhookID: d.WebhookID, EventID: d.EventID, Type: d.Type, State: d.State,
		Attempts: d.Attempts, LastStatus: d.LastStatus, LastError: d.LastError,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
	if !d.NextAttemptAt.IsZero() {
		next := d.NextAttemptAt
		out.NextAttemptAt = &next
	}
	return out
}

// webhookRequest is the body of POST /v1/webhooks.
type webhookRequest struct {
	URL    *string  `json:"url"`
	Events []string `json:"events"`
}

// validWebhookURL checks the URL deliveries are POSTed to: absolute http or
// https with a host, without user info or a fragment. A query is allowed
// (receivers often take a token there). Unless allowPrivate, a host that
// names a loopback or private address outright is refused (names that
// resolve to one are refused when the dispatcher dials them).
func validWebhookURL(raw *string, allowPrivate bool) (string, error) {
	if raw == nil {
		return "", errors.New(`"url" is required`)
	}
	s := strings.TrimSpace(*raw)
	switch {
	case s == "":
		return "", errors.New(`"url" must not be empty`)
	case len(s) > maxWebhookURLLen:
		return "", fmt.Errorf(`"url" must be at most %d bytes`, maxWebhookURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", errors.New(`"url" is not a valid URL`)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", errors.New(`"url" must be an absolute URL starting with http:// or https://`)
	case u.Host == "" || u.Hostname() == "":
		return "", errors.New(`"url" has no host`)
	case u.User != nil:
		return "", errors.New(`"url" must not contain user info; put a token in the path or query, or check the signature`)
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "", errors.New(`"url" must not contain a fragment`)
	case strings.ContainsAny(s, " \t"):
		return "", errors.New(`"url" must not contain spaces`)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return "", errors.New(`"url" has an invalid port`)
		}
	}
	if !allowPrivate && netguard.LiteralPrivate(strings.ToLower(u.Hostname())) {
		return "", errors.New(`"url" names a loopback or private address, which this node does not deliver to (webhook_allow_private)`)
	}
	return s, nil
}

// validEvents checks the "events" of a webhook: a non-empty list of known
// event types.
func validEvents(events []string) ([]string, error) {
	known := strings.Join(routing.EventTypes, ", ")
	if events == nil {
		return nil, fmt.Errorf(`"events" is required: a list of event types among %s`, known)
	}
	if len(events) == 0 {
		return nil, fmt.Errorf(`"events" must list at least one event type among %s`, known)
	}
	for i, e := range events {
		if !slices.Contains(routing.EventTypes, e) {
			return nil, fmt.Errorf(`"events"[%d]: unknown event type %q; want one of %s`, i, clip(e), known)
		}
	}
	return events, nil
}

// webhookPathID returns the :id path parameter, or answers 404 when it is
// not a valid id.
func webhookPathID(c *gin.Context) (string, bool) {
	id := c.Param("id")
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, webhookNotFound)
		return "", false
	}
	return id, true
}

// createWebhook handles POST /v1/webhooks {"url", "events"}.
func (a *API) createWebhook(c *gin.Context) {
	var req webhookRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	u, err := validWebhookURL(req.URL, a.webhookPrivate)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	events, err := validEvents(req.Events)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	w, err := a.store.CreateWebhook(c.Request.Context(), routing.WebhookSpec{URL: u, Events: events})
	if err != nil {
		a.fail(c, err, webhookNotFound)
		return
	}
	c.JSON(http.StatusCreated, toWebhookJSON(w, true))
}

// listWebhooks handles GET /v1/webhooks.
func (a *API) listWebhooks(c *gin.Context) {
	list, err := a.store.ListWebhooks(c.Request.Context())
	if err != nil {
		a.fail(c, err, webhookNotFound)
		return
	}
	out := webhookListJSON{Data: make([]webhookJSON, 0, len(list))}
	for _, w := range list {
		out.Data = append(out.Data, toWebhookJSON(w, false))
	}
	c.JSON(http.StatusOK, out)
}

// getWebhook handles GET /v1/webhooks/:id.
func (a *API) getWebhook(c *gin.Context) {
	id, ok := webhookPathID(c)
	if !ok {
		return
	}
	w, err := a.store.GetWebhook(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, webhookNotFound)
		return
	}
	c.JSON(http.StatusOK, toWebhookJSON(w, true))
}

// deleteWebhook handles DELETE /v1/webhooks/:id.
func (a *API) deleteWebhook(c *gin.Context) {
	id, ok := webhookPathID(c)
	if !ok {
		return
	}
	if err := a.store.DeleteWebhook(c.Request.Context(), id); err != nil {
		a.fail(c, err, webhookNotFound)
		return
	}
	c.Status(http.StatusNoContent)
}

// listWebhookDeliveries handles GET /v1/webhooks/:id/deliveries.
func (a *API) listWebhookDeliveries(c *gin.Context) {
	id, ok := webhookPathID(c)
	if !ok {
		return
	}
	list, err := a.store.ListWebhookDeliveries(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, webhookNotFound)
		return
	}
	out := deliveryListJSON{Data: make([]deliveryJSON, 0, len(list))}
	for _, d := range list {
		out.Data = append(out.Data, toDeliveryJSON(d))
	}
	c.JSON(http.StatusOK, out)
}
