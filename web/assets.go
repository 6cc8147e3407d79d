package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base32"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
)

// distFS holds the built front-end (web/build.sh writes it; it is
// committed, so building Shoal needs no npm).
//
//go:embed dist
var distFS embed.FS

// requiredAssets are the files the pages reference.
var requiredAssets = []string{"player.js", "player.css", "dashboard.js", "dashboard.css", "favicon.svg"}

// asset is one file of dist, served at /assets/<hashed>: its name with a
// hash of its content inserted before the extension, so that it can be
// cached for good and a new build gets new URLs.
type asset struct {
	name   string // "player.js"
	hashed string // "player.k3j5h2m4q6r7t8v9.js"
	body   []byte
	ctype  string
	etag   string

	compress bool      // a text format worth compressing
	gzOnce   sync.Once // the body is compressed on first request
	gz       []byte    // nil when compressing does not pay
}

// gzipped returns the gzip-compressed body, or nil when it is not worth
// sending compressed.
func (as *asset) gzipped() []byte {
	if !as.compress {
		return nil
	}
	as.gzOnce.Do(func() { as.gz = gzipBytes(as.body) })
	return as.gz
}

type assets struct {
	byHashed map[string]*asset
	byName   map[string]*asset
}

var hashEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

var assetTypes = map[string]string{
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".txt":  "text/plain; charset=utf-8",
	".json": "application/json",
	".png":  "image/png",
	".jpg":  "image/jpeg",
	".webp": "image/webp",
	".ico":  "image/x-icon",
}

// loadAssets indexes the files under dist/ in fsys.
func loadAssets(fsys fs.FS) (*assets, error) {
	a := &assets{byHashed: map[string]*asset{}, byName: map[string]*asset{}}
	err := fs.WalkDir(fsys, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := strings.TrimPrefix(p, "dist/")
		if strings.Contains(name, "/") {
			return fmt.Errorf("web: unexpected nested asset %s (dist must be flat)", p)
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		ext := path.Ext(name)
		sum := sha256.Sum256(body)
		h := hashEncoding.EncodeToString(sum[:10])
		as := &asset{
			name:   name,
			hashed: strings.TrimSuffix(name, ext) + "." + h + ext,
			body:   body,
			ctype:  assetTypes[ext],
			etag:   `"` + h + `"`,
		}
		if as.ctype == "" {
			as.ctype = "application/octet-stream"
		}
		as.compress = compressible(ext)
		a.byHashed[as.hashed] = as
		a.byName[name] = as
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: reading the embedded assets: %w", err)
	}
	for _, n := range requiredAssets {
		if a.byName[n] == nil {
			return nil, fmt.Errorf("web: the embedded assets lack %s: run web/build.sh", n)
		}
	}
	return a, nil
}

func compressible(ext string) bool {
	switch ext {
	case ".js", ".css", ".svg", ".txt", ".json":
		return true
	}
	return false
}

func gzipBytes(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	if buf.Len() >= len(b)*9/10 {
		return nil
	}
	return buf.Bytes()
}

// url is the path of an asset by its plain name ("player.js").
func (a *assets) url(name string) (string, error) {
	as := a.byName[name]
	if as == nil {
		return "", fmt.Errorf("web: no asset %q", name)
	}
	return "/assets/" + as.hashed, nil
}

// serveAsset answers GET /assets/<file>. Hashed names are immutable; plain
// names (for people and tools) are served too, revalidated each time.
func (w *Web) serveAsset(c *gin.Context) {
	name := strings.TrimPrefix(c.Param("path"), "/")
	hdr := c.Writer.Header()
	hdr.Set("X-Content-Type-Options", "nosniff")
	as, immutable := w.assets.byHashed[name]
	if !immutable {
		as = w.assets.byName[name]
	}
	if as == nil {
		hdr.Set("Cache-Control", "no-store")
		c.Data(http.StatusNotFound, "text/plain; charset=utf-8", []byte("not found\n"))
		return
	}
	if immutable {
		hdr.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		hdr.Set("Cache-Control", "public, no-cache")
	}
	hdr.Set("Content-Type", as.ctype)
	// Scripts and styles may be used by pages of other origins that embed
	// nothing of ours; allow it explicitly (fonts and modules need CORS).
	hdr.Set("Access-Control-Allow-Origin", "*")
	hdr.Set("Cross-Origin-Resource-Policy", "cross-origin")
	body, etag := as.body, as.etag
	if gz := as.gzipped(); gz != nil {
		hdr.Add("Vary", "Accept-Encoding")
		if acceptsGzip(c.GetHeader("Accept-Encoding")) {
			body, etag = gz, strings.TrimSuffix(as.etag, `"`)+`-gz"`
			hdr.Set("Content-Encoding", "gzip")
		}
	}
	hdr.Set("ETag", etag)
	http.ServeContent(c.Writer, c.Request, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reads an Accept-Encoding header: gzip listed without q=0.
func acceptsGzip(h string) bool {
	for _, part := range strings.Split(h, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		params = strings.ReplaceAll(params, " ", "")
		return !strings.HasPrefix(params, "q=0") || strings.HasPrefix(params, "q=0.") && strings.Trim(params[4:], "0") != ""
	}
	return false
}
