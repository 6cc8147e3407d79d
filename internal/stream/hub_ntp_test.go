package stream

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// The hub stamps access units with their ingest time, the clock's now when
// they are written; a time the publisher set is kept.
func TestPublisherStampsIngestTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	clock := now
	h, err := New(Config{QueueSize: 16}, Deps{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = h.Run(ctx) }()
	tracks := []media.Track{{Codec: media.CodecH264, ClockRate: 90000}, {Codec: media.CodecAAC, ClockRate: 48000}}
	key := media.StreamKey{Name: "ntp", Rendition: media.RenditionSource}
	w := h.Watch(func(k media.StreamKey) bool { return k == key })
	defer w.Close()
	p, err := h.Publish(key, tracks)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	set := now.Add(time.Hour)
	aus := []*media.AccessUnit{
		{Track: 0, DTS: 900000, Keyframe: true, Payload: [][]byte{{1}}},
		{Track: 0, DTS: 903000, Payload: [][]byte{{2}}},
		{Track: 1, DTS: 480000, Keyframe: true, Payload: [][]byte{{3}}}, // the clock moved on
		{Track: 1, DTS: 528000, Keyframe: true, Payload: [][]byte{{4}}},
		{Track: 0, DTS: 906000, Payload: [][]byte{{5}}, NTP: set}, // kept
	}
	for i, au := range aus {
		if i == 2 {
			clock = now.Add(time.Second)
		}
		p.Write(au)
	}
	want := []time.Time{now, now, now.Add(time.Second), now.Add(time.Second), set}
	got := 0
	err = sub.Each(ctx, func([]media.Track, bool) {}, func(au *media.AccessUnit) {
		if !au.NTP.Equal(want[got]) {
			t.Errorf("access unit %d: NTP %s, want %s", got, au.NTP, want[got])
		}
		if got++; got == len(want) {
			cancel()
		}
	})
	if got != len(want) {
		t.Fatalf("%d access units read: %v", got, err)
	}
}
