package routing

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Event types published on the events stream (and offered to webhooks).
const (
	EventVideoReady        = "video.ready"
	EventVideoFailed       = "video.failed"
	EventLiveStreamStarted = "live_stream.started"
	EventLiveStreamEnded   = "live_stream.ended"
	// EventRestreamFailed: a restream target could not be reached or
	// dropped the connection (it is retried while the stream is live).
	EventRestreamFailed = "live_stream.restream.failed"
)

// EventTypes lists every event type, in documentation order.
var EventTypes = []string{EventVideoReady, EventVideoFailed, EventLiveStreamStarted, EventLiveStreamEnded, EventRestreamFailed}

// eventsKey is a Redis stream of everything that happened that webhooks may
// want to hear about. Each entry has the fields "type" (one of EventTypes),
// "data" (a JSON object describing the subject) and "at" (RFC 3339 time).
// Producers that change state and announce it do both in one script or
// transaction, so an event is never lost nor announced for a change that did
// not happen.
const eventsKey = "events"

// eventsMaxLen bounds the events stream (approximately); the webhook
// dispatcher reads it through a consumer group long before that.
const eventsMaxLen = 100_000

// PublishEvent appends an event of type typ about data (marshalled to JSON)
// to the events stream.
func (s *Store) PublishEvent(ctx context.Context, typ string, data any) error {
	body, err := json.Marshal(data)
	if err != nil {
		return fmt.Errorf("routing: encoding %s event: %w", typ, err)
	}
	err = s.rdb.XAdd(ctx, s.eventArgs(typ, body)).Err()
	return wrapErr("publish event", err)
}

func (s *Store) eventArgs(typ string, body []byte) *redis.XAddArgs {
	return &redis.XAddArgs{
		Stream: s.k(eventsKey), MaxLen: eventsMaxLen, Approx: true,
		Values: []any{"type", typ, "data", string(body), "at", formatTime(now())},
	}
}
