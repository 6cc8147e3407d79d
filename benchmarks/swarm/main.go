// Command swarm benchmarks Shoal's peer-assisted delivery (issue 15): one
// origin and one edge (`shoal dev` with its edge, in a child process, on a
// real Redis), one live stream published in real time by the ffmpeg CLI
// over RTMP (passthrough, no transcoding), and N simulated viewers, each a
// Go peer (p2p/peer, pion over loopback) joined to the edge's tracker with
// a bounded upload rate, running a small player model: it follows the live
// playlist at the edge from a hold-back behind the live edge (plus a
// random offset of its own), fetches every next segment with P2P allowed
// until its buffer would run low, then over HTTP from the edge, and counts
// the time its playhead waited (rebuffering). A fraction of the viewers
// are malicious: they serve tampered bytes. The same number of viewers
// watch the same stream over HTTP only, at the same time, for comparison.
// Every segment handed to a player is compared with the origin's own copy
// (read from the origin, not the edge). One line per configuration:
//
//	bench-swarm viewers=30 segment=2s offload=..% http_bytes=.. p2p_bytes=.. tampered_accepted=.. rebuffer_p2p=..s rebuffer_http=..s
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/internal/app"
	"github.com/shoal-video/shoal/p2p/peer"
)

// The node child: this binary re-executed with nodeEnv set runs
// app.Main (the shoal command) with its arguments.
const nodeEnv = "SHOAL_BENCH_SWARM_NODE"

const adminKey = "bench-swarm-admin-key-0123456789"

type runOpts struct {
	viewers     int
	segment     time.Duration
	seconds     time.Duration
	malicious   float64
	holdBack    float64 // in segments
	spread      time.Duration
	httpMargin  time.Duration
	uploadKbps  int
	maxPeers    int
	peerTimeout time.Duration
	seedWindow  time.Duration
	maxUploads  int
	bitrateKbps int
	verbose     bool
	keep        bool
	httpOnly    bool
	seed        uint64
}

// runNodeChild runs the node when this process is the node child; it
// returns only in the parent.
func runNodeChild() {
	if os.Getenv(nodeEnv) != "1" {
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() { // the parent holds our stdin: when it is gone, so are we
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	code := app.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func main() {
	runNodeChild()
	var o runOpts
	var matrix bool
	var seconds int
	flag.IntVar(&o.viewers, "viewers", 30, "viewers (Go peers) in the P2P run, and again in the HTTP-only run")
	flag.DurationVar(&o.segment, "segment", 2*time.Second, "HLS segment duration of the node")
	flag.IntVar(&seconds, "seconds", 60, "seconds of playback per viewer")
	flag.Float64Var(&o.malicious, "malicious", 0.1, "fraction of the P2P viewers that serve tampered bytes")
	flag.Float64Var(&o.holdBack, "holdback", 3, "player hold-back behind the live edge, in segments (HLS: at least 3 target durations)")
	flag.DurationVar(&o.spread, "spread", 0, "each viewer's extra random delay behind live, uniform in [0, spread) (default: one segment)")
	flag.DurationVar(&o.httpMargin, "http-margin", 1500*time.Millisecond, "P2P is allowed for a segment until the buffer ahead of the playhead would drop below this; then HTTP")
	flag.IntVar(&o.uploadKbps, "upload-kbps", 4000, "each viewer's upload rate bound (kbit/s)")
	flag.IntVar(&o.maxPeers, "max-peers", 8, "each viewer's cap on peer connections (peer.Config.MaxPeers)")
	flag.DurationVar(&o.peerTimeout, "peer-timeout", 3*time.Second, "bound on one try of a segment from one peer (peer.Config.PeerTimeout)")
	flag.DurationVar(&o.seedWindow, "seed-window", time.Second, "peer.Config.SeedWindow: a segment nobody holds is fetched over HTTP by the first viewer to wake within this random wait (0: only at the HTTP deadline)")
	flag.IntVar(&o.maxUploads, "max-uploads", 1, "peer.Config.MaxUploads: uploads a viewer serves at once (beyond: none, the asker tries another)")
	flag.IntVar(&o.bitrateKbps, "bitrate-kbps", 1000, "video bitrate of the published stream (kbit/s)")
	flag.BoolVar(&matrix, "matrix", false, "run N=10, 30, 60 with 2 s and 4 s segments (six lines)")
	flag.BoolVar(&o.verbose, "v", false, "log every fetch and the peers' debug messages on standard error")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.Uint64Var(&o.seed, "seed", 1, "seed of the viewers' random offsets and of who is malicious")
	flag.Parse()
	o.seconds = time.Duration(seconds) * time.Second
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	configs := []runOpts{o}
	if matrix {
		configs = nil
		for _, seg := range []time.Duration{2 * time.Second, 4 * time.Second} {
			for _, n := range []int{10, 30, 60} {
				c := o
				c.viewers, c.segment = n, seg
				configs = append(configs, c)
			}
		}
	}
	if err := run(ctx, configs, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-swarm:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-swarm: "+format+"\n", args...)
}

func run(ctx context.Context, configs []runOpts, out io.Writer) error {
	for _, c := range configs {
		if c.viewers < 1 || c.segment < 500*time.Millisecond || c.seconds <= 0 || c.malicious < 0 || c.malicious >= 1 || c.uploadKbps <= 0 || c.viewers > 500 {
			return errors.New("want -viewers 1..500, -segment >= 500ms, -seconds > 0, -malicious in [0,1), -upload-kbps > 0")
		}
	}
	dir, err := os.MkdirTemp("", "bench-swarm-")
	if err != nil {
		return err
	}
	if configs[0].keep {
		logf("work dir: %s", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	clip := filepath.Join(dir, "clip.flv")
	if err := makeClip(clip, configs[0].bitrateKbps); err != nil {
		return err
	}
	redisURL, stopRedis, err := benchutil.StartRedis(dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	// One node per segment length (a node setting), shared by the
	// configurations that use it.
	var nd *node
	defer func() { nd.stop() }()
	for i, c := range configs {
		if nd == nil || nd.segment != c.segment {
			nd.stop()
			window := int(c.holdBack) + 3 // the deepest start, and room
			if nd, err = startNode(ctx, filepath.Join(dir, fmt.Sprintf("node%d", i)), redisURL, c.segment, clip, window); err != nil {
				return err
			}
		}
		line, err := runConfig(ctx, nd, c)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, line)
	}
	return nil
}

// makeClip writes a 30 s 640x360 30 fps testsrc2 + sine FLV, H.264 with a
// keyframe every 2 s at the given bitrate and AAC: what an encoder like OBS
// sends; it is published in a loop with -c copy.
func makeClip(path string, kbps int) error {
	logf("making the clip (%d kbit/s)", kbps)
	b := strconv.Itoa(kbps) + "k"
	cmd := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "30", "-c:v", "libx264", "-preset", "veryfast", "-b:v", b, "-maxrate", b, "-bufsize", strconv.Itoa(2*kbps)+"k",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "96k", "-f", "flv", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("making the clip with ffmpeg: %v\n%s", err, out)
	}
	return nil
}

// startRedis runs a redis-server child on a free port.

// node is `shoal dev` with its edge in a child process, and the live
// stream it carries.
type node struct {
	segment          time.Duration
	origin, edge     string // http://127.0.0.1:port
	cmd              *exec.Cmd
	stdin            io.Closer
	pub              *exec.Cmd
	streamID         string
	keys             []ed25519.PublicKey
	rendition        string
	stopOnce         sync.Once
	originLogTail    *tailBuffer
	publisherLogTail *tailBuffer
}

func startNode(ctx context.Context, dataDir, redisURL string, segment time.Duration, clip string, window int) (*node, error) {
	hp, err := benchutil.FreePort()
	if err != nil {
		return nil, err
	}
	rp, _ := benchutil.FreePort()
	ep, _ := benchutil.FreePort()
	n := &node{segment: segment, origin: fmt.Sprintf("http://127.0.0.1:%d", hp), edge: fmt.Sprintf("http://127.0.0.1:%d", ep),
		rendition: "source", originLogTail: &tailBuffer{}, publisherLogTail: &tailBuffer{}}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "dev")
	cmd.Env = append(os.Environ(), nodeEnv+"=1",
		"SHOAL_REDIS_URL="+redisURL,
		"SHOAL_DATA_DIR="+dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", hp),
		fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", rp),
		fmt.Sprintf("SHOAL_EDGE_ADDR=127.0.0.1:%d", ep),
		"SHOAL_ADMIN_KEY="+adminKey,
		"SHOAL_TRANSCODE_MAX_LADDERS=0", // passthrough: the source rendition only
		"SHOAL_HLS_SEGMENT_DURATION="+segment.String(),
		"SHOAL_HLS_PART_DURATION=0", // no LL-HLS parts: P2P moves whole segments
		"SHOAL_RTSP_ADDR=off", "SHOAL_SRT_ADDR=off", "SHOAL_INGEST_WHIP_UDP_PORT=0",
		"SHOAL_LOG_LEVEL=warn")
	cmd.Stdout = io.Discard
	cmd.Stderr = n.originLogTail
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n.cmd, n.stdin = cmd, in
	fail := func(err error) (*node, error) {
		n.stop()
		return nil, fmt.Errorf("%w\nnode log tail:\n%s\npublisher log tail:\n%s", err, n.originLogTail, n.publisherLogTail)
	}
	if err := waitFor(ctx, 60*time.Second, "the node's readiness", func() bool {
		return httpStatus(n.origin+"/readyz") == 200 && httpStatus(n.edge+"/readyz") == 200
	}); err != nil {
		return fail(err)
	}
	var ls struct {
		ID        string `json:"id"`
		StreamKey string `json:"stream_key"`
		Ingest    struct {
			RTMPURL string `json:"rtmp_url"`
		} `json:"ingest"`
	}
	if err := apiJSON(http.MethodPost, n.origin+"/v1/live-streams", map[string]string{"name": "swarm"}, &ls); err != nil {
		return fail(err)
	}
	n.streamID = ls.ID
	var keys struct {
		ContentKeys []struct {
			PublicKey string `json:"public_key"`
		} `json:"content_keys"`
	}
	if err := apiJSON(http.MethodGet, n.origin+"/v1/keys", nil, &keys); err != nil {
		return fail(err)
	}
	for _, k := range keys.ContentKeys {
		b, err := base64.RawURLEncoding.DecodeString(k.PublicKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return fail(fmt.Errorf("content key %q", k.PublicKey))
		}
		n.keys = append(n.keys, ed25519.PublicKey(b))
	}
	// Real time, in a loop, copied as it is (no encoding here).
	n.pub = exec.Command("ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", clip, "-c", "copy", "-f", "flv", ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	n.pub.Stdout, n.pub.Stderr = n.publisherLogTail, n.publisherLogTail
	n.pub.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.pub.Start(); err != nil {
		return fail(err)
	}
	logf("node up (segment %s): origin %s, edge %s, stream %s; waiting for the live window", segment, n.origin, n.edge, n.streamID)
	// Enough of a live window for the deepest hold-back.
	if err := waitFor(ctx, 90*time.Second, fmt.Sprintf("a live window of %d segments at the edge", window), func() bool {
		_, b := httpGet(n.edge + n.hlsPath() + "index.m3u8")
		return bytes.Count(b, []byte("#EXTINF")) >= window
	}); err != nil {
		return fail(err)
	}
	return n, nil
}

func (n *node) hlsPath() string { return "/hls/" + n.streamID + "/" + n.rendition + "/" }

func (n *node) stop() {
	if n == nil {
		return
	}
	n.stopOnce.Do(func() {
		if n.pub != nil && n.pub.Process != nil {
			_ = n.pub.Process.Kill()
			_ = n.pub.Wait()
		}
		n.stdin.Close()
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = n.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = n.cmd.Process.Kill()
			<-done
		}
	})
}

// runConfig runs the P2P viewers and the HTTP-only viewers side by side on
// the node's stream and returns the configuration's line.
func runConfig(ctx context.Context, nd *node, o runOpts) (string, error) {
	if o.spread == 0 {
		o.spread = o.segment
	}
	rng := rand.New(rand.NewPCG(o.seed, uint64(o.viewers)))
	nMal := int(float64(o.viewers)*o.malicious + 0.5)
	mal := map[int]bool{}
	for _, i := range rng.Perm(o.viewers)[:nMal] {
		mal[i] = true
	}
	origin := &originCopy{base: nd.origin + nd.hlsPath(), client: &http.Client{Timeout: 30 * time.Second}, sums: map[string]*originSum{}}
	latencies := make([]time.Duration, o.viewers)
	joinAt := make([]time.Duration, o.viewers)
	for i := range latencies {
		latencies[i] = time.Duration(o.holdBack*float64(o.segment)) + time.Duration(rng.Float64()*float64(o.spread))
		// Joins spread over the first segment (not all in one instant).
		joinAt[i] = time.Duration(rng.Float64() * float64(o.segment))
	}
	flip := func(b []byte) []byte {
		if len(b) > 0 {
			b[len(b)/2] ^= 0x55
		}
		return b
	}
	tracker := "ws" + strings.TrimPrefix(nd.edge, "http") + "/p2p/ws?swarm=" + nd.streamID + "/" + nd.rendition
	edgeDir := nd.edge + nd.hlsPath()
	logf("run: viewers=%d (%d malicious) segment=%s seconds=%s holdback=%.1f segments + [0,%s) margin=%s upload=%d kbit/s max-peers=%d peer-timeout=%s seed-window=%s max-uploads=%d",
		o.viewers, nMal, o.segment, o.seconds, o.holdBack, o.spread, o.httpMargin, o.uploadKbps, o.maxPeers, o.peerTimeout, o.seedWindow, o.maxUploads)

	type outcome struct {
		p2p       bool
		malicious bool
		res       viewerResult
		err       error
	}
	results := make(chan outcome, 2*o.viewers)
	var peers []*peer.Peer
	var peersMu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, o.seconds+3*time.Minute)
	defer cancel()
	for i := range o.viewers {
		for _, p2p := range []bool{true, false} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if !sleepCtx(wctx, time.Until(start.Add(joinAt[i]))) {
					results <- outcome{p2p: p2p, err: wctx.Err()}
					return
				}
				idx := i
				if !p2p {
					idx += o.viewers // an address of its own
				}
				client, ct := viewerClient(idx)
				v := &viewer{idx: i, o: &o, latency: latencies[i], client: client, ct: ct,
					playlist: edgeDir + "index.m3u8", segBase: edgeDir, origin: origin, malicious: p2p && mal[i]}
				if p2p {
					cfg := peer.Config{Tracker: tracker, HTTP: edgeDir, ContentKeys: nd.keys, HTTPClient: client,
						MaxUploadBytesPerSec: o.uploadKbps * 1000 / 8, MaxPeers: o.maxPeers, Loopback: true,
						PeerTimeout: o.peerTimeout, SeedWindow: o.seedWindow, MaxUploads: o.maxUploads, Log: slog.New(slog.DiscardHandler)}
					if o.verbose {
						cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("viewer", i)
					}
					if v.malicious {
						cfg.Mutate = flip
					}
					jctx, jcancel := context.WithTimeout(wctx, 20*time.Second)
					p, err := peer.Join(jctx, cfg)
					jcancel()
					if err != nil {
						results <- outcome{p2p: true, err: fmt.Errorf("viewer %d: %w", i, err)}
						return
					}
					peersMu.Lock()
					peers = append(peers, p)
					peersMu.Unlock()
					v.p = p
				}
				results <- outcome{p2p: p2p, malicious: v.malicious, res: v.watch(wctx)}
			}()
		}
	}
	wg.Wait()
	close(results)
	// Peers stay in the swarm (serving) until every viewer is done.
	peersMu.Lock()
	for _, p := range peers {
		_ = p.Close()
	}
	peersMu.Unlock()
	var sum [2]viewerResult // [0] P2P run, [1] HTTP-only
	var maxRebuf [2]time.Duration
	var startup [2]time.Duration
	var honestTamperedP2P, malSegments int
	var honestHTTP, honestP2P int64
	for r := range results {
		if r.err != nil {
			return "", r.err
		}
		k := 1
		if r.p2p {
			k = 0
		}
		s := &sum[k]
		s.httpBytes += r.res.httpBytes
		s.p2pBytes += r.res.p2pBytes
		s.segments += r.res.segments
		s.rebuffer += r.res.rebuffer
		s.stalls += r.res.stalls
		s.tampered += r.res.tampered
		s.overheadBytes += r.res.overheadBytes
		s.dropped += r.res.dropped
		s.evicted += r.res.evicted
		s.uploaded += r.res.uploaded
		s.refused += r.res.refused
		s.errs += r.res.errs
		startup[k] += r.res.startup
		maxRebuf[k] = max(maxRebuf[k], r.res.rebuffer)
		if r.malicious {
			malSegments += r.res.segments
		} else if r.p2p {
			honestTamperedP2P += r.res.tampered
			honestHTTP += r.res.httpBytes
			honestP2P += r.res.p2pBytes
		}
	}
	p, h := sum[0], sum[1]
	offload := 0.0
	if t := p.httpBytes + p.p2pBytes; t > 0 {
		offload = 100 * float64(p.p2pBytes) / float64(t)
	}
	logf("p2p run: segments=%d stalls=%d rebuffer=%.1fs (worst viewer %.1fs) mean_startup=%.2fs uploaded=%d dropped_peers=%d evicted_links=%d busy_refusals=%d playlist_manifest_bytes=%d errors=%d tampered_all=%d",
		p.segments, p.stalls, p.rebuffer.Seconds(), maxRebuf[0].Seconds(), startup[0].Seconds()/float64(o.viewers), p.uploaded, p.dropped, p.evicted, p.refused, p.overheadBytes, p.errs, p.tampered)
	logf("http run: segments=%d stalls=%d rebuffer=%.1fs (worst viewer %.1fs) mean_startup=%.2fs bytes=%d playlist_bytes=%d errors=%d",
		h.segments, h.stalls, h.rebuffer.Seconds(), maxRebuf[1].Seconds(), startup[1].Seconds()/float64(o.viewers), h.httpBytes, h.overheadBytes, h.errs)
	honest := 0.0
	if t := honestHTTP + honestP2P; t > 0 {
		honest = 100 * float64(honestP2P) / float64(t)
	}
	logf("offload among the honest P2P viewers %.1f%% (the malicious ones, once dropped by the tracker, fetch over HTTP); tampered segments handed to honest players %d; malicious viewers played %d segments; the run took %s",
		honest, honestTamperedP2P, malSegments, time.Since(start).Round(time.Second))
	return fmt.Sprintf("bench-swarm viewers=%d segment=%s offload=%.1f%% http_bytes=%d p2p_bytes=%d tampered_accepted=%d rebuffer_p2p=%.1fs rebuffer_http=%.1fs errors=%d",
		o.viewers, o.segment, offload, p.httpBytes, p.p2pBytes, p.tampered+h.tampered, p.rebuffer.Seconds(), h.rebuffer.Seconds(), p.errs+h.errs), nil
}

func waitFor(ctx context.Context, d time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s waiting for %s", d, what)
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

func httpGet(u string) (int, []byte) {
	resp, err := http.Get(u)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func httpStatus(u string) int {
	code, _ := httpGet(u)
	return code
}

// apiJSON calls the node's REST API with the admin key.
func apiJSON(method, u string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s %s", method, u, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > 8<<10 {
		t.buf = t.buf[len(t.buf)-8<<10:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(t.buf))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines, "\n")
}
