package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/p2p/peer"
)

// timeline is a player's playhead: segments play back to back from the
// moment the first is ready; a segment not ready when the playhead reaches
// it stalls the playhead (rebuffering) until it is.
type timeline struct {
	started  bool
	next     time.Time // when the playhead reaches the next segment
	rebuffer time.Duration
	stalls   int
}

// needAt is when the next segment must be ready; zero before playback
// started.
func (tl *timeline) needAt() time.Time { return tl.next }

// arrive records that the next segment, of duration d, was ready at
// ready, and moves the playhead past it.
func (tl *timeline) arrive(ready time.Time, d time.Duration) {
	if !tl.started {
		tl.started = true
		tl.next = ready.Add(d)
		return
	}
	start := tl.next
	if ready.After(start) {
		tl.rebuffer += ready.Sub(start)
		tl.stalls++
		start = ready
	}
	tl.next = start.Add(d)
}

// stop records a stall still in progress at, when the viewer stops
// watching (the run ended while the playhead waited for a segment).
func (tl *timeline) stop(at time.Time) {
	if tl.started && at.After(tl.next) {
		tl.rebuffer += at.Sub(tl.next)
		tl.stalls++
		tl.next = at
	}
}

// viewerResult is what one viewer measured.
type viewerResult struct {
	httpBytes, p2pBytes int64
	segments            int
	rebuffer            time.Duration
	stalls              int
	startup             time.Duration
	tampered            int // segments handed to the player that are not the origin's
	overheadBytes       int64
	dropped             int64
	evicted             int64
	uploaded            int64
	refused             int64
	errs                int
}

// originCopy hashes each segment as the origin itself serves it (read
// from the origin, not the edge), once: the reference the benchmark checks
// every segment a player was handed against, independently of the peer's
// own verification.
type originCopy struct {
	base   string // http://origin/hls/<id>/<rendition>/
	client *http.Client
	mu     sync.Mutex
	sums   map[string]*originSum
}

// originSum is one segment's hash, taken once it was read whole: an
// error (a transient one, or the caller's context ending) is not kept,
// the next caller reads the segment again.
type originSum struct {
	mu   sync.Mutex
	done bool
	sum  [32]byte
}

func (o *originCopy) matches(ctx context.Context, name string, data []byte) (bool, error) {
	o.mu.Lock()
	s := o.sums[name]
	if s == nil {
		s = &originSum{}
		o.sums[name] = s
	}
	o.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done {
		sum, err := o.fetchSum(ctx, name)
		if err != nil {
			return false, err
		}
		s.sum, s.done = sum, true
	}
	return sha256.Sum256(data) == s.sum, nil
}

// fetchSum reads name from the origin and hashes it.
func (o *originCopy) fetchSum(ctx context.Context, name string) ([32]byte, error) {
	var sum [32]byte
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.base+name, nil)
	if err != nil {
		return sum, err
	}
	resp, err := o.client.Do(req)
	if err != nil {
		return sum, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return sum, fmt.Errorf("origin GET %s: %s", name, resp.Status)
	}
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// countingTransport counts the bytes of the bodies it reads that are not
// segments (playlists, manifests): the HTTP overhead of a viewer.
type countingTransport struct {
	rt       http.RoundTripper
	overhead atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	p := r.URL.Path
	if len(p) > 5 && (p[len(p)-5:] == ".m3u8" || p[len(p)-4:] == ".txt") {
		resp.Body = &countingBody{ReadCloser: resp.Body, n: &c.overhead}
	}
	return resp, err
}

type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// viewerClient is an HTTP client whose connections leave from a loopback
// address of the viewer's own (127.0.x.y): the tracker bounds sockets
// per network address, and counts tamper reports by address, as it would
// for viewers on their own machines.
func viewerClient(i int) (*http.Client, *countingTransport) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/250), byte(1+i%250))}
	d := &net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second}
	ct := &countingTransport{rt: tr}
	return &http.Client{Transport: ct, Timeout: 30 * time.Second}, ct
}

// viewer is one simulated player.
type viewer struct {
	idx       int
	o         *runOpts
	latency   time.Duration // hold-back plus this viewer's random offset
	p         *peer.Peer    // nil: HTTP only
	client    *http.Client
	ct        *countingTransport
	playlist  string // the edge's media playlist URL
	segBase   string // the edge's rendition directory
	origin    *originCopy
	malicious bool
}

// segRef is a segment of the live playlist with its sequence number.
type segRef struct {
	seq  uint64
	name string
	dur  time.Duration
}

// poll reads the edge's live playlist: its init section and segments.
func (v *viewer) poll(ctx context.Context) (initName string, segs []segRef, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.playlist, nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("playlist: %s", resp.Status)
	}
	objs, next, _ := manifest.PlaylistObjects(b)
	n := 0
	for _, o := range objs {
		if o.Kind == manifest.KindSegment {
			n++
		}
	}
	seq := next - uint64(n)
	for _, o := range objs {
		switch o.Kind {
		case manifest.KindInit:
			initName = o.URI
		case manifest.KindSegment:
			if !o.Gap {
				segs = append(segs, segRef{seq: seq, name: o.URI, dur: o.Duration})
			}
			seq++
		}
	}
	return initName, segs, nil
}

// fetch gets one segment for the player, over P2P first (until httpAt)
// or over HTTP only, and checks it against the origin's copy.
func (v *viewer) fetch(ctx context.Context, name string, httpAt time.Time, res *viewerResult) error {
	var data []byte
	var from peer.Source
	var err error
	began := time.Now()
	if v.o.verbose {
		defer func() {
			fmt.Fprintf(os.Stderr, "fetch viewer=%d p2p=%v %s from=%s took=%.2fs budget=%.2fs err=%v\n", v.idx, v.p != nil, name, from,
				time.Since(began).Seconds(), httpAt.Sub(began).Seconds(), err)
		}()
	}
	if v.p != nil {
		data, from, err = v.p.FetchBy(ctx, name, httpAt)
	} else {
		data, err = v.get(ctx, name)
		from = peer.SourceHTTP
	}
	if err != nil {
		return err
	}
	ok, err := v.origin.matches(ctx, name, data)
	if err != nil {
		return fmt.Errorf("origin copy of %s: %w", name, err)
	}
	if !ok {
		res.tampered++
	}
	if from == peer.SourceP2P {
		res.p2pBytes += int64(len(data))
	} else {
		res.httpBytes += int64(len(data))
	}
	return nil
}

func (v *viewer) get(ctx context.Context, name string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.segBase+name, nil)
	if err != nil {
		return nil, err
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", name, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, peer.MaxSegmentBytes))
}

// watch plays the live stream for o.seconds of playback: it starts at the
// segment v.latency behind the live edge, fetches each next segment as
// soon as the playlist lists it, with P2P allowed until the buffer ahead
// of the playhead would drop below o.httpMargin, and counts rebuffering.
func (v *viewer) watch(ctx context.Context) viewerResult {
	var res viewerResult
	var tl timeline
	joined := time.Now()
	pollEvery := v.o.segment / 4
	var initName string
	var segs []segRef
	for {
		var err error
		initName, segs, err = v.poll(ctx)
		if err == nil && len(segs) > 0 {
			break
		}
		if !sleepCtx(ctx, pollEvery) {
			return res
		}
	}
	// The start: the segment holding the media time v.latency behind the
	// live edge.
	start := len(segs) - 1
	for acc := time.Duration(0); start > 0 && acc+segs[start].dur < v.latency; start-- {
		acc += segs[start].dur
	}
	next := segs[start].seq
	if initName != "" {
		// Start-up comes over HTTP (the first bytes of every P2P player).
		if err := v.fetch(ctx, initName, time.Now(), &res); err != nil {
			res.errs++
		}
	}
	var end time.Time
	for ctx.Err() == nil {
		var cur *segRef
		for i := range segs {
			if segs[i].seq == next {
				cur = &segs[i]
				break
			}
		}
		if cur == nil {
			if len(segs) > 0 && segs[0].seq > next {
				// Fell out of the live window: skip ahead (counted as an error).
				res.errs++
				next = segs[0].seq
				continue
			}
			if !sleepCtx(ctx, pollEvery) {
				break
			}
			var err error
			if _, segs, err = v.poll(ctx); err != nil {
				res.errs++
			}
			continue
		}
		httpAt := time.Now() // start-up: HTTP
		if tl.started {
			httpAt = tl.needAt().Add(-v.o.httpMargin)
		}
		if err := v.fetch(ctx, cur.name, httpAt, &res); err != nil {
			if ctx.Err() != nil {
				break
			}
			res.errs++
			if !sleepCtx(ctx, pollEvery) {
				break
			}
			continue
		}
		now := time.Now()
		if !tl.started {
			res.startup = now.Sub(joined)
			end = now.Add(v.o.seconds)
		}
		tl.arrive(now, cur.dur)
		res.segments++
		next++
		if !tl.next.Before(end) {
			break
		}
	}
	tl.stop(time.Now()) // a stall the run's end cut short counts too
	res.rebuffer, res.stalls = tl.rebuffer, tl.stalls
	res.overheadBytes = v.ct.overhead.Load()
	if v.p != nil {
		s := v.p.Stats()
		res.dropped, res.evicted, res.uploaded, res.refused = s.DroppedPeers, s.EvictedLinks, s.UploadedBytes, s.BusyRefusals
	}
	return res
}

// sleepCtx waits d or until ctx ends; false if ctx ended.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
