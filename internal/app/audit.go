package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/routing"
	playerapi "github.com/shoal-video/shoal/player-api"
)

// auditor checks viewers' delivery reports against the node they name: it
// fetches the reported object from the node as a viewer would and compares
// it with what the origin published. An edge that tells the origin apart
// from viewers escapes it; the reports of several viewer networks still
// quarantine such an edge (playerapi). Signed ids are not audited: the
// audit would have to show the node a playback token, which a node could
// then use to watch from anywhere; their edges are judged by the reports
// alone. At most maxAudits run at once (more are skipped), and no more is
// read than the object can be.
type auditor struct {
	hlsDir      string
	contentKeys map[string]ed25519.PublicKey
	signed      func(id string) bool
	client      *http.Client
	slots       chan struct{}
	// userAgent, when set, is sent as a viewer's browser would.
	userAgent string
	// timed, when set, is told how long the node took to answer a fetch
	// (to its headers) and to send the whole body.
	timed func(ttfb, total time.Duration, n int)
	// settle is playlistSettle (tests shorten it).
	settle time.Duration
}

// maxAudits bounds the audits running at once.
const maxAudits = 4

// maxLiveManifestAge is how old a live manifest an edge relays may be (the
// player applies the same bound).
const maxLiveManifestAge = 30 * time.Second

func newAuditor(hlsDir string, contentKey ed25519.PrivateKey, signed func(string) bool) *auditor {
	pub := contentKey.Public().(ed25519.PublicKey)
	return &auditor{hlsDir: hlsDir, signed: signed, slots: make(chan struct{}, maxAudits), settle: playlistSettle,
		contentKeys: map[string]ed25519.PublicKey{manifest.KeyID(pub): pub},
		client: &http.Client{Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

func (a *auditor) audit(ctx context.Context, n routing.Node, path, kind string) playerapi.Audit {
	confirmed, refuted, finding := a.check(ctx, n, path, kind)
	return playerapi.Audit{Confirmed: confirmed, Refuted: refuted, Finding: finding}
}

func (a *auditor) check(ctx context.Context, n routing.Node, path, kind string) (confirmed, refuted bool, finding string) {
	rel, ok := hlspath.Parse(path)
	if !ok {
		return false, false, "not a playback path"
	}
	id, _, _ := strings.Cut(rel, "/")
	if a.signed(id) {
		return false, false, "signed streams are not audited (it would show the node a playback token)"
	}
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	default:
		return false, false, "not audited: the origin is busy with other audits"
	}
	manifestKind := kind == "unlisted" || kind == "bad_manifest" || kind == "stale_manifest"
	if strings.Count(rel, "/") != 2 {
		return false, false, "only rendition files are audited"
	}
	if strings.HasSuffix(rel, ".m3u8") && !manifestKind {
		// A live playlist changes every second; an ended rendition's
		// never does, and the node must serve it as published.
		if kind != auditPlaylist || !a.ended(rel[:strings.LastIndexByte(rel, '/')]) {
			return false, false, "live playlists change every second and are not audited"
		}
	}
	if manifestKind || strings.HasSuffix(rel, "/"+hlspath.ManifestFile) {
		// The node's manifest must verify and, live, be recent.
		dir := rel[:strings.LastIndexByte(rel, '/')]
		body, status, err := a.get(ctx, n, hlspath.Prefix+dir+"/"+hlspath.ManifestFile, manifest.MaxBytes)
		if err != nil || status != http.StatusOK {
			return false, false, fetchFinding(ctx, "the node's manifest", err, status, true)
		}
		m, err := manifest.Verify(body, a.contentKeys)
		switch {
		case err != nil:
			return true, false, "the node's manifest does not verify: " + err.Error()
		case m.ID+"/"+m.Rendition != dir:
			return true, false, fmt.Sprintf("the node serves the manifest of %s/%s for %s", m.ID, m.Rendition, dir)
		case !m.Ended && time.Since(m.Time) > maxLiveManifestAge:
			return true, false, fmt.Sprintf("the node serves a live manifest signed %s ago", time.Since(m.Time).Round(time.Second))
		}
		return false, true, "the node's manifest verifies and is recent"
	}
	want, size, err := fileSHA256(filepath.Join(a.hlsDir, filepath.FromSlash(rel)))
	if err != nil {
		return false, false, "the origin has no such object (deleted, or never published)"
	}
	body, status, err := a.get(ctx, n, path, size+1)
	if err != nil || status != http.StatusOK {
		// A 4xx for an object the origin still has is the node's fault
		// too: an honest edge fetches what it lacks.
		_, serr := os.Stat(filepath.Join(a.hlsDir, filepath.FromSlash(rel)))
		return false, false, fetchFinding(ctx, "it from the node", err, status, serr == nil)
	}
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != want && kind == auditPlaylist && !a.ended(rel[:strings.LastIndexByte(rel, '/')]) {
		// The playlist changed during the audit (the stream went live
		// again): not compared. (An older ended copy is not excused: it
		// was unchanged for longer than any edge may keep one.)
		return false, false, "the playlist changed during the audit: not compared"
	}
	if hex.EncodeToString(got[:]) != want {
		return true, false, fmt.Sprintf("the node served %d bytes with SHA-256 %x; the origin published %s", len(body), got, want)
	}
	return false, true, "the node serves the published bytes to the origin"
}

// nodeFetchFailed starts the finding of an audit the node did not answer
// (an error, a status other than 200): the node's fault, unlike the
// origin's (busy, the object gone).
const nodeFetchFailed = "could not fetch"

// auditPlaylist is the kind of a mystery shopper's audit of an ended
// rendition's playlist (the other kinds are those of viewers' reports).
const auditPlaylist = "playlist"

// playlistSettle is how long ago an ended playlist must have been written
// to be audited: longer than edges may cache a playlist (an ended one 60 s,
// plus stale-if-error), so that an honest edge cannot hold an older one
// (a recording whose stream went live again and ended again).
const playlistSettle = 2 * time.Minute

// ended tells whether the origin's playlist of rendition dir (id/rendition)
// ended (#EXT-X-ENDLIST) and has not changed for playlistSettle: every
// honest edge then serves it byte for byte.
func (a *auditor) ended(dir string) bool {
	p := filepath.Join(a.hlsDir, filepath.FromSlash(dir), playlistFile)
	st, err := os.Stat(p)
	if err != nil || time.Since(st.ModTime()) < a.settle {
		return false
	}
	b, err := os.ReadFile(p)
	return err == nil && bytes.Contains(b, []byte("#EXT-X-ENDLIST"))
}

// fetchFinding says why an object could not be fetched from the node: the
// node's fault (nodeFetchFailed: no connection, a timeout, a server error,
// any other status for an object the origin still has) or not (the origin
// stopped, the object is gone).
func fetchFinding(ctx context.Context, what string, err error, status int, published bool) string {
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		return "the audit was cancelled (the origin stopped)"
	case err != nil || status >= 500 || published:
		return fmt.Sprintf("%s %s (%v, status %d)", nodeFetchFailed, what, err, status)
	default:
		return fmt.Sprintf("the node answered %s with status %d; the origin no longer has it", what, status)
	}
}

// get fetches path from node n as a viewer would, reading at most limit
// bytes.
func (a *auditor) get(ctx context.Context, n routing.Node, path string, limit int64) (body []byte, status int, err error) {
	u := strings.TrimRight(n.PublicURL, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, err
	}
	if a.userAgent != "" {
		req.Header.Set("User-Agent", a.userAgent)
		req.Header.Set("Accept", "*/*")
	}
	start := time.Now()
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	ttfb := time.Since(start)
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err == nil && a.timed != nil {
		a.timed(ttfb, time.Since(start), len(body))
	}
	return body, resp.StatusCode, err
}

// fileSHA256 returns the hex SHA-256 and the size of a file.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
