// Package netguard keeps outgoing connections that API users choose the
// destination of (restream targets, webhook URLs) off the node's own
// network: loopback, private, link-local, CGNAT and multicast addresses are
// refused after name resolution, so DNS cannot smuggle one in.
package netguard

import (
	"net"
	"net/netip"
	"syscall"
)

// special are ranges that are not public besides what netip's predicates
// say (IANA special-purpose registries).
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("fec0::/10"),       // site-local
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64 (RFC 8215): its gateway's own network
	netip.MustParsePrefix("2001:2::/48"),     // benchmarking
	netip.MustParsePrefix("3fff::/20"),       // documentation
	netip.MustParsePrefix("5f00::/16"),       // SRv6 SIDs
}

// Public reports whether ip is a public unicast address. An IPv6 address
// that embeds an IPv4 one (NAT64 64:ff9b::/96, 6to4 2002::/16, mapped
// ::ffff:0:0/96) is judged by that one. The local-use NAT64 prefix
// 64:ff9b:1::/48 is never public: where its IPv4 address sits depends on
// the prefix length its network chose (RFC 6052), so it cannot be read.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return false
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case netip.MustParsePrefix("64:ff9b::/96").Contains(ip):
			return Public(netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}))
		case netip.MustParsePrefix("2002::/16").Contains(ip):
			return Public(netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}))
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() ||
		ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsLinkLocalMulticast() {
		return false
	}
	for _, p := range special {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

// Control returns a net.Dialer Control that refuses non-public addresses
// with refusal.
func Control(refusal error) func(network, address string, c syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			return err
		}
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return err
		}
		if !Public(ip) {
			return refusal
		}
		return nil
	}
}

// LiteralPrivate reports whether host (a URL's host name, without port)
// names a non-public address outright: an IP literal that is not public,
// or "localhost". Other names are checked when dialed (Control).
func LiteralPrivate(host string) bool {
	if host == "localhost" || len(host) > len(".localhost") && host[len(host)-len(".localhost"):] == ".localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && !Public(ip)
}
