package testutil

import (
	"fmt"
	"net"
	"sync"
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

// givenPorts are the TCP ports FreePort handed out in this test process.
var givenPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// FreePort returns a TCP port free on 127.0.0.1 now, never one it returned
// before in this process: the kernel may hand a port just closed out
// again, and two taken in a row for one node (its HTTP and RTMP ports)
// then clashed (seen in clean-clone CI: "port 36461 is also used by
// http_addr"). Like any free-port probe it can race with another process
// taking the port before the caller binds it.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		givenPorts.Lock()
		seen := givenPorts.m[port]
		givenPorts.m[port] = true
		givenPorts.Unlock()
		if !seen {
			return port
		}
	}
	t.Fatal("no free port that was not handed out already")
	return 0
}
