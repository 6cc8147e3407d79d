package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// clock is an injected clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type env struct {
	t     *testing.T
	tr    *Tracker
	srv   *httptest.Server
	clock *clock
	sweep chan time.Time
	reg   *prometheus.Registry
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	e := &env{t: t, clock: &clock{now: time.Unix(1_700_000_000, 0)}, sweep: make(chan time.Time), reg: prometheus.NewRegistry()}
	cfg.Now = e.clock.Now
	cfg.Sweep = e.sweep
	cfg.Registerer = e.reg
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.tr = tr
	mux := http.NewServeMux()
	mux.Handle(Path, tr)
	e.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		tr.Close()
		e.srv.Close()
	})
	return e
}

func (e *env) url(swarm string) string {
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + Path + "?swarm=" + swarm
}

type client struct {
	t      *testing.T
	ws     *websocket.Conn
	id     string
	read   chan []byte
	err    chan error
	gateMu sync.Mutex
	gate   chan struct{} // closed: the reader reads
}

func (e *env) dial(swarm string) *client {
	e.t.Helper()
	return e.dialQuery(swarm, "")
}

func (e *env) dialQuery(swarm, query string) *client {
	e.t.Helper()
	return e.dialFrom(swarm, query, "")
}

// dialFrom dials as a client at network address addr (the X-Test-Client
// header, which envs with clientFromHeader read; "" sends none).
func (e *env) dialFrom(swarm, query, addr string) *client {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var opts *websocket.DialOptions
	if addr != "" {
		opts = &websocket.DialOptions{HTTPHeader: http.Header{"X-Test-Client": {addr}}}
	}
	ws, resp, err := websocket.Dial(ctx, e.url(swarm)+query, opts)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		e.t.Fatalf("dial %s: %v (status %d)", swarm, err, status)
	}
	c := &client{t: e.t, ws: ws, read: make(chan []byte, 256), err: make(chan error, 1), gate: make(chan struct{})}
	close(c.gate)
	ws.SetReadLimit(1 << 20)
	go func() {
		for {
			c.gateMu.Lock()
			gate := c.gate
			c.gateMu.Unlock()
			<-gate // a stalled client reads nothing from its socket
			_, b, err := ws.Read(context.Background())
			if err != nil {
				c.err <- err
				close(c.read)
				return
			}
			c.read <- b
		}
	}()
	e.t.Cleanup(func() { _ = ws.CloseNow() })
	w := c.next()
	if w.Type != TypeWelcome || w.Swarm != swarm || w.Peer == "" {
		e.t.Fatalf("first message %+v, want a welcome to %s", w, swarm)
	}
	c.id = w.Peer
	return c
}

// pause stops reading c's socket (after the message being read); resume
// reads again.
func (c *client) pause() {
	c.gateMu.Lock()
	c.gate = make(chan struct{})
	c.gateMu.Unlock()
}

func (c *client) resume() {
	c.gateMu.Lock()
	close(c.gate)
	c.gateMu.Unlock()
}

func (c *client) next() Message {
	c.t.Helper()
	select {
	case b, ok := <-c.read:
		if !ok {
			c.t.Fatalf("socket closed: %v", <-c.err)
		}
		m, err := ParseServerMessage(b)
		if err != nil {
			c.t.Fatalf("server sent %s: %v", b, err)
		}
		return m
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message within 10 s")
	}
	return Message{}
}

func (c *client) sendRaw(typ websocket.MessageType, b []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, typ, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) send(m any) {
	c.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(websocket.MessageText, b)
}

// sync waits until the tracker handled everything c sent before.
func (c *client) sync() {
	c.t.Helper()
	c.send(Message{Type: TypePing})
	if m := c.next(); m.Type != TypePong {
		c.t.Fatalf("got %+v, want pong", m)
	}
}

// closed waits for the tracker to close c's socket and returns the close
// status and reason.
func (c *client) closed() (websocket.StatusCode, string) {
	c.t.Helper()
	for {
		select {
		case _, ok := <-c.read:
			if ok {
				continue
			}
			err := <-c.err
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				c.t.Fatalf("socket ended without a close frame: %v", err)
			}
			return ce.Code, ce.Reason
		case <-time.After(10 * time.Second):
			c.t.Fatal("socket still open after 10 s")
		}
	}
}

func (c *client) wantPolicyClose(reasonPart string) {
	c.t.Helper()
	code, reason := c.closed()
	if code != websocket.StatusPolicyViolation || !strings.Contains(reason, reasonPart) {
		c.t.Fatalf("closed with %v %q, want policy violation mentioning %q", code, reason, reasonPart)
	}
}

// waitUntil polls cond (the tracker's state changes after a socket ends).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestHaveWantPeers(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	a, b, c := e.dial(sw), e.dial(sw), e.dial(sw)
	other := e.dial("stream2/720p")
	if a.id == b.id || b.id == c.id || a.id == c.id {
		t.Fatal("peer ids repeat")
	}
	a.send(Message{Type: TypeHave, Segments: []string{"init.mp4", "seg-1.m4s"}})
	a.sync()
	b.send(Message{Type: TypeHave, Segments: []string{"seg-1.m4s"}})
	b.sync()
	other.send(Message{Type: TypeHave, Segments: []string{"seg-1.m4s"}})
	other.sync()

	c.send(Message{Type: TypeWant, Segment: "seg-1.m4s"})
	m := c.next()
	if m.Type != TypePeers || m.Segment != "seg-1.m4s" || !sameSet(m.Peers, a.id, b.id) {
		t.Fatalf("want seg-1: %+v, want peers %s and %s (not the asker, not another swarm)", m, a.id, b.id)
	}
	a.send(Message{Type: TypeWant, Segment: "seg-1.m4s"})
	if m := a.next(); !sameSet(m.Peers, b.id) {
		t.Fatalf("a's want: %v, want only %s (never the asker)", m.Peers, b.id)
	}
	c.send(Message{Type: TypeWant, Segment: "init.mp4"})
	if m := c.next(); !sameSet(m.Peers, a.id) {
		t.Fatalf("init: %v", m.Peers)
	}
	// have replaces the set.
	a.send(Message{Type: TypeHave, Segments: []string{"seg-2.m4s"}})
	a.sync()
	c.send(Message{Type: TypeWant, Segment: "init.mp4"})
	if m := c.next(); len(m.Peers) != 0 {
		t.Fatalf("init after a replaced its set: %v", m.Peers)
	}
	c.send(Message{Type: TypeWant, Segment: "seg-9.m4s"})
	select {
	case b := <-c.read:
		if string(b) != `{"type":"peers","segment":"seg-9.m4s","peers":[]}` {
			t.Fatalf("nobody holds seg-9: %s", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
}

func TestPeersSpreadLoad(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	holders := map[string]bool{}
	for range 7 {
		h := e.dial(sw)
		h.send(Message{Type: TypeHave, Segments: []string{"s.ts"}})
		h.sync()
		holders[h.id] = true
	}
	asker := e.dial(sw)
	asker.send(Message{Type: TypeWant, Segment: "s.ts"})
	first := asker.next().Peers
	if len(first) != MaxPeersOffered {
		t.Fatalf("offered %d peers of 7, want %d", len(first), MaxPeersOffered)
	}
	asker.send(Message{Type: TypeWant, Segment: "s.ts"})
	second := asker.next().Peers
	// The 2 holders not offered first come first now.
	offered := map[string]bool{}
	for _, p := range first {
		offered[p] = true
	}
	for _, p := range second[:2] {
		if offered[p] {
			t.Fatalf("second answer %v starts with %s, offered in the first %v, while 2 holders were never offered", second, p, first)
		}
	}
	for _, p := range append(first, second...) {
		if !holders[p] {
			t.Fatalf("offered %s, not a holder", p)
		}
	}
}

func sameSet(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	m := map[string]bool{}
	for _, g := range got {
		m[g] = true
	}
	for _, w := range want {
		if !m[w] {
			return false
		}
	}
	return true
}

func TestSignalRelayAndGone(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "vid1/480p"
	a, b := e.dial(sw), e.dial(sw)
	other := e.dial("vid1/720p")
	data := json.RawMessage(`{"sdp":"v=0\r\n","type":"offer"}`)
	a.send(Message{Type: TypeSignal, To: b.id, Data: data})
	m := b.next()
	if m.Type != TypeSignal || m.From != a.id || string(m.Data) != string(data) {
		t.Fatalf("b got %+v, want the signal from %s", m, a.id)
	}
	// Another swarm's peer is not reachable.
	a.send(Message{Type: TypeSignal, To: other.id, Data: data})
	if m := a.next(); m.Type != TypeGone || m.Peer != other.id {
		t.Fatalf("signal to another swarm: %+v, want gone", m)
	}
	a.send(Message{Type: TypeSignal, To: "nosuchpeer", Data: data})
	if m := a.next(); m.Type != TypeGone || m.Peer != "nosuchpeer" {
		t.Fatalf("signal to nobody: %+v", m)
	}
	_ = b.ws.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, "b to leave", func() bool { n, _, _ := e.tr.SwarmStats(sw); return n == 1 })
	a.send(Message{Type: TypeSignal, To: b.id, Data: data})
	if m := a.next(); m.Type != TypeGone || m.Peer != b.id {
		t.Fatalf("signal to a peer that left: %+v", m)
	}
}

func TestBadMessagesCloseOnlyThatSocket(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	bystander := e.dial(sw)
	bigData := `{"x":"` + strings.Repeat("a", MaxSignalBytes) + `"}`
	many := make([]string, MaxHave+1)
	for i := range many {
		many[i] = "s.ts"
	}
	manyJSON, _ := json.Marshal(Message{Type: TypeHave, Segments: many})
	cases := []struct {
		name   string
		typ    websocket.MessageType
		msg    string
		reason string
	}{
		{"binary", websocket.MessageBinary, `{"type":"ping"}`, "binary"},
		{"not JSON", websocket.MessageText, `{"type":`, "bad message"},
		{"two objects", websocket.MessageText, `{"type":"ping"}{"type":"ping"}`, "bad message"},
		{"unknown type", websocket.MessageText, `{"type":"teleport"}`, "unknown type"},
		{"server type", websocket.MessageText, `{"type":"welcome","peer":"abc","swarm":"a/b"}`, "unknown type"},
		{"unknown field", websocket.MessageText, `{"type":"ping","x":1}`, "bad message"},
		{"field of another type", websocket.MessageText, `{"type":"want","segment":"a.ts","to":"abc"}`, "unexpected field"},
		{"missing field", websocket.MessageText, `{"type":"want"}`, "required"},
		{"bad segment", websocket.MessageText, `{"type":"want","segment":"../etc/passwd"}`, "bad segment"},
		{"bad have name", websocket.MessageText, `{"type":"have","segments":["a b"]}`, "bad segment"},
		{"too many names", websocket.MessageText, string(manyJSON), "more than 256"},
		{"bad peer id", websocket.MessageText, `{"type":"signal","to":"A!","data":{}}`, "bad to"},
		{"data not object", websocket.MessageText, `{"type":"signal","to":"abc","data":"x"}`, "not an object"},
		{"data too big", websocket.MessageText, `{"type":"signal","to":"abc","data":` + bigData + `}`, "over"},
		{"negative stats", websocket.MessageText, `{"type":"stats","http_bytes":-1,"p2p_bytes":0}`, "bad message"},
		{"huge stats", websocket.MessageText, `{"type":"stats","http_bytes":1e300,"p2p_bytes":0}`, "bad message"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(sw)
			c.t = t
			c.sendRaw(tc.typ, []byte(tc.msg))
			c.wantPolicyClose(tc.reason)
			bystander.sync()
		})
	}
	if got := testutil.ToFloat64(e.tr.closes.WithLabelValues("message")); got < 10 {
		t.Fatalf("violations{reason=message} = %v", got)
	}
}

func TestMessageSizeLimit(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	bystander := e.dial(sw)
	c := e.dial(sw)
	// Exactly 16 KiB is fine (JSON whitespace pads it).
	msg := `{"type":"ping"}`
	c.sendRaw(websocket.MessageText, []byte(msg+strings.Repeat(" ", MaxMessageBytes-len(msg))))
	if m := c.next(); m.Type != TypePong {
		t.Fatalf("got %+v", m)
	}
	c.sendRaw(websocket.MessageText, []byte(msg+strings.Repeat(" ", MaxMessageBytes-len(msg)+1)))
	c.wantPolicyClose("16 KiB")
	// Far over.
	d := e.dial(sw)
	d.sendRaw(websocket.MessageText, []byte(msg+strings.Repeat(" ", 1<<20)))
	d.wantPolicyClose("16 KiB")
	bystander.sync()
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	c := e.dial(sw)
	for range 50 {
		c.sync()
	}
	e.clock.Add(time.Second) // 20 more
	for range 20 {
		c.sync()
	}
	c.send(Message{Type: TypePing})
	c.wantPolicyClose("20 messages a second")
	// Another socket is unaffected: its own budget.
	d := e.dial(sw)
	for range 50 {
		d.sync()
	}
}

func TestCapacity(t *testing.T) {
	e := newEnv(t, Config{MaxPeersPerSwarm: 2, MaxSwarms: 2})
	e.dial("s1/a")
	e.dial("s1/a")
	dialStatus := func(swarm string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, e.url(swarm), nil)
		if err == nil {
			_ = ws.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial %s: %v", swarm, err)
		}
		return resp.StatusCode
	}
	if got := dialStatus("s1/a"); got != http.StatusServiceUnavailable {
		t.Fatalf("third peer of a swarm of 2: %d, want 503", got)
	}
	e.dial("s1/b")
	if got := dialStatus("s2/a"); got != http.StatusServiceUnavailable {
		t.Fatalf("third swarm: %d, want 503", got)
	}
}

func TestAuthorize(t *testing.T) {
	e := newEnv(t, Config{Authorize: func(r *http.Request, id string) int {
		switch id {
		case "public1":
			return http.StatusOK
		case "signed1":
			if r.URL.Query().Get("token") == "good" {
				return http.StatusOK
			}
			return http.StatusForbidden
		}
		return http.StatusNotFound
	}})
	check := func(query string, status int, code string) {
		t.Helper()
		resp, err := http.Get(e.srv.URL + Path + "?" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Error struct{ Code, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: body: %v", query, err)
		}
		if resp.StatusCode != status || body.Error.Code != code || body.Error.Message == "" {
			t.Fatalf("%s: %d %+v, want %d %s", query, resp.StatusCode, body, status, code)
		}
	}
	check("swarm=gone1/720p", http.StatusNotFound, "not_found")
	check("swarm=signed1/720p", http.StatusForbidden, "forbidden")
	check("swarm=signed1/720p&token=bad", http.StatusForbidden, "forbidden")
	check("swarm=public1", http.StatusBadRequest, "bad_request")
	check("swarm=public1/../x", http.StatusBadRequest, "bad_request")
	check("swarm=PUBLIC1/720p", http.StatusBadRequest, "bad_request")
	e.dialQuery("signed1/720p", "&token=good")
	e.dial("public1/720p")
}

func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	a, b := e.dial(sw), e.dial(sw)
	e.clock.Add(30 * time.Second)
	b.sync()
	e.sweep <- time.Time{}
	b.sync() // a is not idle yet
	e.clock.Add(30 * time.Second)
	e.sweep <- time.Time{}
	a.wantPolicyClose("idle")
	b.sync()
	e.clock.Add(60 * time.Second)
	e.sweep <- time.Time{}
	b.wantPolicyClose("idle")
	waitUntil(t, "the swarm to empty", func() bool { n, _, _ := e.tr.SwarmStats(sw); return n == 0 })
	if got := testutil.ToFloat64(e.tr.peers); got != 0 {
		t.Fatalf("shoal_p2p_peers = %v after every peer left", got)
	}
}

// clientFromHeader is a Config.ClientIP for tests: the X-Test-Client header.
func clientFromHeader(r *http.Request) string { return r.Header.Get("X-Test-Client") }

func TestBadReportsDropPeer(t *testing.T) {
	e := newEnv(t, Config{ClientIP: clientFromHeader})
	const sw = "stream1/720p"
	mal := e.dialFrom(sw, "", "198.51.100.1")
	mal.send(Message{Type: TypeHave, Segments: []string{"s.ts"}})
	mal.sync()
	var r [5]*client
	for i := range r {
		r[i] = e.dialFrom(sw, "", fmt.Sprintf("203.0.113.%d", 1+i))
	}
	// r[4] shares r[0]'s address.
	r[4] = e.dialFrom(sw, "", "203.0.113.1")
	signal := func(to *client) {
		mal.send(Message{Type: TypeSignal, To: to.id, Data: json.RawMessage(`{"type":"offer"}`)})
		if m := to.next(); m.Type != TypeSignal || m.From != mal.id {
			t.Fatalf("signal relayed as %+v", m)
		}
	}
	report := func(c *client) {
		c.send(Message{Type: TypeBad, Peer: mal.id, Segment: "s.ts"})
		c.sync()
	}
	offered := func(c *client) bool {
		c.send(Message{Type: TypeWant, Segment: "s.ts"})
		return slices.Contains(c.next().Peers, mal.id)
	}
	// A report from a peer mal never signaled does not count.
	report(r[3])
	if got := testutil.ToFloat64(e.tr.badReports); got != 0 {
		t.Fatalf("a report from a stranger counted: %v", got)
	}
	for _, c := range []*client{r[0], r[1], r[4]} {
		signal(c)
	}
	report(r[0])
	report(r[0]) // the same reporter twice counts once
	report(r[4]) // another socket of the same address: one reporter
	report(r[1])
	if offered(r[0]) {
		t.Fatal("a reporter is offered the peer it reported")
	}
	if !offered(r[3]) {
		t.Fatal("after 2 reporting addresses the peer is no longer offered to others")
	}
	mal.sync()
	signal(r[2])
	report(r[2])
	mal.wantPolicyClose("failed verification")
	if offered(r[3]) {
		t.Fatal("after 3 reporting addresses the peer is still offered")
	}
	if got := testutil.ToFloat64(e.tr.badReports); got != 4 {
		t.Fatalf("bad reports = %v, want 4", got)
	}
	// Reporting oneself is a violation.
	r[0].send(Message{Type: TypeBad, Peer: r[0].id, Segment: "s.ts"})
	r[0].wantPolicyClose("itself")
}

// TestSignalFloodClosesNoOne: signals to a peer whose queue is half full
// are refused (gone) instead of getting the receiver closed as too slow.
func TestSignalFloodClosesNoOne(t *testing.T) {
	e := newEnv(t, Config{MessageRate: 100000, MessageBurst: 100000, WriteTimeout: time.Minute})
	const sw = "stream1/720p"
	victim, attacker := e.dial(sw), e.dial(sw)
	victim.pause()
	// 2,000 signals of 11 KiB (22 MiB) to a victim that reads nothing:
	// the socket's buffers fill, then its queue.
	big := json.RawMessage(`{"x":"` + strings.Repeat("a", 11<<10) + `"}`)
	// The attacker's answers (gone) are read as they come, or its own
	// socket would fill and the tracker would rightly close it as slow.
	var gone int
	done := make(chan error, 1)
	go func() {
		for b := range attacker.read {
			m, err := ParseServerMessage(b)
			if err != nil {
				done <- fmt.Errorf("server sent %s: %v", b, err)
				return
			}
			switch m.Type {
			case TypeGone:
				gone++
			case TypePong:
				done <- nil
				return
			}
		}
		done <- fmt.Errorf("attacker's socket closed: %v", <-attacker.err)
	}()
	for range 2000 {
		attacker.send(Message{Type: TypeSignal, To: victim.id, Data: big})
	}
	attacker.send(Message{Type: TypePing})
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no pong for the attacker within 30 s")
	}
	victim.resume()
	victim.send(Message{Type: TypePing})
	for {
		m := victim.next()
		if m.Type == TypePong {
			break
		}
	}
	if gone == 0 {
		t.Fatal("no signal was refused while the victim's queue was full")
	}
}

// TestAccessCheckedAgain: a socket whose access no longer passes (a token
// expired, the stream made signed) is closed at the next check.
func TestAccessCheckedAgain(t *testing.T) {
	var mu sync.Mutex
	allowed := true
	e := newEnv(t, Config{ReauthorizeEvery: 30 * time.Second, Authorize: func(*http.Request, string) int {
		mu.Lock()
		defer mu.Unlock()
		if allowed {
			return http.StatusOK
		}
		return http.StatusForbidden
	}})
	const sw = "stream1/720p"
	a := e.dial(sw)
	a.send(Message{Type: TypePing})
	a.next()
	e.clock.Add(31 * time.Second)
	a.send(Message{Type: TypePing})
	a.next()
	e.sweep <- time.Time{}
	a.send(Message{Type: TypePing})
	if m := a.next(); m.Type != TypePong {
		t.Fatalf("still allowed: %+v", m)
	}
	mu.Lock()
	allowed = false
	mu.Unlock()
	e.clock.Add(31 * time.Second)
	a.send(Message{Type: TypePing})
	a.next()
	e.sweep <- time.Time{}
	a.wantPolicyClose("revoked")
}

// TestP2PTurnedOff: a stream whose P2P was turned off (Authorize answers
// 409) is refused at the join with p2p_disabled, and its joined sockets
// are closed at the next check, saying so.
func TestP2PTurnedOff(t *testing.T) {
	var mu sync.Mutex
	status := http.StatusOK
	e := newEnv(t, Config{ReauthorizeEvery: 30 * time.Second, Authorize: func(*http.Request, string) int {
		mu.Lock()
		defer mu.Unlock()
		return status
	}})
	const sw = "stream1/720p"
	a := e.dial(sw)
	mu.Lock()
	status = http.StatusConflict
	mu.Unlock()
	resp, err := http.Get(e.srv.URL + Path + "?swarm=" + sw)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), `"code":"p2p_disabled"`) {
		t.Fatalf("join with P2P off: %d %s", resp.StatusCode, body)
	}
	e.clock.Add(31 * time.Second)
	a.sync()
	e.sweep <- time.Time{}
	a.wantPolicyClose("turned off")
	if got := testutil.ToFloat64(e.tr.closes.WithLabelValues("p2p_disabled")); got != 1 {
		t.Fatalf("closes{p2p_disabled} = %v", got)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	a, b := e.dial(sw), e.dial(sw)
	e.clock.Add(time.Second) // the stats budgets fill from the joins
	u := func(v uint64) *uint64 { return &v }
	a.send(Message{Type: TypeStats, HTTP: u(100), P2P: u(50)})
	a.send(Message{Type: TypeStats, HTTP: u(150), P2P: u(300)})
	a.sync()
	b.send(Message{Type: TypeStats, HTTP: u(10), P2P: u(0)})
	b.sync()
	if n, h, p := e.tr.SwarmStats(sw); n != 2 || h != 160 || p != 300 {
		t.Fatalf("swarm stats %d %d %d, want 2 160 300", n, h, p)
	}
	if h, p := testutil.ToFloat64(e.tr.bytes.WithLabelValues("http")), testutil.ToFloat64(e.tr.bytes.WithLabelValues("p2p")); h != 160 || p != 300 {
		t.Fatalf("shoal_p2p_bytes_total http=%v p2p=%v", h, p)
	}
	if got := testutil.ToFloat64(e.tr.peers); got != 2 {
		t.Fatalf("shoal_p2p_peers = %v", got)
	}
	a.send(Message{Type: TypeStats, HTTP: u(149), P2P: u(300)})
	a.wantPolicyClose("cumulative")
}

func TestParseMessageRoundTrip(t *testing.T) {
	u := func(v uint64) *uint64 { return &v }
	for _, m := range []Message{
		{Type: TypePing},
		{Type: TypeHave, Segments: []string{}},
		{Type: TypeHave, Segments: []string{"init.mp4", "seg_1.m4s"}},
		{Type: TypeWant, Segment: "a-1.ts"},
		{Type: TypeSignal, To: "abc", Data: json.RawMessage(`{"candidate":"x"}`)},
		{Type: TypeBad, Peer: "abc", Segment: "a.ts"},
		{Type: TypeStats, HTTP: u(1), P2P: u(0)},
	} {
		b, _ := json.Marshal(m)
		got, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		b2, _ := json.Marshal(got)
		if string(b) != string(b2) {
			t.Fatalf("round trip %s -> %s", b, b2)
		}
	}
}

func FuzzMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"ping"}`, `{"type":"have","segments":["a.ts","b.ts"]}`, `{"type":"want","segment":"a.ts"}`,
		`{"type":"signal","to":"abc","data":{"sdp":"x"}}`, `{"type":"bad","peer":"abc","segment":"a.ts"}`,
		`{"type":"stats","http_bytes":1,"p2p_bytes":2}`, `{"type":"have","segments":[]}`, `{"type":`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseMessage(data)
		if err != nil {
			return
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("marshal %+v: %v", m, err)
		}
		m2, err := ParseMessage(b)
		if err != nil {
			t.Fatalf("%q parsed, its re-encoding %s does not: %v", data, b, err)
		}
		b2, _ := json.Marshal(m2)
		if string(b) != string(b2) {
			t.Fatalf("not stable: %s -> %s", b, b2)
		}
	})
}

// TestCloseEndsEverything: Close closes every socket and the tracker's
// goroutines end.
func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("tracker", func(t *testing.T) {
		e := newEnv(t, Config{})
		a, b := e.dial("s1/a"), e.dial("s2/a")
		a.sync()
		e.tr.Close()
		for _, c := range []*client{a, b} {
			if code, _ := c.closed(); code != websocket.StatusGoingAway {
				t.Fatalf("closed with %v, want going away", code)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if ws, resp, err := websocket.Dial(ctx, e.url("s1/a"), nil); err == nil {
			_ = ws.CloseNow()
			t.Fatal("joined a closed tracker")
		} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("join after Close: %v", err)
		}
	})
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	waitUntil(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// TestPeerCaps: sockets are bounded per network address and for the whole
// node; a socket that leaves frees its place.
func TestPeerCaps(t *testing.T) {
	e := newEnv(t, Config{ClientIP: clientFromHeader, MaxPeers: 3, MaxPeersPerAddr: 2})
	const sw = "stream1/720p"
	status := func(addr string) int {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, e.url(sw), &websocket.DialOptions{HTTPHeader: http.Header{"X-Test-Client": {addr}}})
		if err == nil {
			_ = ws.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dial: %v", err)
		}
		return resp.StatusCode
	}
	a1 := e.dialFrom(sw, "", "192.0.2.1")
	e.dialFrom(sw, "", "192.0.2.1")
	if got := status("192.0.2.1"); got != http.StatusServiceUnavailable {
		t.Fatalf("a third socket from one address: %d, want 503", got)
	}
	e.dialFrom(sw, "", "192.0.2.2")
	if got := status("192.0.2.3"); got != http.StatusServiceUnavailable {
		t.Fatalf("a fourth socket on a node of 3: %d, want 503", got)
	}
	_ = a1.ws.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, "a1 to leave", func() bool { n, _, _ := e.tr.SwarmStats(sw); return n == 2 })
	e.dialFrom(sw, "", "192.0.2.3")
}

// TestHoldersIndex: the index wants are answered from follows the peers'
// have sets as they change and as peers leave.
func TestHoldersIndex(t *testing.T) {
	e := newEnv(t, Config{})
	const sw = "stream1/720p"
	a, b := e.dial(sw), e.dial(sw)
	a.send(Message{Type: TypeHave, Segments: []string{"x.ts", "y.ts"}})
	a.sync()
	a.send(Message{Type: TypeHave, Segments: []string{"y.ts"}})
	a.sync()
	b.send(Message{Type: TypeWant, Segment: "x.ts"})
	if m := b.next(); len(m.Peers) != 0 {
		t.Fatalf("x.ts offered after a dropped it: %v", m.Peers)
	}
	b.send(Message{Type: TypeWant, Segment: "y.ts"})
	if m := b.next(); !sameSet(m.Peers, a.id) {
		t.Fatalf("y.ts: %v", m.Peers)
	}
	_ = a.ws.Close(websocket.StatusNormalClosure, "")
	waitUntil(t, "a to leave", func() bool { n, _, _ := e.tr.SwarmStats(sw); return n == 1 })
	e.tr.mu.Lock()
	left := len(e.tr.swarms[sw].holders)
	e.tr.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d segments still indexed after their only holder left", left)
	}
}
