package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/edgecache"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

const (
	liveID       = "benchlive"
	liveRend     = "360p"
	liveSegDur   = 2 * time.Second
	liveWindow   = 6 // segments in the live playlist
	livePoll     = 500 * time.Millisecond
	liveEdges    = 3
	liveDrainFor = 4 * time.Second // viewers keep going after the last segment
)

type liveResult struct {
	perSegment float64
	verifyUS   float64 // CPU microseconds to verify one segment (manifest signature + SHA-256)
}

// originCounter wraps the origin handler and counts the requests of each
// segment, by method, and of the playlist.
type originCounter struct {
	h         http.Handler
	mu        sync.Mutex
	gets      map[string]int
	heads     map[string]int
	getters   map[string][]string // segment -> the edges that sent each GET
	playlists atomic.Int64
}

// edgeHeader names, on every upstream request of a benchmark edge, the edge
// that sent it (set by taggingTransport).
const edgeHeader = "Bench-Edge"

// taggingTransport adds edgeHeader to the requests of one edge.
type taggingTransport struct {
	name string
	rt   http.RoundTripper
}

func (t taggingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(edgeHeader, t.name)
	return t.rt.RoundTrip(r)
}

func (c *originCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, ".m4s") {
		name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		c.mu.Lock()
		if r.Method == http.MethodHead {
			c.heads[name]++
		} else {
			c.gets[name]++
			c.getters[name] = append(c.getters[name], r.Header.Get(edgeHeader))
		}
		c.mu.Unlock()
	} else {
		c.playlists.Add(1)
	}
	c.h.ServeHTTP(w, r)
}

// liveStream writes segments and the live playlist like the packager.
type liveStream struct {
	dir    string
	mu     sync.RWMutex
	bodies map[string][]byte
	names  []string
}

func (s *liveStream) body(name string) []byte {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.bodies[name]
}

// add writes segment n (2 MB of random bytes) and the playlist that lists
// it, each through a temporary name and a rename.
func (s *liveStream) add(n, size int) error {
	name := "1-0-" + strconv.Itoa(n) + ".m4s"
	body := make([]byte, size)
	_, _ = rand.Read(body)
	if err := writeRename(filepath.Join(s.dir, name), body); err != nil {
		return err
	}
	s.mu.Lock()
	s.bodies[name] = body
	s.names = append(s.names, name)
	first := max(0, len(s.names)-liveWindow)
	names := s.names[first:]
	s.mu.Unlock()
	var b bytes.Buffer
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:%d\n#EXT-X-MEDIA-SEQUENCE:%d\n",
		int(liveSegDur.Seconds()), first)
	for _, nm := range names {
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s\n", liveSegDur.Seconds(), nm)
	}
	// No #EXT-X-ENDLIST: the origin serves it as live (max-age=1).
	return writeRename(filepath.Join(s.dir, "index.m3u8"), b.Bytes())
}

func writeRename(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// viewerStats are the viewers' counters.
type viewerStats struct {
	mu      sync.Mutex
	fetched map[string]int // segment -> viewers that got it whole and right
	errors  atomic.Int64
	bad     atomic.Int64
	polls   atomic.Int64

	verified, verifyFail, manifests atomic.Int64
}

// liveBench runs the live fan-out over three sibling edges.
func liveBench(ctx context.Context, dir string, o options) (liveResult, error) {
	res := liveResult{perSegment: nan()}
	hls := filepath.Join(dir, "live", "hls")
	rendDir := filepath.Join(hls, liveID, liveRend)
	if err := os.MkdirAll(rendDir, 0o755); err != nil {
		return res, err
	}
	stream := &liveStream{dir: rendDir, bodies: map[string][]byte{}}
	nSeg := max(1, int(o.live/liveSegDur))
	if err := stream.add(0, o.segBytes); err != nil {
		return res, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	defer func() {
		cancel()
		_ = g.Wait()
	}()
	serve := func(ln net.Listener, h http.Handler) {
		srv := &http.Server{Handler: h, MaxHeaderBytes: 16 << 10, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			return srv.Close()
		})
	}

	_, contentKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return res, err
	}
	keys := map[string]ed25519.PublicKey{manifest.KeyID(contentKey.Public().(ed25519.PublicKey)): contentKey.Public().(ed25519.PublicKey)}
	hlsStore, err := fsstore.New(hls)
	if err != nil {
		return res, err
	}
	oc := &originCounter{h: origin.NewHandler(hlsStore, origin.WithContentKey(contentKey)), gets: map[string]int{}, heads: map[string]int{}, getters: map[string][]string{}}
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	serve(oln, oc)
	originURL := "http://" + oln.Addr().String()

	lns := make([]net.Listener, liveEdges)
	urls := make([]string, liveEdges)
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return res, err
		}
		defer lns[i].Close() // served (and closed) once serve has it
		urls[i] = "http://" + lns[i].Addr().String()
	}
	caches := make([]*edgecache.Cache, liveEdges)
	for i := range caches {
		var sibs []edgecache.Sibling
		for j := range urls {
			if j != i {
				sibs = append(sibs, edgecache.Sibling{ID: "edge" + strconv.Itoa(j), URL: urls[j]})
			}
		}
		c, err := edgecache.New(edgecache.Config{
			OriginURL:   originURL,
			Self:        urls[i],
			CacheDir:    filepath.Join(dir, "live", "edge"+strconv.Itoa(i)),
			MemoryBytes: edgeMemoryBytes,
			Name:        "edge" + strconv.Itoa(i),
		}, edgecache.Deps{
			Log:      slog.New(slog.DiscardHandler),
			Siblings: func() []edgecache.Sibling { return sibs },
			// What edgecache's default client is, plus the edge's name on
			// every request (the origin counts GETs by edge).
			Client: &http.Client{
				Transport: taggingTransport{name: "edge" + strconv.Itoa(i), rt: &http.Transport{
					DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
					MaxIdleConns:        512,
					MaxIdleConnsPerHost: 128,
					IdleConnTimeout:     90 * time.Second,
				}},
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			},
		})
		if err != nil {
			return res, err
		}
		caches[i] = c
		g.Go(func() error { return c.Run(gctx) })
		serve(lns[i], c)
	}

	// The stream: one segment every liveSegDur.
	writerDone := make(chan struct{})
	g.Go(func() error {
		defer close(writerDone)
		t := time.NewTicker(liveSegDur)
		defer t.Stop()
		for n := 1; n < nSeg; n++ {
			select {
			case <-t.C:
			case <-gctx.Done():
				return nil
			}
			if err := stream.add(n, o.segBytes); err != nil {
				return err
			}
		}
		return nil
	})

	vs := &viewerStats{fetched: map[string]int{}}
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: 4 * o.viewers, MaxIdleConnsPerHost: 4 * o.viewers, DisableCompression: true,
		IdleConnTimeout: time.Minute,
	}}
	defer client.CloseIdleConnections()
	vctx, vcancel := context.WithCancel(gctx)
	defer vcancel()
	var vwg sync.WaitGroup
	playPath := "/hls/" + liveID + "/" + liveRend + "/index.m3u8"
	// Viewers enter as through /play: the routing tier's placement (keyed
	// rendezvous ranking with bounded loads), counting what it assigned.
	var secret [32]byte
	_, _ = rand.Read(secret[:])
	nodes := make([]routing.Node, liveEdges)
	byNode := map[string]string{}
	for i := range nodes {
		nodes[i] = routing.Node{ID: "edge" + strconv.Itoa(i), Role: "edge", PublicURL: urls[i]}
		byNode[nodes[i].ID] = urls[i]
	}
	reg := routing.NewRegistry(nil, nil)
	placed := map[string]int{}
	for i := 0; i < o.viewers; i++ {
		p := routing.Place(nodes, liveID, "", secret[:], reg, liveEdges)
		reg.Assign(p.Candidates[0].ID)
		placed[p.Candidates[0].ID]++
		base := byNode[p.Candidates[0].ID]
		vwg.Add(1)
		go func() {
			defer vwg.Done()
			viewer(vctx, client, base, playPath, stream, vs, &verifier{keys: keys})
		}()
	}
	logf("live: %d viewers placed on %d sibling edges %v, %d segments of %d bytes every %s; every segment verified against the signed manifest",
		o.viewers, liveEdges, placed, nSeg, o.segBytes, liveSegDur)
	select {
	case <-writerDone:
	case <-gctx.Done():
	}
	select {
	case <-time.After(liveDrainFor):
	case <-gctx.Done():
	}
	vcancel()
	vwg.Wait()
	if gctx.Err() != nil {
		// A server, a cache or the writer failed, or we were interrupted.
		cancel()
		if err := g.Wait(); err != nil {
			return res, err
		}
		return res, context.Cause(gctx)
	}

	// Results.
	oc.mu.Lock()
	vs.mu.Lock()
	names := make([]string, 0, len(vs.fetched))
	for nm := range vs.fetched {
		names = append(names, nm)
	}
	sort.Slice(names, func(a, b int) bool { return segNum(names[a]) < segNum(names[b]) })
	gets, heads, multi := 0, 0, 0
	var perSeg []string
	for _, nm := range names {
		gets += oc.gets[nm]
		heads += oc.heads[nm]
		if oc.gets[nm] > 1 {
			multi++
		}
		perSeg = append(perSeg, fmt.Sprintf("%d:%d/%d/%d(%s)", segNum(nm), oc.gets[nm], oc.heads[nm], vs.fetched[nm], strings.Join(oc.getters[nm], ",")))
	}
	vs.mu.Unlock()
	oc.mu.Unlock()
	if len(names) == 0 {
		return res, errors.New("no viewer got any segment")
	}
	res.perSegment = float64(gets) / float64(len(names))
	logf("live: %d segments fetched by viewers; origin segment GETs %d (%.2f per segment, %d segments fetched more than once), HEADs %d (%.2f per segment), playlist requests %d",
		len(names), gets, res.perSegment, multi, heads, float64(heads)/float64(len(names)), oc.playlists.Load())
	logf("live: per segment n:origin GETs/HEADs/viewers(edges that sent the GETs) %s", strings.Join(perSeg, " "))
	logf("live: viewer playlist polls %d, errors %d, wrong bodies %d, segments verified %d, verification failures %d, manifests fetched %d",
		vs.polls.Load(), vs.errors.Load(), vs.bad.Load(), vs.verified.Load(), vs.verifyFail.Load(), vs.manifests.Load())
	for i, c := range caches {
		s := c.Stats()
		logf("live: edge%d hits %d misses %d origin GETs %d sibling fetches %d sibling failures %d",
			i, s.Hits, s.Misses, s.OriginFetches, s.SiblingFetches, s.SiblingFailures)
	}
	if n := vs.errors.Load() + vs.bad.Load() + vs.verifyFail.Load(); n > 0 {
		return res, fmt.Errorf("%d viewer requests failed", n)
	}
	res.verifyUS = verifyCost(stream, keys, contentKey)
	return res, nil
}

// verifyCost measures the CPU one viewer spends verifying one segment: a
// live manifest's signature and the segment's SHA-256 against it, on one
// locked thread (RUSAGE_THREAD), averaged over a few rounds.
func verifyCost(s *liveStream, keys map[string]ed25519.PublicKey, key ed25519.PrivateKey) float64 {
	s.mu.Lock()
	var name string
	var body []byte
	for nm, b := range s.bodies {
		name, body = nm, b
		break
	}
	s.mu.Unlock()
	m := manifest.Manifest{ID: liveID, Rendition: liveRend, Seq: 7, Time: time.Now()}
	for i := range liveWindow {
		m.Entries = append(m.Entries, manifest.Entry{Kind: manifest.KindSegment, URI: fmt.Sprintf("x-%d.m4s", i), Size: int64(len(body))})
	}
	m.Entries = append(m.Entries, manifest.Entry{Kind: manifest.KindSegment, URI: name, Size: int64(len(body)), SHA256: sha256.Sum256(body)})
	signed, err := manifest.Sign(m, key)
	if err != nil {
		return nan()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const rounds = 20
	start := threadCPU()
	for range rounds {
		v, err := manifest.Verify(signed, keys)
		if err != nil {
			return nan()
		}
		e, _ := v.Lookup(name)
		if e.Check(body) != nil {
			return nan()
		}
	}
	us := float64((threadCPU() - start).Microseconds()) / rounds
	logf("live: verifying one %d-byte segment (manifest signature + SHA-256) costs %.0f us of CPU", len(body), us)
	return us
}

// threadCPU is the CPU time of the calling OS thread (Linux RUSAGE_THREAD).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// verifier checks a viewer's segments as Shoal's player does: against the
// rendition's signed manifest (signature, id, rendition, age, sequence),
// fetched from the same edge.
type verifier struct {
	keys map[string]ed25519.PublicKey
	m    manifest.Manifest
	seq  uint64
	at   time.Time
}

const maxManifestAge = 30 * time.Second

func (v *verifier) check(ctx context.Context, client *http.Client, base, name string, body []byte, vs *viewerStats) error {
	e, ok := v.m.Lookup(name)
	for try := 0; !ok && try < 2; try++ {
		if try > 0 || time.Since(v.at) < time.Second {
			// The edge caches the manifest for a second, like the playlist.
			select {
			case <-time.After(time.Second + 100*time.Millisecond - time.Since(v.at)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		var buf bytes.Buffer
		data, err := getBody(ctx, client, base+"/hls/"+liveID+"/"+liveRend+"/"+manifest.FileName, &buf)
		if err != nil {
			return err
		}
		vs.manifests.Add(1)
		m, err := manifest.Verify(data, v.keys)
		switch {
		case err != nil:
			return err
		case m.ID != liveID || m.Rendition != liveRend:
			return fmt.Errorf("manifest of %s/%s", m.ID, m.Rendition)
		case !m.Ended && time.Since(m.Time) > maxManifestAge:
			return fmt.Errorf("stale manifest (%s old)", time.Since(m.Time))
		case m.Seq < v.seq:
			return fmt.Errorf("manifest sequence went back from %d to %d", v.seq, m.Seq)
		}
		v.m, v.seq, v.at = m, m.Seq, time.Now()
		e, ok = v.m.Lookup(name)
	}
	if !ok {
		return fmt.Errorf("%s is not in the signed manifest", name)
	}
	return e.Check(body)
}

func segNum(name string) int {
	n, err := strconv.Atoi(strings.TrimSuffix(name[strings.LastIndexByte(name, '-')+1:], ".m4s"))
	if err != nil {
		return math.MaxInt
	}
	return n
}

// viewer polls the live playlist every livePoll and fetches each segment
// that appears in it once, starting at the newest.
func viewer(ctx context.Context, client *http.Client, base, playPath string, s *liveStream, vs *viewerStats, v *verifier) {
	// Viewers do not all poll at the same instant.
	select {
	case <-time.After(mrand.N(livePoll)):
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(livePoll)
	defer t.Stop()
	last := -1
	var buf bytes.Buffer
	for {
		seq, names, err := getPlaylist(ctx, client, base+playPath, &buf)
		if ctx.Err() != nil {
			return
		}
		vs.polls.Add(1)
		if err != nil {
			vs.errors.Add(1)
		} else {
			if last < 0 && len(names) > 0 {
				last = seq + len(names) - 2
			}
			for i, nm := range names {
				if seq+i <= last {
					continue
				}
				body, err := getBody(ctx, client, base+playPath[:strings.LastIndexByte(playPath, '/')+1]+nm, &buf)
				if ctx.Err() != nil {
					return
				}
				var verr error
				if err == nil {
					if verr = v.check(ctx, client, base, nm, body, vs); verr == nil {
						vs.verified.Add(1)
					} else if ctx.Err() == nil {
						vs.verifyFail.Add(1)
						logf("live: verification failed: %v", verr)
					}
				}
				switch {
				case err != nil:
					vs.errors.Add(1)
				case !bytes.Equal(body, s.body(nm)):
					vs.bad.Add(1)
				case verr != nil:
				default:
					vs.mu.Lock()
					vs.fetched[nm]++
					vs.mu.Unlock()
				}
				last = seq + i
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// getBody GETs url into *buf (reused from call to call).
func getBody(ctx context.Context, client *http.Client, url string, buf *bytes.Buffer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	if _, err := io.Copy(buf, resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	return buf.Bytes(), nil
}

// getPlaylist returns a media playlist's media sequence and segment URIs.
func getPlaylist(ctx context.Context, client *http.Client, url string, buf *bytes.Buffer) (int, []string, error) {
	body, err := getBody(ctx, client, url, buf)
	if err != nil {
		return 0, nil, err
	}
	seq := 0
	var names []string
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.Atoi(strings.TrimPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"))
		case l == "" || strings.HasPrefix(l, "#"):
		default:
			names = append(names, l)
		}
	}
	return seq, names, nil
}
