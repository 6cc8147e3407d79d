package app

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
)

// auditor checks viewers' delivery reports against the node they name: it
// fetches the reported object from the node as a viewer would (with a
// short-lived playback token of its own for signed ids) and compares it
// with what the origin published. An edge that tells the origin apart from
// viewers escapes it; the reports of several viewer networks still
// quarantine such an edge (playerapi).
type auditor struct {
	hlsDir      string
	playbackKey ed25519.PrivateKey
	contentKeys map[string]ed25519.PublicKey
	signed      func(id string) bool
	client      *http.Client
}

// maxLiveManifestAge is how old a live manifest an edge relays may be (the
// player applies the same bound).
const maxLiveManifestAge = 30 * time.Second

func newAuditor(hlsDir string, playbackKey, contentKey ed25519.PrivateKey, signed func(string) bool) *auditor {
	pub := contentKey.Public().(ed25519.PublicKey)
	return &auditor{hlsDir: hlsDir, playbackKey: playbackKey, signed: signed,
		contentKeys: map[string]ed25519.PublicKey{manifest.KeyID(pub): pub},
		client: &http.Client{Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (a *auditor) audit(ctx context.Context, n routing.Node, path, kind string) (bool, string) {
	rel, ok := hlspath.Parse(path)
	if !ok {
		return false, "not a playback path"
	}
	id, _, _ := strings.Cut(rel, "/")
	manifestKind := kind == "unlisted" || kind == "bad_manifest" || kind == "stale_manifest"
	if strings.Count(rel, "/") != 2 {
		return false, "only rendition files are audited"
	}
	if strings.HasSuffix(rel, ".m3u8") && !manifestKind {
		return false, "playlists change every second and are not audited"
	}
	if manifestKind || strings.HasSuffix(rel, "/"+hlspath.ManifestFile) {
		// The node's manifest must verify and, live, be recent.
		dir := rel[:strings.LastIndexByte(rel, '/')]
		body, status, err := a.get(ctx, n, id, hlspath.Prefix+dir+"/"+hlspath.ManifestFile)
		if err != nil || status != http.StatusOK {
			return false, fmt.Sprintf("could not fetch the node's manifest (%v, status %d)", err, status)
		}
		m, err := manifest.Verify(body, a.contentKeys)
		switch {
		case err != nil:
			return true, "the node's manifest does not verify: " + err.Error()
		case m.ID+"/"+m.Rendition != dir:
			return true, fmt.Sprintf("the node serves the manifest of %s/%s for %s", m.ID, m.Rendition, dir)
		case !m.Ended && time.Since(m.Time) > maxLiveManifestAge:
			return true, fmt.Sprintf("the node serves a live manifest signed %s ago", time.Since(m.Time).Round(time.Second))
		}
		return false, "the node's manifest verifies and is recent"
	}
	want, err := fileSHA256(filepath.Join(a.hlsDir, filepath.FromSlash(rel)))
	if err != nil {
		return false, "the origin has no such object (deleted, or never published)"
	}
	body, status, err := a.get(ctx, n, id, path)
	if err != nil || status != http.StatusOK {
		return false, fmt.Sprintf("could not fetch it from the node (%v, status %d)", err, status)
	}
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != want {
		return true, fmt.Sprintf("the node served %d bytes with SHA-256 %x; the origin published %s", len(body), got, want)
	}
	return false, "the node serves the published bytes to the origin"
}

// get fetches path from node n as a viewer, with a token when id is signed.
func (a *auditor) get(ctx context.Context, n routing.Node, id, path string) ([]byte, int, error) {
	u := strings.TrimRight(n.PublicURL, "/") + path
	if a.signed(id) && a.playbackKey != nil {
		tok, err := playback.Sign(a.playbackKey, playback.Claims{ID: id, Expires: time.Now().Add(time.Minute)})
		if err != nil {
			return nil, 0, err
		}
		u += "?token=" + tok
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	return body, resp.StatusCode, err
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
