package srt

import (
	"context"
	"encoding/binary"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/shoal-video/shoal/internal/media"
)

// srtRelay passes UDP between one SRT caller and the server, keeping the
// caller's conclusion handshake so a test can send it again, and counting
// the handshakes the server sends the caller.
type srtRelay struct {
	conn       *net.UDPConn
	server     *net.UDPAddr
	mu         sync.Mutex
	client     *net.UDPAddr
	conclusion []byte
	toCaller   atomic.Int64 // handshake packets from the server
	fromCaller atomic.Int64 // handshake packets from the caller to the listener
}

func newSRTRelay(t *testing.T, server *net.UDPAddr) *srtRelay {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &srtRelay{conn: c, server: server}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			pkt := append([]byte(nil), buf[:n]...)
			handshake := n > 44 && binary.BigEndian.Uint16(pkt[0:2]) == 0x8000
			if from.Port == server.Port && from.IP.Equal(server.IP) {
				if handshake {
					r.toCaller.Add(1)
				}
				r.mu.Lock()
				to := r.client
				r.mu.Unlock()
				if to != nil {
					_, _ = c.WriteToUDP(pkt, to)
				}
				continue
			}
			// To the listener (destination socket 0), not to its
			// connection.
			if handshake && binary.BigEndian.Uint32(pkt[12:16]) == 0 {
				r.fromCaller.Add(1)
			}
			r.mu.Lock()
			r.client = from
			// A conclusion: handshake type 0xFFFFFFFF at byte 36.
			if handshake && binary.BigEndian.Uint32(pkt[36:40]) == 0xFFFFFFFF {
				r.conclusion = pkt
			}
			r.mu.Unlock()
			_, _ = c.WriteToUDP(pkt, server)
		}
	}()
	return r
}

// replay sends the caller's conclusion again, with socket id sid (0: its
// own).
func (r *srtRelay) replay(t *testing.T, sid uint32) {
	t.Helper()
	r.mu.Lock()
	p := append([]byte(nil), r.conclusion...)
	r.mu.Unlock()
	if len(p) == 0 {
		t.Fatal("no conclusion handshake seen")
	}
	if sid != 0 {
		binary.BigEndian.PutUint32(p[40:44], sid)
	}
	if _, err := r.conn.WriteToUDP(p, r.server); err != nil {
		t.Fatal(err)
	}
}

// TestRepeatedHandshakes: handshakes from the address of a publisher just
// admitted (a caller's late repeat, or the same conclusion replayed with
// other socket ids) are answered, so the listener keeps none of them, and
// the publisher's connection (libsrt, in the ffmpeg CLI) goes on.
func TestRepeatedHandshakes(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	r := newRig(t, Config{})
	relay := newSRTRelay(t, r.srv.Addr().(*net.UDPAddr))
	clip := testClip(t, "1")
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pubCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = ffmpeg(pubCtx, []string{"-stream_loop", "-1", "-re", "-i", clip, "-c", "copy"},
			"srt://"+relay.conn.LocalAddr().String()+"?streamid=publish:"+testKey)
	}()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	before, callerBefore := relay.toCaller.Load(), relay.fromCaller.Load()
	relay.replay(t, 0) // a late repeat of the caller's own
	for i := range 50 {
		relay.replay(t, 0x10000+uint32(i)) // replayed with other socket ids
	}
	// The publication goes on: media keeps coming for 2 s more.
	until := time.Now().Add(2 * time.Second)
	for time.Now().Before(until) {
		if _, err := sub.Next(ctx); err != nil {
			t.Fatalf("the publication ended after the repeated handshakes: %v", err)
		}
	}
	if n := r.srv.pendingRequests(); n != 0 {
		t.Errorf("the listener holds %d handshakes it never answered", n)
	}
	// No exchange goes on: libsrt answers the rejection of its own
	// socket's repeat once, to its connection (which ignores it), never
	// with a new request to the listener.
	if n := relay.fromCaller.Load() - callerBefore; n > 0 {
		t.Errorf("the caller sent the listener %d handshakes after the rejections", n)
	}
	if n := relay.toCaller.Load() - before; n != 51 {
		t.Errorf("%d handshakes answered the 51 replays", n)
	}
	stop()
	<-done
}

// pendingRequests is how many connection requests gosrt's listener holds
// unanswered (its private connReqs: a request leaves it only when accepted
// or rejected).
func (s *Server) pendingRequests() int {
	v := reflect.ValueOf(s.ln).Elem()
	mu := (*sync.RWMutex)(unsafe.Pointer(v.FieldByName("lock").UnsafeAddr()))
	mu.RLock()
	defer mu.RUnlock()
	return v.FieldByName("connReqs").Len()
}
