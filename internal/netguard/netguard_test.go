package netguard

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true, "127.0.0.1": false, "::1": false, "10.1.2.3": false,
		"192.168.0.1": false, "172.16.0.1": false, "169.254.1.1": false, "100.64.0.1": false, "0.0.0.0": false,
		"::ffff:127.0.0.1": false, "fe80::1": false, "fc00::1": false, "224.0.0.1": false,
		"0.1.2.3": false, "192.0.0.192": false, "198.18.0.1": false, "240.0.0.1": false, "255.255.255.255": false,
		"64:ff9b::a00:1": false, "64:ff9b::808:808": true, "2002:a00:1::1": false, "2002:808:808::1": true, "fec0::1": false,
		// Local-use NAT64 (a /48 prefix puts 127.0.0.1 in bytes 6-10), benchmarking, documentation.
		"64:ff9b:1:7f00:0:100:808:808": false, "64:ff9b:1::808:808": false, "2001:2::1": false, "3fff::1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v", addr, got)
		}
	}
	for host, want := range map[string]bool{"localhost": true, "a.localhost": true, "127.0.0.1": true, "example.com": false, "8.8.8.8": false} {
		if got := LiteralPrivate(host); got != want {
			t.Errorf("LiteralPrivate(%s) = %v", host, got)
		}
	}
}

// A dialer with Control refuses loopback after resolution.
func TestControlRefusesLoopback(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	refused := errors.New("refused")
	d := net.Dialer{Control: Control(refused)}
	if _, err := d.Dial("tcp", ln.Addr().String()); !errors.Is(err, refused) {
		t.Fatalf("dial loopback: %v, want the refusal", err)
	}
}
