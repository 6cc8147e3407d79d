package nodeproto

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// A live source that goes silent (an origin gone behind a partition, whose
// TCP connection would linger for minutes) fails the worker's reads once
// nothing came for the idle limit, and the request is cancelled: the
// origin's side sees it end. The limit counts from the request too, for an
// origin that never answers.
func TestLiveSourceIdleCutsASilentOrigin(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	gone := make(chan string, 2)
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == livePath("a1", "/source") {
			_, _ = w.Write([]byte("header"))
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done() // silent until the worker gives up
		gone <- r.URL.Path
	}))
	defer origin.Close()
	c := &Client{Key: priv, Token: "nt_x", LiveSourceIdle: 3 * time.Second}

	body, err := c.OpenLiveSource(t.Context(), origin.URL, "a1")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(body)
	body.Close()
	if string(got) != "header" || !errors.Is(err, ErrLiveSourceIdle) {
		t.Fatalf("read %q, %v; want the header, then ErrLiveSourceIdle", got, err)
	}
	if p := <-gone; p != livePath("a1", "/source") {
		t.Fatalf("the origin saw %s end", p)
	}

	if _, err := c.OpenLiveSource(t.Context(), origin.URL, "a2"); !errors.Is(err, ErrLiveSourceIdle) {
		t.Fatalf("an origin that never answers: %v, want ErrLiveSourceIdle", err)
	}
	<-gone
}

// The idle timer runs only while a read waits: armed as a read starts and
// stopped when it returns, so a source that keeps coming (frames, or the
// origin's ticks) is never cut, however long it lasts, nor one the worker
// is slow to read; the timer firing is what cuts it. The timer here is
// the test's, fired by hand.
func TestLiveSourceIdleRearmsOnData(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	next := make(chan bool) // true: send a chunk; false: stop sending
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case more := <-next:
				if !more {
					return
				}
				_, _ = w.Write([]byte("tick"))
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer origin.Close()
	timer := &handTimer{}
	c := &Client{Key: priv, Token: "nt_x", afterFunc: timer.start}

	body, err := c.OpenLiveSource(t.Context(), origin.URL, "a1")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for i := range 3 {
		next <- true
		if n, err := io.ReadAtLeast(body, buf, 4); n != 4 || err != nil {
			t.Fatalf("chunk %d: %d bytes, %v", i, n, err)
		}
		if r, s := timer.counts(); r < i+1 || s != r+1 {
			t.Fatalf("after chunk %d the timer was armed %d times and stopped %d times: it must run only while a read waits", i, r, s)
		}
	}
	next <- false
	if rest, err := io.ReadAll(body); len(rest) != 0 || err != nil {
		t.Fatalf("the end of the body: %q, %v", rest, err)
	}
	body.Close()

	body, err = c.OpenLiveSource(t.Context(), origin.URL, "a2")
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	next <- true
	if _, err := io.ReadAtLeast(body, buf, 4); err != nil {
		t.Fatal(err)
	}
	timer.fire()
	if _, err := io.ReadAll(body); !errors.Is(err, ErrLiveSourceIdle) {
		t.Fatalf("after the timer fired: %v, want ErrLiveSourceIdle", err)
	}
}

// handTimer is an idle timer the test fires.
type handTimer struct {
	mu            sync.Mutex
	f             func()
	resets, stops int
}

func (h *handTimer) start(_ time.Duration, f func()) idleTimer {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.f, h.resets, h.stops = f, 0, 0
	return h
}

func (h *handTimer) Reset(time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resets++
	return true
}

func (h *handTimer) Stop() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stops++
	return true
}

// counts is how many times the timer was armed again and stopped (once
// more: when the answer came).
func (h *handTimer) counts() (resets, stops int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.resets, h.stops
}

func (h *handTimer) fire() {
	h.mu.Lock()
	f := h.f
	h.mu.Unlock()
	f()
}
