package playerapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

// testPlaybackKey is the playback key of the signed-playback tests.
var testPlaybackKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))

var testPlaybackPub = testPlaybackKey.Public().(ed25519.PublicKey)

func newSignedEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, Config{PlaybackKey: testPlaybackKey})
}

func (e *env) createLiveStream(t *testing.T, body string) liveStreamJSON {
	t.Helper()
	return decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, body).wantStatus(t, http.StatusCreated))
}

func TestPlaybackTokenIssued(t *testing.T) {
	t.Parallel()
	e := newSignedEnv(t)
	ls := e.createLiveStream(t, `{"name":"private","playback_policy":"signed"}`)

	before := time.Now()
	r := e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+ls.ID+`"}`).wantStatus(t, http.StatusCreated)
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	got := decode[playbackTokenJSON](t, r)
	c, err := playback.Verify(testPlaybackPub, got.Token, ls.ID, time.Now(), "")
	if err != nil {
		t.Fatalf("the issued token does not verify: %v", err)
	}
	if !c.Expires.Equal(got.ExpiresAt) || got.ExpiresAt.Location() != time.UTC {
		t.Errorf("expires_at %v, token's expiry %v", got.ExpiresAt, c.Expires)
	}
	if d := got.ExpiresAt.Sub(before); d < time.Hour-2*time.Second || d > time.Hour+2*time.Second {
		t.Errorf("default lifetime %v, want an hour", d)
	}
	if got.ID != ls.ID || got.HLSURL != testPublicURL+"/hls/"+ls.ID+"/master.m3u8?token="+got.Token {
		t.Errorf("answer %+v", got)
	}
	if c.IP != "" || c.Region != "" {
		t.Errorf("claims %+v carry an IP or region nobody asked for", c)
	}
	// It opens nothing else.
	if _, err := playback.Verify(testPlaybackPub, got.Token, "other", time.Now(), ""); !errors.Is(err, playback.ErrWrongID) {
		t.Errorf("for another id: %v", err)
	}

	// TTL, IP and region.
	r = e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey,
		`{"id":"`+ls.ID+`","ttl_seconds":60,"ip":"::ffff:203.0.113.7","region":"eu-west"}`).wantStatus(t, http.StatusCreated)
	got = decode[playbackTokenJSON](t, r)
	c, err = playback.Verify(testPlaybackPub, got.Token, ls.ID, time.Now(), "203.0.113.7")
	if err != nil || c.IP != "203.0.113.7" || c.Region != "eu-west" {
		t.Fatalf("claims %+v, %v", c, err)
	}
	if d := time.Until(got.ExpiresAt); d > time.Minute || d < 55*time.Second {
		t.Errorf("ttl 60 expires in %v", d)
	}
	if _, err := playback.Verify(testPlaybackPub, got.Token, ls.ID, time.Now(), "203.0.113.8"); !errors.Is(err, playback.ErrWrongIP) {
		t.Errorf("from another IP: %v", err)
	}
	if _, err := playback.Verify(testPlaybackPub, got.Token, ls.ID, time.Now().Add(61*time.Second), "203.0.113.7"); !errors.Is(err, playback.ErrExpired) {
		t.Errorf("after its ttl: %v", err)
	}

	// The longest lifetime; videos and public streams too.
	e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+ls.ID+`","ttl_seconds":604800,"ip":"10.0.0.0/8"}`).wantStatus(t, http.StatusCreated)
	v := e.createVideo(t, `{"playback_policy":"signed"}`)
	got = decode[playbackTokenJSON](t, e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+v.ID+`","ttl_seconds":1}`).wantStatus(t, http.StatusCreated))
	if _, err := playback.Verify(testPlaybackPub, got.Token, v.ID, time.Now().Add(-time.Second), ""); err != nil {
		t.Errorf("video token: %v", err)
	}
	pub := e.createLiveStream(t, `{"name":"open"}`)
	e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+pub.ID+`"}`).wantStatus(t, http.StatusCreated)

	// An issued API key may issue tokens too.
	key := decode[struct {
		Key string `json:"key"`
	}](t, e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":"player backend"}`).wantStatus(t, http.StatusCreated)).Key
	e.doJSON(t, "POST", "/v1/playback-tokens", key, `{"id":"`+ls.ID+`"}`).wantStatus(t, http.StatusCreated)
}

func TestPlaybackTokenRefused(t *testing.T) {
	t.Parallel()
	e := newSignedEnv(t)
	ls := e.createLiveStream(t, `{"name":"private","playback_policy":"signed"}`)
	id := `"id":"` + ls.ID + `"`
	for _, body := range []string{
		``, `{}`, `{"id":""}`, `{"id":1}`, `{"ttl_seconds":60}`, `[]`,
		`{` + id + `,"ttl_seconds":0}`, `{` + id + `,"ttl_seconds":-5}`, `{` + id + `,"ttl_seconds":604801}`,
		`{` + id + `,"ttl_seconds":1.5}`, `{` + id + `,"ttl_seconds":"60"}`,
		`{` + id + `,"ip":"nope"}`, `{` + id + `,"ip":"1.2.3.4:80"}`, `{` + id + `,"ip":""}`,
		`{` + id + `,"region":"eu west"}`, `{` + id + `,"region":""}`, `{` + id + `,"region":"` + strings.Repeat("r", 65) + `"}`,
		`{` + id + `,"scope":"all"}`, `{` + id + `} {}`,
	} {
		r := e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400; body %s", body, r.status, r.body)
			continue
		}
		checkErrorBody(t, r.header, r.body, codeInvalidRequest)
	}
	for _, missing := range []string{"nosuchstream", "NOPE", "../x", strings.Repeat("a", 65)} {
		e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+missing+`"}`).wantError(t, http.StatusNotFound, codeNotFound)
	}
	// A deleted stream gets no more tokens.
	e.doJSON(t, "DELETE", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{`+id+`}`).wantError(t, http.StatusNotFound, codeNotFound)

	e.doJSON(t, "POST", "/v1/playback-tokens", "", `{`+id+`}`).wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.doJSON(t, "POST", "/v1/playback-tokens", "shoal_"+strings.Repeat("a", 32), `{`+id+`}`).wantError(t, http.StatusUnauthorized, codeUnauthorized)

	// Redis down: 503, retry.
	e.redis.Kill()
	r := e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+ids.New()+`"}`)
	r.wantError(t, http.StatusServiceUnavailable, codeUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
}

func TestPlaybackTokenNotConfigured(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ls := e.createLiveStream(t, `{"name":"x"}`)
	d := e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+ls.ID+`"}`).wantError(t, http.StatusServiceUnavailable, codeUnavailable)
	if !strings.Contains(d.Message, "not configured") {
		t.Errorf("message %q", d.Message)
	}
	api, err := New(Config{AdminKey: testAdminKey, PublicURL: testPublicURL, RTMPURL: testRTMPURL, UploadDir: t.TempDir(), Videos: e.files},
		e.store, e.status, nil)
	if err != nil {
		t.Fatal(err)
	}
	if api.playbackPublicKey() != "" {
		t.Error("a public key without a playback key")
	}
	api.playbackKey = testPlaybackKey
	if got, err := playback.ParsePublicKey(api.playbackPublicKey()); err != nil || !got.Equal(testPlaybackPub) {
		t.Errorf("playbackPublicKey = %q, %v", api.playbackPublicKey(), err)
	}
}

func TestLiveStreamPlaybackPolicy(t *testing.T) {
	t.Parallel()
	e := newSignedEnv(t)
	ls := e.createLiveStream(t, `{"name":"private","playback_policy":"signed"}`)
	if ls.PlaybackPolicy != "signed" || ls.Playback.HLSURL != testPublicURL+"/hls/"+ls.ID+"/master.m3u8" {
		t.Fatalf("created %+v", ls)
	}
	got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK))
	if got.PlaybackPolicy != "signed" {
		t.Errorf("GET policy %q", got.PlaybackPolicy)
	}
	list := decode[liveStreamListJSON](t, e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").wantStatus(t, http.StatusOK))
	if len(list.Data) != 1 || list.Data[0].PlaybackPolicy != "signed" {
		t.Errorf("list %+v", list.Data)
	}
	// PATCH changes it alone, or with other fields.
	upd := decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"playback_policy":"public"}`).wantStatus(t, http.StatusOK))
	if upd.PlaybackPolicy != "public" || upd.Name != "private" {
		t.Errorf("PATCH public: %+v", upd)
	}
	upd = decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"name":"again","playback_policy":"signed"}`).wantStatus(t, http.StatusOK))
	if upd.PlaybackPolicy != "signed" || upd.Name != "again" {
		t.Errorf("PATCH signed: %+v", upd)
	}
	// Renaming keeps the policy.
	upd = decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"name":"third"}`).wantStatus(t, http.StatusOK))
	if upd.PlaybackPolicy != "signed" {
		t.Errorf("rename changed the policy: %+v", upd)
	}
	for _, bad := range []string{`{"playback_policy":"private"}`, `{"playback_policy":""}`, `{"playback_policy":"SIGNED"}`, `{"playback_policy":1}`} {
		e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, bad).wantError(t, http.StatusBadRequest, codeInvalidRequest)
		e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"x",`+bad[1:]).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	// A refused PATCH changed nothing.
	if got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "")); got.PlaybackPolicy != "signed" || got.Name != "third" {
		t.Errorf("after refused PATCHes: %+v", got)
	}
	// The default stays public.
	if ls := e.createLiveStream(t, `{"name":"open","playback_policy":"public"}`); ls.PlaybackPolicy != "public" {
		t.Errorf("explicit public: %+v", ls)
	}
}

func TestVideoPlaybackPolicy(t *testing.T) {
	t.Parallel()
	e := newSignedEnv(t)
	v := e.createVideo(t, `{"title":"members only","playback_policy":"signed"}`)
	if v.PlaybackPolicy != "signed" || v.Playback.HLSURL != testPublicURL+"/hls/"+v.ID+"/master.m3u8" {
		t.Fatalf("created %+v", v)
	}
	got := decode[videoJSON](t, e.doJSON(t, "GET", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusOK))
	if got.PlaybackPolicy != "signed" {
		t.Errorf("GET policy %q", got.PlaybackPolicy)
	}
	if v := e.createVideo(t, `{}`); v.PlaybackPolicy != "public" {
		t.Errorf("default policy %q", v.PlaybackPolicy)
	}
	for _, bad := range []string{`{"playback_policy":"private"}`, `{"playback_policy":""}`} {
		e.doJSON(t, "POST", "/v1/videos", testAdminKey, bad).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	// Still fixed once created.
	e.doJSON(t, "PATCH", "/v1/videos/"+v.ID, testAdminKey, `{"playback_policy":"public"}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
}

// storeSigned is the Signed function the app gives the origin, without
// its cache: a signed live stream or video needs tokens; when Redis cannot
// tell, fail closed.
func storeSigned(store *routing.Store) func(id string) bool {
	return func(id string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		ls, err := store.GetLiveStream(ctx, id)
		if err == nil {
			return ls.PlaybackPolicy == routing.PlaybackSigned
		}
		if !errors.Is(err, routing.ErrNotFound) {
			return true
		}
		v, err := store.GetVideo(ctx, id)
		if err == nil {
			return v.PlaybackPolicy == routing.PlaybackSigned
		}
		return !errors.Is(err, routing.ErrNotFound)
	}
}

// TestSignedPlaybackEndToEnd issues a token through the API and plays a
// signed live stream with it from the origin handler, wired the way the
// app wires them.
func TestSignedPlaybackEndToEnd(t *testing.T) {
	t.Parallel()
	e := newSignedEnv(t)
	ls := e.createLiveStream(t, `{"name":"private","playback_policy":"signed"}`)
	open := e.createLiveStream(t, `{"name":"open"}`)
	hls := t.TempDir()
	for _, id := range []string{ls.ID, open.ID} {
		for name, content := range map[string]string{
			"master.m3u8":       "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nsource/index.m3u8\n",
			"source/index.m3u8": "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2,\nx-0.m4s\n",
			"source/init-0.mp4": "init",
			"source/x-0.m4s":    "segment",
		} {
			p := filepath.Join(hls, id, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	hlsStore, err := fsstore.New(hls)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(origin.NewHandler(hlsStore, origin.WithSignedPlayback(storeSigned(e.store), testPlaybackPub)))
	t.Cleanup(srv.Close)
	fetch := func(url string) (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	base := srv.URL + "/hls/" + ls.ID + "/"
	if code, _ := fetch(base + "master.m3u8"); code != http.StatusForbidden {
		t.Fatalf("without a token: %d", code)
	}
	tok := decode[playbackTokenJSON](t, e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+ls.ID+`"}`).wantStatus(t, http.StatusCreated))
	// Follow the playlists the way a player does: only the master URL
	// carries the token; the rest comes from the rewritten playlists.
	code, master := fetch(base + "master.m3u8?token=" + tok.Token)
	if code != 200 {
		t.Fatalf("master with a token: %d %s", code, master)
	}
	variant := strings.Split(master, "\n")[2]
	code, media := fetch(base + variant)
	if code != 200 || !strings.Contains(media, "x-0.m4s?token="+tok.Token) {
		t.Fatalf("variant %s: %d %s", variant, code, media)
	}
	if code, body := fetch(base + "source/x-0.m4s?token=" + tok.Token); code != 200 || body != "segment" {
		t.Fatalf("segment: %d %q", code, body)
	}
	// A token for the open stream does not open the signed one.
	other := decode[playbackTokenJSON](t, e.doJSON(t, "POST", "/v1/playback-tokens", testAdminKey, `{"id":"`+open.ID+`"}`).wantStatus(t, http.StatusCreated))
	if code, body := fetch(base + "master.m3u8?token=" + other.Token); code != http.StatusForbidden || !strings.Contains(body, "another") {
		t.Fatalf("token of another stream: %d %q", code, body)
	}
	// The open stream needs nothing.
	if code, _ := fetch(srv.URL + "/hls/" + open.ID + "/master.m3u8"); code != 200 {
		t.Fatalf("open stream: %d", code)
	}
	// Made public, the stream plays without a token.
	e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"playback_policy":"public"}`).wantStatus(t, http.StatusOK)
	if code, _ := fetch(base + "master.m3u8"); code != 200 {
		t.Fatalf("after PATCH public: %d", code)
	}
}
