package nodeproto

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// An edge that forwards a viewer's request to the origin vouches for the
// viewer's address, so that playback tokens bound to an IP work through
// edges. It adds these headers to the forwarded request:
//
//	Shoal-Viewer-IP: 203.0.113.7
//	Shoal-Vouch: <node id> <unix seconds> <base64 ed25519 signature>
//
// The signature covers VouchMessage: the method, the request target (the
// path and query as the origin sees them), the viewer's address, the time
// and the node id. The origin believes the address only when the node is
// joined and the signature verifies with its registered key, within
// VouchMaxAge of the origin's clock: a captured vouch cannot be reused for
// another address, another request, or later.
const (
	ViewerIPHeader = "Shoal-Viewer-IP"
	VouchHeader    = "Shoal-Vouch"
)

// VouchMaxAge is how far a vouch's time may be from the origin's clock.
const VouchMaxAge = 60 * time.Second

// VouchMessage is the byte string a vouch signs.
func VouchMessage(method, target, viewerIP string, unix int64, nodeID string) []byte {
	return []byte("shoal-vouch-v1\n" + method + "\n" + target + "\n" + viewerIP + "\n" + strconv.FormatInt(unix, 10) + "\n" + nodeID)
}

// Vouch sets the vouch headers on req, sent by node nodeID (whose key is
// priv) for a viewer at viewerIP, at time now. target is the request's path
// and query as the origin receives them (the part of the URL after the
// origin's base URL). An invalid viewerIP sets nothing.
func Vouch(req *http.Request, priv ed25519.PrivateKey, nodeID, target, viewerIP string, now time.Time) {
	a, err := netip.ParseAddr(viewerIP)
	if err != nil || a.Zone() != "" {
		return
	}
	ip := a.Unmap().String()
	unix := now.Unix()
	sig := ed25519.Sign(priv, VouchMessage(req.Method, target, ip, unix, nodeID))
	req.Header.Set(ViewerIPHeader, ip)
	req.Header.Set(VouchHeader, nodeID+" "+strconv.FormatInt(unix, 10)+" "+base64.StdEncoding.EncodeToString(sig))
}

// ClaimedVouch is what a request's vouch headers say, before it is checked.
type ClaimedVouch struct {
	NodeID   string
	ViewerIP string
	Time     time.Time
	sig      []byte
	unix     int64
}

// ErrNoVouch is returned by ParseVouch for a request without vouch headers.
var ErrNoVouch = errors.New("no vouch")

// ParseVouch reads the vouch headers of r: ErrNoVouch without any, another
// error when they are malformed.
func ParseVouch(r *http.Request) (ClaimedVouch, error) {
	ipv, vv := r.Header.Values(ViewerIPHeader), r.Header.Values(VouchHeader)
	if len(ipv) == 0 && len(vv) == 0 {
		return ClaimedVouch{}, ErrNoVouch
	}
	if len(ipv) != 1 || len(vv) != 1 {
		return ClaimedVouch{}, fmt.Errorf("want one %s and one %s header", ViewerIPHeader, VouchHeader)
	}
	a, err := netip.ParseAddr(ipv[0])
	if err != nil || a.Is4In6() || a.String() != ipv[0] {
		return ClaimedVouch{}, fmt.Errorf("%s is not an IP address in canonical form", ViewerIPHeader)
	}
	parts := strings.Split(vv[0], " ")
	if len(parts) != 3 || parts[0] == "" || len(parts[0]) > 64 {
		return ClaimedVouch{}, fmt.Errorf("%s: want <node id> <unix seconds> <signature>", VouchHeader)
	}
	unix, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || unix <= 0 {
		return ClaimedVouch{}, fmt.Errorf("%s: bad time", VouchHeader)
	}
	sig, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return ClaimedVouch{}, fmt.Errorf("%s: bad signature encoding", VouchHeader)
	}
	return ClaimedVouch{NodeID: parts[0], ViewerIP: ipv[0], Time: time.Unix(unix, 0), sig: sig, unix: unix}, nil
}

// Errors of ClaimedVouch.Check.
var (
	ErrVouchStale     = errors.New("vouch is too old or too far in the future")
	ErrVouchSignature = errors.New("vouch signature does not verify")
)

// Check verifies the vouch for a request of method to target, signed by
// pub (the registered key of NodeID), at time now.
func (v ClaimedVouch) Check(pub ed25519.PublicKey, method, target string, now time.Time) error {
	if d := now.Sub(v.Time); d > VouchMaxAge || d < -VouchMaxAge {
		return ErrVouchStale
	}
	if len(pub) != ed25519.PublicKeySize || NodeID(pub) != v.NodeID ||
		!ed25519.Verify(pub, VouchMessage(method, target, v.ViewerIP, v.unix, v.NodeID), v.sig) {
		return ErrVouchSignature
	}
	return nil
}

// RequestTarget is the target a vouch covers for a request the origin
// received: its path and raw query.
func RequestTarget(r *http.Request) string {
	if r.URL.RawQuery == "" {
		return r.URL.Path
	}
	return r.URL.Path + "?" + r.URL.RawQuery
}
