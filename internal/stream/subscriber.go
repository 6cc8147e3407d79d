package stream

import (
	"context"
	"errors"
	"io"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
)

// Subscriber reads one publication through a bounded queue.
type Subscriber struct {
	hub      *Hub
	pub      *publication
	max      int
	lossless bool // wait for room instead of dropping
	// controlOnly: no access unit is queued (Hub.WatchStarts).
	controlOnly bool
	notify      chan struct{} // signalled when an event is queued
	space       chan struct{} // signalled when an access unit is taken (lossless)
	dropped     prometheus.Counter
	hasVideo    bool

	mu        sync.Mutex
	queue     []Event
	queuedAUs int
	waitKey   bool
	drops     uint64
	closed    bool
}

// Key returns the publication's key.
func (s *Subscriber) Key() media.StreamKey { return s.pub.key }

// Dropped returns how many access units this subscriber lost by falling behind.
func (s *Subscriber) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.drops
}

// Next returns the next event. After the publication ended and the queue is
// drained it returns io.EOF; when ctx is done, ctx.Err().
func (s *Subscriber) Next(ctx context.Context) (Event, error) {
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			ev := s.queue[0]
			s.queue[0] = Event{}
			s.queue = s.queue[1:]
			if ev.AU != nil {
				s.queuedAUs--
			}
			s.mu.Unlock()
			if s.lossless && ev.AU != nil {
				signal(s.space)
			}
			return ev, nil
		}
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return Event{}, io.EOF
		}
		select {
		case <-ctx.Done():
			return Event{}, ctx.Err()
		case <-s.notify:
		}
	}
}

// Each calls onTracks for the track list of every (re)started publisher and
// onAU for every access unit, in order, until the publication ends (it
// returns nil) or ctx is done (it returns ctx.Err()).
func (s *Subscriber) Each(ctx context.Context, onTracks func(tracks []media.Track, restart bool), onAU func(*media.AccessUnit)) error {
	for {
		ev, err := s.Next(ctx)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case ev.Tracks != nil:
			onTracks(ev.Tracks, ev.Restart)
		case ev.AU != nil:
			onAU(ev.AU)
		}
	}
}

// Close detaches the subscriber from its publication.
func (s *Subscriber) Close() {
	// Closing the queue first releases a lossless publisher waiting for
	// room while it holds the publication's lock.
	s.closeQueue()
	s.pub.mu.Lock()
	delete(s.pub.subs, s)
	s.pub.mu.Unlock()
}

// push queues a control event; control events are never dropped. Called
// with the publication's lock held.
func (s *Subscriber) push(ev Event) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	if ev.Tracks != nil {
		s.hasVideo = false
		for _, t := range ev.Tracks {
			if t.IsVideo() {
				s.hasVideo = true
			}
		}
		// A new timeline starts with a keyframe anyway; stop waiting.
		s.waitKey = false
	}
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	s.wake()
}

// pushAU queues an access unit or drops it when the reader is behind.
// Called with the publication's lock held.
func (s *Subscriber) pushAU(au *media.AccessUnit, tracks []media.Track) {
	if s.controlOnly {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	isVideoKey := au.Keyframe && au.Track < len(tracks) && tracks[au.Track].IsVideo()
	if s.waitKey {
		if isVideoKey || !s.hasVideo {
			s.waitKey = false
		} else {
			s.drop()
			s.mu.Unlock()
			return
		}
	}
	for s.lossless && s.queuedAUs >= s.max && !s.closed {
		s.mu.Unlock()
		if f := s.hub.onLosslessWait; f != nil {
			f()
		}
		<-s.space
		s.mu.Lock()
	}
	if s.closed {
		s.mu.Unlock()
		return
	}
	if s.queuedAUs >= s.max {
		s.waitKey = true
		s.drop()
		s.mu.Unlock()
		return
	}
	s.queue = append(s.queue, Event{AU: au})
	s.queuedAUs++
	s.mu.Unlock()
	s.wake()
}

func (s *Subscriber) drop() {
	s.drops++
	s.dropped.Inc()
}

func (s *Subscriber) wake() { signal(s.notify) }

// signal wakes the waiter of a one-slot channel without blocking.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (s *Subscriber) closeQueue() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.wake()
	signal(s.space)
}
