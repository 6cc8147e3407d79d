package testutil

import (
	"fmt"
	"net"
	"testing"
)

// FreeUDPPair returns an even UDP port on 127.0.0.1 whose successor is free
// too (RTP and RTCP). Like any free-port probe it can race with another
// process taking the port before the caller binds it.
func FreeUDPPair(t testing.TB) int {
	t.Helper()
	for range 50 {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.UDPAddr).Port &^ 1
		c.Close()
		a, err1 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		b, err2 := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p+1))
		if a != nil {
			a.Close()
		}
		if b != nil {
			b.Close()
		}
		if err1 == nil && err2 == nil && p > 0 {
			return p
		}
	}
	t.Fatal("no free UDP port pair")
	return 0
}
