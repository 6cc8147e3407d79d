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

// Public reports whether ip is a public unicast address.
func Public(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsValid() && !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified() ||
		ip.IsMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsLinkLocalMulticast() ||
		(ip.Is4() && ip.As4()[0] == 100 && ip.As4()[1]&0xc0 == 64)) // 100.64.0.0/10 (CGNAT)
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
