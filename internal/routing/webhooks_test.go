package routing

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

func TestWebhookCRUD(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	clock := time.Now()
	s.clock = func() time.Time { return clock }

	w, err := s.CreateWebhook(ctx, WebhookSpec{
		URL:    "https://example.com/hook",
		Events: []string{EventLiveStreamEnded, EventVideoReady, EventVideoReady},
	})
	if err != nil {
		t.Fatalf("CreateWebhook: %v", err)
	}
	if !ids.Valid(w.ID) || !ids.LooksLikeSecret("whsec", w.Secret) || w.URL != "https://example.com/hook" {
		t.Errorf("created %+v", w)
	}
	// Deduplicated, in the order of EventTypes.
	if want := []string{EventVideoReady, EventLiveStreamEnded}; !slices.Equal(w.Events, want) {
		t.Errorf("events %v, want %v", w.Events, want)
	}
	if !w.CreatedAt.Equal(clock.UTC().Truncate(time.Microsecond)) || time.Since(w.CreatedAt) > time.Minute {
		t.Errorf("CreatedAt %v is not now (%v)", w.CreatedAt, clock)
	}
	got, err := s.GetWebhook(ctx, w.ID)
	if err != nil || !equalWebhooks(got, w) {
		t.Fatalf("GetWebhook = %+v, %v; want %+v", got, err, w)
	}

	clock = clock.Add(time.Millisecond)
	w2, err := s.CreateWebhook(ctx, WebhookSpec{URL: "http://127.0.0.1:9/x", Events: []string{EventVideoFailed}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListWebhooks(ctx)
	if err != nil || len(list) != 2 || !equalWebhooks(list[0], w2) || !equalWebhooks(list[1], w) {
		t.Fatalf("ListWebhooks = %+v, %v; want [%s %s]", list, err, w2.ID, w.ID)
	}

	if err := s.DeleteWebhook(ctx, w.ID); err != nil {
		t.Fatalf("DeleteWebhook: %v", err)
	}
	if _, err := s.GetWebhook(ctx, w.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetWebhook after delete: %v", err)
	}
	if err := s.DeleteWebhook(ctx, w.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteWebhook: %v", err)
	}
	if _, err := s.ListWebhookDeliveries(ctx, w.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("ListWebhookDeliveries after delete: %v", err)
	}
	if err := s.DeleteWebhook(ctx, w2.ID); err != nil {
		t.Fatal(err)
	}
	if list, err := s.ListWebhooks(ctx); err != nil || len(list) != 0 {
		t.Errorf("ListWebhooks after deletes = %v, %v", list, err)
	}
	if keys, _ := allKeys(ctx, s, "*"); len(keys) != 0 {
		t.Errorf("keys left: %v", keys)
	}
}

func TestCreateWebhookRefusesBadSpecs(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	for _, spec := range []WebhookSpec{
		{URL: "https://example.com"},
		{URL: "https://example.com", Events: []string{}},
		{URL: "https://example.com", Events: []string{"video.*"}},
		{URL: "", Events: []string{EventVideoReady}},
	} {
		if w, err := s.CreateWebhook(t.Context(), spec); err == nil {
			t.Errorf("CreateWebhook(%+v) = %+v, want an error", spec, w)
		}
	}
	if keys, _ := allKeys(t.Context(), s, "*"); len(keys) != 0 {
		t.Errorf("refused specs left keys: %v", keys)
	}
}

// readAll reads every event not yet read by the group, as consumer.
func readAll(t *testing.T, s *Store, consumer string) []WebhookEvent {
	t.Helper()
	evs, err := s.ReadWebhookEvents(t.Context(), consumer, 1000, time.Millisecond)
	if err != nil {
		t.Fatalf("ReadWebhookEvents: %v", err)
	}
	return evs
}

func fanOut(t *testing.T, s *Store, ev WebhookEvent) int {
	t.Helper()
	n, err := s.FanOutWebhookEvent(t.Context(), ev)
	if err != nil {
		t.Fatalf("FanOutWebhookEvent: %v", err)
	}
	return n
}

func mustCreateWebhook(t *testing.T, s *Store, events ...string) Webhook {
	t.Helper()
	w, err := s.CreateWebhook(t.Context(), WebhookSpec{URL: "http://127.0.0.1:9/hook", Events: events})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func deliveries(t *testing.T, s *Store, webhookID string) []WebhookDelivery {
	t.Helper()
	list, err := s.ListWebhookDeliveries(t.Context(), webhookID)
	if err != nil {
		t.Fatalf("ListWebhookDeliveries: %v", err)
	}
	return list
}

func TestWebhookEventFanOut(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()

	// Published before the group exists: the group starts at "0" and
	// still sees it, but no webhook exists yet.
	if err := s.PublishEvent(ctx, EventVideoReady, map[string]string{"id": "early"}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range readAll(t, s, "a") {
		if n := fanOut(t, s, ev); n != 0 {
			t.Errorf("event before any webhook made %d deliveries", n)
		}
	}

	ready := mustCreateWebhook(t, s, EventVideoReady)
	live := mustCreateWebhook(t, s, EventLiveStreamStarted)
	both := mustCreateWebhook(t, s, EventVideoFailed, EventVideoReady)

	if err := s.PublishEvent(ctx, EventVideoReady, map[string]any{"id": "v1", "title": "t"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishEvent(ctx, "something.else", map[string]any{"id": "x"}); err != nil {
		t.Fatal(err)
	}
	evs := readAll(t, s, "a")
	if len(evs) != 2 || evs[0].Type != EventVideoReady || evs[1].Type != "something.else" {
		t.Fatalf("read %+v", evs)
	}
	if n := fanOut(t, s, evs[0]); n != 2 {
		t.Errorf("video.ready made %d deliveries, want 2", n)
	}
	if n := fanOut(t, s, evs[1]); n != 0 {
		t.Errorf("an unknown type made %d deliveries", n)
	}
	// Both are acknowledged.
	if p, _ := s.rdb.XPending(ctx, s.k(eventsKey), webhookEventsGroup).Result(); p.Count != 0 {
		t.Errorf("%d events still pending", p.Count)
	}
	if n, _ := s.PendingWebhookDeliveries(ctx); n != 2 {
		t.Errorf("PendingWebhookDeliveries = %d, want 2", n)
	}
	if got := deliveries(t, s, live.ID); len(got) != 0 {
		t.Errorf("live_stream.started webhook got %+v", got)
	}
	var dids []string
	for _, w := range []Webhook{ready, both} {
		got := deliveries(t, s, w.ID)
		if len(got) != 1 {
			t.Fatalf("webhook %s has %d deliveries, want 1", w.ID, len(got))
		}
		d := got[0]
		if d.WebhookID != w.ID || d.EventID != "evt_"+evs[0].EntryID || d.Type != EventVideoReady ||
			d.State != DeliveryPending || d.Attempts != 0 || d.NextAttemptAt.IsZero() || d.CreatedAt.IsZero() {
			t.Errorf("delivery %+v", d)
		}
		dids = append(dids, d.ID)
	}
	if dids[0] == dids[1] || !ids.Valid(dids[0]) {
		t.Errorf("delivery ids %v", dids)
	}

	// The body is the event, as delivered.
	c, err := s.ClaimWebhookDelivery(ctx, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		CreatedAt time.Time       `json:"created_at"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(c.Body, &body); err != nil {
		t.Fatalf("body %s: %v", c.Body, err)
	}
	if body.ID != "evt_"+evs[0].EntryID || body.Type != EventVideoReady || body.CreatedAt.IsZero() ||
		string(body.Data) != `{"id":"v1","title":"t"}` {
		t.Errorf("body %s", c.Body)
	}
	if c.Attempt != 1 || c.URL != "http://127.0.0.1:9/hook" || (c.Secret != ready.Secret && c.Secret != both.Secret) {
		t.Errorf("claimed %+v", c)
	}
}

func TestFanOutOnceUnderAutoclaim(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	w := mustCreateWebhook(t, s, EventVideoReady)
	for range 2 {
		if err := s.PublishEvent(ctx, EventVideoReady, map[string]string{"id": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	// Dispatcher a reads both and stalls; b takes them over.
	evsA := readAll(t, s, "a")
	if len(evsA) != 2 {
		t.Fatalf("a read %d events", len(evsA))
	}
	if evs, err := s.ReclaimWebhookEvents(ctx, "b", time.Hour, 10); err != nil || len(evs) != 0 {
		t.Fatalf("events not idle long enough were reclaimed: %v, %v", evs, err)
	}
	// With no minimum idle time they are taken over at once (idle time
	// is reckoned by Redis's clock, which a test cannot advance).
	evsB, err := s.ReclaimWebhookEvents(ctx, "b", 0, 10)
	if err != nil || len(evsB) != 2 || evsB[0].EntryID != evsA[0].EntryID || evsB[1].EntryID != evsA[1].EntryID {
		t.Fatalf("ReclaimWebhookEvents = %+v, %v", evsB, err)
	}
	if evsB[0].Type != EventVideoReady || string(evsB[0].Data) != `{"id":"v"}` || evsB[0].At.IsZero() {
		t.Errorf("reclaimed event %+v", evsB[0])
	}
	// b fans out the first, then a wakes up and fans out both, then b the
	// second: each event makes one delivery.
	if n := fanOut(t, s, evsB[0]); n != 1 {
		t.Errorf("b: %d deliveries, want 1", n)
	}
	if n := fanOut(t, s, evsA[0]); n != 0 {
		t.Errorf("a, late: %d deliveries, want 0", n)
	}
	if n := fanOut(t, s, evsA[1]); n != 1 {
		t.Errorf("a: %d deliveries, want 1", n)
	}
	if n := fanOut(t, s, evsB[1]); n != 0 {
		t.Errorf("b, late: %d deliveries, want 0", n)
	}
	if got := deliveries(t, s, w.ID); len(got) != 2 || got[0].EventID == got[1].EventID {
		t.Errorf("deliveries %+v, want one per event", got)
	}
	if evs, err := s.ReclaimWebhookEvents(ctx, "c", 0, 10); err != nil || len(evs) != 0 {
		t.Errorf("acknowledged events reclaimed: %v, %v", evs, err)
	}
	if n, _ := s.PendingWebhookDeliveries(ctx); n != 2 {
		t.Errorf("PendingWebhookDeliveries = %d, want 2", n)
	}
}

func TestWebhookDeliveryLease(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	w := mustCreateWebhook(t, s, EventLiveStreamStarted)
	if err := s.PublishEvent(ctx, EventLiveStreamStarted, map[string]string{"id": "ls"}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range readAll(t, s, "a") {
		fanOut(t, s, ev)
	}
	const lease = time.Minute
	t0 := time.Now().Add(time.Second) // surely after the delivery became due

	// Many claimers at the same instant: one wins.
	var (
		mu   sync.Mutex
		won  []ClaimedWebhookDelivery
		wg   sync.WaitGroup
		errs = make(chan error, 16)
	)
	for range 16 {
		wg.Go(func() {
			c, err := s.ClaimWebhookDelivery(ctx, t0, lease)
			if errors.Is(err, ErrNotFound) {
				return
			}
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			won = append(won, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("ClaimWebhookDelivery: %v", err)
	}
	if len(won) != 1 {
		t.Fatalf("%d claimers won, want 1", len(won))
	}
	first := won[0]
	if first.Attempt != 1 || first.WebhookID != w.ID || first.Type != EventLiveStreamStarted || first.Lease == "" {
		t.Errorf("claimed %+v", first)
	}
	if d := deliveries(t, s, w.ID)[0]; d.Attempts != 1 || d.State != DeliveryPending {
		t.Errorf("after the claim %+v", d)
	}

	// Not again before the lease ends; again once it has (the first
	// claimer is taken for dead).
	if _, err := s.ClaimWebhookDelivery(ctx, t0.Add(lease-time.Millisecond), lease); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claimed during the lease: %v", err)
	}
	t1 := t0.Add(lease)
	second, err := s.ClaimWebhookDelivery(ctx, t1, lease)
	if err != nil {
		t.Fatalf("claim after the lease: %v", err)
	}
	if second.ID != first.ID || second.Attempt != 2 || second.Lease == first.Lease {
		t.Errorf("second claim %+v (first %+v)", second, first)
	}
	// The first claimer's retry is refused: it no longer holds the lease.
	err = s.FinishWebhookDelivery(ctx, first, WebhookDeliveryResult{State: DeliveryPending, NextAttempt: t1, StatusCode: 500, At: t1})
	if !errors.Is(err, ErrWebhookDeliveryLost) {
		t.Errorf("stale retry: %v, want ErrWebhookDeliveryLost", err)
	}
	// The second one reschedules.
	next := t1.Add(10 * time.Second)
	err = s.FinishWebhookDelivery(ctx, second, WebhookDeliveryResult{State: DeliveryPending, NextAttempt: next, Error: "connection refused", At: t1})
	if err != nil {
		t.Fatalf("FinishWebhookDelivery(retry): %v", err)
	}
	d := deliveries(t, s, w.ID)[0]
	if d.State != DeliveryPending || d.Attempts != 2 || d.LastError != "connection refused" || d.LastStatus != 0 ||
		!d.NextAttemptAt.Equal(next.UTC().Truncate(time.Microsecond)) {
		t.Errorf("after a retry %+v", d)
	}
	if _, err := s.ClaimWebhookDelivery(ctx, next.Add(-time.Millisecond), lease); !errors.Is(err, ErrNotFound) {
		t.Fatalf("claimed before its next attempt: %v", err)
	}
	third, err := s.ClaimWebhookDelivery(ctx, next, lease)
	if err != nil || third.Attempt != 3 {
		t.Fatalf("third claim %+v, %v", third, err)
	}
	// A late success of the first claimer is recorded all the same.
	if err := s.FinishWebhookDelivery(ctx, first, WebhookDeliveryResult{State: DeliveryDelivered, StatusCode: 204, At: next}); err != nil {
		t.Fatalf("late success: %v", err)
	}
	d = deliveries(t, s, w.ID)[0]
	if d.State != DeliveryDelivered || d.LastStatus != 204 || d.LastError != "" || !d.NextAttemptAt.IsZero() || d.Attempts != 3 {
		t.Errorf("after success %+v", d)
	}
	// Then the third attempt's result is not recorded.
	err = s.FinishWebhookDelivery(ctx, third, WebhookDeliveryResult{State: DeliveryFailed, StatusCode: 500, At: next})
	if !errors.Is(err, ErrWebhookDeliveryLost) {
		t.Errorf("result after delivered: %v", err)
	}
	if _, err := s.ClaimWebhookDelivery(ctx, next.Add(time.Hour), lease); !errors.Is(err, ErrNotFound) {
		t.Errorf("claimed a delivered delivery: %v", err)
	}
	if n, _ := s.PendingWebhookDeliveries(ctx); n != 0 {
		t.Errorf("PendingWebhookDeliveries = %d", n)
	}
	if err := s.FinishWebhookDelivery(ctx, third, WebhookDeliveryResult{State: "weird"}); err == nil {
		t.Errorf("a bad state was accepted")
	}
}

func TestDeleteWebhookDropsPendingDeliveries(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	keep := mustCreateWebhook(t, s, EventVideoReady)
	drop := mustCreateWebhook(t, s, EventVideoReady)
	for range 3 {
		if err := s.PublishEvent(ctx, EventVideoReady, map[string]string{"id": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range readAll(t, s, "a") {
		fanOut(t, s, ev)
	}
	// One of drop's deliveries is in flight when it is deleted.
	var inFlight ClaimedWebhookDelivery
	for {
		c, err := s.ClaimWebhookDelivery(ctx, time.Now(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if c.WebhookID == drop.ID {
			inFlight = c
			break
		}
	}
	if err := s.DeleteWebhook(ctx, drop.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishWebhookDelivery(ctx, inFlight, WebhookDeliveryResult{State: DeliveryDelivered, StatusCode: 200}); !errors.Is(err, ErrWebhookDeliveryLost) {
		t.Errorf("result for a deleted webhook: %v", err)
	}
	if n, _ := s.PendingWebhookDeliveries(ctx); n != 3 {
		t.Errorf("PendingWebhookDeliveries = %d, want keep's 3", n)
	}
	later := time.Now().Add(2 * time.Minute)
	for {
		c, err := s.ClaimWebhookDelivery(ctx, later, time.Minute)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if c.WebhookID != keep.ID {
			t.Fatalf("claimed a delivery of the deleted webhook: %+v", c)
		}
	}
	keys, _ := allKeys(ctx, s, "*"+drop.ID+"*")
	if len(keys) != 0 {
		t.Errorf("keys of the deleted webhook left: %v", keys)
	}
	if dk, _ := allKeys(ctx, s, s.k(webhookDeliveryPrefix)+"*"); len(dk) != 3 {
		t.Errorf("%d delivery records, want keep's 3", len(dk))
	}
}

func TestWebhookLogIsCapped(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	w := mustCreateWebhook(t, s, EventVideoFailed)
	const events = WebhookLogSize + 5
	for i := range events {
		if err := s.PublishEvent(ctx, EventVideoFailed, map[string]int{"i": i}); err != nil {
			t.Fatal(err)
		}
	}
	evs := readAll(t, s, "a")
	if len(evs) != events {
		t.Fatalf("read %d events", len(evs))
	}
	for _, ev := range evs {
		fanOut(t, s, ev)
	}
	list := deliveries(t, s, w.ID)
	if len(list) != WebhookLogSize || list[0].EventID != evs[events-1].ID() || list[WebhookLogSize-1].EventID != evs[5].ID() {
		t.Fatalf("log has %d entries from %s to %s", len(list), list[0].EventID, list[len(list)-1].EventID)
	}
	// Deliveries that fell off the log are still delivered, then
	// forgotten.
	if n, _ := s.PendingWebhookDeliveries(ctx); n != events {
		t.Fatalf("PendingWebhookDeliveries = %d, want %d", n, events)
	}
	for {
		c, err := s.ClaimWebhookDelivery(ctx, time.Now().Add(time.Second), time.Minute)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.FinishWebhookDelivery(ctx, c, WebhookDeliveryResult{State: DeliveryFailed, StatusCode: 410}); err != nil {
			t.Fatal(err)
		}
	}
	if dk, _ := allKeys(ctx, s, s.k(webhookDeliveryPrefix)+"*"); len(dk) != WebhookLogSize {
		t.Errorf("%d delivery records kept, want %d", len(dk), WebhookLogSize)
	}
	for _, d := range deliveries(t, s, w.ID) {
		if d.State != DeliveryFailed || d.LastStatus != 410 || d.Attempts != 1 {
			t.Fatalf("delivery %+v", d)
		}
	}
	// New deliveries push old ones out and delete them.
	if err := s.PublishEvent(ctx, EventVideoFailed, map[string]int{"i": events}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range readAll(t, s, "a") {
		fanOut(t, s, ev)
	}
	if dk, _ := allKeys(ctx, s, s.k(webhookDeliveryPrefix)+"*"); len(dk) != WebhookLogSize {
		t.Errorf("%d delivery records kept, want %d", len(dk), WebhookLogSize)
	}
}

func TestWebhookEventsGroupComesBack(t *testing.T) {
	t.Parallel()
	s, srv := newTestStore(t)
	srv.ownRedis(t)
	ctx := t.Context()
	// Reading creates the group; reading again finds nothing.
	if evs := readAll(t, s, "a"); len(evs) != 0 {
		t.Fatalf("read %v from an empty Redis", evs)
	}
	if evs := readAll(t, s, "a"); len(evs) != 0 {
		t.Fatalf("read %v from an empty Redis", evs)
	}

	srv.Kill()
	ops := map[string]func(context.Context) error{
		"CreateWebhook": func(ctx context.Context) error {
			_, err := s.CreateWebhook(ctx, WebhookSpec{URL: "http://x", Events: []string{EventVideoReady}})
			return err
		},
		"ListWebhooks": func(ctx context.Context) error { _, err := s.ListWebhooks(ctx); return err },
		"ReadWebhookEvents": func(ctx context.Context) error {
			_, err := s.ReadWebhookEvents(ctx, "a", 1, time.Millisecond)
			return err
		},
		"ClaimWebhookDelivery": func(ctx context.Context) error {
			_, err := s.ClaimWebhookDelivery(ctx, time.Now(), time.Minute)
			return err
		},
	}
	for name, op := range ops {
		if err := op(ctx); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s with Redis dead: %v, want ErrUnavailable", name, err)
		}
	}

	// The restarted Redis is empty: the group is made again, and sees
	// what was published before it.
	srv.Restart(t)
	waitReachable(t, s)
	if err := s.PublishEvent(ctx, EventVideoReady, map[string]string{"id": "v"}); err != nil {
		t.Fatal(err)
	}
	w := mustCreateWebhook(t, s, EventVideoReady)
	evs := readAll(t, s, "b")
	if len(evs) != 1 {
		t.Fatalf("read %d events after the restart, want 1", len(evs))
	}
	if n := fanOut(t, s, evs[0]); n != 1 {
		t.Errorf("fan out after the restart: %d", n)
	}
	if got := deliveries(t, s, w.ID); len(got) != 1 {
		t.Errorf("deliveries after the restart: %+v", got)
	}
}

func TestWebhookBodyWithoutData(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	got := string(WebhookBody(WebhookEvent{EntryID: "1-0", Type: EventVideoReady, At: at}))
	if want := `{"id":"evt_1-0","type":"video.ready","created_at":"2030-01-02T03:04:05Z","data":null}`; got != want {
		t.Errorf("body %s, want %s", got, want)
	}
	if !strings.Contains(string(WebhookBody(WebhookEvent{EntryID: "1-0", Data: json.RawMessage(`{"a": 1}`)})), `"data":{"a":1}`) {
		t.Errorf("data not compacted")
	}
}

func equalWebhooks(a, b Webhook) bool {
	return a.ID == b.ID && a.URL == b.URL && a.Secret == b.Secret && a.CreatedAt.Equal(b.CreatedAt) && slices.Equal(a.Events, b.Events)
}

func TestWebhookEventBacklog(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	backlog := func(want int64) {
		t.Helper()
		if n, err := s.WebhookEventBacklog(ctx); err != nil || n != want {
			t.Fatalf("WebhookEventBacklog = %d, %v; want %d", n, err, want)
		}
	}
	backlog(0) // no events stream yet
	mustCreateWebhook(t, s, EventVideoReady)
	for range 3 {
		if err := s.PublishEvent(ctx, EventVideoReady, map[string]string{"id": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	backlog(3) // no dispatcher has read
	if evs, err := s.ReadWebhookEvents(ctx, "a", 2, time.Millisecond); err != nil || len(evs) != 2 {
		t.Fatalf("ReadWebhookEvents = %v, %v", evs, err)
	}
	backlog(3) // two read, not fanned out; one unread
	evs := readAll(t, s, "a")
	if len(evs) != 1 {
		t.Fatalf("read %d more events, want 1", len(evs))
	}
	backlog(3)
	fanOut(t, s, evs[0])
	backlog(2)
	evs, err := s.ReclaimWebhookEvents(ctx, "b", 0, 10)
	if err != nil || len(evs) != 2 {
		t.Fatalf("ReclaimWebhookEvents = %v, %v", evs, err)
	}
	for _, ev := range evs {
		fanOut(t, s, ev)
	}
	backlog(0)
	if n, err := s.PendingWebhookDeliveries(ctx); err != nil || n != 3 {
		t.Errorf("PendingWebhookDeliveries = %d, %v; want 3", n, err)
	}
}
