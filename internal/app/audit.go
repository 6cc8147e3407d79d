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
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
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
//
// What the origin published is read from store, whose keys are the HLS
// paths without their prefix ("<id>/<rendition>/<file>"). When the store
// fails (S3 down), the audit is inconclusive: nothing is held against the
// node.
type auditor struct {
	store       storage.Store
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

func newAuditor(store storage.Store, contentKey ed25519.PrivateKey, signed func(string) bool) *auditor {
	pub := contentKey.Public().(ed25519.PublicKey)
	return &auditor{store: store, signed: signed, slots: make(chan struct{}, maxAudits), settle: playlistSettle,
		contentKeys: map[string]ed25519.PublicKey{manifest.KeyID(pub): pub},
		client: &http.Client{Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// audit is the audit of a viewer's delivery report. A report of a segment
// the origin never published (or deleted) is refuted: an honest player
// reports only segments the signed manifest lists, so such a report, from
// a network the node was offered to, must not count towards its
// quarantine. Not so for an LL-HLS part (the origin keeps those in memory
// only, never in the store), nor for an object the node's playlist named
// and the manifest does not list ("unlisted": never published, by
// definition), nor for the manifest kinds.
func (a *auditor) audit(ctx context.Context, n routing.Node, path, kind string) playerapi.Audit {
	confirmed, refuted, finding := a.check(ctx, n, path, kind)
	if finding == noSuchObject && refutesAbsent(path, kind) {
		refuted = true
	}
	return playerapi.Audit{Confirmed: confirmed, Refuted: refuted, Finding: finding}
}

// refutesAbsent says whether a report of kind about path, an object the
// origin does not have, is refuted by that absence.
func refutesAbsent(path, kind string) bool {
	switch kind {
	case "unlisted", "bad_manifest", "stale_manifest":
		return false
	}
	return !hlspath.IsPart(path)
}

// noSuchObject is the finding of an audit of an object the origin does
// not have.
const noSuchObject = "the origin has no such object (deleted, or never published)"

func (a *auditor) check(ctx context.Context, n routing.Node, path, kind string) (confirmed, refuted bool, finding string) {
	rel, ok := hlspath.Parse(path)
	if !ok {
		return false, false, "not a playback path"
	}
	id, _, _ := strings.Cut(rel, "/")
	if a.signed(id) {
		// Not fetched from the node, but it must be an object the origin
		// has (see audit).
		if _, err := a.store.Stat(ctx, rel); errors.Is(err, storage.ErrNotFound) {
			return false, false, noSuchObject
		}
		return false, false, "signed streams are not audited (it would show the node a playback token)"
	}
	// A slot may free within the caller's deadline (an audit takes
	// seconds at most).
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		return false, false, "not audited: the origin is busy with other audits"
	}
	manifestKind := kind == "unlisted" || kind == "bad_manifest" || kind == "stale_manifest"
	if strings.Count(rel, "/") != 2 {
		return false, false, "only rendition files are audited"
	}
	dir := rel[:strings.LastIndexByte(rel, '/')]
	// A live playlist changes every second; an ended rendition's never
	// does, and the node must serve it as published.
	playlist := strings.HasSuffix(rel, ".m3u8") && !manifestKind
	if playlist && kind != auditPlaylist {
		return false, false, livePlaylists
	}
	if manifestKind || strings.HasSuffix(rel, "/"+hlspath.ManifestFile) {
		// The node's manifest must verify and, live, be recent.
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
	pub, err := a.published(ctx, rel)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return false, false, noSuchObject
	case err != nil:
		return false, false, originFailed(ctx, "read what it published", err)
	case playlist && !a.settled(pub):
		return false, false, livePlaylists
	}
	body, status, err := a.get(ctx, n, path, pub.size+1)
	if err != nil || status != http.StatusOK {
		// A 4xx for an object the origin still has is the node's fault
		// too: an honest edge fetches what it lacks. (A failure, a 5xx
		// is the node's whatever the origin has.)
		has := true
		if err == nil && status < http.StatusInternalServerError {
			_, serr := a.store.Stat(ctx, rel)
			switch {
			case errors.Is(serr, storage.ErrNotFound):
				has = false
			case serr != nil:
				return false, false, originFailed(ctx, fmt.Sprintf("check that it still has the object the node answered with status %d", status), serr)
			}
		}
		return false, false, fetchFinding(ctx, "it from the node", err, status, has)
	}
	got := sha256.Sum256(body)
	if hex.EncodeToString(got[:]) != pub.sum && playlist {
		// The playlist changed during the audit (the stream went live
		// again): not compared. (An older ended copy is not excused: it
		// was unchanged for longer than any edge may keep one.)
		cur, err := a.store.Stat(ctx, rel)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return false, false, originFailed(ctx, "check that its playlist did not change during the audit", err)
		}
		if err != nil || cur.ETag != pub.info.ETag {
			return false, false, "the playlist changed during the audit: not compared"
		}
	}
	if hex.EncodeToString(got[:]) != pub.sum {
		return true, false, fmt.Sprintf("the node served %d bytes with SHA-256 %x; the origin published %s", len(body), got, pub.sum)
	}
	return false, true, "the node serves the published bytes to the origin"
}

// livePlaylists is the finding of an audit of a playlist that may change.
const livePlaylists = "live playlists change every second and are not audited"

// originFailed is the finding of an audit that the origin's store failed
// (S3 down or slow): inconclusive, nothing held against the node.
func originFailed(ctx context.Context, what string, err error) string {
	if errors.Is(ctx.Err(), context.Canceled) {
		return "the audit was cancelled (the origin stopped)"
	}
	return fmt.Sprintf("not audited: the origin could not %s (%v)", what, err)
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
// honest edge then serves it byte for byte. A playlist the store cannot
// read is not.
func (a *auditor) ended(ctx context.Context, dir string) bool {
	pub, err := a.published(ctx, dir+"/"+playlistFile)
	return err == nil && a.settled(pub)
}

// settled tells whether pub is an ended playlist written settle ago.
func (a *auditor) settled(pub publishedObject) bool {
	return pub.endList && time.Since(pub.info.ModTime) >= a.settle
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

// publishedObject is the origin's copy of an object, as read for an audit.
type publishedObject struct {
	// sum is the hex SHA-256 of the size bytes read.
	sum  string
	size int64
	// info is the store's (ModTime, ETag) of the version read.
	info storage.Info
	// endList: a playlist (.m3u8) that ends (#EXT-X-ENDLIST).
	endList bool
}

// published streams the object at key from the store into SHA-256 (a
// playlist is kept to look for its end). An object the store does not
// have is an error that matches storage.ErrNotFound.
func (a *auditor) published(ctx context.Context, key string) (publishedObject, error) {
	rc, info, err := a.store.Get(ctx, key, storage.Range{})
	if err != nil {
		return publishedObject{}, err
	}
	defer rc.Close()
	h := sha256.New()
	var w io.Writer = h
	var text bytes.Buffer
	if strings.HasSuffix(key, ".m3u8") {
		w = io.MultiWriter(h, &text)
	}
	n, err := io.Copy(w, rc)
	if err != nil {
		return publishedObject{}, fmt.Errorf("read %s: %w", key, err)
	}
	return publishedObject{sum: hex.EncodeToString(h.Sum(nil)), size: n, info: info,
		endList: bytes.Contains(text.Bytes(), []byte("#EXT-X-ENDLIST"))}, nil
}
