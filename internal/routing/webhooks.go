package routing

import (
	"cmp"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// Webhooks, their deliveries and the events they are made from.
//
//	shoal:webhook:<id>             hash   url, events, secret, created_at
//	shoal:webhooks                 zset   member <id>, score created_at in Unix milliseconds
//	shoal:webhookdelivery:<did>    hash   webhook_id, event_id, type, body, attempts, state,
//	                                      last_status, last_error, next_attempt_at, created_at,
//	                                      updated_at, lease
//	shoal:webhookdue               zset   member <did> of every pending delivery, score the
//	                                      Unix milliseconds from which it may be claimed
//	shoal:webhookpending:<id>      set    <did> of the webhook's pending deliveries
//	shoal:webhooklog:<id>          list   <did> of the webhook's last 100 deliveries, newest first
//
// "events" is a comma-separated list of event types in the order of
// EventTypes. The secret is stored in plain text: it is what deliveries are
// signed with. A delivery's id <did> is the first 20 hex digits of the SHA-1
// of "<webhook id>:<event entry id>", so one event makes at most one
// delivery per webhook whatever happens to the dispatchers.
//
// The dispatchers read the events stream (eventsKey) through the consumer
// group "webhooks". FanOutWebhookEvent turns an entry into one delivery per
// webhook subscribed to its type and acknowledges it, in one script that does
// nothing when the entry was already acknowledged: an entry a dead dispatcher
// left pending (taken over with XAUTOCLAIM after a timeout) is fanned out
// exactly once. The group is created at "0" by the first read, and again if
// Redis lost it.
//
// A pending delivery is claimed with a lease: ClaimWebhookDelivery moves its
// score in the due zset to the end of the lease and records a random lease
// token, so that another dispatcher claims it again only once the lease has
// run out (the first one died mid-delivery): deliveries are at-least-once.
// FinishWebhookDelivery reschedules, completes or fails it; a retry or
// failure reported with a lease that is no longer current is ignored, a
// success is always recorded. Times in the due zset come from the
// dispatchers' clocks, which are assumed to agree to well within a lease.
//
// A delivery is listed in its webhook's log from its creation. When it
// falls off the end of the log (the 101st newer delivery) its hash is
// deleted, unless it is still pending: it is deleted when it completes.
// Deleting a webhook deletes its pending deliveries and its log.
const (
	webhookPrefix         = "webhook:"
	webhooksIndex         = "webhooks"
	webhookDeliveryPrefix = "webhookdelivery:"
	webhookDueKey         = "webhookdue"
	webhookPendingPrefix  = "webhookpending:"
	webhookLogPrefix      = "webhooklog:"

	// webhookEventsGroup is the consumer group of the dispatchers on the
	// events stream.
	webhookEventsGroup = "webhooks"

	// WebhookLogSize is how many deliveries a webhook's log keeps.
	WebhookLogSize = 100

	whFieldURL           = "url"
	whFieldEvents        = "events"
	whFieldSecret        = "secret"
	whFieldWebhookID     = "webhook_id"
	whFieldEventID       = "event_id"
	whFieldType          = "type"
	whFieldAttempts      = "attempts"
	whFieldState         = "state"
	whFieldLastStatus    = "last_status"
	whFieldLastError     = "last_error"
	whFieldNextAttemptAt = "next_attempt_at"
	whFieldUpdatedAt     = "updated_at"
)

// Webhook states of a delivery.
const (
	DeliveryPending   = "pending"
	DeliveryDelivered = "delivered"
	DeliveryFailed    = "failed"
)

// ErrWebhookDeliveryLost is returned by FinishWebhookDelivery when the
// delivery no longer exists (its webhook was deleted) or its lease was taken
// over by another dispatcher; the result was not recorded.
var ErrWebhookDeliveryLost = errors.New("the webhook delivery is no longer held by this lease")

// Webhook is a URL that events are POSTed to.
type Webhook struct {
	ID  string
	URL string
	// Events are the event types delivered, in the order of EventTypes.
	Events []string
	// Secret signs the deliveries ("whsec_...").
	Secret    string
	CreatedAt time.Time
}

// WebhookSpec is what a new webhook is created with.
type WebhookSpec struct {
	URL string
	// Events is a non-empty subset of EventTypes, in any order, with
	// repetitions allowed.
	Events []string
}

// WebhookDelivery is one event on its way to one webhook.
type WebhookDelivery struct {
	ID        string
	WebhookID string
	// EventID is the "id" of the event in the delivered body.
	EventID string
	Type    string
	// State is DeliveryPending, DeliveryDelivered or DeliveryFailed.
	State string
	// Attempts counts the attempts started, including one in progress.
	Attempts int
	// LastStatus is the HTTP status of the last answer (0: none).
	LastStatus int
	// LastError says why the last attempt failed without an answer, or
	// with one that was not 2xx.
	LastError string
	// NextAttemptAt is when a pending delivery is (or was) due; zero once
	// it is delivered or failed.
	NextAttemptAt time.Time
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// ClaimedWebhookDelivery is a delivery a dispatcher holds a lease on, with
// what it needs to send it.
type ClaimedWebhookDelivery struct {
	ID        string
	WebhookID string
	EventID   string
	Type      string
	// Attempt is the number of this attempt, from 1.
	Attempt int
	// Body is the exact JSON to POST.
	Body []byte
	// URL and Secret are the webhook's.
	URL    string
	Secret string
	// Lease identifies this claim to FinishWebhookDelivery.
	Lease string
	// LeaseUntil is when another dispatcher may claim the delivery again.
	LeaseUntil time.Time
}

// WebhookDeliveryResult is the outcome of an attempt.
type WebhookDeliveryResult struct {
	// State is DeliveryDelivered, DeliveryFailed (no more attempts) or
	// DeliveryPending (try again at NextAttempt).
	State       string
	NextAttempt time.Time
	// StatusCode is the HTTP status answered, 0 when there was no answer.
	StatusCode int
	// Error says what went wrong ("" when delivered).
	Error string
	// At is when the attempt ended.
	At time.Time
}

// WebhookEvent is an entry of the events stream, read by a dispatcher.
type WebhookEvent struct {
	// EntryID is the stream entry's id ("1712345678901-0").
	EntryID string
	Type    string
	// Data is the JSON object describing the subject.
	Data json.RawMessage
	At   time.Time
}

// ID is the event's id in delivered bodies: "evt_" + the entry id.
func (e WebhookEvent) ID() string { return "evt_" + e.EntryID }

func (s *Store) webhookKey(id string) string         { return s.k(webhookPrefix) + id }
func (s *Store) webhookLogKey(id string) string      { return s.k(webhookLogPrefix) + id }
func (s *Store) webhookPendingKey(id string) string  { return s.k(webhookPendingPrefix) + id }
func (s *Store) webhookDeliveryKey(id string) string { return s.k(webhookDeliveryPrefix) + id }

// normalizeEventTypes returns events deduplicated in the order of
// EventTypes, or an error naming the first unknown type.
func normalizeEventTypes(events []string) ([]string, error) {
	if len(events) == 0 {
		return nil, errors.New("no event types")
	}
	for _, e := range events {
		if !slices.Contains(EventTypes, e) {
			return nil, fmt.Errorf("unknown event type %q", e)
		}
	}
	out := make([]string, 0, len(events))
	for _, t := range EventTypes {
		if slices.Contains(events, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// CreateWebhook creates a webhook with a fresh id and secret. The caller
// validates the URL; unknown event types are refused.
func (s *Store) CreateWebhook(ctx context.Context, spec WebhookSpec) (Webhook, error) {
	events, err := normalizeEventTypes(spec.Events)
	if err != nil {
		return Webhook{}, fmt.Errorf("routing: create webhook: %w", err)
	}
	if spec.URL == "" {
		return Webhook{}, errors.New("routing: create webhook: no URL")
	}
	w := Webhook{
		ID:        ids.New(),
		URL:       spec.URL,
		Events:    events,
		Secret:    ids.NewSecret("whsec"),
		CreatedAt: s.now(),
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.webhookKey(w.ID),
			whFieldURL, w.URL,
			whFieldEvents, strings.Join(w.Events, ","),
			whFieldSecret, w.Secret,
			fieldCreatedAt, formatTime(w.CreatedAt),
		)
		p.ZAdd(ctx, s.k(webhooksIndex), redis.Z{Score: float64(w.CreatedAt.UnixMilli()), Member: w.ID})
		return nil
	})
	if err != nil {
		return Webhook{}, wrapErr("create webhook", err)
	}
	return w, nil
}

// GetWebhook returns the webhook id, or ErrNotFound.
func (s *Store) GetWebhook(ctx context.Context, id string) (Webhook, error) {
	f, err := s.rdb.HGetAll(ctx, s.webhookKey(id)).Result()
	if err != nil {
		return Webhook{}, wrapErr("get webhook", err)
	}
	return s.decodeWebhook(id, f)
}

// ListWebhooks returns every webhook, newest first.
func (s *Store) ListWebhooks(ctx context.Context) ([]Webhook, error) {
	idList, err := s.rdb.ZRevRange(ctx, s.k(webhooksIndex), 0, -1).Result()
	if err != nil {
		return nil, wrapErr("list webhooks", err)
	}
	out, _, err := records(ctx, s, "list webhooks", s.k(webhookPrefix), idList, s.decodeWebhook)
	if err != nil {
		return nil, err
	}
	// The zset score has millisecond precision; order exactly.
	slices.SortStableFunc(out, func(a, b Webhook) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out, nil
}

// DeleteWebhook deletes the webhook id with its pending deliveries and its
// delivery log, or returns ErrNotFound. An attempt in flight may still
// complete; its result is not recorded.
func (s *Store) DeleteWebhook(ctx context.Context, id string) error {
	// The deliveries to delete are read first and declared to the script,
	// which answers -1 (and deletes nothing) when the webhook gained one
	// meanwhile: every key it touches is in KEYS (Redis Cluster).
	for range maxTxAttempts {
		var (
			pending *redis.StringSliceCmd
			logged  *redis.StringSliceCmd
		)
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			pending = p.SMembers(ctx, s.webhookPendingKey(id))
			logged = p.LRange(ctx, s.webhookLogKey(id), 0, -1)
			return nil
		})
		if err != nil {
			return wrapErr("delete webhook", err)
		}
		keys := []string{s.webhookKey(id), s.k(webhooksIndex), s.k(webhookDueKey), s.webhookPendingKey(id), s.webhookLogKey(id)}
		args := []any{id}
		seen := map[string]bool{}
		for _, did := range append(pending.Val(), logged.Val()...) {
			if !seen[did] {
				seen[did] = true
				keys = append(keys, s.webhookDeliveryKey(did))
				args = append(args, did)
			}
		}
		res, err := deleteWebhookScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return wrapErr("delete webhook", err)
		}
		switch res {
		case 0:
			return ErrNotFound
		case 1:
			return nil
		}
	}
	return fmt.Errorf("routing: delete webhook: %w", errTxConflict)
}

// KEYS: 1 webhook, 2 webhooks index, 3 due deliveries, 4 pending
// deliveries, 5 delivery log, 6... the deliveries in 4 and 5 when read.
// ARGV: 1 webhook id, 2... the ids of the deliveries of KEYS[6...].
// Answers 0 when the webhook is gone, -1 (nothing done) when a delivery
// not declared is pending or logged, 1 when deleted.
var deleteWebhookScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local declared = {}
for i = 2, #ARGV do declared[ARGV[i]] = true end
local all = redis.call('SMEMBERS', KEYS[4])
for _, d in ipairs(redis.call('LRANGE', KEYS[5], 0, -1)) do table.insert(all, d) end
for _, d in ipairs(all) do
  if not declared[d] then return -1 end
end
for i = 2, #ARGV do
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('DEL', KEYS[i + 4])
end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1`)

// deliveryListFields are the fields ListWebhookDeliveries reads (not the
// body).
var deliveryListFields = []string{
	whFieldWebhookID, whFieldEventID, whFieldType, whFieldState, whFieldAttempts,
	whFieldLastStatus, whFieldLastError, whFieldNextAttemptAt, fieldCreatedAt, whFieldUpdatedAt,
}

// ListWebhookDeliveries returns the delivery log of the webhook id, newest
// first (at most WebhookLogSize), or ErrNotFound.
func (s *Store) ListWebhookDeliveries(ctx context.Context, id string) ([]WebhookDelivery, error) {
	const op = "list webhook deliveries"
	var (
		exists *redis.IntCmd
		log    *redis.StringSliceCmd
	)
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		exists = p.Exists(ctx, s.webhookKey(id))
		log = p.LRange(ctx, s.webhookLogKey(id), 0, WebhookLogSize-1)
		return nil
	})
	if err != nil {
		return nil, wrapErr(op, err)
	}
	if exists.Val() == 0 {
		return nil, ErrNotFound
	}
	dids := log.Val()
	out := make([]WebhookDelivery, 0, len(dids))
	if len(dids) == 0 {
		return out, nil
	}
	cmds := make([]*redis.SliceCmd, len(dids))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, did := range dids {
			cmds[i] = p.HMGet(ctx, s.webhookDeliveryKey(did), deliveryListFields...)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(op, err)
	}
	for i, did := range dids {
		vals := cmds[i].Val()
		f := make(map[string]string, len(vals))
		for j, v := range vals {
			if s, ok := v.(string); ok {
				f[deliveryListFields[j]] = s
			}
		}
		if f[whFieldWebhookID] != id {
			continue // deleted meanwhile
		}
		d, err := s.decodeWebhookDelivery(did, f)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// ReadWebhookEvents returns up to count events that no dispatcher has read
// yet, for consumer, waiting up to block (at least a millisecond) for the
// first. They stay pending in the group until FanOutWebhookEvent.
func (s *Store) ReadWebhookEvents(ctx context.Context, consumer string, count int, block time.Duration) ([]WebhookEvent, error) {
	const op = "read events"
	s.maybeMaintainStreams(ctx)
	block = max(block, time.Millisecond) // 0 would block forever
	read := func() ([]redis.XStream, error) {
		return s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
			Group: webhookEventsGroup, Consumer: consumer, Streams: []string{s.k(eventsKey), ">"},
			Count: int64(count), Block: block,
		}).Result()
	}
	streams, err := read()
	if isNoGroup(err) {
		if err := s.createWebhookEventsGroup(ctx); err != nil {
			return nil, err
		}
		streams, err = read()
	}
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, wrapErr(op, err)
	}
	var out []WebhookEvent
	for _, st := range streams {
		for _, m := range st.Messages {
			out = append(out, webhookEventFromMessage(m))
		}
	}
	return out, nil
}

// ReclaimWebhookEvents takes over, for consumer, up to count events that
// another dispatcher (or this one, after an error) read but left pending for
// longer than minIdle.
func (s *Store) ReclaimWebhookEvents(ctx context.Context, consumer string, minIdle time.Duration, count int) ([]WebhookEvent, error) {
	msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: s.k(eventsKey), Group: webhookEventsGroup, Consumer: consumer,
		MinIdle: minIdle, Start: "0-0", Count: int64(count),
	}).Result()
	if isNoGroup(err) {
		return nil, s.createWebhookEventsGroup(ctx)
	}
	if err != nil {
		return nil, wrapErr("reclaim events", err)
	}
	out := make([]WebhookEvent, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, webhookEventFromMessage(m))
	}
	return out, nil
}

func isNoGroup(err error) bool { return err != nil && redis.HasErrorPrefix(err, "NOGROUP") }

func (s *Store) createWebhookEventsGroup(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.k(eventsKey), webhookEventsGroup, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return wrapErr("create webhook events group", err)
	}
	return nil
}

func webhookEventFromMessage(m redis.XMessage) WebhookEvent {
	ev := WebhookEvent{EntryID: m.ID}
	ev.Type, _ = m.Values["type"].(string)
	if data, _ := m.Values["data"].(string); json.Valid([]byte(data)) {
		ev.Data = json.RawMessage(data)
	}
	at, _ := m.Values["at"].(string)
	if t, err := parseTime(at); err == nil {
		ev.At = t
	} else if ms, err := strconv.ParseInt(strings.SplitN(m.ID, "-", 2)[0], 10, 64); err == nil {
		ev.At = time.UnixMilli(ms).UTC() // the entry id's time
	}
	return ev
}

// webhookBody is the JSON POSTed for an event.
type webhookBody struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	CreatedAt time.Time       `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

// WebhookBody returns the JSON body delivered for ev:
// {"id","type","created_at","data"}.
func WebhookBody(ev WebhookEvent) []byte {
	data := ev.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	body, err := json.Marshal(webhookBody{ID: ev.ID(), Type: ev.Type, CreatedAt: ev.At, Data: data})
	if err != nil {
		// Data was checked with json.Valid; nothing else can fail.
		panic("routing: encoding a webhook body: " + err.Error())
	}
	return body
}

// FanOutWebhookEvent creates one pending delivery, due now, for every
// webhook subscribed to ev's type, and acknowledges ev, in one step. It
// returns how many deliveries it created: 0 when ev was already
// acknowledged (another dispatcher fanned it out) or nobody subscribes.
func (s *Store) FanOutWebhookEvent(ctx context.Context, ev WebhookEvent) (int, error) {
	// The webhooks, and the deliveries their logs may push out, are read
	// first and declared to the script, which answers -2 (and does
	// nothing) when they changed meanwhile: every key it touches is in
	// KEYS (Redis Cluster).
	for range maxTxAttempts {
		wids, err := s.rdb.ZRange(ctx, s.k(webhooksIndex), 0, -1).Result()
		if err != nil {
			return 0, wrapErr("fan out event", err)
		}
		olds := make([]*redis.StringSliceCmd, len(wids))
		if len(wids) > 0 {
			_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for i, wid := range wids {
					olds[i] = p.LRange(ctx, s.webhookLogKey(wid), WebhookLogSize-1, -1)
				}
				return nil
			})
			if err != nil {
				return 0, wrapErr("fan out event", err)
			}
		}
		t := now()
		keys := []string{s.k(eventsKey), s.k(webhooksIndex), s.k(webhookDueKey)}
		args := []any{webhookEventsGroup, ev.EntryID, ev.Type, WebhookBody(ev), formatTime(t), t.UnixMilli(),
			WebhookLogSize, ev.ID(), len(wids)}
		for i, wid := range wids {
			did := webhookDeliveryID(wid, ev.EntryID)
			keys = append(keys, s.webhookKey(wid), s.webhookDeliveryKey(did), s.webhookPendingKey(wid), s.webhookLogKey(wid))
			args = append(args, wid, did, len(olds[i].Val()))
			for _, old := range olds[i].Val() {
				keys = append(keys, s.webhookDeliveryKey(old))
				args = append(args, old)
			}
		}
		n, err := fanOutScript.Run(ctx, s.rdb, keys, args...).Int()
		if err != nil {
			return 0, wrapErr("fan out event", err)
		}
		if n != -2 {
			return max(n, 0), nil
		}
	}
	return 0, fmt.Errorf("routing: fan out event: %w", errTxConflict)
}

// webhookDeliveryID is the id of the delivery of the event entryID to the
// webhook wid: the same for every dispatcher, so an event fanned out twice
// makes one delivery.
func webhookDeliveryID(wid, entryID string) string {
	sum := sha1.Sum([]byte(wid + ":" + entryID))
	return hex.EncodeToString(sum[:])[:20]
}

// KEYS: 1 events, 2 webhooks index, 3 due deliveries; then for each
// webhook: its record, the delivery, its pending set, its log, and the
// deliveries its log held from position log size - 1 on (those a new
// delivery may push out).
// ARGV: 1 group, 2 entry id, 3 type, 4 body, 5 now (text), 6 now (ms),
// 7 log size, 8 event id, 9 the number of webhooks; then for each webhook:
// its id, the delivery id, the number of old deliveries, their ids.
// Answers -2, doing nothing, when the webhooks or their logs are not those
// declared; -1 when the event was acknowledged already; else the number of
// deliveries made.
var fanOutScript = redis.NewScript(`
local cap = tonumber(ARGV[7])
local hooks = {}
local a, k = 10, 4
for i = 1, tonumber(ARGV[9]) do
  local h = {wid = ARGV[a], did = ARGV[a + 1], hk = KEYS[k], dk = KEYS[k + 1], pk = KEYS[k + 2], lk = KEYS[k + 3], olds = {}}
  local nold = tonumber(ARGV[a + 2])
  a, k = a + 3, k + 4
  for j = 1, nold do
    h.olds[ARGV[a]] = KEYS[k]
    a, k = a + 1, k + 1
  end
  hooks[i] = h
end
local wids = redis.call('ZRANGE', KEYS[2], 0, -1)
if #wids ~= #hooks then return -2 end
for i, wid in ipairs(wids) do
  local h = hooks[i]
  if wid ~= h.wid then return -2 end
  for _, old in ipairs(redis.call('LRANGE', h.lk, cap - 1, -1)) do
    if not h.olds[old] then return -2 end
  end
end
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return -1 end
local n = 0
for _, h in ipairs(hooks) do
  local evs = redis.call('HGET', h.hk, 'events')
  if evs and string.find(',' .. evs .. ',', ',' .. ARGV[3] .. ',', 1, true) then
    if redis.call('EXISTS', h.dk) == 0 then
      redis.call('HSET', h.dk, 'webhook_id', h.wid, 'event_id', ARGV[8], 'type', ARGV[3], 'body', ARGV[4],
        'attempts', 0, 'state', 'pending', 'last_status', 0, 'last_error', '',
        'next_attempt_at', ARGV[5], 'created_at', ARGV[5], 'updated_at', ARGV[5], 'lease', '')
      redis.call('ZADD', KEYS[3], ARGV[6], h.did)
      redis.call('SADD', h.pk, h.did)
      redis.call('LPUSH', h.lk, h.did)
      for _, old in ipairs(redis.call('LRANGE', h.lk, cap, -1)) do
        if redis.call('SISMEMBER', h.pk, old) == 0 then redis.call('DEL', h.olds[old]) end
      end
      redis.call('LTRIM', h.lk, 0, cap - 1)
      n = n + 1
    end
  end
end
return n`)

// ClaimWebhookDelivery claims the pending delivery that has been due the
// longest at now, with a lease of the given length, and counts the attempt.
// It returns ErrNotFound when no delivery is due.
func (s *Store) ClaimWebhookDelivery(ctx context.Context, now time.Time, lease time.Duration) (ClaimedWebhookDelivery, error) {
	const op = "claim webhook delivery"
	until := now.Add(lease)
	token := ids.New()
	// The delivery due first and its webhook are read, then declared to
	// the script, which answers "stale" when either changed meanwhile and
	// "dropped" when it dropped a delivery whose webhook is gone: every
	// key it touches is in KEYS (Redis Cluster).
	var res []any
	for tries, drops := 0, 0; ; tries++ {
		if drops == 10 {
			// Dropping more can wait for the next claim.
			return ClaimedWebhookDelivery{}, ErrNotFound
		}
		if tries == maxTxAttempts {
			return ClaimedWebhookDelivery{}, fmt.Errorf("routing: %s: %w", op, errTxConflict)
		}
		due, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: s.k(webhookDueKey), ByScore: true,
			Start: "-inf", Stop: strconv.FormatInt(now.UnixMilli(), 10), Count: 1}).Result()
		if err != nil {
			return ClaimedWebhookDelivery{}, wrapErr(op, err)
		}
		if len(due) == 0 {
			return ClaimedWebhookDelivery{}, ErrNotFound
		}
		did := due[0]
		wid, err := s.rdb.HGet(ctx, s.webhookDeliveryKey(did), whFieldWebhookID).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return ClaimedWebhookDelivery{}, wrapErr(op, err)
		}
		res, err = claimDeliveryScript.Run(ctx, s.rdb,
			[]string{s.k(webhookDueKey), s.webhookDeliveryKey(did), s.webhookKey(wid)},
			now.UnixMilli(), until.UnixMilli(), token, did, wid,
			formatTime(now.UTC().Truncate(time.Microsecond))).Slice()
		if err != nil {
			return ClaimedWebhookDelivery{}, wrapErr(op, err)
		}
		if len(res) == 1 { // "stale" or "dropped": look again
			if res[0] == "dropped" {
				drops++
			}
			continue
		}
		break
	}
	str := func(i int) string {
		if i < len(res) {
			s, _ := res[i].(string)
			return s
		}
		return ""
	}
	attempt, _ := res[1].(int64)
	return ClaimedWebhookDelivery{
		ID: str(0), Attempt: int(attempt), URL: str(2), Secret: str(3),
		WebhookID: str(4), EventID: str(5), Type: str(6), Body: []byte(str(7)),
		Lease: token, LeaseUntil: until,
	}, nil
}

// KEYS: 1 due deliveries, 2 the delivery due first when read, 3 its
// webhook then.
// ARGV: 1 now (ms), 2 lease end (ms), 3 lease token, 4 delivery id,
// 5 webhook id ("" when the delivery had none), 6 now (text).
// Answers {"stale"} when the delivery due first or its webhook id changed,
// {"dropped"} when it dropped the delivery (its webhook is gone, which
// DeleteWebhook does not leave behind, or it is no longer pending), else
// the claim.
var claimDeliveryScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if due[1] ~= ARGV[4] then return {'stale'} end
local d = redis.call('HMGET', KEYS[2], 'webhook_id', 'event_id', 'type', 'body', 'state')
if (d[1] or '') ~= ARGV[5] then return {'stale'} end
local hook = {false, false}
if d[1] then hook = redis.call('HMGET', KEYS[3], 'url', 'secret') end
if hook[1] and d[5] == 'pending' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  local n = redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  redis.call('HSET', KEYS[2], 'lease', ARGV[3], 'updated_at', ARGV[6])
  return {ARGV[4], n, hook[1], hook[2], d[1], d[2], d[3], d[4]}
end
redis.call('ZREM', KEYS[1], ARGV[4])
if not hook[1] then redis.call('DEL', KEYS[2]) end
return {'dropped'}`)

// FinishWebhookDelivery records the outcome of the attempt c. It returns
// ErrWebhookDeliveryLost, recording nothing, when the delivery was deleted,
// is no longer pending, or (for a result other than delivered) was claimed
// again since c.
func (s *Store) FinishWebhookDelivery(ctx context.Context, c ClaimedWebhookDelivery, r WebhookDeliveryResult) error {
	switch r.State {
	case DeliveryPending, DeliveryDelivered, DeliveryFailed:
	default:
		return fmt.Errorf("routing: finish webhook delivery: bad state %q", r.State)
	}
	at := r.At
	if at.IsZero() {
		at = now()
	}
	var nextMS int64
	next := ""
	if r.State == DeliveryPending {
		nextMS = r.NextAttempt.UnixMilli()
		next = formatTime(r.NextAttempt.UTC().Truncate(time.Microsecond))
	}
	res, err := finishDeliveryScript.Run(ctx, s.rdb,
		[]string{s.webhookDeliveryKey(c.ID), s.k(webhookDueKey), s.webhookPendingKey(c.WebhookID), s.webhookLogKey(c.WebhookID)},
		c.ID, c.Lease, r.State, r.StatusCode, r.Error, nextMS, next, formatTime(at.UTC().Truncate(time.Microsecond)),
	).Text()
	if err != nil {
		return wrapErr("finish webhook delivery", err)
	}
	if res != "ok" {
		return fmt.Errorf("%w (%s)", ErrWebhookDeliveryLost, res)
	}
	return nil
}

// ARGV: 1 delivery id, 2 lease token, 3 state, 4 status, 5 error,
// 6 next attempt (ms), 7 next attempt (text), 8 now (text).
var finishDeliveryScript = redis.NewScript(`
local cur = redis.call('HMGET', KEYS[1], 'state', 'lease')
if not cur[1] then return 'deleted' end
if cur[1] ~= 'pending' then return 'already ' .. cur[1] end
if ARGV[3] ~= 'delivered' and cur[2] ~= ARGV[2] then return 'claimed again' end
redis.call('HSET', KEYS[1], 'last_status', ARGV[4], 'last_error', ARGV[5], 'updated_at', ARGV[8], 'lease', '')
if ARGV[3] == 'pending' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
  redis.call('HSET', KEYS[1], 'next_attempt_at', ARGV[7])
  return 'ok'
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if not redis.call('LPOS', KEYS[4], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 'ok'
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'next_attempt_at', '')
return 'ok'`)

// PendingWebhookDeliveries counts the deliveries not yet delivered or
// failed, of every webhook.
func (s *Store) PendingWebhookDeliveries(ctx context.Context) (int64, error) {
	n, err := s.rdb.ZCard(ctx, s.k(webhookDueKey)).Result()
	if err != nil {
		return 0, wrapErr("count webhook deliveries", err)
	}
	return n, nil
}

// WebhookEventBacklog counts the events no dispatcher has turned into
// deliveries yet: those not read yet and those read but not fanned out (a
// dispatcher is at them, or died holding them).
func (s *Store) WebhookEventBacklog(ctx context.Context) (int64, error) {
	const op = "count webhook events"
	groups, err := s.rdb.XInfoGroups(ctx, s.k(eventsKey)).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "no such key") { // HasErrorPrefix drops "ERR "
			return 0, nil
		}
		return 0, wrapErr(op, err)
	}
	for _, g := range groups {
		if g.Name != webhookEventsGroup {
			continue
		}
		if g.Lag >= 0 {
			return g.Lag + g.Pending, nil
		}
		// Redis cannot tell the lag (entries were deleted from the
		// middle of the stream): count what follows the last read.
		unread, err := s.rdb.XRange(ctx, s.k(eventsKey), "("+g.LastDeliveredID, "+").Result()
		if err != nil {
			return 0, wrapErr(op, err)
		}
		return int64(len(unread)) + g.Pending, nil
	}
	// No dispatcher has read yet.
	n, err := s.rdb.XLen(ctx, s.k(eventsKey)).Result()
	if err != nil {
		return 0, wrapErr(op, err)
	}
	return n, nil
}

// corruptWebhookRecord reports a webhook record Shoal cannot read.
func corruptWebhookRecord(key string, err error) error {
	return fmt.Errorf("routing: corrupt record %s: %w", key, err)
}

func (s *Store) decodeWebhook(id string, f map[string]string) (Webhook, error) {
	if len(f) == 0 {
		return Webhook{}, ErrNotFound
	}
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return Webhook{}, corruptWebhookRecord(s.webhookKey(id), err)
	}
	w := Webhook{ID: id, URL: f[whFieldURL], Secret: f[whFieldSecret], CreatedAt: created}
	if e := f[whFieldEvents]; e != "" {
		w.Events = strings.Split(e, ",")
	}
	if w.URL == "" || w.Secret == "" || len(w.Events) == 0 {
		return Webhook{}, corruptWebhookRecord(s.webhookKey(id), errors.New("no url, secret or events"))
	}
	return w, nil
}

func (s *Store) decodeWebhookDelivery(id string, f map[string]string) (WebhookDelivery, error) {
	d := WebhookDelivery{
		ID: id, WebhookID: f[whFieldWebhookID], EventID: f[whFieldEventID], Type: f[whFieldType],
		State: f[whFieldState], LastError: f[whFieldLastError],
	}
	bad := func(field string, err error) (WebhookDelivery, error) {
		return WebhookDelivery{}, corruptWebhookRecord(s.webhookDeliveryKey(id), fmt.Errorf("field %s: %w", field, err))
	}
	var err error
	if d.Attempts, err = strconv.Atoi(f[whFieldAttempts]); err != nil {
		return bad(whFieldAttempts, err)
	}
	if s := f[whFieldLastStatus]; s != "" {
		if d.LastStatus, err = strconv.Atoi(s); err != nil {
			return bad(whFieldLastStatus, err)
		}
	}
	if d.CreatedAt, err = parseTime(f[fieldCreatedAt]); err != nil {
		return bad(fieldCreatedAt, err)
	}
	if d.UpdatedAt, err = parseTime(f[whFieldUpdatedAt]); err != nil {
		return bad(whFieldUpdatedAt, err)
	}
	if s := f[whFieldNextAttemptAt]; s != "" && d.State == DeliveryPending {
		if d.NextAttemptAt, err = parseTime(s); err != nil {
			return bad(whFieldNextAttemptAt, err)
		}
	}
	return d, nil
}
