package peer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

// A link is the connection with one other peer: one PeerConnection, one
// data channel.
type link struct {
	p      *Peer
	remote string

	open     chan struct{}
	openOnce sync.Once
	done     chan struct{}
	doneOnce sync.Once
	low      chan struct{}
	serveQ   chan uint64Seg

	// busy counts requests in flight either way; lastUsed is when the
	// last one began or ended (UnixNano): what eviction looks at.
	busy     atomic.Int32
	lastUsed atomic.Int64

	mu      sync.Mutex
	offerer bool
	pc      *webrtc.PeerConnection
	dc      *webrtc.DataChannel
	nextID  uint64
	pending map[uint64]*request
	cur     *request
}

type uint64Seg struct {
	id      uint64
	segment string
	none    bool // answered none (the queue was long when it came)
}

const (
	// serveDepth is how many gets a link queues to answer; those that
	// come while as many wait are answered none (in order).
	serveDepth = 16
	// maxQueuedGets is how many gets may wait for their answer (data or
	// none) on a link; one more ends the link.
	maxQueuedGets = 64
)

type request struct {
	id     uint64
	expect int64
	buf    []byte
	ch     chan result
}

type result struct {
	data []byte
	err  error
}

// dcMsg is a text message of the data-channel protocol.
type dcMsg struct {
	Type    string `json:"type"`
	ID      uint64 `json:"id"`
	Segment string `json:"segment,omitempty"`
	Size    *int64 `json:"size,omitempty"`
}

var (
	errNotHeld   = errors.New("the peer does not hold the segment")
	errTampered  = errors.New("the peer announced a size other than the manifest's")
	errLinkEnded = errors.New("the peer connection ended")
	errCapacity  = errors.New("at the cap on peer connections")
)

const (
	// maxBuffered is how much a sender queues on a data channel before
	// waiting for it to drain.
	maxBuffered = 1 << 20
	lowBuffered = 256 << 10
)

func (p *Peer) newLink(remote string, offerer bool) *link {
	l := &link{p: p, remote: remote, offerer: offerer, open: make(chan struct{}), done: make(chan struct{}),
		low: make(chan struct{}, 1), serveQ: make(chan uint64Seg, maxQueuedGets), pending: map[uint64]*request{}}
	l.lastUsed.Store(time.Now().UnixNano())
	return l
}

// use marks a request in flight on the link until the returned func runs.
func (l *link) use() func() {
	l.busy.Add(1)
	l.lastUsed.Store(time.Now().UnixNano())
	return func() {
		l.lastUsed.Store(time.Now().UnixNano())
		l.busy.Add(-1)
	}
}

func (l *link) newPC() (*webrtc.PeerConnection, error) {
	pc, err := l.p.api.NewPeerConnection(webrtc.Configuration{ICEServers: l.p.cfg.ICEServers})
	if err != nil {
		return nil, err
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateDisconnected {
			l.mu.Lock()
			current := l.pc == pc
			l.mu.Unlock()
			if current {
				l.close()
			}
		}
	})
	return pc, nil
}

// setupDC makes dc, a channel of pc, the link's and wires its callbacks;
// false when pc is no longer the link's (a glare replaced it).
func (l *link) setupDC(pc *webrtc.PeerConnection, dc *webrtc.DataChannel) bool {
	l.mu.Lock()
	if l.pc != pc {
		l.mu.Unlock()
		return false
	}
	l.dc = dc
	l.mu.Unlock()
	dc.SetBufferedAmountLowThreshold(lowBuffered)
	dc.OnBufferedAmountLow(func() {
		select {
		case l.low <- struct{}{}:
		default:
		}
	})
	dc.OnOpen(func() {
		l.openOnce.Do(func() {
			close(l.open)
			// Counted under p.mu, and not once Close began (its Wait
			// must not race an Add).
			l.p.mu.Lock()
			closed := l.p.closed
			if !closed {
				l.p.wg.Add(1)
			}
			l.p.mu.Unlock()
			if !closed {
				go l.serve()
			}
		})
	})
	dc.OnClose(func() {
		// A channel replaced in a glare (answer) closes without ending the
		// link.
		l.mu.Lock()
		current := l.dc == dc
		l.mu.Unlock()
		if current {
			l.close()
		}
	})
	dc.OnMessage(l.onMessage)
	return true
}

// signalDesc sends a session description, once ICE gathering is complete
// (no trickle), to the remote peer through the tracker.
func (l *link) signalDesc(ctx context.Context, pc *webrtc.PeerConnection, desc webrtc.SessionDescription) error {
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(desc); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return errLinkEnded
	}
	l.mu.Lock()
	current := l.pc == pc
	l.mu.Unlock()
	if !current {
		return nil // replaced in a glare: this description is stale
	}
	b, err := json.Marshal(pc.LocalDescription())
	if err != nil {
		return err
	}
	return l.p.send(trackerSignal(l.remote, b))
}

// offer starts the connection as the offerer. A glare may turn the link
// into an answerer meanwhile (answer): then offer stops quietly and the
// link connects through the other peer's offer.
func (l *link) offer(ctx context.Context) error {
	pc, err := l.newPC()
	if err != nil {
		return err
	}
	l.mu.Lock()
	if !l.offerer {
		l.mu.Unlock()
		_ = pc.Close()
		return nil
	}
	l.pc = pc
	l.mu.Unlock()
	ordered := true
	dc, err := pc.CreateDataChannel(Label, &webrtc.DataChannelInit{Ordered: &ordered})
	if err != nil {
		return l.offerErr(pc, err)
	}
	if !l.setupDC(pc, dc) {
		return nil
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		return l.offerErr(pc, err)
	}
	return l.offerErr(pc, l.signalDesc(ctx, pc, o))
}

// offerErr drops the error of a connection a glare replaced (closed under
// offer's feet): the link goes on with the new one.
func (l *link) offerErr(pc *webrtc.PeerConnection, err error) error {
	if err == nil {
		return nil
	}
	l.mu.Lock()
	current := l.pc == pc
	l.mu.Unlock()
	if !current {
		return nil
	}
	return err
}

// answer answers a remote offer (the link may have been an offerer that
// yielded in a glare).
func (l *link) answer(ctx context.Context, offer webrtc.SessionDescription) error {
	pc, err := l.newPC()
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.pc
	l.pc, l.offerer, l.dc = pc, false, nil
	l.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		l.mu.Lock()
		dup := l.dc != nil
		l.mu.Unlock()
		if dc.Label() != Label || dup || !l.setupDC(pc, dc) {
			_ = dc.Close()
		}
	})
	if err := pc.SetRemoteDescription(offer); err != nil {
		return err
	}
	a, err := pc.CreateAnswer(nil)
	if err != nil {
		return err
	}
	return l.signalDesc(ctx, pc, a)
}

func (l *link) close() {
	l.doneOnce.Do(func() {
		close(l.done)
		l.mu.Lock()
		pc := l.pc
		pending := l.pending
		l.pending = map[uint64]*request{}
		l.cur = nil
		l.mu.Unlock()
		for _, r := range pending {
			r.ch <- result{err: errLinkEnded}
		}
		l.p.mu.Lock()
		if l.p.links[l.remote] == l {
			delete(l.p.links, l.remote)
		}
		// Counted under p.mu, and only while Close is not at its Wait
		// (an Add must not race the Wait): a link closed later (a victim
		// of eviction closed after unlocking, say) closes its connection
		// here.
		async := pc != nil && !l.p.waiting
		if async {
			l.p.wg.Add(1)
		}
		l.p.mu.Unlock()
		if async {
			go func() {
				defer l.p.wg.Done()
				_ = pc.Close()
			}()
		} else if pc != nil {
			_ = pc.Close()
		}
	})
}

func (l *link) sendText(m dcMsg) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	l.mu.Lock()
	dc := l.dc
	l.mu.Unlock()
	if dc == nil {
		return errLinkEnded
	}
	return dc.SendText(string(b))
}

// request asks the remote peer for a segment of expect bytes.
func (l *link) request(ctx context.Context, segment string, expect int64) ([]byte, error) {
	defer l.use()()
	r := &request{expect: expect, ch: make(chan result, 1)}
	l.mu.Lock()
	l.nextID++
	r.id = l.nextID
	l.pending[r.id] = r
	l.mu.Unlock()
	if err := l.sendText(dcMsg{Type: "get", ID: r.id, Segment: segment}); err != nil {
		l.close()
		return nil, err
	}
	select {
	case res := <-r.ch:
		return res.data, res.err
	case <-ctx.Done():
		// A peer too slow for the deadline: its answer would arrive for a
		// request no longer pending, so the link ends.
		l.close()
		return nil, ctx.Err()
	case <-l.done:
		return nil, errLinkEnded
	}
}

// onMessage handles the data channel's messages (pion calls it from one
// goroutine, in order).
func (l *link) onMessage(msg webrtc.DataChannelMessage) {
	if !msg.IsString {
		l.mu.Lock()
		r := l.cur
		if r == nil || int64(len(r.buf)+len(msg.Data)) > r.expect || len(msg.Data) > ChunkBytes {
			l.mu.Unlock()
			l.close()
			return
		}
		r.buf = append(r.buf, msg.Data...)
		if int64(len(r.buf)) == r.expect {
			l.cur = nil
			delete(l.pending, r.id)
			l.mu.Unlock()
			r.ch <- result{data: r.buf}
			return
		}
		l.mu.Unlock()
		return
	}
	m, err := parseDCMsg(msg.Data)
	if err != nil {
		l.close()
		return
	}
	switch m.Type {
	case "get":
		l.lastUsed.Store(time.Now().UnixNano())
		// Answered in order by serve, never from here: a text message
		// sent now could fall between the chunks of an answer. Past
		// serveDepth gets waiting, the answer is none; past
		// maxQueuedGets the asker is flooding and the link ends.
		// (onMessage is the only sender, so len is exact enough.)
		g := uint64Seg{id: m.ID, segment: m.Segment, none: len(l.serveQ) >= serveDepth}
		select {
		case l.serveQ <- g:
		default:
			l.p.cfg.Log.Debug("p2p link closed: too many gets outstanding", "peer", l.remote)
			l.close()
		}
	case "data", "none":
		l.mu.Lock()
		r := l.pending[m.ID]
		if r == nil || l.cur != nil {
			l.mu.Unlock()
			l.close()
			return
		}
		if m.Type == "none" {
			delete(l.pending, m.ID)
			l.mu.Unlock()
			r.ch <- result{err: errNotHeld}
			return
		}
		if m.Size == nil || *m.Size < 0 || *m.Size > MaxSegmentBytes || *m.Size != r.expect {
			delete(l.pending, m.ID)
			l.mu.Unlock()
			r.ch <- result{err: errTampered}
			l.close()
			return
		}
		if *m.Size == 0 {
			delete(l.pending, m.ID)
			l.mu.Unlock()
			r.ch <- result{data: []byte{}}
			return
		}
		r.buf = make([]byte, 0, *m.Size)
		l.cur = r
		l.mu.Unlock()
	}
}

// maxDCText bounds a text message of the data-channel protocol.
const maxDCText = 1024

// parseDCMsg parses and checks a text message of the data-channel
// protocol: get (of a valid segment name), data or none. A data's size is
// checked against the request it answers (a wrong one is tampering).
func parseDCMsg(b []byte) (dcMsg, error) {
	var m dcMsg
	if len(b) > maxDCText {
		return dcMsg{}, errors.New("p2p: data-channel message over 1 KiB")
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return dcMsg{}, fmt.Errorf("p2p: bad data-channel message: %w", err)
	}
	switch m.Type {
	case "get":
		if !validName(m.Segment) {
			return dcMsg{}, fmt.Errorf("p2p: get of a bad segment name %q", m.Segment)
		}
	case "data", "none":
	default:
		return dcMsg{}, fmt.Errorf("p2p: unknown data-channel message type %q", m.Type)
	}
	return m, nil
}

// serve answers the remote peer's requests, one at a time.
func (l *link) serve() {
	defer l.p.wg.Done()
	ctx, cancel := context.WithCancel(l.p.ctx)
	defer cancel()
	go func() {
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case g := <-l.serveQ:
			if err := l.serveOne(ctx, g); err != nil {
				l.close()
				return
			}
		}
	}
}

func (l *link) serveOne(ctx context.Context, g uint64Seg) error {
	defer l.use()()
	if g.none {
		return l.sendText(dcMsg{Type: "none", ID: g.id})
	}
	data, ok := l.p.served(g.segment)
	if !ok || len(data) > MaxSegmentBytes {
		return l.sendText(dcMsg{Type: "none", ID: g.id})
	}
	if n := l.p.uploading.Add(1); int(n) > l.p.cfg.MaxUploads {
		l.p.uploading.Add(-1)
		l.p.refused.Add(1)
		return l.sendText(dcMsg{Type: "none", ID: g.id})
	}
	defer l.p.uploading.Add(-1)
	size := int64(len(data))
	if err := l.sendText(dcMsg{Type: "data", ID: g.id, Size: &size}); err != nil {
		return err
	}
	l.mu.Lock()
	dc := l.dc
	l.mu.Unlock()
	for off := 0; off < len(data); off += ChunkBytes {
		chunk := data[off:min(off+ChunkBytes, len(data))]
		if l.p.upload != nil {
			if err := l.p.upload.WaitN(ctx, len(chunk)); err != nil {
				return err
			}
		}
		if err := l.drain(ctx, dc); err != nil {
			return err
		}
		if err := dc.Send(chunk); err != nil {
			return fmt.Errorf("send: %w", err)
		}
		l.p.uploaded.Add(int64(len(chunk)))
	}
	return nil
}

// errStalled: the remote peer took nothing of an answer for stallAfter.
var errStalled = errors.New("the peer takes nothing of what it asked for")

// drain waits until dc holds at most maxBuffered bytes unsent. A peer
// whose channel takes nothing for stallAfter (it stopped reading and its
// receive window closed) gets errStalled: the link ends and the upload
// slot is free again.
func (l *link) drain(ctx context.Context, dc *webrtc.DataChannel) error {
	if dc.BufferedAmount() <= maxBuffered {
		return nil
	}
	look := time.NewTicker(min(500*time.Millisecond, l.p.stallAfter/4))
	defer look.Stop()
	before, moved := dc.BufferedAmount(), time.Now()
	for {
		select {
		case <-l.low:
		case <-look.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		now := dc.BufferedAmount()
		if now <= maxBuffered {
			return nil
		}
		if now < before {
			moved = time.Now()
		} else if time.Since(moved) >= l.p.stallAfter {
			l.p.cfg.Log.Debug("p2p link closed: the peer takes nothing of an answer", "peer", l.remote)
			return errStalled
		}
		before = now
	}
}
