package web

import (
	"errors"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/routing"
)

// oembedJSON is an oEmbed 1.0 answer of type "video".
type oembedJSON struct {
	Version         string `json:"version"`
	Type            string `json:"type"`
	ProviderName    string `json:"provider_name"`
	ProviderURL     string `json:"provider_url"`
	Title           string `json:"title"`
	HTML            string `json:"html"`
	Width           int    `json:"width"`
	Height          int    `json:"height"`
	ThumbnailURL    string `json:"thumbnail_url,omitempty"`
	ThumbnailWidth  int    `json:"thumbnail_width,omitempty"`
	ThumbnailHeight int    `json:"thumbnail_height,omitempty"`
	CacheAge        int    `json:"cache_age,omitempty"`
}

var pagePathRe = regexp.MustCompile(`^/(watch|embed)/([a-z0-9]{1,64})/?$`)

// oembed answers GET /oembed?url=<watch or embed URL>&format=json
// [&maxwidth=&maxheight=]: the iframe that embeds it, 16:9, 640x360 unless
// the maxima call for less. An unknown URL or id is 404; any format but
// json is 501 (the spec's answer for unsupported formats).
func (w *Web) oembed(c *gin.Context) {
	// Consumers may ask from a browser.
	c.Header("Access-Control-Allow-Origin", "*")
	c.Header("X-Content-Type-Options", "nosniff")
	if f := c.DefaultQuery("format", "json"); f != "json" {
		oembedError(c, http.StatusNotImplemented, "not_implemented", fmt.Sprintf("format %q is not supported: use format=json", f))
		return
	}
	raw := c.Query("url")
	if raw == "" {
		oembedError(c, http.StatusBadRequest, "invalid_request", `"url" is required: the URL of a watch or embed page`)
		return
	}
	maxW, okW := dimension(c.Query("maxwidth"))
	maxH, okH := dimension(c.Query("maxheight"))
	if !okW || !okH {
		oembedError(c, http.StatusBadRequest, "invalid_request", `"maxwidth" and "maxheight" must be positive whole numbers`)
		return
	}
	id, token, ok := w.pageID(raw, c.Request.Host)
	if !ok {
		oembedError(c, http.StatusNotFound, "not_found", "not a watch or embed page of this Shoal node")
		return
	}
	it, err := w.lookup(c.Request.Context(), id)
	switch {
	case errors.Is(err, errNotFound):
		oembedError(c, http.StatusNotFound, "not_found", errNotFound.Error())
		return
	case errors.Is(err, routing.ErrUnavailable):
		c.Header("Retry-After", "2")
		oembedError(c, http.StatusServiceUnavailable, "unavailable", "temporarily unavailable; retry shortly")
		return
	case err != nil:
		w.log.Error("oembed: lookup failed", "id", id, "err", err)
		oembedError(c, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	width, height := fit(maxW, maxH)
	src := w.publicURL + "/embed/" + id
	if token != "" {
		src += "?token=" + url.QueryEscape(token)
	}
	title := it.title()
	out := oembedJSON{
		Version:      "1.0",
		Type:         "video",
		ProviderName: "Shoal",
		ProviderURL:  w.publicURL + "/",
		Title:        title,
		HTML: fmt.Sprintf(`<iframe src="%s" width="%d" height="%d" frameborder="0" allow="autoplay; fullscreen; picture-in-picture" allowfullscreen title="%s"></iframe>`,
			html.EscapeString(src), width, height, html.EscapeString(title)),
		Width:    width,
		Height:   height,
		CacheAge: 300,
	}
	if v := it.video; it.kind == kindVideo && v.Status == routing.VideoReady && v.Poster && !it.signed() {
		if tw, th := posterSize(v); tw > 0 {
			out.ThumbnailURL = w.publicURL + "/hls/" + id + "/poster.jpg"
			out.ThumbnailWidth, out.ThumbnailHeight = tw, th
		}
	}
	c.Header("Cache-Control", "public, max-age=60")
	c.JSON(http.StatusOK, out)
}

func oembedError(c *gin.Context, status int, code, msg string) {
	c.Header("Cache-Control", "no-store")
	c.JSON(status, gin.H{"error": gin.H{"code": code, "message": msg}})
}

// dimension parses an optional maxwidth/maxheight ("" is 0: no limit).
func dimension(s string) (int, bool) {
	if s == "" {
		return 0, true
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, false
	}
	return min(n, maxEmbedWidth), true
}

// fit is the largest 16:9 size no larger than 640x360 and the maxima.
func fit(maxW, maxH int) (int, int) {
	w, h := defaultEmbedWidth, defaultEmbedHeight
	if maxW > 0 && maxW < w {
		w, h = maxW, maxW*9/16
	}
	if maxH > 0 && maxH < h {
		w, h = maxH*16/9, maxH
	}
	return max(w, 1), max(h, 1)
}

// pageID extracts the id (and any ?token=) of a watch or embed URL of this
// node: its host must be the public URL's or the one the request came to.
func (w *Web) pageID(raw, reqHost string) (id, token string, ok bool) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "", "", false
	}
	host := strings.ToLower(u.Host)
	if host != w.publicHost && host != strings.ToLower(reqHost) {
		return "", "", false
	}
	m := pagePathRe.FindStringSubmatch(u.Path)
	if m == nil {
		return "", "", false
	}
	return m[2], u.Query().Get("token"), true
}
