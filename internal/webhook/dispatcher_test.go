package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/routing"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// fastConfig makes retries and polls quick; the lease is long enough that no
// delivery is sent twice in a normal run.
func fastConfig() Config {
	return Config{
		PollInterval:   10 * time.Millisecond,
		RequestTimeout: 2 * time.Second,
		BackoffBase:    5 * time.Millisecond,
		BackoffMax:     20 * time.Millisecond,
		Lease:          10 * time.Second,
		EventClaimIdle: 5 * time.Second,
		MaxAttempts:    4,
		// The receivers are httptest servers on loopback.
		AllowPrivate: true,
	}
}

type env struct {
	redis *redistest.Server
	store *routing.Store
	logs  *shoaltest.Buffer
	// changed is signalled when a dispatcher started by start changed
	// the deliveries (fanned events out, recorded an attempt).
	changed chan struct{}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := redistest.Start(t)
	store, err := routing.NewStore(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return &env{redis: srv, store: store, logs: &shoaltest.Buffer{}, changed: make(chan struct{}, 1)}
}

// running is a Dispatcher whose Run is in progress.
type running struct {
	d    *Dispatcher
	reg  *prometheus.Registry
	stop func()
	done chan error

	started chan struct{} // closed when Run has begun
	// Poll cycles that failed on Redis, of each loop; failed is signalled
	// after each.
	eventsFailed, claimsFailed atomic.Int64
	failed                     chan struct{}
}

// signal wakes the waiter on a one-slot channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// start runs a new Dispatcher on e's Redis until the test ends or stop.
func (e *env) start(t *testing.T, cfg Config) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	d, err := New(cfg, Deps{Store: e.store, Log: log, Registerer: reg})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{d: d, reg: reg, done: make(chan error, 1), started: make(chan struct{}), failed: make(chan struct{}, 1)}
	d.trace = func(ev traceEvent) {
		switch ev {
		case traceStarted:
			close(r.started)
		case traceFannedOut, traceFinished:
			signal(e.changed)
		case traceEventsFailed:
			r.eventsFailed.Add(1)
			signal(r.failed)
		case traceClaimFailed:
			r.claimsFailed.Add(1)
			signal(r.failed)
		}
	}
	go func() { r.done <- d.Run(ctx) }()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-r.done:
				if err != nil {
					t.Errorf("Run = %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

func (r *running) count(outcome string) float64 {
	return testutil.ToFloat64(r.d.m.deliveries.WithLabelValues(outcome))
}

// receiver is a webhook endpoint that records what it gets; answer chooses
// the status of the n-th request (from 1).
type receiver struct {
	srv    *httptest.Server
	secret atomic.Pointer[string]

	mu       sync.Mutex
	requests []received
	answer   func(n int) int
}

type received struct {
	header http.Header
	body   []byte
	// verifyErr is what Verify said about the signature.
	verifyErr error
}

func newReceiver(t *testing.T, answer func(n int) int) *receiver {
	t.Helper()
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		secret := ""
		if s := rc.secret.Load(); s != nil {
			secret = *s
		}
		rc.mu.Lock()
		rc.requests = append(rc.requests, received{
			header: r.Header.Clone(), body: body,
			verifyErr: Verify(secret, r.Header.Get(SignatureHeader), body, time.Minute, time.Now()),
		})
		status := rc.answer(len(rc.requests))
		rc.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) got() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.requests...)
}

func always(status int) func(int) int { return func(int) int { return status } }

// webhook creates a webhook for rc.
func (e *env) webhook(t *testing.T, rc *receiver, events ...string) routing.Webhook {
	t.Helper()
	w, err := e.store.CreateWebhook(t.Context(), routing.WebhookSpec{URL: rc.srv.URL + "/hook?token=t0ps3cret", Events: events})
	if err != nil {
		t.Fatal(err)
	}
	rc.secret.Store(&w.Secret)
	return w
}

func (e *env) publish(t *testing.T, typ string, data any) {
	t.Helper()
	if err := e.store.PublishEvent(t.Context(), typ, data); err != nil {
		t.Fatal(err)
	}
}

// waitDeliveries waits until the webhook's log satisfies ok, looking again
// each time a dispatcher changed the deliveries (or, while reading the log
// fails, every 20 ms).
func (e *env) waitDeliveries(t *testing.T, webhookID, what string, ok func([]routing.WebhookDelivery) bool) []routing.WebhookDelivery {
	t.Helper()
	deadline := time.NewTimer(8 * time.Second)
	defer deadline.Stop()
	for {
		list, err := e.store.ListWebhookDeliveries(t.Context(), webhookID)
		if err == nil && ok(list) {
			return list
		}
		var retry <-chan time.Time
		if err != nil {
			retry = time.After(20 * time.Millisecond)
		}
		select {
		case <-e.changed:
		case <-retry:
		case <-deadline.C:
			t.Fatalf("waiting for %s: deliveries %+v, %v\nlogs:\n%s", what, list, err, e.logs)
		}
	}
}

// waitFailedPolls waits until both of r's loops have failed n poll cycles
// (on Redis) each.
func (r *running) waitFailedPolls(t *testing.T, n int64) {
	t.Helper()
	deadline := time.NewTimer(8 * time.Second)
	defer deadline.Stop()
	for r.eventsFailed.Load() < n || r.claimsFailed.Load() < n {
		select {
		case <-r.failed:
		case <-deadline.C:
			t.Fatalf("%d failed event reads and %d failed claims, want %d of each", r.eventsFailed.Load(), r.claimsFailed.Load(), n)
		}
	}
}

func allIn(state string, n int) func([]routing.WebhookDelivery) bool {
	return func(list []routing.WebhookDelivery) bool {
		if len(list) != n {
			return false
		}
		for _, d := range list {
			if d.State != state {
				return false
			}
		}
		return true
	}
}

func TestDeliversSignedEvent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, always(http.StatusNoContent))
	w := e.webhook(t, rc, routing.EventVideoReady)
	r := e.start(t, fastConfig())

	e.publish(t, routing.EventLiveStreamStarted, map[string]string{"id": "not subscribed"})
	e.publish(t, routing.EventVideoReady, map[string]any{"id": "v1", "title": "My video"})
	list := e.waitDeliveries(t, w.ID, "one delivered", allIn(routing.DeliveryDelivered, 1))
	d := list[0]
	if d.Attempts != 1 || d.LastStatus != http.StatusNoContent || d.LastError != "" || d.Type != routing.EventVideoReady {
		t.Errorf("delivery %+v", d)
	}

	got := rc.got()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	req := got[0]
	if req.verifyErr != nil {
		t.Errorf("signature %q does not verify: %v", req.header.Get(SignatureHeader), req.verifyErr)
	}
	for h, want := range map[string]string{
		"Content-Type":   "application/json",
		"User-Agent":     "Shoal-Webhooks/1",
		"Shoal-Event":    "video.ready",
		"Shoal-Delivery": d.ID,
	} {
		if v := req.header.Get(h); v != want {
			t.Errorf("header %s = %q, want %q", h, v, want)
		}
	}
	var body struct {
		ID        string            `json:"id"`
		Type      string            `json:"type"`
		CreatedAt time.Time         `json:"created_at"`
		Data      map[string]string `json:"data"`
	}
	dec := json.NewDecoder(strings.NewReader(string(req.body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("body %s: %v", req.body, err)
	}
	if body.ID != d.EventID || body.Type != "video.ready" || time.Since(body.CreatedAt) > time.Minute ||
		body.Data["id"] != "v1" || body.Data["title"] != "My video" {
		t.Errorf("body %s", req.body)
	}

	if n := r.count(outcomeDelivered); n != 1 {
		t.Errorf("delivered counter %v, want 1", n)
	}
	r.stop()
	if logs := e.logs.String(); strings.Contains(logs, w.Secret) || strings.Contains(logs, "t0ps3cret") {
		t.Errorf("the logs leak the secret or the URL's token:\n%s", logs)
	}
}

func TestRetriesUntilDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	w := e.webhook(t, rc, routing.EventVideoFailed)
	r := e.start(t, fastConfig())
	e.publish(t, routing.EventVideoFailed, map[string]string{"id": "v", "error": "bad"})

	list := e.waitDeliveries(t, w.ID, "delivered", allIn(routing.DeliveryDelivered, 1))
	if d := list[0]; d.Attempts != 3 || d.LastStatus != 200 || d.LastError != "" || !d.NextAttemptAt.IsZero() {
		t.Errorf("delivery %+v, want delivered after 3 attempts", d)
	}
	got := rc.got()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for i, req := range got {
		if req.verifyErr != nil || req.header.Get(DeliveryHeader) != list[0].ID || string(req.body) != string(got[0].body) {
			t.Errorf("attempt %d: verify %v, delivery %q, body %s", i+1, req.verifyErr, req.header.Get(DeliveryHeader), req.body)
		}
	}
	if r.count(outcomeRetry) != 2 || r.count(outcomeDelivered) != 1 || r.count(outcomeFailed) != 0 {
		t.Errorf("counters retry=%v delivered=%v failed=%v", r.count(outcomeRetry), r.count(outcomeDelivered), r.count(outcomeFailed))
	}
	if n := testutil.CollectAndCount(r.reg, "shoal_webhook_delivery_duration_seconds"); n != 1 {
		t.Errorf("latency histogram: %d series", n)
	}
}

func TestFailsAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, always(http.StatusServiceUnavailable))
	w := e.webhook(t, rc, routing.EventLiveStreamEnded)
	cfg := fastConfig()
	cfg.MaxAttempts = 3
	r := e.start(t, cfg)
	e.publish(t, routing.EventLiveStreamEnded, map[string]string{"id": "ls"})

	list := e.waitDeliveries(t, w.ID, "failed", allIn(routing.DeliveryFailed, 1))
	d := list[0]
	if d.Attempts != 3 || d.LastStatus != 503 || !strings.Contains(d.LastError, "503") || !d.NextAttemptAt.IsZero() {
		t.Errorf("delivery %+v", d)
	}
	if n := len(rc.got()); n != 3 {
		t.Errorf("receiver got %d requests, want 3", n)
	}
	if r.count(outcomeRetry) != 2 || r.count(outcomeFailed) != 1 {
		t.Errorf("counters retry=%v failed=%v", r.count(outcomeRetry), r.count(outcomeFailed))
	}
	if !strings.Contains(e.logs.String(), "no attempts left") {
		t.Errorf("the final failure was not logged:\n%s", e.logs)
	}
}

func TestRedirectsAndTimeoutsFail(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var followed atomic.Bool
	mux := http.NewServeMux()
	mux.HandleFunc("/hook", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) { followed.Store(true) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		// The server notices the client hanging up only once the body
		// is read.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	redirect, err := e.store.CreateWebhook(t.Context(), routing.WebhookSpec{URL: srv.URL + "/hook", Events: []string{routing.EventVideoReady}})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := e.store.CreateWebhook(t.Context(), routing.WebhookSpec{URL: srv.URL + "/slow", Events: []string{routing.EventVideoReady}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.MaxAttempts = 1
	cfg.RequestTimeout = 50 * time.Millisecond
	cfg.Lease = time.Second
	e.start(t, cfg)
	e.publish(t, routing.EventVideoReady, map[string]string{"id": "v"})

	d := e.waitDeliveries(t, redirect.ID, "redirect failed", allIn(routing.DeliveryFailed, 1))[0]
	if d.LastStatus != http.StatusTemporaryRedirect || !strings.Contains(d.LastError, "redirects are not followed") {
		t.Errorf("redirected delivery %+v", d)
	}
	if followed.Load() {
		t.Errorf("the redirect was followed")
	}
	d = e.waitDeliveries(t, slow.ID, "timeout failed", allIn(routing.DeliveryFailed, 1))[0]
	if d.LastStatus != 0 || !strings.Contains(d.LastError, "no answer within 50ms") {
		t.Errorf("timed out delivery %+v", d)
	}
}

func TestRestartDeliversPending(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var up atomic.Bool
	rc := newReceiver(t, func(int) int {
		if up.Load() {
			return http.StatusOK
		}
		return http.StatusBadGateway
	})
	w := e.webhook(t, rc, routing.EventVideoReady)
	cfg := fastConfig()
	cfg.MaxAttempts = 100
	cfg.BackoffBase, cfg.BackoffMax = 50*time.Millisecond, 50*time.Millisecond
	first := e.start(t, cfg)
	e.publish(t, routing.EventVideoReady, map[string]string{"id": "a"})
	e.waitDeliveries(t, w.ID, "a failed attempt", func(list []routing.WebhookDelivery) bool {
		return len(list) == 1 && list[0].LastStatus == http.StatusBadGateway
	})
	first.stop()

	// Published while no dispatcher runs.
	e.publish(t, routing.EventVideoReady, map[string]string{"id": "b"})
	up.Store(true)
	e.start(t, cfg)
	list := e.waitDeliveries(t, w.ID, "both delivered", allIn(routing.DeliveryDelivered, 2))
	if list[0].Attempts != 1 || list[1].Attempts < 2 {
		t.Errorf("deliveries %+v", list)
	}
}

func TestTwoDispatchersDeliverOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, always(http.StatusOK))
	w := e.webhook(t, rc, routing.EventLiveStreamStarted, routing.EventLiveStreamEnded)
	cfg := fastConfig()
	cfg.Consumer = "origin-a"
	a := e.start(t, cfg)
	cfg.Consumer = "origin-b"
	b := e.start(t, cfg)

	const events = 30
	for i := range events {
		e.publish(t, routing.EventLiveStreamStarted, map[string]int{"i": i})
	}
	e.waitDeliveries(t, w.ID, "all delivered", allIn(routing.DeliveryDelivered, events))
	seen := map[string]int{}
	for _, req := range rc.got() {
		if req.verifyErr != nil {
			t.Errorf("signature: %v", req.verifyErr)
		}
		seen[req.header.Get(DeliveryHeader)]++
	}
	if len(seen) != events {
		t.Errorf("%d distinct deliveries received, want %d", len(seen), events)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("delivery %s received %d times", id, n)
		}
	}
	if total := a.count(outcomeDelivered) + b.count(outcomeDelivered); total != events {
		t.Errorf("the dispatchers delivered %v, want %d", total, events)
	}
}

func TestRedisDownDoesNotStopRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, always(http.StatusOK))
	r := e.start(t, fastConfig())

	e.redis.Kill()
	r.waitFailedPolls(t, 5) // many poll intervals
	select {
	case err := <-r.done:
		t.Fatalf("Run returned %v while Redis was down", err)
	default:
	}
	e.redis.Restart(t) // empty
	// The Store's reconnection is seen only by trying it.
	deadline := time.NewTimer(8 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for e.store.Ping(t.Context()) != nil {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatal("Redis did not come back")
		}
	}
	w := e.webhook(t, rc, routing.EventVideoReady)
	e.publish(t, routing.EventVideoReady, map[string]string{"id": "v"})
	e.waitDeliveries(t, w.ID, "delivered after Redis came back", allIn(routing.DeliveryDelivered, 1))
	if n := strings.Count(e.logs.String(), "failed; retrying"); n < 1 || n > 4 {
		t.Errorf("%d Redis error lines logged, want a few (rate-limited):\n%s", n, e.logs)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := New(Config{}, Deps{}); err == nil {
		t.Errorf("New without a Store succeeded")
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{PollInterval: -1}, "PollInterval must be positive"},
		{Config{MaxAttempts: -1}, "MaxAttempts must be positive"},
		{Config{Workers: -2}, "Workers must be positive"},
		{Config{BackoffBase: time.Hour, BackoffMax: time.Minute}, "BackoffMax"},
		{Config{RequestTimeout: time.Minute, Lease: time.Minute}, "Lease (1m0s) must be longer than RequestTimeout"},
	} {
		if _, err := New(tc.cfg, Deps{Store: e.store}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error with %q", tc.cfg, err, tc.want)
		}
	}
	d, err := New(Config{}, Deps{Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	c := d.cfg
	if c.PollInterval != time.Second || c.RequestTimeout != 10*time.Second || c.MaxAttempts != 8 ||
		c.BackoffBase != 10*time.Second || c.BackoffMax != time.Hour || c.Lease != 40*time.Second || c.Workers != 8 || c.Consumer == "" {
		t.Errorf("defaults %+v", c)
	}
	// Backoff doubles from the base up to the cap, with at most 10% jitter.
	for attempt, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 4: 80 * time.Second, 9: 2560 * time.Second, 10: time.Hour, 60: time.Hour} {
		if got := d.backoff(attempt); got < want || got > want+want/10 {
			t.Errorf("backoff(%d) = %v, want %v plus up to 10%%", attempt, got, want)
		}
	}
	// Registering twice on one registry fails.
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, Deps{Store: e.store, Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{}, Deps{Store: e.store, Registerer: reg}); err == nil {
		t.Errorf("a second registration succeeded")
	}
}

func TestRunTwice(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.start(t, fastConfig())
	select {
	case <-r.started:
	case <-time.After(8 * time.Second):
		t.Fatal("Run did not start")
	}
	if err := r.d.Run(t.Context()); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("second Run = %v, want an error", err)
	}
}

func TestAttemptsOfDeadDispatchersCount(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	rc := newReceiver(t, always(http.StatusOK))
	w := e.webhook(t, rc, routing.EventVideoReady)
	e.publish(t, routing.EventVideoReady, map[string]string{"id": "v"})
	ctx := t.Context()
	evs, err := e.store.ReadWebhookEvents(ctx, "dead", 10, time.Millisecond)
	if err != nil || len(evs) != 1 {
		t.Fatalf("ReadWebhookEvents = %v, %v", evs, err)
	}
	if _, err := e.store.FanOutWebhookEvent(ctx, evs[0]); err != nil {
		t.Fatal(err)
	}
	// Dispatchers that claim the delivery and die before recording
	// anything, as many times as there are attempts.
	// Each claims at a time after the lease of the one before ran out.
	cfg := fastConfig()
	at := time.Now()
	for i := range cfg.MaxAttempts {
		c, err := e.store.ClaimWebhookDelivery(ctx, at, time.Millisecond)
		if err != nil || c.Attempt != i+1 {
			t.Fatalf("claim %d: %+v, %v", i+1, c, err)
		}
		at = at.Add(2 * time.Millisecond)
	}
	e.start(t, cfg)
	d := e.waitDeliveries(t, w.ID, "failed", allIn(routing.DeliveryFailed, 1))[0]
	if d.Attempts != cfg.MaxAttempts+1 || !strings.Contains(d.LastError, "stopped before it recorded an answer") {
		t.Errorf("delivery %+v", d)
	}
	if n := len(rc.got()); n != 0 {
		t.Errorf("receiver got %d requests after the last attempt, want 0", n)
	}
}

// Off by default: a delivery to a loopback address is refused after name
// resolution, and the delivery fails with that reason.
func TestPrivateAddressRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { got <- struct{}{} }))
	defer srv.Close()
	cfg := fastConfig()
	cfg.AllowPrivate = false
	cfg.MaxAttempts = 1
	d, err := New(cfg, Deps{Store: e.store})
	if err != nil {
		t.Fatal(err)
	}
	// "localhost" resolves to loopback: the name alone passes, the dial
	// is refused.
	u := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1)
	if _, err := d.client.Get(u); !errors.Is(err, ErrPrivateAddress) {
		t.Fatalf("GET %s: %v, want ErrPrivateAddress", u, err)
	}
	select {
	case <-got:
		t.Fatal("the request reached the loopback server")
	default:
	}
}
