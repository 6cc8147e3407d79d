// Package webhook delivers Shoal's events to the URLs users registered with
// POST /v1/webhooks.
//
// A Dispatcher reads the events stream through a consumer group, turns each
// event into one delivery per subscribed webhook, and POSTs the deliveries
// that are due, signed with the webhook's secret (see Sign and Verify).
// An answer in the 2xx range completes a delivery; anything else (another
// status, a redirect, which is never followed, a timeout, a refused
// connection) is retried with exponential backoff until MaxAttempts attempts
// have failed.
//
// Everything lives in Redis (see package routing), so any number of
// dispatchers, one per origin, share the work and survive restarts: a
// delivery is claimed with a lease, and one whose dispatcher died is retried
// once the lease has run out. Deliveries are therefore at-least-once;
// receivers deduplicate with the Shoal-Delivery header (or the event id).
// Deliveries are not ordered.
//
// While Redis is unreachable a Dispatcher logs (at most once per
// 10 seconds) and keeps trying; Run never fails because of it.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/netguard"
	"github.com/shoal-video/shoal/internal/routing"
)

// Headers of a delivery besides SignatureHeader.
const (
	UserAgent      = "Shoal-Webhooks/1"
	EventHeader    = "Shoal-Event"
	DeliveryHeader = "Shoal-Delivery"
)

// Defaults for the zero values of Config.
const (
	DefaultPollInterval   = time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultMaxAttempts    = 8
	DefaultBackoffBase    = 10 * time.Second
	DefaultBackoffMax     = time.Hour
	DefaultEventClaimIdle = time.Minute
	DefaultWorkers        = 8
	// The default Lease is RequestTimeout + leaseMargin.
	leaseMargin = 30 * time.Second
)

const (
	// eventBatch is how many events one read takes.
	eventBatch = 100
	// maxDrain is how much of an answer's body is read (and discarded), so
	// that the connection can be reused.
	maxDrain = 64 << 10
	// finishTimeout bounds recording an attempt's result after the request.
	finishTimeout = 5 * time.Second
	// logInterval is the least time between two log lines of one kind.
	logInterval = 10 * time.Second
	// maxErrorLen caps the error text recorded for an attempt.
	maxErrorLen = 300
)

// Store is the state the dispatcher works on; *routing.Store implements it.
type Store interface {
	ReadWebhookEvents(ctx context.Context, consumer string, count int, block time.Duration) ([]routing.WebhookEvent, error)
	ReclaimWebhookEvents(ctx context.Context, consumer string, minIdle time.Duration, count int) ([]routing.WebhookEvent, error)
	FanOutWebhookEvent(ctx context.Context, ev routing.WebhookEvent) (int, error)
	ClaimWebhookDelivery(ctx context.Context, now time.Time, lease time.Duration) (routing.ClaimedWebhookDelivery, error)
	FinishWebhookDelivery(ctx context.Context, c routing.ClaimedWebhookDelivery, r routing.WebhookDeliveryResult) error
	PendingWebhookDeliveries(ctx context.Context) (int64, error)
}

// Config configures a Dispatcher. Zero values take the defaults.
type Config struct {
	// Consumer names this dispatcher in the events consumer group
	// (default: the host name). Names need not be unique: events are
	// taken over by idle time, whoever held them.
	Consumer string
	// PollInterval is how long a read waits for new events, and how often
	// an idle dispatcher looks for due deliveries (default 1 s). Run may
	// take this long to return.
	PollInterval time.Duration
	// RequestTimeout bounds one delivery attempt (default 10 s).
	RequestTimeout time.Duration
	// MaxAttempts is how many attempts a delivery gets before it is
	// failed (default 8).
	MaxAttempts int
	// BackoffBase is the wait after the first failed attempt; it doubles
	// after each further one, up to BackoffMax, plus up to 10% jitter
	// (defaults 10 s and 1 h: 8 attempts span about 21 minutes).
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// Lease is how long a claimed delivery is reserved for this
	// dispatcher; it must exceed RequestTimeout (default RequestTimeout +
	// 30 s). When a dispatcher dies mid-delivery, another one retries the
	// delivery after the lease.
	Lease time.Duration
	// EventClaimIdle is how long an event read by a dispatcher may stay
	// unprocessed before another dispatcher takes it over (default 1 min).
	EventClaimIdle time.Duration
	// Workers is how many deliveries this dispatcher sends at once
	// (default 8).
	Workers int
	// AllowPrivate lets deliveries go to loopback, private and link-local
	// addresses (checked after name resolution); off, API users cannot make
	// the node call into its own network. It applies to the dispatcher's
	// own client, not to Deps.HTTPClient.
	AllowPrivate bool
}

// ErrPrivateAddress refuses a delivery to a loopback, private or
// link-local address.
var ErrPrivateAddress = errors.New("the webhook URL resolves to a loopback, private or link-local address (set webhook_allow_private to allow it)")

// Deps are the dispatcher's collaborators.
type Deps struct {
	// Store is required.
	Store Store
	// Log defaults to slog.Default().
	Log *slog.Logger
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// HTTPClient sends the deliveries; nil: a client of its own. The
	// dispatcher uses a copy that never follows redirects; timeouts come
	// from RequestTimeout.
	HTTPClient *http.Client
}

// Dispatcher delivers webhook events. Create it with New; Run does the work.
type Dispatcher struct {
	cfg    Config
	store  Store
	log    *slog.Logger
	client *http.Client
	m      metrics

	redisLog, attemptLog, failLog *logx.Limiter

	wake    chan struct{}
	running atomic.Bool

	// trace, when set (by tests, before Run), is told what Run does, so
	// that tests wait for it rather than for time to pass.
	trace func(traceEvent)
}

// traceEvent is a step of Run that tests can observe.
type traceEvent int

const (
	// traceStarted: Run began.
	traceStarted traceEvent = iota
	// traceFannedOut: a read's events were turned into deliveries.
	traceFannedOut
	// traceFinished: an attempt's result was recorded (or the recording
	// failed).
	traceFinished
	// traceEventsFailed: reading or fanning out events failed.
	traceEventsFailed
	// traceClaimFailed: claiming a delivery failed (not "none due").
	traceClaimFailed
)

func (d *Dispatcher) traced(ev traceEvent) {
	if d.trace != nil {
		d.trace(ev)
	}
}

type metrics struct {
	deliveries *prometheus.CounterVec
	latency    prometheus.Histogram
	pending    prometheus.Gauge
	events     prometheus.Counter
}

// Outcomes of an attempt, the label of shoal_webhook_deliveries_total.
const (
	outcomeDelivered = "delivered"
	outcomeRetry     = "retry"
	outcomeFailed    = "failed"
)

// New checks cfg, fills in defaults and registers the metrics.
func New(cfg Config, deps Deps) (*Dispatcher, error) {
	if deps.Store == nil {
		return nil, errors.New("webhook: a Store is required")
	}
	var errs []error
	dur := func(name string, v *time.Duration, def time.Duration) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			errs = append(errs, fmt.Errorf("webhook: %s must be positive, got %s", name, *v))
		}
	}
	dur("PollInterval", &cfg.PollInterval, DefaultPollInterval)
	dur("RequestTimeout", &cfg.RequestTimeout, DefaultRequestTimeout)
	dur("BackoffBase", &cfg.BackoffBase, DefaultBackoffBase)
	dur("BackoffMax", &cfg.BackoffMax, DefaultBackoffMax)
	dur("Lease", &cfg.Lease, cfg.RequestTimeout+leaseMargin)
	dur("EventClaimIdle", &cfg.EventClaimIdle, DefaultEventClaimIdle)
	switch {
	case cfg.MaxAttempts == 0:
		cfg.MaxAttempts = DefaultMaxAttempts
	case cfg.MaxAttempts < 0:
		errs = append(errs, fmt.Errorf("webhook: MaxAttempts must be positive, got %d", cfg.MaxAttempts))
	}
	switch {
	case cfg.Workers == 0:
		cfg.Workers = DefaultWorkers
	case cfg.Workers < 0:
		errs = append(errs, fmt.Errorf("webhook: Workers must be positive, got %d", cfg.Workers))
	}
	if len(errs) == 0 {
		if cfg.BackoffMax < cfg.BackoffBase {
			errs = append(errs, fmt.Errorf("webhook: BackoffMax (%s) must not be less than BackoffBase (%s)", cfg.BackoffMax, cfg.BackoffBase))
		}
		if cfg.Lease <= cfg.RequestTimeout {
			errs = append(errs, fmt.Errorf("webhook: Lease (%s) must be longer than RequestTimeout (%s), or a slow receiver gets the same delivery twice", cfg.Lease, cfg.RequestTimeout))
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.Consumer == "" {
		cfg.Consumer, _ = os.Hostname()
		if cfg.Consumer == "" {
			cfg.Consumer = "shoal"
		}
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	var client http.Client
	if deps.HTTPClient != nil {
		client = *deps.HTTPClient
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.Proxy = nil // a proxy would dial on the URL's behalf, past the check below
		if !cfg.AllowPrivate {
			d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: netguard.Control(ErrPrivateAddress)}
			tr.DialContext = d.DialContext
		}
		client.Transport = tr
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	d := &Dispatcher{
		cfg: cfg, store: deps.Store, log: deps.Log, client: &client,
		redisLog:   logx.NewLimiter(logInterval),
		attemptLog: logx.NewLimiter(logInterval),
		failLog:    logx.NewLimiter(logInterval),
		wake:       make(chan struct{}, 1),
		m: metrics{
			deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "shoal_webhook_deliveries_total",
				Help: "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again later) or failed (no attempts left).",
			}, []string{"outcome"}),
			latency: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "shoal_webhook_delivery_duration_seconds", Help: "Time from sending a webhook delivery to its answer (or error).",
				Buckets: prometheus.DefBuckets,
			}),
			pending: prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "shoal_webhook_pending_deliveries", Help: "Webhook deliveries not yet delivered or failed, over every origin, as last seen.",
			}),
			events: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "shoal_webhook_events_total", Help: "Events this dispatcher turned into webhook deliveries (whether or not any webhook subscribed).",
			}),
		},
	}
	for _, o := range []string{outcomeDelivered, outcomeRetry, outcomeFailed} {
		d.m.deliveries.WithLabelValues(o)
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{d.m.deliveries, d.m.latency, d.m.pending, d.m.events} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("webhook: register metrics: %w", err)
			}
		}
	}
	return d, nil
}

// Run fans out events and sends deliveries until ctx is done. Attempts in
// flight then are completed (each within RequestTimeout) and recorded
// before Run returns nil.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("webhook: Run called while already running")
	}
	defer d.running.Store(false)
	d.traced(traceStarted)
	d.log.Info("webhook dispatcher started", "consumer", d.cfg.Consumer, "workers", d.cfg.Workers)
	var g errgroup.Group
	g.Go(func() error { d.fanOutLoop(ctx); return nil })
	g.Go(func() error { d.deliverLoop(ctx); return nil })
	err := g.Wait()
	d.log.Info("webhook dispatcher stopped", "consumer", d.cfg.Consumer)
	return err
}

// fanOutLoop turns events into deliveries: first those another dispatcher
// left unprocessed, then new ones.
func (d *Dispatcher) fanOutLoop(ctx context.Context) {
	for ctx.Err() == nil {
		evs, err := d.store.ReclaimWebhookEvents(ctx, d.cfg.Consumer, d.cfg.EventClaimIdle, eventBatch)
		if len(evs) > 0 {
			d.log.Info("taking over events another dispatcher left unprocessed", "events", len(evs))
		}
		if err == nil {
			var more []routing.WebhookEvent
			more, err = d.store.ReadWebhookEvents(ctx, d.cfg.Consumer, eventBatch, d.cfg.PollInterval)
			evs = append(evs, more...)
		}
		for _, ev := range evs {
			n, ferr := d.store.FanOutWebhookEvent(ctx, ev)
			if ferr != nil {
				// The rest stay pending and are taken over after
				// EventClaimIdle.
				err = ferr
				break
			}
			d.m.events.Inc()
			if n > 0 {
				d.notify()
			}
		}
		if len(evs) > 0 {
			d.traced(traceFannedOut)
		}
		if err != nil {
			d.traced(traceEventsFailed)
			d.redisError(ctx, "reading events", err)
			sleep(ctx, d.cfg.PollInterval)
		}
	}
}

// notify wakes the delivery loop.
func (d *Dispatcher) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// deliverLoop claims due deliveries and sends them, Workers at a time.
func (d *Dispatcher) deliverLoop(ctx context.Context) {
	slots := make(chan struct{}, d.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := d.store.ClaimWebhookDelivery(ctx, time.Now(), d.cfg.Lease)
		if err == nil {
			wg.Go(func() {
				defer func() { <-slots }()
				d.deliver(ctx, c)
			})
			continue
		}
		<-slots
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, routing.ErrNotFound) {
			d.updatePending(ctx)
		} else {
			d.traced(traceClaimFailed)
			d.redisError(ctx, "claiming a delivery", err)
		}
		timer.Reset(d.cfg.PollInterval)
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-timer.C:
		}
	}
}

func (d *Dispatcher) updatePending(ctx context.Context) {
	n, err := d.store.PendingWebhookDeliveries(ctx)
	if err == nil {
		d.m.pending.Set(float64(n))
	}
}

// deliver makes one attempt at c and records its outcome.
func (d *Dispatcher) deliver(ctx context.Context, c routing.ClaimedWebhookDelivery) {
	log := d.log.With("webhook", c.WebhookID, "delivery", c.ID, "event", c.EventID, "type", c.Type, "attempt", c.Attempt)
	var res routing.WebhookDeliveryResult
	if c.Attempt > d.cfg.MaxAttempts {
		// The dispatcher of the last attempt stopped before it recorded an
		// answer; the lease ran out.
		res = routing.WebhookDeliveryResult{State: routing.DeliveryFailed, At: time.Now(),
			Error: "gave up: the dispatcher of the last attempt stopped before it recorded an answer"}
	} else {
		status, err := d.send(ctx, c)
		res = routing.WebhookDeliveryResult{StatusCode: status, At: time.Now()}
		switch {
		case err == nil:
			res.State = routing.DeliveryDelivered
		case c.Attempt >= d.cfg.MaxAttempts:
			res.State, res.Error = routing.DeliveryFailed, err.Error()
		default:
			res.State, res.Error = routing.DeliveryPending, err.Error()
			res.NextAttempt = res.At.Add(d.backoff(c.Attempt))
			if ok, n := d.attemptLog.Allow(); ok {
				log.Info("webhook delivery attempt failed; will retry", "err", res.Error,
					"retry_in", res.NextAttempt.Sub(res.At).Round(time.Millisecond), "suppressed_since_last", n)
			}
		}
	}
	switch res.State {
	case routing.DeliveryDelivered:
		d.m.deliveries.WithLabelValues(outcomeDelivered).Inc()
	case routing.DeliveryPending:
		d.m.deliveries.WithLabelValues(outcomeRetry).Inc()
	case routing.DeliveryFailed:
		d.m.deliveries.WithLabelValues(outcomeFailed).Inc()
		if ok, n := d.failLog.Allow(); ok {
			log.Warn("webhook delivery failed; no attempts left", "err", res.Error, "suppressed_since_last", n)
		}
	}
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	err := d.store.FinishWebhookDelivery(fctx, c, res)
	defer d.traced(traceFinished)
	switch {
	case errors.Is(err, routing.ErrWebhookDeliveryLost):
		log.Debug("webhook delivery result not recorded", "err", err)
	case err != nil:
		// The lease runs out and the delivery is sent again.
		d.redisError(ctx, "recording a delivery", err)
	}
}

// send POSTs c. It returns the status answered (0 for none) and an error
// unless the status is 2xx. Errors never contain the URL, which may hold a
// token.
func (d *Dispatcher) send(ctx context.Context, c routing.ClaimedWebhookDelivery) (int, error) {
	// An attempt that started is finished even when Run is stopping, so
	// that its outcome is recorded.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, c.URL, bytes.NewReader(c.Body))
	if err != nil {
		return 0, errors.New("the webhook URL is invalid")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(EventHeader, c.Type)
	req.Header.Set(DeliveryHeader, c.ID)
	req.Header.Set(SignatureHeader, Sign(c.Secret, time.Now(), c.Body))
	start := time.Now()
	resp, err := d.client.Do(req)
	d.m.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		return 0, d.describeSendError(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	code := resp.StatusCode
	switch {
	case code >= 200 && code <= 299:
		return code, nil
	case code >= 300 && code <= 399:
		return code, fmt.Errorf("answered %d %s; redirects are not followed", code, http.StatusText(code))
	}
	return code, fmt.Errorf("answered %d %s", code, http.StatusText(code))
}

func (d *Dispatcher) describeSendError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("no answer within %s", d.cfg.RequestTimeout)
	}
	// *url.Error quotes the URL; keep only its cause.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}
	msg := err.Error()
	if len(msg) > maxErrorLen {
		msg = msg[:maxErrorLen] + "..."
	}
	return errors.New(msg)
}

// backoff is the wait after failed attempt number attempt (from 1).
func (d *Dispatcher) backoff(attempt int) time.Duration {
	b := d.cfg.BackoffBase
	for i := 1; i < attempt && b < d.cfg.BackoffMax; i++ {
		if b > d.cfg.BackoffMax/2 {
			b = d.cfg.BackoffMax
			break
		}
		b *= 2
	}
	b = min(b, d.cfg.BackoffMax)
	return b + rand.N(b/10+1)
}

// redisError logs a failed store call, at most once per logInterval, unless
// Run is stopping.
func (d *Dispatcher) redisError(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return
	}
	if ok, n := d.redisLog.Allow(); ok {
		d.log.Warn("webhook dispatcher: "+what+" failed; retrying", "err", err, "suppressed_since_last", n)
	}
}

// sleep waits for d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
