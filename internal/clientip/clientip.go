// Package clientip finds the address of the client behind a request: the
// TCP peer, unless the peer is a trusted proxy (then X-Forwarded-For, read
// from the right), or a request carries a vouch that a verifier accepts
// (an edge speaking for its viewer, see nodeproto.Vouch).
//
// Everything that depends on a client's address (playback tokens bound to
// an IP, per-IP limits, per-network quotas) asks one Resolver.
package clientip

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrusted parses a comma-separated list of CIDR prefixes (a bare
// address stands for itself: /32 or /128). Empty means none.
func ParseTrusted(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a CIDR prefix or IP address", f)
			}
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR prefix or IP address", f)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("%q: an IPv4-mapped prefix shorter than /96", f)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Resolver finds client addresses. The zero value trusts nothing: the
// client is the TCP peer.
type Resolver struct {
	// Trusted are the proxies whose X-Forwarded-For is believed.
	Trusted []netip.Prefix
	// Vouched, when set, is asked first: it returns the address a request
	// vouches for and true, or false (no vouch, or one it does not trust).
	Vouched func(r *http.Request) (string, bool)
}

// IP returns the client's address of r ("203.0.113.7"), or r.RemoteAddr's
// host as it is when that is not an address.
func (res *Resolver) IP(r *http.Request) string {
	if res != nil && res.Vouched != nil {
		if ip, ok := res.Vouched(r); ok {
			return ip
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	peer = peer.Unmap().WithZone("")
	if res == nil {
		return peer.String()
	}
	return res.FromForwarded(peer, r.Header.Values("X-Forwarded-For")).String()
}

// FromForwarded is the client's address for a request from peer carrying
// the X-Forwarded-For values xff: peer itself unless it is trusted; then
// the rightmost address of X-Forwarded-For that is not a trusted proxy (the
// leftmost when all are trusted). A malformed entry met on the way ends the
// walk at the trusted hop to its right, which cannot vouch past it.
func (res *Resolver) FromForwarded(peer netip.Addr, xff []string) netip.Addr {
	if !res.trusted(peer) || len(xff) == 0 {
		return peer
	}
	hops := strings.Split(strings.Join(xff, ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := parseHop(strings.TrimSpace(hops[i]))
		if err != nil {
			return client
		}
		client = a
		if !res.trusted(a) {
			return a
		}
	}
	return client
}

// parseHop parses one X-Forwarded-For entry: an address, possibly with a
// port ("203.0.113.7:4711", "[2001:db8::1]:4711").
func parseHop(h string) (netip.Addr, error) {
	a, err := netip.ParseAddr(h)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(h)
		if err2 != nil {
			return netip.Addr{}, err
		}
		a = ap.Addr()
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("zoned address %q", h)
	}
	return a.Unmap(), nil
}

func (res *Resolver) trusted(a netip.Addr) bool {
	for _, p := range res.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
