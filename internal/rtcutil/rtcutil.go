// Package rtcutil holds what the WebRTC endpoints (WHIP ingest, WHEP
// playback) share: trickle ICE fragments, JSON errors, bearer tokens,
// session ids and pion's logs in slog.
package rtcutil

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"

	"github.com/shoal-video/shoal/internal/logx"
)

// MaxFragment bounds a trickle ICE body (a few candidates).
const MaxFragment = 16 << 10

// Fragment is what a trickle ICE PATCH (RFC 8840 and RFC 9725 section
// 4.3) carries: the ICE credentials it is for and candidates per media
// stream.
type Fragment struct {
	Ufrag, Pwd string
	// candidates are "candidate:..." attribute values with the mid of the
	// media section they came in ("" before any a=mid).
	Candidates []Candidate
	End        bool // a=end-of-candidates
}

type Candidate struct {
	Mid, Value string
}

// ParseFragment parses an application/trickle-ice-sdpfrag body.
func ParseFragment(body []byte) (Fragment, error) {
	var f Fragment
	if len(body) > MaxFragment {
		return f, fmt.Errorf("fragment larger than %d bytes", MaxFragment)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1024), MaxFragment)
	mid := ""
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return f, fmt.Errorf("malformed line %q", clip(line))
		}
		if line[0] != 'a' {
			continue // m= lines and others carry nothing we use
		}
		name, value, _ := strings.Cut(line[2:], ":")
		switch name {
		case "ice-ufrag":
			f.Ufrag = value
		case "ice-pwd":
			f.Pwd = value
		case "mid":
			mid = value
		case "candidate":
			if value == "" || len(strings.Fields(value)) < 8 {
				return f, fmt.Errorf("malformed candidate %q", clip(line))
			}
			f.Candidates = append(f.Candidates, Candidate{Mid: mid, Value: "candidate:" + value})
		case "end-of-candidates":
			f.End = true
		}
	}
	if err := sc.Err(); err != nil {
		return f, err
	}
	return f, nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// WriteError answers in the API's JSON error shape.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// Bearer returns the token of an "Authorization: Bearer" header.
func Bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// RemoteIP is the peer's address without its port.
func RemoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// NewSessionID is 128 random bits: the resource URL is the only credential
// PATCH and DELETE need.
func NewSessionID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// PionLogs sends pion's warnings and errors to slog, rate-limited.
type PionLogs struct{ Log *slog.Logger }

func (p PionLogs) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: p.Log.With("scope", scope), lim: logx.NewLimiter(10 * time.Second)}
}

type pionLogger struct {
	log *slog.Logger
	lim *logx.Limiter
}

func (l *pionLogger) emit(warn bool, msg string) {
	if ok, n := l.lim.Allow(); ok {
		if warn {
			l.log.Warn(msg, "suppressed_since_last", n)
		} else {
			l.log.Debug(msg, "suppressed_since_last", n)
		}
	}
}

func (l *pionLogger) Trace(string)                 {}
func (l *pionLogger) Tracef(string, ...any)        {}
func (l *pionLogger) Debug(string)                 {}
func (l *pionLogger) Debugf(string, ...any)        {}
func (l *pionLogger) Info(string)                  {}
func (l *pionLogger) Infof(string, ...any)         {}
func (l *pionLogger) Warn(msg string)              { l.emit(false, msg) }
func (l *pionLogger) Warnf(f string, args ...any)  { l.emit(false, fmt.Sprintf(f, args...)) }
func (l *pionLogger) Error(msg string)             { l.emit(true, msg) }
func (l *pionLogger) Errorf(f string, args ...any) { l.emit(true, fmt.Sprintf(f, args...)) }

// ErrICERestart is a fragment asking for an ICE restart, which the
// endpoints do not offer.
var ErrICERestart = errors.New("ICE restarts are not supported: end this session and start a new one")

// MaxTrickleCandidates bounds the candidates one session may add by PATCH:
// each new remote address makes the server send it STUN checks, so an
// unbounded list would turn the server into a reflector.
const MaxTrickleCandidates = 16

// Trickle adds a session's late candidates (PATCH), at most
// MaxTrickleCandidates in all, and none after end-of-candidates.
type Trickle struct {
	mu    sync.Mutex
	added int
	ended bool
}

// Add adds a fragment's candidates to pc. A fragment for other ICE
// credentials (a restart) gives ErrICERestart; too many candidates, a
// candidate after end-of-candidates or one for an address that cannot be
// a peer (unspecified, multicast) is refused with an error for the client.
func (t *Trickle) Add(pc *webrtc.PeerConnection, f Fragment) error {
	if rd := pc.RemoteDescription(); rd != nil && f.Ufrag != "" &&
		!strings.Contains(rd.SDP, "a=ice-ufrag:"+f.Ufrag+"\r\n") && !strings.Contains(rd.SDP, "a=ice-ufrag:"+f.Ufrag+"\n") {
		return ErrICERestart
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(f.Candidates) > 0 && t.ended {
		return errors.New("candidates after end-of-candidates")
	}
	if t.added+len(f.Candidates) > MaxTrickleCandidates {
		return fmt.Errorf("a session takes at most %d trickled candidates", MaxTrickleCandidates)
	}
	for _, c := range f.Candidates {
		if err := checkCandidate(c.Value); err != nil {
			return err
		}
		init := webrtc.ICECandidateInit{Candidate: c.Value}
		if c.Mid != "" {
			mid := c.Mid
			init.SDPMid = &mid
		}
		if err := pc.AddICECandidate(init); err != nil {
			return fmt.Errorf("candidate refused: %w", err)
		}
		t.added++
	}
	if f.End {
		t.ended = true
	}
	return nil
}

// checkCandidate refuses a candidate (the value of an a=candidate line)
// whose address cannot be a peer: unspecified or multicast.
func checkCandidate(value string) error {
	if fields := strings.Fields(value); len(fields) >= 6 {
		if ip := net.ParseIP(fields[4]); ip != nil && (ip.IsUnspecified() || ip.IsMulticast()) {
			return fmt.Errorf("candidate address %s cannot be a peer", ip)
		}
	}
	return nil
}

// Offer checks the candidates an offer lists (its a=candidate lines) as
// Add checks trickled ones, and counts them against the same budget: an
// offer may list at most MaxTrickleCandidates, and trickled ones come on
// top of those only up to the same bound. Call it before the offer is set
// as the remote description; its error is for the client.
func (t *Trickle) Offer(sdp []byte) error {
	// Counted by transport address: a candidate is listed once per
	// component (pion lists RTP and RTCP's), and by every m= section
	// without BUNDLE, but it is one address to check.
	addrs := map[string]bool{}
	for _, line := range strings.Split(string(sdp), "\n") {
		value, ok := strings.CutPrefix(strings.TrimSuffix(line, "\r"), "a=candidate:")
		if !ok {
			continue
		}
		if err := checkCandidate("candidate:" + value); err != nil {
			return err
		}
		key := value
		if f := strings.Fields(value); len(f) >= 6 {
			key = strings.ToLower(f[2]) + " " + f[4] + " " + f[5]
		}
		if addrs[key] = true; len(addrs) > MaxTrickleCandidates {
			return fmt.Errorf("the offer lists more than %d ICE candidate addresses", MaxTrickleCandidates)
		}
	}
	n := len(addrs)
	t.mu.Lock()
	t.added = n
	t.mu.Unlock()
	return nil
}

// OfferReadTimeout bounds the reading of an offer's body: a client that
// sends it slowly must not hold a request (and what it was admitted to)
// for ever.
const OfferReadTimeout = 10 * time.Second

// ErrOfferTooLarge: an offer over the bound ReadOffer was given.
var ErrOfferTooLarge = errors.New("the SDP offer is too large")

// ReadOffer reads a request's body of at most limit bytes, within
// OfferReadTimeout.
func ReadOffer(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	return readOffer(w, r, limit, OfferReadTimeout)
}

func readOffer(w http.ResponseWriter, r *http.Request, limit int64, timeout time.Duration) ([]byte, error) {
	// Not every ResponseWriter takes a deadline (a test recorder): then
	// the server's own timeouts are all there is.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(timeout))
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	// No deadline after the body: the server's read that watches for the
	// client going away would end the request's context at it.
	_ = rc.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%w: over %d bytes", ErrOfferTooLarge, limit)
	}
	return body, nil
}

// CORS sets what lets a browser page on another origin use a WHIP or WHEP
// endpoint.
func CORS(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "POST, PATCH, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
	h.Set("Access-Control-Expose-Headers", "Location, ETag, Accept-Patch, Link")
	h.Set("Access-Control-Max-Age", "600")
}

// ServePatch handles a session resource's PATCH: it adds the trickled
// candidates of the body to pc through t, and answers 204, or the error
// (415 for another content type, 400 for a malformed fragment or a refused
// candidate, 422 for an ICE restart).
func ServePatch(w http.ResponseWriter, r *http.Request, pc *webrtc.PeerConnection, t *Trickle) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/trickle-ice-sdpfrag" {
		WriteError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send candidates as application/trickle-ice-sdpfrag")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxFragment+1))
	if err != nil {
		WriteError(w, http.StatusBadRequest, "bad_request", "reading the fragment: "+err.Error())
		return
	}
	frag, err := ParseFragment(body)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "bad_fragment", "malformed trickle ICE fragment: "+err.Error())
		return
	}
	switch err := t.Add(pc, frag); {
	case errors.Is(err, ErrICERestart):
		WriteError(w, http.StatusUnprocessableEntity, "ice_restart", err.Error())
	case err != nil:
		WriteError(w, http.StatusBadRequest, "bad_fragment", err.Error())
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// Network is where and how an endpoint's WebRTC media flows.
type Network struct {
	// PublicIPs are announced as host candidates in place of the local
	// ones (1:1 NAT).
	PublicIPs []string
	// Net, when set, replaces the host's network (pion's vnet in tests);
	// else UDPMux, when set, carries every session's media; else sessions
	// take ephemeral ports in PortMin..PortMax (any when both are 0).
	Net              transport.Net
	UDPMux           ice.UDPMux
	PortMin, PortMax uint16
	Log              *slog.Logger
}

// SettingEngine is the pion settings both endpoints use: their network,
// loopback candidates (a single machine), no mDNS, pion's logs in slog,
// and ICE given up 10 s after a peer goes silent.
func SettingEngine(n Network) (webrtc.SettingEngine, error) {
	se := webrtc.SettingEngine{LoggerFactory: PionLogs{Log: n.Log.With("component", "webrtc")}}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(5*time.Second, 10*time.Second, 2*time.Second)
	if len(n.PublicIPs) > 0 {
		se.SetNAT1To1IPs(n.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	switch {
	case n.Net != nil:
		se.SetNet(n.Net)
	case n.UDPMux != nil:
		se.SetICEUDPMux(n.UDPMux)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	case n.PortMax > 0:
		if err := se.SetEphemeralUDPPortRange(n.PortMin, n.PortMax); err != nil {
			return se, fmt.Errorf("UDP port range: %w", err)
		}
	}
	return se, nil
}
