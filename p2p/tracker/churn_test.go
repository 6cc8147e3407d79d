package tracker

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The tracker remembers, per socket, which peers sent it a signal (what
// makes a bad report count). A stranger who joins, sends the victim one
// signal and leaves, over and over (one socket at a time, within every
// limit), must not grow that memory without bound: a peer that leaves is
// forgotten by the others.
func TestHeardIsBoundedBySwarm(t *testing.T) {
	const rounds = 300
	e := newEnv(t, Config{})
	victim := e.dial("s1/r1")
	go func() { // the victim reads what it is sent, as a peer does
		for range victim.read {
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	sig := []byte(`{"type":"signal","to":"` + victim.id + `","data":{"type":"offer","sdp":"x"}}`)
	for i := 0; i < rounds; i++ {
		ws, _, err := websocket.Dial(ctx, e.url("s1/r1"), nil)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if _, _, err := ws.Read(ctx); err != nil { // welcome
			t.Fatal(err)
		}
		if err := ws.Write(ctx, websocket.MessageText, sig); err != nil {
			t.Fatal(err)
		}
		_ = ws.Close(websocket.StatusNormalClosure, "")
	}
	var heard, peers int
	waitUntil(t, "the attacker's sockets to leave", func() bool {
		e.tr.mu.Lock()
		defer e.tr.mu.Unlock()
		sw := e.tr.swarms["s1/r1"]
		peers = len(sw.peers)
		heard = len(sw.peers[victim.id].heard)
		return peers == 1
	})
	t.Logf("after %d join-signal-leave rounds: %d peer(s) in the swarm, the victim's heard set holds %d ids", rounds, peers, heard)
	if heard != 0 {
		t.Fatalf("the victim's heard set holds %d ids of peers long gone: it grows with every stranger that ever signaled", heard)
	}
}
