package playerapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// newKey issues an API key with the admin key; scopes is the JSON of the
// "scopes" field ("" leaves it out).
func (e *env) newKey(t *testing.T, scopes string) apiKeyJSON {
	t.Helper()
	body := `{"name":"k"}`
	if scopes != "" {
		body = `{"name":"k","scopes":` + scopes + `}`
	}
	return decode[apiKeyJSON](t, e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, body).wantStatus(t, http.StatusCreated))
}

// wantForbidden checks a 403 that names the missing scope.
func (r response) wantForbidden(t *testing.T, scope string) {
	t.Helper()
	d := r.wantError(t, http.StatusForbidden, "forbidden")
	if want := fmt.Sprintf("this API key lacks the %q scope", scope); d.Message != want {
		t.Errorf("403 message %q, want %q", d.Message, want)
	}
}

// TestEveryRouteHasAScope walks every route Register mounts: each one
// behind Authenticate (it answers a request without a key with
// Authenticate's 401) has an entry in routeScopes, and every entry is a
// route behind Authenticate. A new route cannot forget its scope.
func TestEveryRouteHasAScope(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	param := regexp.MustCompile(`[:*][A-Za-z0-9_]+`)
	authenticated := map[string]bool{}
	for _, r := range e.h.(*gin.Engine).Routes() {
		route := r.Method + " " + r.Path
		path := param.ReplaceAllString(r.Path, ids.New())
		res := e.doJSON(t, r.Method, path, "", "")
		var eb errorBody
		behindAuth := res.status == http.StatusUnauthorized && json.Unmarshal(res.body, &eb) == nil && eb.Error.Message == missingKeyMessage
		_, listed := routeScopes[route]
		switch {
		case behindAuth && !listed:
			t.Errorf("%s needs an API key but routeScopes has no entry for it", route)
		case !behindAuth && listed:
			t.Errorf("routeScopes lists %s, which takes no API key (status %d)", route, res.status)
		}
		if behindAuth {
			authenticated[route] = true
		}
	}
	for route, a := range routeScopes {
		if !authenticated[route] {
			t.Errorf("routeScopes lists %s, which Register does not mount behind Authenticate", route)
		}
		if len(a.Scopes) == 0 {
			t.Errorf("%s needs no scope", route)
		}
		for _, s := range a.Scopes {
			if !slices.Contains(allScopes, s) || s == scopeReadOnly {
				t.Errorf("%s needs scope %q", route, s)
			}
		}
		if a.Read && !strings.HasPrefix(route, "GET ") && !strings.HasPrefix(route, "HEAD ") {
			t.Errorf("read-only keys may call %s, which is not a read", route)
		}
	}
	if len(authenticated) < 30 {
		t.Errorf("only %d routes behind Authenticate; the walk is broken", len(authenticated))
	}
}

func TestAPIKeyScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{RTSPURL: "rtsp://shoal.test:8554/live", SRTURL: "srt://shoal.test:8890"})
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"show"}`).wantStatus(t, http.StatusCreated))
	streams := e.newKey(t, `["streams"]`)
	videos := e.newKey(t, `["videos"]`)
	readOnly := e.newKey(t, `["read-only"]`)
	tokens := e.newKey(t, `["playback-tokens"]`)
	admin := e.newKey(t, `["admin"]`)
	if !slices.Equal(streams.Scopes, []string{"streams"}) || !slices.Equal(admin.Scopes, []string{"admin"}) {
		t.Fatalf("scopes %q / %q", streams.Scopes, admin.Scopes)
	}

	// streams: live streams, nothing else.
	e.doJSON(t, "POST", "/v1/live-streams", streams.Key, `{"name":"by streams"}`).wantStatus(t, http.StatusCreated)
	got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, streams.Key, "").wantStatus(t, http.StatusOK))
	if got.ID != ls.ID || got.StreamKey != "" {
		t.Errorf("a streams key reads %+v: stream keys are stored hashed, never read back", got)
	}
	// It may reset the key, and is shown the new one.
	reset := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", streams.Key, "").wantStatus(t, http.StatusOK))
	if reset.StreamKey == "" || reset.StreamKey == ls.StreamKey || reset.Ingest.StreamKey != reset.StreamKey {
		t.Errorf("a streams key's reset answered %+v", reset)
	}
	ls.StreamKey = reset.StreamKey
	e.doJSON(t, "GET", "/v1/videos", streams.Key, "").wantForbidden(t, "videos")
	e.doJSON(t, "POST", "/v1/videos", streams.Key, `{"title":"x"}`).wantForbidden(t, "videos")
	e.doJSON(t, "POST", "/v1/uploads", streams.Key, "").wantForbidden(t, "videos")
	e.doJSON(t, "POST", "/v1/playback-tokens", streams.Key, `{"id":"`+ls.ID+`"}`).wantForbidden(t, "playback-tokens")

	// videos: videos, not live streams.
	e.doJSON(t, "GET", "/v1/videos", videos.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "POST", "/v1/live-streams", videos.Key, `{"name":"x"}`).wantForbidden(t, "streams")
	e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, videos.Key, "").wantForbidden(t, "streams")

	// read-only: reads, without stream keys; no writes.
	for _, path := range []string{"/v1/live-streams", "/v1/live-streams/" + ls.ID} {
		r := e.doJSON(t, "GET", path, readOnly.Key, "").wantStatus(t, http.StatusOK)
		if strings.Contains(string(r.body), ls.StreamKey) {
			t.Errorf("GET %s shows a read-only key the stream key: %s", path, r.body)
		}
	}
	ro := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, readOnly.Key, ""))
	if ro.ID != ls.ID || ro.Name != "show" || ro.StreamKey != "" || ro.Ingest.StreamKey != "" || ro.Ingest.RTSPURL != "" ||
		ro.Ingest.SRTURL != "" || ro.Ingest.RTMPURL != testRTMPURL || ro.Playback.HLSURL == "" {
		t.Errorf("read-only view %+v", ro)
	}
	e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID+"/restreams", readOnly.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "GET", "/v1/videos", readOnly.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "GET", "/v1/nodes", readOnly.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "POST", "/v1/live-streams", readOnly.Key, `{"name":"x"}`).wantForbidden(t, "streams")
	e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, readOnly.Key, `{"name":"x"}`).wantForbidden(t, "streams")
	e.doJSON(t, "DELETE", "/v1/live-streams/"+ls.ID, readOnly.Key, "").wantForbidden(t, "streams")
	e.doJSON(t, "POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", readOnly.Key, "").wantForbidden(t, "streams")
	e.doJSON(t, "POST", "/v1/videos", readOnly.Key, `{"title":"x"}`).wantForbidden(t, "videos")
	e.doJSON(t, "GET", "/v1/webhooks", readOnly.Key, "").wantForbidden(t, "admin")
	e.doJSON(t, "GET", "/v1/api-keys", readOnly.Key, "").wantForbidden(t, "admin")

	// playback-tokens: only that (no key is configured here: 503, past
	// the scope check).
	e.doJSON(t, "POST", "/v1/playback-tokens", tokens.Key, `{"id":"`+ls.ID+`"}`).wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.doJSON(t, "GET", "/v1/live-streams", tokens.Key, "").wantForbidden(t, "streams")

	// Only admin mints API keys and node tokens and sees webhooks; the
	// default scopes are not admin.
	def := e.newKey(t, "")
	for _, k := range []string{streams.Key, videos.Key, readOnly.Key, tokens.Key, def.Key} {
		e.doJSON(t, "POST", "/v1/api-keys", k, `{"name":"escalate","scopes":["admin"]}`).wantForbidden(t, "admin")
		e.doJSON(t, "POST", "/v1/node-tokens", k, `{"name":"edge"}`).wantForbidden(t, "admin")
		e.doJSON(t, "GET", "/v1/api-keys", k, "").wantForbidden(t, "admin")
		e.doJSON(t, "POST", "/v1/webhooks", k, `{"url":"https://example.com/hook"}`).wantForbidden(t, "admin")
		e.doJSON(t, "POST", "/v1/nodes/"+ids.New()+"/release", k, "").wantForbidden(t, "admin")
	}
	// An issued admin key does everything.
	e.doJSON(t, "POST", "/v1/api-keys", admin.Key, `{"name":"minted","scopes":["videos"]}`).wantStatus(t, http.StatusCreated)
	e.doJSON(t, "POST", "/v1/node-tokens", admin.Key, `{"name":"edge"}`).wantStatus(t, http.StatusCreated)
	e.doJSON(t, "GET", "/v1/webhooks", admin.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "GET", "/v1/videos", admin.Key, "").wantStatus(t, http.StatusOK)
	if got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, admin.Key, "")); got.ID != ls.ID || got.StreamKey != "" {
		t.Errorf("an admin key reads %+v", got)
	}
	// The refused writes changed nothing: the streams key's stream and
	// the admin's are the only ones.
	if list, _ := e.store.ListLiveStreams(t.Context()); len(list) != 2 {
		t.Errorf("%d live streams after refused writes, want 2", len(list))
	}
	if keys, _ := e.store.ListAPIKeys(t.Context()); len(keys) != 7 {
		t.Errorf("%d API keys, want 7 (no escalation went through)", len(keys))
	}
}

func TestAPIKeyScopeValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	for body, want := range map[string]string{
		`{"name":"x","scopes":["superuser"]}`:                        `unknown scope "superuser"; valid scopes are "admin", "streams", "videos", "playback-tokens", "read-only"`,
		`{"name":"x","scopes":["streams","Videos"]}`:                 `unknown scope "Videos"`,
		`{"name":"x","scopes":[]}`:                                   `"scopes" must not be empty`,
		`{"name":"x","scopes":"admin"}`:                              `"scopes"`,
		`{"name":"x","scopes":[1]}`:                                  `"scopes"`,
		`{"name":"x","scopes":null}`:                                 ``,
		`{"scopes":["admin"]}`:                                       `"name" is required`,
		`{"name":"x","scopes":["admin"],"role":"x"}`:                 `unknown field "role"`,
		`{"name":"x","scopes":["` + strings.Repeat("z", 500) + `"]}`: `unknown scope`,
	} {
		r := e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, body)
		if want == "" { // null is "left out"
			if k := decode[apiKeyJSON](t, r.wantStatus(t, http.StatusCreated)); !slices.Equal(k.Scopes, defaultScopes) {
				t.Errorf("%s: scopes %q", body, k.Scopes)
			}
			continue
		}
		d := r.wantError(t, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(d.Message, want) || len(d.Message) > 300 {
			t.Errorf("%s: message %q, want it to contain %q", body, d.Message, want)
		}
	}
	// Duplicates are kept once.
	if k := e.newKey(t, `["videos","streams","videos"]`); !slices.Equal(k.Scopes, []string{"videos", "streams"}) {
		t.Errorf("scopes %q", k.Scopes)
	}
}

func TestAPIKeyListAndRevoke(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := newEnvOn(t, Config{}, srv)
	b := newEnvOn(t, Config{}, srv) // a second origin on the same Redis
	if r := decode[apiKeyListJSON](t, a.doJSON(t, "GET", "/v1/api-keys", testAdminKey, "").wantStatus(t, http.StatusOK)); r.Data == nil || len(r.Data) != 0 {
		t.Fatalf("empty list %+v (the admin key is not listed)", r)
	}
	k1 := a.newKey(t, `["streams","read-only"]`)
	k2 := b.newKey(t, "")
	for _, e := range []*env{a, b} {
		for _, k := range []apiKeyJSON{k1, k2} {
			e.doJSON(t, "GET", "/v1/live-streams", k.Key, "").wantStatus(t, http.StatusOK)
		}
	}

	r := b.doJSON(t, "GET", "/v1/api-keys", testAdminKey, "").wantStatus(t, http.StatusOK)
	for _, secret := range []string{k1.Key, k2.Key, ids.Hash(k1.Key), ids.Hash(k2.Key), "key_hash", `"key"`} {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("the list shows %q: %s", secret, r.body)
		}
	}
	list := decode[apiKeyListJSON](t, r)
	if len(list.Data) != 2 {
		t.Fatalf("list %+v, want 2 keys", list.Data)
	}
	for i, want := range []apiKeyJSON{k1, k2} {
		got := list.Data[i]
		want.Key = ""
		if got.ID != want.ID || got.Name != want.Name || !slices.Equal(got.Scopes, want.Scopes) || !got.CreatedAt.Equal(want.CreatedAt) || got.Legacy {
			t.Errorf("list[%d] = %+v, want %+v", i, got, want)
		}
	}

	// Revoked on a: refused on b at once, and on a.
	a.doJSON(t, "DELETE", "/v1/api-keys/"+k1.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	b.doJSON(t, "GET", "/v1/live-streams", k1.Key, "").wantError(t, http.StatusUnauthorized, "unauthorized")
	a.doJSON(t, "GET", "/v1/live-streams", k1.Key, "").wantError(t, http.StatusUnauthorized, "unauthorized")
	b.doJSON(t, "GET", "/v1/live-streams", k2.Key, "").wantStatus(t, http.StatusOK)
	b.doJSON(t, "DELETE", "/v1/api-keys/"+k1.ID, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	b.doJSON(t, "DELETE", "/v1/api-keys/"+ids.New(), testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	for _, id := range invalidIDPaths {
		a.doJSON(t, "DELETE", "/v1/api-keys/"+id, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	}
	if list := decode[apiKeyListJSON](t, a.doJSON(t, "GET", "/v1/api-keys", testAdminKey, "")); len(list.Data) != 1 || list.Data[0].ID != k2.ID {
		t.Errorf("list after revoking %s: %+v", k1.ID, list.Data)
	}
	// A key cannot revoke another without admin; an admin key can revoke
	// itself, and is refused from its next request.
	a.doJSON(t, "DELETE", "/v1/api-keys/"+k2.ID, k2.Key, "").wantForbidden(t, "admin")
	adm := a.newKey(t, `["admin"]`)
	b.doJSON(t, "DELETE", "/v1/api-keys/"+adm.ID, adm.Key, "").wantStatus(t, http.StatusNoContent)
	a.doJSON(t, "GET", "/v1/api-keys", adm.Key, "").wantError(t, http.StatusUnauthorized, "unauthorized")
}

// TestLegacyAPIKey: a key issued before keys had scopes (a record without
// a scopes field, not indexed) keeps working with every scope but admin,
// is listed and can be revoked.
func TestLegacyAPIKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	key, id := ids.NewSecret("shoal"), ids.New()
	h := ids.Hash(key)
	if err := rdb.HSet(t.Context(), "shoal:apikey:"+h, "id", id, "name", "old ci",
		"created_at", "2025-01-02T03:04:05.000006Z", "key_hash", h).Err(); err != nil {
		t.Fatal(err)
	}
	e.doJSON(t, "POST", "/v1/live-streams", key, `{"name":"by legacy"}`).wantStatus(t, http.StatusCreated)
	e.doJSON(t, "GET", "/v1/videos", key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "POST", "/v1/api-keys", key, `{"name":"x"}`).wantForbidden(t, "admin")
	e.doJSON(t, "POST", "/v1/node-tokens", key, `{"name":"x"}`).wantForbidden(t, "admin")

	list := decode[apiKeyListJSON](t, e.doJSON(t, "GET", "/v1/api-keys", testAdminKey, "").wantStatus(t, http.StatusOK))
	if len(list.Data) != 1 || list.Data[0].ID != id || list.Data[0].Name != "old ci" || !list.Data[0].Legacy ||
		!slices.Equal(list.Data[0].Scopes, []string{"streams", "videos", "playback-tokens"}) {
		t.Fatalf("list %+v", list.Data)
	}
	e.doJSON(t, "DELETE", "/v1/api-keys/"+id, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "GET", "/v1/videos", key, "").wantError(t, http.StatusUnauthorized, "unauthorized")
}

// TestOpenAPIScopes: every operation that takes an API key declares, as
// its bearerAuth security, the scope routeScopes gives its route (and read-only when
// read-only keys may call it), and a 403 answer.
func TestOpenAPIScopes(t *testing.T) {
	t.Parallel()
	ops := map[string]specOperation{}
	for _, o := range specOperations(t, parseSpec(t, openAPISpec), "paths") {
		ops[o.method+" "+o.path] = o
	}
	for route, a := range routeScopes {
		method, path, _ := strings.Cut(route, " ")
		o, ok := ops[method+" "+openAPIPath(path)]
		if !ok {
			t.Errorf("%s is not in openapi.yaml", route)
			continue
		}
		var scopes []any
		for _, s := range a.Scopes {
			scopes = append(scopes, s)
		}
		want := []any{map[string]any{"bearerAuth": scopes}}
		if a.Read {
			want = append(want, map[string]any{"bearerAuth": []any{scopeReadOnly}})
		}
		// Other schemes may be alternatives (a node's own token reads its
		// usage); the API-key ones must be exactly these.
		var got []any
		all, _ := o.op["security"].([]any)
		for _, s := range all {
			if m, _ := s.(map[string]any); m["bearerAuth"] != nil {
				got = append(got, s)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s declares security %v, want %v", o, got, want)
		}
		if resp, _ := o.op["responses"].(map[string]any); resp["403"] == nil {
			t.Errorf("%s declares no 403 answer", o)
		}
	}
}

// TestRouteWithoutScopeIsAdminOnly: a route mounted behind Authenticate
// that routeScopes does not list needs the admin scope (it fails closed).
func TestRouteWithoutScopeIsAdminOnly(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.h.(*gin.Engine).Group("/v1", e.a.Authenticate).GET("/unlisted", func(c *gin.Context) { c.Status(http.StatusNoContent) })
	all := e.newKey(t, `["streams","videos","playback-tokens","read-only"]`)
	e.doJSON(t, "GET", "/v1/unlisted", all.Key, "").wantForbidden(t, "admin")
	e.doJSON(t, "GET", "/v1/unlisted", e.newKey(t, `["admin"]`).Key, "").wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "GET", "/v1/unlisted", testAdminKey, "").wantStatus(t, http.StatusNoContent)
}

// TestAnalyticsScopes: the analytics of everything and of a node cover
// videos and live streams alike: they need both the videos and the
// streams scope (or read-only, or admin); a video's need videos, a live
// stream's streams.
func TestAnalyticsScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	streams := e.newKey(t, `["streams"]`)
	videos := e.newKey(t, `["videos"]`)
	both := e.newKey(t, `["videos","streams"]`)
	readOnly := e.newKey(t, `["read-only"]`)
	tokens := e.newKey(t, `["playback-tokens"]`)
	node := ids.New()
	for _, path := range []string{"/v1/analytics", "/v1/analytics/nodes/" + node} {
		e.doJSON(t, "GET", path, streams.Key, "").wantForbidden(t, "videos")
		e.doJSON(t, "GET", path, videos.Key, "").wantForbidden(t, "streams")
		d := e.doJSON(t, "GET", path, tokens.Key, "").wantError(t, http.StatusForbidden, "forbidden")
		if want := `this API key lacks the "videos" and "streams" scopes`; d.Message != want {
			t.Errorf("GET %s with neither: %q, want %q", path, d.Message, want)
		}
		for _, k := range []string{both.Key, readOnly.Key, testAdminKey} {
			e.doJSON(t, "GET", path, k, "").wantStatus(t, http.StatusOK)
		}
	}
	v := decode[videoJSON](t, e.doJSON(t, "POST", "/v1/videos", testAdminKey, `{"title":"v"}`).wantStatus(t, http.StatusCreated))
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"s"}`).wantStatus(t, http.StatusCreated))
	e.doJSON(t, "GET", "/v1/analytics/videos/"+v.ID, videos.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "GET", "/v1/analytics/videos/"+v.ID, streams.Key, "").wantForbidden(t, "videos")
	e.doJSON(t, "GET", "/v1/analytics/live-streams/"+ls.ID, streams.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "GET", "/v1/analytics/live-streams/"+ls.ID, videos.Key, "").wantForbidden(t, "streams")
}
