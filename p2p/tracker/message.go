package tracker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"

	"github.com/shoal-video/shoal/internal/ids"
)

// Message types.
const (
	TypeWelcome = "welcome" // server -> client, first message
	TypeHave    = "have"    // client -> server: the segments the peer holds (replaces the set)
	TypeWant    = "want"    // client -> server: who holds a segment
	TypePeers   = "peers"   // server -> client: the answer to want
	TypeSignal  = "signal"  // both ways: SDP/ICE relayed to/from another peer of the swarm
	TypeGone    = "gone"    // server -> client: a signal's target is not in the swarm
	TypeBad     = "bad"     // client -> server: a peer sent bytes that failed verification
	TypeStats   = "stats"   // client -> server: cumulative HTTP and P2P bytes of the session
	TypePing    = "ping"    // client -> server: keeps an idle socket open
	TypePong    = "pong"    // server -> client: the answer to ping
)

// Limits of the protocol.
const (
	// MaxMessageBytes is the largest text frame either side sends.
	MaxMessageBytes = 16 << 10
	// MaxSignalBytes is the largest data object of a signal.
	MaxSignalBytes = 12 << 10
	// MaxHave is how many names a have message may list.
	MaxHave = 256
	// MaxPeersOffered is how many peers a peers answer lists at most.
	MaxPeersOffered = 5
	// MaxStatBytes bounds the cumulative byte counts of a stats message
	// (1 PiB: a session never gets there).
	MaxStatBytes = 1 << 50
)

var segmentRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

// ValidSegment reports whether name is a segment (or init section) name
// as the protocol accepts it: [A-Za-z0-9._-]{1,128}.
func ValidSegment(name string) bool { return segmentRe.MatchString(name) }

// Message is one frame of the tracker protocol, either way. Which fields a
// type carries is fixed; ParseMessage refuses any other.
type Message struct {
	Type     string          `json:"type"`
	Peer     string          `json:"peer,omitempty"`
	Swarm    string          `json:"swarm,omitempty"`
	Segments []string        `json:"segments,omitempty"`
	Segment  string          `json:"segment,omitempty"`
	Peers    []string        `json:"peers,omitempty"`
	To       string          `json:"to,omitempty"`
	From     string          `json:"from,omitempty"`
	Data     json.RawMessage `json:"data,omitempty"`
	HTTP     *uint64         `json:"http_bytes,omitempty"`
	P2P      *uint64         `json:"p2p_bytes,omitempty"`
}

// MarshalJSON writes the lists of peers and have messages even when they
// are empty ("peers":[]), so that clients need not treat a missing list.
func (m Message) MarshalJSON() ([]byte, error) {
	type plain Message
	orEmpty := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	switch m.Type {
	case TypePeers:
		return json.Marshal(struct {
			plain
			Peers []string `json:"peers"`
		}{plain(m), orEmpty(m.Peers)})
	case TypeHave:
		return json.Marshal(struct {
			plain
			Segments []string `json:"segments"`
		}{plain(m), orEmpty(m.Segments)})
	}
	return json.Marshal(plain(m))
}

// wire is Message with every field's presence visible, to refuse fields a
// type does not carry.
type wire struct {
	Type     *string         `json:"type"`
	Peer     *string         `json:"peer"`
	Swarm    *string         `json:"swarm"`
	Segments []string        `json:"segments"`
	Segment  *string         `json:"segment"`
	Peers    []string        `json:"peers"`
	To       *string         `json:"to"`
	From     *string         `json:"from"`
	Data     json.RawMessage `json:"data"`
	HTTP     *uint64         `json:"http_bytes"`
	P2P      *uint64         `json:"p2p_bytes"`
}

// allowed lists the fields (besides type) each client message carries;
// every one of them is required.
var allowed = map[string][]string{
	TypeHave:   {"segments"},
	TypeWant:   {"segment"},
	TypeSignal: {"to", "data"},
	TypeBad:    {"peer", "segment"},
	TypeStats:  {"http_bytes", "p2p_bytes"},
	TypePing:   {},
}

// Server-sent types, for ParseServerMessage.
var allowedServer = map[string][]string{
	TypeWelcome: {"peer", "swarm"},
	TypePeers:   {"segment", "peers"},
	TypeSignal:  {"from", "data"},
	TypeGone:    {"peer"},
	TypePong:    {},
}

// ParseMessage parses and validates a message a client sent the tracker.
func ParseMessage(data []byte) (Message, error) { return parse(data, allowed) }

// ParseServerMessage parses and validates a message the tracker sent a
// client.
func ParseServerMessage(data []byte) (Message, error) { return parse(data, allowedServer) }

func parse(data []byte, types map[string][]string) (Message, error) {
	if len(data) > MaxMessageBytes {
		return Message{}, fmt.Errorf("message over %d bytes", MaxMessageBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w wire
	if err := dec.Decode(&w); err != nil {
		return Message{}, fmt.Errorf("not a JSON message: %v", err)
	}
	if dec.More() {
		return Message{}, errors.New("data after the JSON object")
	}
	if w.Type == nil {
		return Message{}, errors.New("no type")
	}
	fields, ok := types[*w.Type]
	if !ok {
		return Message{}, fmt.Errorf("unknown type %.32q", *w.Type)
	}
	present := map[string]bool{
		"peer": w.Peer != nil, "swarm": w.Swarm != nil, "segments": w.Segments != nil, "segment": w.Segment != nil,
		"peers": w.Peers != nil, "to": w.To != nil, "from": w.From != nil, "data": w.Data != nil,
		"http_bytes": w.HTTP != nil, "p2p_bytes": w.P2P != nil,
	}
	want := map[string]bool{}
	for _, f := range fields {
		want[f] = true
		// An empty list is left out by omitempty: absent means empty.
		if !present[f] && f != "segments" && f != "peers" {
			return Message{}, fmt.Errorf("%s: %s is required", *w.Type, f)
		}
	}
	for f, p := range present {
		if p && !want[f] {
			return Message{}, fmt.Errorf("%s: unexpected field %s", *w.Type, f)
		}
	}
	m := Message{Type: *w.Type, Segments: w.Segments, Peers: w.Peers, Data: w.Data, HTTP: w.HTTP, P2P: w.P2P}
	deref := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	m.Peer, m.Swarm, m.Segment, m.To, m.From = deref(w.Peer), deref(w.Swarm), deref(w.Segment), deref(w.To), deref(w.From)
	for _, id := range []struct{ name, v string }{{"peer", m.Peer}, {"to", m.To}, {"from", m.From}} {
		if present[id.name] && !ids.Valid(id.v) {
			return Message{}, fmt.Errorf("%s: bad %s", m.Type, id.name)
		}
	}
	if present["segment"] && !ValidSegment(m.Segment) {
		return Message{}, fmt.Errorf("%s: bad segment name", m.Type)
	}
	if present["swarm"] {
		if _, _, ok := ParseSwarm(m.Swarm); !ok {
			return Message{}, fmt.Errorf("%s: bad swarm", m.Type)
		}
	}
	if len(m.Segments) > MaxHave {
		return Message{}, fmt.Errorf("have: more than %d segments", MaxHave)
	}
	for _, s := range m.Segments {
		if !ValidSegment(s) {
			return Message{}, errors.New("have: bad segment name")
		}
	}
	if len(m.Peers) > MaxPeersOffered {
		return Message{}, fmt.Errorf("peers: more than %d", MaxPeersOffered)
	}
	for _, p := range m.Peers {
		if !ids.Valid(p) {
			return Message{}, errors.New("peers: bad peer id")
		}
	}
	if present["data"] {
		d := bytes.TrimSpace(m.Data)
		if len(d) == 0 || d[0] != '{' {
			return Message{}, errors.New("signal: data is not an object")
		}
		if len(d) > MaxSignalBytes {
			return Message{}, fmt.Errorf("signal: data over %d bytes", MaxSignalBytes)
		}
		m.Data = d
	}
	if (m.HTTP != nil && *m.HTTP > MaxStatBytes) || (m.P2P != nil && *m.P2P > MaxStatBytes) {
		return Message{}, errors.New("stats: byte count out of range")
	}
	return m, nil
}

// ParseSwarm splits a swarm id, "<stream or video id>/<rendition>", and
// checks both parts are ids (the rendition as HLS paths accept it).
func ParseSwarm(s string) (id, rendition string, ok bool) {
	id, rendition, ok = bytesCut(s)
	if !ok || !ids.Valid(id) || !ids.Valid(rendition) {
		return "", "", false
	}
	return id, rendition, true
}

func bytesCut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return "", "", false
}
