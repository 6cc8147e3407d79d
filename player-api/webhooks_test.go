package playerapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// rawKeys returns the keys of a JSON object.
func rawKeys(t *testing.T, data []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return m
}

func TestWebhookCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{WebhookAllowPrivate: true})

	r := e.doJSON(t, "POST", "/v1/webhooks", testAdminKey,
		`{"url":"http://127.0.0.1:9000/hooks?token=abc","events":["live_stream.ended","video.ready","video.ready"]}`).wantStatus(t, http.StatusCreated)
	raw := rawKeys(t, r.body)
	for _, f := range []string{"id", "url", "events", "secret", "created_at"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("response lacks %q: %s", f, r.body)
		}
	}
	w := decode[webhookJSON](t, r)
	if !ids.Valid(w.ID) || w.URL != "http://127.0.0.1:9000/hooks?token=abc" || !ids.LooksLikeSecret("whsec", w.Secret) {
		t.Errorf("created %+v", w)
	}
	if want := []string{"video.ready", "live_stream.ended"}; !slices.Equal(w.Events, want) {
		t.Errorf("events %v, want %v", w.Events, want)
	}
	if time.Since(w.CreatedAt) > time.Minute {
		t.Errorf("created_at %v", w.CreatedAt)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}

	// GET of one shows the secret.
	got := decode[webhookJSON](t, e.doJSON(t, "GET", "/v1/webhooks/"+w.ID, testAdminKey, "").wantStatus(t, http.StatusOK))
	if got.ID != w.ID || got.Secret != w.Secret || got.URL != w.URL || !slices.Equal(got.Events, w.Events) || !got.CreatedAt.Equal(w.CreatedAt) {
		t.Errorf("GET = %+v, want %+v", got, w)
	}

	// The list is newest first and shows no secrets.
	waitClockPast(w.CreatedAt)
	w2 := decode[webhookJSON](t, e.doJSON(t, "POST", "/v1/webhooks", testAdminKey,
		`{"url":"https://example.com/x","events":["video.failed"]}`).wantStatus(t, http.StatusCreated))
	r = e.doJSON(t, "GET", "/v1/webhooks", testAdminKey, "").wantStatus(t, http.StatusOK)
	if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "whsec_") {
		t.Errorf("the list shows secrets: %s", r.body)
	}
	list := decode[webhookListJSON](t, r)
	if len(list.Data) != 2 || list.Data[0].ID != w2.ID || list.Data[1].ID != w.ID {
		t.Errorf("list %+v, want [%s %s]", list.Data, w2.ID, w.ID)
	}

	r = e.doJSON(t, "DELETE", "/v1/webhooks/"+w.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("DELETE body %q", r.body)
	}
	e.doJSON(t, "GET", "/v1/webhooks/"+w.ID, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "DELETE", "/v1/webhooks/"+w.ID, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "GET", "/v1/webhooks/"+w.ID+"/deliveries", testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	list = decode[webhookListJSON](t, e.doJSON(t, "GET", "/v1/webhooks", testAdminKey, ""))
	if len(list.Data) != 1 || list.Data[0].ID != w2.ID {
		t.Errorf("list after delete %+v", list.Data)
	}
	e.doJSON(t, "DELETE", "/v1/webhooks/"+w2.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if r := e.doJSON(t, "GET", "/v1/webhooks", testAdminKey, ""); strings.TrimSpace(string(r.body)) != `{"data":[]}` {
		t.Errorf("empty list %s", r.body)
	}
}

func TestWebhookValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	for _, tc := range []struct{ body, want string }{
		{`{"events":["video.ready"]}`, `"url" is required`},
		{`{"url":"","events":["video.ready"]}`, `"url" must not be empty`},
		{`{"url":"example.com/x","events":["video.ready"]}`, `http:// or https://`},
		{`{"url":"/relative","events":["video.ready"]}`, `http:// or https://`},
		{`{"url":"ftp://example.com/x","events":["video.ready"]}`, `http:// or https://`},
		{`{"url":"http://","events":["video.ready"]}`, `has no host`},
		{`{"url":"http://:80/x","events":["video.ready"]}`, `has no host`},
		{`{"url":"http://u:p@example.com/","events":["video.ready"]}`, `user info`},
		{`{"url":"http://example.com/#frag","events":["video.ready"]}`, `fragment`},
		{`{"url":"http://example.com:99999/","events":["video.ready"]}`, `invalid port`},
		{`{"url":"http://exa mple.com/","events":["video.ready"]}`, `"url"`},
		{`{"url":"http://example.com/` + strings.Repeat("a", 2100) + `","events":["video.ready"]}`, `at most 2048 bytes`},
		{`{"url":"http://example.com/"}`, `"events" is required`},
		{`{"url":"http://example.com/","events":null}`, `"events" is required`},
		{`{"url":"http://example.com/","events":[]}`, `at least one`},
		{`{"url":"http://example.com/","events":["video.ready","video.*"]}`, `"events"[1]: unknown event type "video.*"; want one of video.ready, video.failed, live_stream.started, live_stream.ended`},
		{`{"url":"http://example.com/","events":"video.ready"}`, `"events" must be a array`},
		{`{"url":"http://127.0.0.1:9000/","events":["video.ready"]}`, `loopback or private address`},
		{`{"url":"http://[::1]/","events":["video.ready"]}`, `loopback or private address`},
		{`{"url":"https://LOCALHOST/x","events":["video.ready"]}`, `loopback or private address`},
		{`{"url":"http://10.0.0.5/","events":["video.ready"]}`, `loopback or private address`},
		{`{"url":"http://169.254.169.254/latest/meta-data","events":["video.ready"]}`, `loopback or private address`},
		{`{"url":5,"events":["video.ready"]}`, `"url" must be a string`},
		{`{"url":"http://example.com/","events":["video.ready"],"secret":"mine"}`, `unknown field "secret"`},
		{`[]`, `JSON object`},
		{``, `JSON object`},
	} {
		r := e.doJSON(t, "POST", "/v1/webhooks", testAdminKey, tc.body)
		if r.status != http.StatusBadRequest {
			t.Errorf("POST %s: status %d, want 400; body %s", tc.body, r.status, r.body)
			continue
		}
		if d := checkErrorBody(t, r.header, r.body, "invalid_request"); !strings.Contains(d.Message, tc.want) {
			t.Errorf("POST %s: message %q does not contain %q", tc.body, d.Message, tc.want)
		}
	}
	if list, _ := e.store.ListWebhooks(t.Context()); len(list) != 0 {
		t.Errorf("refused requests created %d webhooks", len(list))
	}
}

func TestWebhookRoutesNeedAKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	id := ids.New()
	for _, rt := range [][2]string{
		{"POST", "/v1/webhooks"}, {"GET", "/v1/webhooks"}, {"GET", "/v1/webhooks/" + id},
		{"DELETE", "/v1/webhooks/" + id}, {"GET", "/v1/webhooks/" + id + "/deliveries"},
	} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer " + ids.NewSecret("whsec")} {
			req := httptest.NewRequest(rt[0], rt[1], strings.NewReader(`{"url":"http://example.com","events":["video.ready"]}`))
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with %q: status %d, want 401", rt[0], rt[1], auth, rec.Code)
				continue
			}
			checkErrorBody(t, rec.Header(), rec.Body.Bytes(), "unauthorized")
		}
	}
	if list, _ := e.store.ListWebhooks(t.Context()); len(list) != 0 {
		t.Errorf("refused requests created %d webhooks", len(list))
	}
}

func TestWebhookNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	check := func(id string) {
		t.Helper()
		for _, rt := range [][2]string{{"GET", "/v1/webhooks/" + id}, {"DELETE", "/v1/webhooks/" + id}, {"GET", "/v1/webhooks/" + id + "/deliveries"}} {
			d := e.doJSON(t, rt[0], rt[1], testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
			// Some invalid ids ("a%2Fb") match no route at all.
			if d.Message != "webhook not found" && d.Message != "no such route" {
				t.Errorf("%s %s: message %q", rt[0], rt[1], d.Message)
			}
		}
	}
	check(ids.New())
	d := e.doJSON(t, "GET", "/v1/webhooks/"+ids.New(), testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	if d.Message != "webhook not found" {
		t.Errorf("message %q, want \"webhook not found\"", d.Message)
	}
	// Invalid ids never reach Redis: 404 even while it is down.
	e.redis.Kill()
	for _, id := range invalidIDPaths {
		check(id)
	}
	// A valid id needs Redis: 503.
	e.doJSON(t, "GET", "/v1/webhooks/"+ids.New(), testAdminKey, "").wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.doJSON(t, "GET", "/v1/webhooks", testAdminKey, "").wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.doJSON(t, "POST", "/v1/webhooks", testAdminKey, `{"url":"http://example.com","events":["video.ready"]}`).
		wantError(t, http.StatusServiceUnavailable, "unavailable")
}

func TestWebhookDeliveriesListed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{WebhookAllowPrivate: true})
	ctx := t.Context()
	w := decode[webhookJSON](t, e.doJSON(t, "POST", "/v1/webhooks", testAdminKey,
		`{"url":"http://127.0.0.1:9/hook","events":["video.ready","video.failed"]}`).wantStatus(t, http.StatusCreated))

	empty := e.doJSON(t, "GET", "/v1/webhooks/"+w.ID+"/deliveries", testAdminKey, "").wantStatus(t, http.StatusOK)
	if strings.TrimSpace(string(empty.body)) != `{"data":[]}` {
		t.Errorf("no deliveries: %s", empty.body)
	}

	// Two events, each fanned out and attempted the way the dispatcher
	// does: the first is delivered, the second will be retried.
	attempt := func(typ string, res routing.WebhookDeliveryResult) {
		t.Helper()
		if err := e.store.PublishEvent(ctx, typ, map[string]string{"id": "v"}); err != nil {
			t.Fatal(err)
		}
		evs, err := e.store.ReadWebhookEvents(ctx, "test", 10, time.Millisecond)
		if err != nil || len(evs) != 1 {
			t.Fatalf("ReadWebhookEvents = %v, %v", evs, err)
		}
		if n, err := e.store.FanOutWebhookEvent(ctx, evs[0]); err != nil || n != 1 {
			t.Fatalf("FanOutWebhookEvent = %d, %v", n, err)
		}
		c, err := e.store.ClaimWebhookDelivery(ctx, time.Now().Add(time.Second), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.store.FinishWebhookDelivery(ctx, c, res); err != nil {
			t.Fatal(err)
		}
	}
	attempt(routing.EventVideoReady, routing.WebhookDeliveryResult{State: routing.DeliveryDelivered, StatusCode: 200})
	next := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	attempt(routing.EventVideoFailed, routing.WebhookDeliveryResult{State: routing.DeliveryPending, StatusCode: 500,
		Error: "answered 500 Internal Server Error", NextAttempt: next})

	r := e.doJSON(t, "GET", "/v1/webhooks/"+w.ID+"/deliveries", testAdminKey, "").wantStatus(t, http.StatusOK)
	var raw struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(r.body, &raw); err != nil || len(raw.Data) != 2 {
		t.Fatalf("deliveries %s: %v", r.body, err)
	}
	list := decode[deliveryListJSON](t, r).Data
	retry, done := list[0], list[1]
	if retry.Type != "video.failed" || retry.State != "pending" || retry.Attempts != 1 || retry.LastStatus != 500 ||
		retry.LastError != "answered 500 Internal Server Error" || retry.NextAttemptAt == nil || !retry.NextAttemptAt.Equal(next) ||
		retry.WebhookID != w.ID || !strings.HasPrefix(retry.EventID, "evt_") || len(retry.ID) != 20 {
		t.Errorf("retried delivery %s", raw.Data[0])
	}
	if done.Type != "video.ready" || done.State != "delivered" || done.Attempts != 1 || done.LastStatus != 200 ||
		done.CreatedAt.IsZero() || done.UpdatedAt.Before(done.CreatedAt) {
		t.Errorf("delivered delivery %s", raw.Data[1])
	}
	// A delivered delivery has no error and no next attempt.
	keys := rawKeys(t, raw.Data[1])
	for _, k := range []string{"last_error", "next_attempt_at"} {
		if _, ok := keys[k]; ok {
			t.Errorf("delivered delivery has %q: %s", k, raw.Data[1])
		}
	}
	for _, k := range []string{"id", "webhook_id", "event_id", "type", "state", "attempts", "created_at", "updated_at"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("delivery lacks %q: %s", k, raw.Data[1])
		}
	}

	// Deleting the webhook drops its pending delivery.
	e.doJSON(t, "DELETE", "/v1/webhooks/"+w.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if n, err := e.store.PendingWebhookDeliveries(ctx); err != nil || n != 0 {
		t.Errorf("pending deliveries after delete: %d, %v", n, err)
	}
}

// waitClockPast returns once the wall clock, which the Store stamps new
// records with (to the microsecond), reads later than at, so that the next
// record is newer. It takes a few microseconds at most.
func waitClockPast(at time.Time) {
	for !time.Now().Truncate(time.Microsecond).After(at) {
		runtime.Gosched()
	}
}
