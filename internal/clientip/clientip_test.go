package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

func mustTrusted(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	p, err := ParseTrusted(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseTrusted(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: "[]"},
		{in: " , ", want: "[]"},
		{in: "10.0.0.0/8, 192.168.1.7", want: "[10.0.0.0/8 192.168.1.7/32]"},
		{in: "2001:db8::/32,::1", want: "[2001:db8::/32 ::1/128]"},
		{in: "10.1.2.3/8", want: "[10.0.0.0/8]"},
		{in: "::ffff:10.0.0.0/104", want: "[10.0.0.0/8]"},
		{in: "::ffff:10.0.0.0/64", bad: true},
		{in: "10.0.0.0/33", bad: true},
		{in: "proxy.example", bad: true},
		{in: "fe80::1%eth0", bad: true},
	} {
		p, err := ParseTrusted(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseTrusted(%q) = %v, want an error", tc.in, p)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseTrusted(%q): %v", tc.in, err)
			continue
		}
		got := "["
		for i, x := range p {
			if i > 0 {
				got += " "
			}
			got += x.String()
		}
		if got += "]"; got != tc.want {
			t.Errorf("ParseTrusted(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestFromForwarded(t *testing.T) {
	res := &Resolver{Trusted: mustTrusted(t, "10.0.0.0/8, 2001:db8:ffff::/48")}
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer: its header is ignored", "198.51.100.9", []string{"203.0.113.7"}, "198.51.100.9"},
		{"trusted peer without header", "10.1.1.1", nil, "10.1.1.1"},
		{"trusted peer", "10.1.1.1", []string{"203.0.113.7"}, "203.0.113.7"},
		{"rightmost untrusted wins over a spoofed left part", "10.1.1.1", []string{"1.2.3.4, 203.0.113.7, 10.2.2.2"}, "203.0.113.7"},
		{"several header lines are one list", "10.1.1.1", []string{"1.2.3.4", "203.0.113.7", "10.2.2.2"}, "203.0.113.7"},
		{"all trusted: the leftmost", "10.1.1.1", []string{"10.3.3.3, 10.2.2.2"}, "10.3.3.3"},
		{"malformed entry stops at the trusted hop to its right", "10.1.1.1", []string{"203.0.113.7, garbage, 10.2.2.2"}, "10.2.2.2"},
		{"malformed last entry: the peer", "10.1.1.1", []string{"203.0.113.7, "}, "10.1.1.1"},
		{"port and IPv4-mapped forms", "10.1.1.1", []string{"[::ffff:203.0.113.7]:4711"}, "203.0.113.7"},
		{"IPv4 with a port", "10.1.1.1", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"IPv6", "2001:db8:ffff::5", []string{"2001:db8:1::1"}, "2001:db8:1::1"},
	} {
		got := res.FromForwarded(netip.MustParseAddr(tc.peer), tc.xff)
		if got.String() != tc.want {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestResolverIP(t *testing.T) {
	req := func(remote string, xff ...string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "http://x/hls/a/master.m3u8", nil)
		r.RemoteAddr = remote
		for _, v := range xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		return r
	}
	var none *Resolver
	if got := none.IP(req("127.0.0.1:5000", "203.0.113.7")); got != "127.0.0.1" {
		t.Errorf("nil resolver: %s, want the peer", got)
	}
	zero := &Resolver{}
	if got := zero.IP(req("[::ffff:127.0.0.1]:5000", "203.0.113.7")); got != "127.0.0.1" {
		t.Errorf("zero resolver: %s, want the peer, unmapped", got)
	}
	res := &Resolver{Trusted: mustTrusted(t, "127.0.0.1/32")}
	if got := res.IP(req("127.0.0.1:5000", "203.0.113.7")); got != "203.0.113.7" {
		t.Errorf("trusted peer: %s", got)
	}
	if got := res.IP(req("127.0.0.2:5000", "203.0.113.7")); got != "127.0.0.2" {
		t.Errorf("untrusted peer: %s", got)
	}
	res.Vouched = func(r *http.Request) (string, bool) {
		return "198.51.100.1", r.Header.Get("Vouch") == "yes"
	}
	r := req("127.0.0.1:5000", "203.0.113.7")
	if got := res.IP(r); got != "203.0.113.7" {
		t.Errorf("refused vouch: %s, want the forwarded address", got)
	}
	r.Header.Set("Vouch", "yes")
	if got := res.IP(r); got != "198.51.100.1" {
		t.Errorf("accepted vouch: %s", got)
	}
}
