// Package web serves Shoal's viewer pages and dashboard:
//
//	GET /                 the dashboard (sign in with an API key; live streams, videos, nodes)
//	GET /watch/<id>       the watch page of a live stream or video
//	GET /embed/<id>       the same player alone, for iframes (?autoplay=1&muted=1&controls=0)
//	GET /oembed?url=      oEmbed 1.0 (JSON) for watch and embed URLs
//	GET /assets/<file>    the built front-end (web/dist, embedded), content-hashed names
//
// Pages are rendered on the server with html/template: the title, Open Graph
// and Twitter card tags, the oEmbed discovery link and the page's initial
// state (a JSON document in a non-executed script element), which the
// bundled JavaScript reads to build the player. Watch and embed pages need
// no API key: they show only what playback needs, read from the store (title,
// status, playback policy, poster and storyboard). The dashboard page is a
// static shell; it talks to the REST API with the key the user signs in
// with, kept in the tab's sessionStorage.
//
// The front-end sources live in web/src and are bundled with esbuild into
// web/dist by web/build.sh; web/dist is committed, so building Shoal never
// needs npm (see web/README.md).
package web

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/routing"
)

// Store is what the pages read: *routing.Store implements it. Lookups of
// missing records return routing.ErrNotFound; failures to reach Redis wrap
// routing.ErrUnavailable.
type Store interface {
	GetLiveStream(ctx context.Context, id string) (routing.LiveStream, error)
	GetVideo(ctx context.Context, id string) (routing.Video, error)
}

// Config configures the pages.
type Config struct {
	// PublicURL is how viewers reach this node, for example
	// "https://video.example.com": the absolute URLs of Open Graph tags,
	// oEmbed answers and embed codes are built from it. Required, http or
	// https, no query or fragment.
	PublicURL string
	// ContentKeys are the origin's content keys (key id -> unpadded
	// base64url ed25519 public key) the player verifies segment manifests
	// with. Empty: the player verifies nothing and plays from this node.
	ContentKeys map[string]string
	// DVRWindow is how far back a live stream's DVR playlists reach
	// (hls.dvr_window; 0: no DVR): the player offers seeking back that far.
	DVRWindow time.Duration
	// P2PSTUNServers are the STUN servers (stun: URLs) the player's P2P
	// connections use; none: host addresses only.
	P2PSTUNServers []string
}

// Deps are the collaborators of the pages.
type Deps struct {
	// Store reads live streams and videos. Required.
	Store Store
	// IsLive tells whether a live stream is being published right now. Nil:
	// the watch page does not know and finds out from the playlists.
	IsLive func(id string) bool
	// Log receives server errors. Nil discards them.
	Log *slog.Logger
	// NewSession mints a playback session token for a page of item id
	// (kind "video" or "live"): the player's beacons (POST /v1/beacons)
	// and route requests carry it. Nil: pages carry no session and the
	// player sends no beacons.
	NewSession func(ctx context.Context, kind, id string) (string, error)
}

// Web serves the pages. Create it with New and mount it with Register.
type Web struct {
	publicURL    string
	publicHost   string
	dashboardCSP string
	store        Store
	isLive       func(id string) bool
	log          *slog.Logger
	assets       *assets
	pages        map[string]*template.Template
	contentKeys  map[string]string
	dvrWindow    time.Duration
	stunServers  []string
	newSession   func(ctx context.Context, kind, id string) (string, error)
}

// New checks cfg and deps, indexes the embedded assets and parses the
// templates.
func New(cfg Config, deps Deps) (*Web, error) {
	var errs []error
	pub, host, err := checkPublicURL(cfg.PublicURL)
	if err != nil {
		errs = append(errs, err)
	}
	if deps.Store == nil {
		errs = append(errs, errors.New("web: Deps.Store is required"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a, err := loadAssets(distFS)
	if err != nil {
		return nil, err
	}
	w := &Web{publicURL: pub, publicHost: host, store: deps.Store, isLive: deps.IsLive, log: log, assets: a,
		contentKeys: cfg.ContentKeys, dvrWindow: cfg.DVRWindow, stunServers: cfg.P2PSTUNServers,
		newSession: deps.NewSession}
	u, _ := url.Parse(pub)
	w.dashboardCSP = dashboardCSP(u.Scheme + "://" + u.Host)
	if w.pages, err = parseTemplates(a); err != nil {
		return nil, err
	}
	return w, nil
}

// checkPublicURL returns the URL without a trailing slash, and its host.
func checkPublicURL(raw string) (string, string, error) {
	if raw == "" {
		return "", "", errors.New("web: Config.PublicURL is required (how viewers reach this node, e.g. http://localhost:8080)")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", "", fmt.Errorf("web: Config.PublicURL: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", "", fmt.Errorf("web: Config.PublicURL %q must start with http:// or https://", raw)
	case u.Host == "":
		return "", "", fmt.Errorf("web: Config.PublicURL %q has no host", raw)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		return "", "", fmt.Errorf("web: Config.PublicURL %q must not contain user info, a query or a fragment", raw)
	}
	return strings.TrimRight(raw, "/"), strings.ToLower(u.Host), nil
}

// Register mounts the pages and assets on r, for GET and HEAD.
func (w *Web) Register(r gin.IRouter) {
	routes := []struct {
		path string
		h    gin.HandlerFunc
	}{
		{"/", w.dashboard},
		{"/watch/:id", w.watch},
		{"/embed/:id", w.embed},
		{"/oembed", w.oembed},
		{"/assets/*path", w.serveAsset},
	}
	for _, rt := range routes {
		r.GET(rt.path, rt.h)
		r.HEAD(rt.path, rt.h)
	}
}

// Content-Security-Policy of each kind of page. Scripts and styles come
// only from this node; media may come from edges (viewer routing sends
// players to other hosts), so connect-src and media-src allow http(s);
// the P2P tracker of the node playing (an edge's too) is a WebSocket, so
// connect-src allows ws(s) (CSP's http: does not cover ws:).
const (
	cspWatch = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; " +
		"media-src 'self' blob: http: https:; connect-src 'self' http: https: ws: wss:; worker-src 'self' blob:; " +
		"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)

// dashboardCSP is the dashboard's policy: it holds an API key, so it may
// talk only to this node (the page's origin and the public URL's, where
// the API sends tus uploads and thumbnails).
func dashboardCSP(publicOrigin string) string {
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: " + publicOrigin + "; " +
		"media-src 'self' blob: " + publicOrigin + "; connect-src 'self' " + publicOrigin + "; font-src 'self'; object-src 'none'; " +
		"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// pageHeaders sets the security headers common to every page; framable
// pages (embed) may be put in an iframe by any site.
func pageHeaders(c *gin.Context, csp string, framable bool) {
	h := c.Writer.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "strict-origin-when-cross-origin")
	if framable {
		h.Set("Content-Security-Policy", csp+"; frame-ancestors *")
	} else {
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "SAMEORIGIN")
		if strings.Contains(csp, "frame-ancestors 'none'") {
			h.Set("X-Frame-Options", "DENY")
		} else {
			h.Set("Content-Security-Policy", csp+"; frame-ancestors 'self'")
		}
	}
	h.Set("Permissions-Policy", permissionsNone)
}

// Permissions-Policy of the pages: none may use the camera, microphone or
// screen capture but the dashboard, which broadcasts from the browser.
const (
	permissionsNone      = "camera=(), microphone=(), display-capture=(), geolocation=()"
	permissionsDashboard = "camera=(self), microphone=(self), display-capture=(self), geolocation=()"
)
