package web

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

//go:embed templates
var templatesFS embed.FS

// Page names (templates/<name>.html).
const (
	pageWatch     = "watch"
	pageEmbed     = "embed"
	pageDashboard = "dashboard"
	pageError     = "error"
)

// Kinds of things a watch page shows.
const (
	kindLive  = "live"
	kindVideo = "video"
)

// Live stream statuses, as the API names them.
const (
	statusLive = "live"
	statusIdle = "idle"
)

// Default and largest embed sizes of oEmbed answers (16:9).
const (
	defaultEmbedWidth  = 640
	defaultEmbedHeight = 360
	maxEmbedWidth      = 3840
)

func parseTemplates(a *assets) (map[string]*template.Template, error) {
	funcs := template.FuncMap{"asset": a.url}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templatesFS, "templates/layout.html", "templates/partials.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{pageWatch, pageEmbed, pageDashboard, pageError} {
		t, err := template.Must(layout.Clone()).ParseFS(templatesFS, "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}

// playerState is what the watch and embed pages hand to the player (as
// JSON in the page). It holds only what any viewer may see.
type playerState struct {
	Page     string  `json:"page"` // "watch" or "embed"
	ID       string  `json:"id"`
	Kind     string  `json:"kind"` // "live" or "video"
	Title    string  `json:"title"`
	Status   string  `json:"status"` // live: live|idle; video: waiting|processing|ready|failed
	Progress int     `json:"progress,omitempty"`
	Error    string  `json:"error,omitempty"`
	Duration float64 `json:"duration,omitempty"`
	// HLSURL, PosterURL and StoryboardURL are paths on this node; the page
	// adds its own ?token= to them.
	HLSURL        string `json:"hls_url"`
	PosterURL     string `json:"poster_url,omitempty"`
	StoryboardURL string `json:"storyboard_url,omitempty"`
	// WHEPURL (live streams) is real-time playback over WebRTC, a path on
	// this node: the player POSTs its offer there when the viewer asks
	// for real time (the toggle, or ?mode=realtime), with the page's
	// token as the bearer.
	WHEPURL string `json:"whep_url,omitempty"`
	Signed  bool   `json:"signed"`
	// NeedsToken: signed playback and the page was opened without ?token=.
	NeedsToken bool   `json:"needs_token,omitempty"`
	WatchURL   string `json:"watch_url"`
	EmbedURL   string `json:"embed_url"`
	// Embed options (?autoplay=1&muted=1&controls=0).
	Autoplay bool `json:"autoplay,omitempty"`
	Muted    bool `json:"muted,omitempty"`
	Controls bool `json:"controls"`
	// RouteURL answers where to play from (candidate edges, the origin
	// last); ContentKeys verify the signed manifests of what they serve;
	// ServerTime (Unix ms) lets the player judge a manifest's age on a
	// viewer's clock that is off.
	RouteURL    string            `json:"route_url,omitempty"`
	ContentKeys map[string]string `json:"content_keys,omitempty"`
	ServerTime  int64             `json:"server_time"`
	// DVRURL (live streams with a DVR window) is the master playlist of
	// the DVR playlists, reaching DVRWindow seconds back: the player
	// switches to it when the viewer seeks back past the live playlist.
	DVRURL    string  `json:"dvr_url,omitempty"`
	DVRWindow float64 `json:"dvr_window_s,omitempty"`
	// P2P: the player may fetch segments from other viewers (peer-assisted
	// delivery through the node's tracker, /p2p/ws), each verified against
	// the signed manifest. The viewer may still turn it off.
	P2P bool `json:"p2p"`
	// STUNServers (with P2P) are the STUN servers the player's peer
	// connections gather their addresses with.
	STUNServers []string `json:"stun_servers,omitempty"`
	// Session is the page's playback session token, issued at render;
	// the player adds it to its route requests (?session=) and its
	// beacons, which it POSTs to BeaconURL. Absent: no beacons.
	Session   string `json:"session,omitempty"`
	BeaconURL string `json:"beacon_url,omitempty"`
}

// pageData is what the templates render.
type pageData struct {
	Title       string // <title>
	Description string
	BodyClass   string
	HTMLClass   string
	JS, CSS     string // asset names
	State       *playerState
	Meta        *metaTags
	Message     *message // the server-rendered state message (watch/embed)
	Error       *errorPage
	Token       string // the page's ?token=, for poster URLs
	PosterURL   string // with the token, for <video poster>
}

// metaTags are the Open Graph, Twitter card and oEmbed discovery tags.
type metaTags struct {
	Canonical   string
	Title       string
	Description string
	Image       string
	ImageWidth  int
	ImageHeight int
	EmbedURL    string
	OEmbedURL   string
	Live        bool
}

// message is the text shown over the player for states that do not play.
type message struct {
	Kind, Title, Text string
	Progress          int
	ShowProgress      bool
}

type errorPage struct {
	Status  int
	Heading string
	Text    string
}

// item is a live stream or a video, as the pages see it.
type item struct {
	kind   string
	live   routing.LiveStream
	video  routing.Video
	isLive bool
}

func (it item) title() string {
	if it.kind == kindLive {
		return it.live.Name
	}
	if it.video.Title == "" {
		return "Untitled video"
	}
	return it.video.Title
}

func (it item) signed() bool {
	if it.kind == kindLive {
		return it.live.PlaybackPolicy == routing.PlaybackSigned
	}
	return it.video.PlaybackPolicy == routing.PlaybackSigned
}

// p2p tells whether the owner lets viewers share segments (P2P).
func (it item) p2p() bool {
	if it.kind == kindLive {
		return !it.live.P2POff
	}
	return !it.video.P2POff
}

// errNotFound: no live stream or video with the id (or an invalid id).
var errNotFound = errors.New("no live stream or video with this id")

// lookup finds id among live streams, then videos.
func (w *Web) lookup(ctx context.Context, id string) (item, error) {
	if !ids.Valid(id) {
		return item{}, errNotFound
	}
	ls, err := w.store.GetLiveStream(ctx, id)
	if err == nil {
		it := item{kind: kindLive, live: ls}
		if w.isLive != nil {
			it.isLive = w.isLive(id)
		}
		return it, nil
	}
	if !errors.Is(err, routing.ErrNotFound) {
		return item{}, err
	}
	v, err := w.store.GetVideo(ctx, id)
	if errors.Is(err, routing.ErrNotFound) {
		return item{}, errNotFound
	}
	if err != nil {
		return item{}, err
	}
	return item{kind: kindVideo, video: v}, nil
}

func (w *Web) watch(c *gin.Context) { w.playerPage(c, pageWatch) }
func (w *Web) embed(c *gin.Context) { w.playerPage(c, pageEmbed) }

// playerPage renders the watch or embed page of :id.
func (w *Web) playerPage(c *gin.Context, page string) {
	id := c.Param("id")
	it, err := w.lookup(c.Request.Context(), id)
	if err != nil {
		w.fail(c, err, page == pageEmbed)
		return
	}
	token := c.Query("token")
	st := w.state(it, id, page, token, c)
	d := pageData{
		Title:     it.title() + " · Shoal",
		JS:        "player.js",
		CSS:       "player.css",
		State:     st,
		Message:   stateMessage(st),
		Token:     token,
		BodyClass: page,
	}
	if st.PosterURL != "" && !st.NeedsToken {
		d.PosterURL = withToken(st.PosterURL, token)
	}
	d.Description = description(it)
	if page == pageWatch {
		d.Meta = w.meta(it, id, st)
	} else {
		d.HTMLClass = "embed"
	}
	// The state changes (live, processing): always revalidate. Each
	// render carries its own playback session: no shared cache may keep
	// one page for many viewers.
	c.Header("Cache-Control", "private, no-cache")
	if page == pageEmbed {
		pageHeaders(c, cspWatch, true)
	} else {
		pageHeaders(c, cspWatch, false)
	}
	if token != "" {
		// Keep the token out of the Referer of requests to other sites.
		c.Header("Referrer-Policy", "same-origin")
	}
	w.render(c, http.StatusOK, page, d)
}

func (w *Web) state(it item, id, page, token string, c *gin.Context) *playerState {
	st := &playerState{
		Page:       page,
		ID:         id,
		Kind:       it.kind,
		Title:      it.title(),
		HLSURL:     "/hls/" + id + "/master.m3u8",
		Signed:     it.signed(),
		WatchURL:   w.publicURL + "/watch/" + id,
		EmbedURL:   w.publicURL + "/embed/" + id,
		Controls:   true,
		ServerTime: time.Now().UnixMilli(),
		P2P:        it.p2p(),
	}
	if len(w.contentKeys) > 0 {
		st.RouteURL, st.ContentKeys = "/v1/route/"+id, w.contentKeys
	}
	if st.P2P {
		st.STUNServers = w.stunServers
	}
	st.NeedsToken = st.Signed && token == ""
	if it.kind == kindLive {
		st.WHEPURL = "/v1/whep/" + id
		if w.dvrWindow > 0 {
			st.DVRURL, st.DVRWindow = "/hls/"+id+"/dvr.m3u8", w.dvrWindow.Seconds()
		}
		st.Status = statusIdle
		if it.isLive {
			st.Status = statusLive
		}
	} else {
		v := it.video
		st.Status, st.Progress, st.Error = v.Status, v.Progress, v.Error
		if v.Duration > 0 {
			st.Duration = v.Duration.Seconds()
		}
		if v.Status == routing.VideoReady {
			if v.Poster {
				st.PosterURL = "/hls/" + id + "/poster.jpg"
			}
			if v.Storyboard {
				st.StoryboardURL = "/hls/" + id + "/storyboard.vtt"
			}
		}
	}
	if w.newSession != nil && !st.NeedsToken {
		// Without a session the page still plays; it sends no beacons
		// (nor does a signed item's page without its token, which cannot
		// play).
		if tok, err := w.newSession(c.Request.Context(), it.kind, id); err != nil {
			w.log.Warn("could not issue a playback session", "id", id, "err", err)
		} else {
			st.Session, st.BeaconURL = tok, "/v1/beacons"
		}
	}
	if page == pageEmbed {
		st.Autoplay = flag(c.Query("autoplay"))
		st.Muted = flag(c.Query("muted"))
		st.Controls = c.Query("controls") == "" || flag(c.Query("controls"))
	}
	return st
}

// flag reads a boolean query parameter ("1", "true", "yes").
func flag(s string) bool {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

// stateMessage is what the page shows before (or without) its script for
// states that do not play; the script shows the same.
func stateMessage(st *playerState) *message {
	switch {
	case st.NeedsToken:
		return &message{Kind: "needs-token", Title: "This video needs a playback link with a token",
			Text: "Its owner shares it with signed links only. Ask them for a link that ends with ?token=…"}
	case st.Kind == kindLive && st.Status == statusIdle:
		return &message{Kind: "offline", Title: "This stream is offline",
			Text: "It will start here by itself when the creator goes live."}
	case st.Kind == kindVideo && st.Status == routing.VideoFailed:
		return &message{Kind: "failed", Title: "This video could not be processed", Text: st.Error}
	case st.Kind == kindVideo && st.Status == routing.VideoWaiting:
		return &message{Kind: "processing", Title: "Waiting for the upload",
			Text: "The video will be processed as soon as its file has arrived."}
	case st.Kind == kindVideo && st.Status == routing.VideoProcessing:
		return &message{Kind: "processing", Title: "This video is being processed",
			Text: "It will play here as soon as it is ready; this page updates by itself.", Progress: st.Progress, ShowProgress: true}
	}
	return nil
}

func description(it item) string {
	if it.kind == kindLive {
		return "Live stream on Shoal: " + it.title()
	}
	return "Watch “" + it.title() + "” on Shoal"
}

// meta builds the link-preview tags of a watch page. Media behind signed
// playback is never advertised (the poster needs a token too).
func (w *Web) meta(it item, id string, st *playerState) *metaTags {
	m := &metaTags{
		Canonical:   st.WatchURL,
		Title:       it.title(),
		Description: description(it),
		EmbedURL:    st.EmbedURL,
		OEmbedURL:   w.publicURL + "/oembed?format=json&url=" + url.QueryEscape(st.WatchURL),
		Live:        it.kind == kindLive,
	}
	if !st.Signed && st.PosterURL != "" {
		m.Image = w.publicURL + st.PosterURL
		m.ImageWidth, m.ImageHeight = posterSize(it.video)
	}
	return m
}

// posterSize is the size of a video's poster: the VOD worker takes it from
// the source, at most 1280 wide; the top rendition has the source's aspect
// ratio. Zero when unknown.
func posterSize(v routing.Video) (int, int) {
	var w, h int
	for _, r := range v.Renditions {
		if r.Width*r.Height > w*h {
			w, h = r.Width, r.Height
		}
	}
	if w == 0 || h == 0 {
		return 0, 0
	}
	if w > 1280 {
		h = h * 1280 / w
		w = 1280
	}
	return w, h
}

func withToken(p, token string) string {
	if token == "" {
		return p
	}
	return p + "?token=" + url.QueryEscape(token)
}

// dashboard serves the dashboard's page; everything else happens in the
// browser against the REST API.
func (w *Web) dashboard(c *gin.Context) {
	c.Header("Cache-Control", "no-cache")
	pageHeaders(c, w.dashboardCSP, false)
	// "Go live" from the browser needs the camera, the microphone and
	// screen capture, for this page only (it cannot be framed).
	c.Header("Permissions-Policy", permissionsDashboard)
	w.render(c, http.StatusOK, pageDashboard, pageData{
		Title:       "Shoal dashboard",
		Description: "Manage live streams, videos and nodes.",
		JS:          "dashboard.js",
		CSS:         "dashboard.css",
		BodyClass:   "dashboard",
	})
}

// fail renders the error page for a failed lookup: 404 for an unknown id,
// 503 while Redis is unreachable, 500 otherwise (logged).
func (w *Web) fail(c *gin.Context, err error, framable bool) {
	pageHeaders(c, cspWatch, framable)
	c.Header("Cache-Control", "no-store")
	ep := &errorPage{Status: http.StatusNotFound, Heading: "This video does not exist",
		Text: "There is no live stream or video at this address. It may have been deleted, or the link may be mistyped."}
	switch {
	case errors.Is(err, errNotFound):
	case errors.Is(err, routing.ErrUnavailable):
		ep = &errorPage{Status: http.StatusServiceUnavailable, Heading: "Temporarily unavailable",
			Text: "This page cannot be shown right now. Try again in a moment."}
		c.Header("Retry-After", "2")
		w.log.Warn("watch page: store unreachable", "path", c.Request.URL.Path, "err", err)
	default:
		ep = &errorPage{Status: http.StatusInternalServerError, Heading: "Something went wrong",
			Text: "This page cannot be shown right now. Try again in a moment."}
		w.log.Error("watch page: lookup failed", "path", c.Request.URL.Path, "err", err)
	}
	d := pageData{Title: ep.Heading + " · Shoal", CSS: "player.css", Error: ep, BodyClass: "error-page"}
	if framable {
		d.HTMLClass = "embed"
	}
	w.render(c, ep.Status, pageError, d)
}

// render executes a page into a buffer first, so that a template error
// becomes a clean 500 rather than half a page.
func (w *Web) render(c *gin.Context, status int, page string, d pageData) {
	var buf bytes.Buffer
	if err := w.pages[page].ExecuteTemplate(&buf, "layout", d); err != nil {
		w.log.Error("rendering a page failed", "page", page, "err", err)
		c.Data(http.StatusInternalServerError, "text/plain; charset=utf-8", []byte("internal error\n"))
		return
	}
	if c.Request.Method == http.MethodHead {
		c.Header("Content-Type", "text/html; charset=utf-8")
		c.Header("Content-Length", strconv.Itoa(buf.Len()))
		c.Status(status)
		c.Writer.WriteHeaderNow()
		return
	}
	c.Data(status, "text/html; charset=utf-8", buf.Bytes())
}
