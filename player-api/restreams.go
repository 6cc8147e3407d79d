package playerapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/restream"
)

// RestreamStore keeps live streams' restream targets.
type RestreamStore interface {
	AddRestream(ctx context.Context, id string, r routing.Restream, max int) (routing.Restream, error)
	ListRestreams(ctx context.Context, id string) ([]routing.Restream, error)
	DeleteRestream(ctx context.Context, id, rid string) error
}

// RestreamState is where a restream target's pusher stands on this node.
type RestreamState struct {
	State     string    // idle, connecting, live or failed
	Error     string    // why the latest connection failed (secrets redacted)
	Detail    string    // what is sent when it differs from what was asked
	Since     time.Time // when State was entered; zero: never started
	BytesSent int64
}

const restreamNotFound = "no such restream target"

// restreamJSON is a restream target as the API shows it: the URL without
// the platform's stream key.
type restreamJSON struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	URL       string     `json:"url"`
	Rendition string     `json:"rendition"`
	State     string     `json:"state"`
	Error     string     `json:"error,omitempty"`
	Detail    string     `json:"detail,omitempty"`
	Since     *time.Time `json:"since,omitempty"`
	BytesSent int64      `json:"bytes_sent"`
	CreatedAt time.Time  `json:"created_at"`
}

type restreamListJSON struct {
	Data []restreamJSON `json:"data"`
}

type restreamRequest struct {
	URL       string  `json:"url"`
	Name      *string `json:"name"`
	Rendition string  `json:"rendition"`
}

func (a *API) registerRestreams(v1 gin.IRouter) {
	v1.POST("/live-streams/:id/restreams", a.createRestream)
	v1.GET("/live-streams/:id/restreams", a.listRestreams)
	v1.DELETE("/live-streams/:id/restreams/:restream_id", a.deleteRestream)
}

func (a *API) restreamJSON(r routing.Restream, states map[string]RestreamState) restreamJSON {
	out := restreamJSON{ID: r.ID, Name: r.Name, URL: restream.RedactURL(r.URL), Rendition: r.Rendition,
		State: restream.StateIdle, CreatedAt: r.CreatedAt}
	if out.Rendition == "" {
		out.Rendition = media.RenditionSource
	}
	if st, ok := states[r.ID]; ok {
		out.State, out.Error, out.Detail, out.BytesSent = st.State, st.Error, st.Detail, st.BytesSent
		if !st.Since.IsZero() {
			since := st.Since
			out.Since = &since
		}
	}
	return out
}

// createRestream handles POST /v1/live-streams/:id/restreams
// {"url", "name", "rendition"?}.
func (a *API) createRestream(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	if a.maxRestreams <= 0 {
		WriteError(c, http.StatusConflict, "conflict", "restreaming is turned off on this node (ingest.max_restreams is 0)")
		return
	}
	var req restreamRequest
	if !a.decodeJSON(c, &req) {
		return
	}
	name, err := validName(req.Name)
	if err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, err.Error())
		return
	}
	if err := restream.ValidateURL(req.URL); err != nil {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, "url: "+err.Error())
		return
	}
	rendition := strings.TrimSpace(req.Rendition)
	if rendition != "" && rendition != media.RenditionSource {
		if _, err := media.ParseLadder(rendition + ":1000k"); err != nil {
			WriteError(c, http.StatusBadRequest, codeInvalidRequest,
				fmt.Sprintf("rendition: %q is not %q or a rung name like \"720p\"", rendition, media.RenditionSource))
			return
		}
	}
	r, err := a.restreams.AddRestream(c.Request.Context(), id,
		routing.Restream{Name: name, URL: req.URL, Rendition: rendition}, a.maxRestreams)
	if errors.Is(err, routing.ErrTooMany) {
		WriteError(c, http.StatusConflict, "conflict",
			fmt.Sprintf("this live stream already has %d restream targets, the most allowed (ingest.max_restreams)", a.maxRestreams))
		return
	}
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	a.status.RefreshRestreams(id)
	c.JSON(http.StatusCreated, a.restreamJSON(r, nil))
}

// listRestreams handles GET /v1/live-streams/:id/restreams.
func (a *API) listRestreams(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	if _, err := a.store.GetLiveStream(c.Request.Context(), id); err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	list, err := a.restreams.ListRestreams(c.Request.Context(), id)
	if err != nil {
		a.fail(c, err, liveStreamNotFound)
		return
	}
	states := a.status.Restreams(id)
	out := restreamListJSON{Data: make([]restreamJSON, 0, len(list))}
	for _, r := range list {
		out.Data = append(out.Data, a.restreamJSON(r, states))
	}
	c.JSON(http.StatusOK, out)
}

// deleteRestream handles DELETE /v1/live-streams/:id/restreams/:rid: the
// target stops receiving at once.
func (a *API) deleteRestream(c *gin.Context) {
	id, ok := pathID(c)
	if !ok {
		return
	}
	rid := c.Param("restream_id")
	if !ids.Valid(rid) {
		WriteError(c, http.StatusNotFound, codeNotFound, restreamNotFound)
		return
	}
	if err := a.restreams.DeleteRestream(c.Request.Context(), id, rid); err != nil {
		a.fail(c, err, restreamNotFound)
		return
	}
	a.status.RefreshRestreams(id)
	c.Status(http.StatusNoContent)
}
