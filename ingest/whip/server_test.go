package whip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v5/vnet"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/whippub"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

func TestMain(m *testing.M) {
	ffmpeg.SetLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

const testKey = "sk_whipwhipwhipwhipwhipwhipwhipwhip"

// keyTable is an Authorizer over a fixed table, standing in for the Redis
// lookup the app wires in (which has its own tests against a real Redis).
type keyTable map[string]string

func (k keyTable) Authorize(_ context.Context, key string) (string, error) {
	if id, ok := k[key]; ok {
		return id, nil
	}
	return "", ingest.ErrUnknownKey
}

// converters are the real FFmpeg converters the app wires in.
type converters struct{}

func (converters) Audio(src media.Track) (AudioConverter, error) {
	return ffmpeg.NewAudioConverter(src, 128000, nil)
}

func (converters) Video(src media.Track) (VideoConverter, error) {
	return ffmpeg.NewVideoConverter(src, "ultrafast", time.Second, nil)
}

type rig struct {
	srv      *Server
	hub      *stream.Hub
	reg      *prometheus.Registry
	endpoint string
}

func newRig(t *testing.T, cfg Config, n *vnet.Net) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 20 * time.Second
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions, cfg.MaxPerIP = 10, 10
	}
	deps := Deps{Log: slog.New(slog.DiscardHandler), Auth: keyTable{testKey: "stream1"}, Hub: hub,
		Convert: converters{}, Registerer: reg}
	if n != nil {
		deps.Net = n
	} else if cfg.UDPAddr == "" {
		cfg.UDPAddr = "127.0.0.1:0"
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/whip", srv.ServeOffer)
	mux.HandleFunc("OPTIONS /v1/whip", srv.ServeOptions)
	mux.HandleFunc("/v1/whip/{id}", func(w http.ResponseWriter, r *http.Request) { srv.ServeResource(w, r, r.PathValue("id")) })
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(func() { hs.Close(); cancel(); wg.Wait() })
	return &rig{srv: srv, hub: hub, reg: reg, endpoint: hs.URL + "/v1/whip"}
}

// received is what a hub subscriber read from the source publication.
type received struct {
	tracks      []media.Track
	video       []*media.AccessUnit
	audio       []*media.AccessUnit
	vIdx, aIdx  int
	publication chan struct{} // closed at the first Tracks event
}

// watchSource reads the stream's source publication until it ends.
func watchSource(t *testing.T, hub *stream.Hub) (*received, <-chan struct{}) {
	t.Helper()
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition == media.RenditionSource })
	got := &received{vIdx: -1, aIdx: -1, publication: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		sub, err := w.Next(ctx)
		if err != nil {
			return
		}
		defer sub.Close()
		_ = sub.Each(ctx, func(tracks []media.Track, _ bool) {
			got.tracks = tracks
			for i, tr := range tracks {
				if tr.IsVideo() {
					got.vIdx = i
				} else {
					got.aIdx = i
				}
			}
			select {
			case <-got.publication:
			default:
				close(got.publication)
			}
		}, func(au *media.AccessUnit) {
			if au.Track == got.vIdx {
				got.video = append(got.video, au)
			} else {
				got.audio = append(got.audio, au)
			}
		})
	}()
	return got, done
}

func span(aus []*media.AccessUnit, rate int) time.Duration {
	if len(aus) < 2 {
		return 0
	}
	return media.Duration(aus[len(aus)-1].PTS-aus[0].PTS, rate)
}

// decodeH264 writes the access units as Annex-B and decodes them with the
// ffmpeg CLI, returning the frames decoded and any decoder errors.
func decodeH264(t *testing.T, tr media.Track, aus []*media.AccessUnit) (frames int, errs string) {
	t.Helper()
	var b []byte
	for _, au := range aus {
		nalus := au.Payload
		if au.Keyframe {
			nalus = append([][]byte{tr.SPS, tr.PPS}, nalus...)
		}
		for _, n := range nalus {
			b = append(b, 0, 0, 0, 1)
			b = append(b, n...)
		}
	}
	path := filepath.Join(t.TempDir(), "out.h264")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
		"-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var n int
	for _, c := range lines[len(lines)-1] {
		if c >= '0' && c <= '9' {
			n = n*10 + int(c-'0')
		}
	}
	return n, strings.Join(lines[:len(lines)-1], "\n")
}

// h264Clip makes a Baseline H.264 elementary stream (no B-frames, as
// WebRTC senders make) with the ffmpeg CLI.
func h264Clip(t *testing.T, seconds string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.h264")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-profile:v", "baseline", "-bf", "0", "-g", "30",
		"-pix_fmt", "yuv420p", "-f", "h264", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// vnetMu serializes building pion's virtual networks: vnet hands out MAC
// addresses from an unguarded package counter, so two tests building
// theirs at once race.
var vnetMu sync.Mutex

// newWAN builds a router over cidr with filter, and two nets on it (the
// server's and the client's), started; it stops with the test.
func newWAN(t *testing.T, cidr, serverIP, clientIP string, opts vnet.RouterConfig, filter vnet.ChunkFilter) (server, client *vnet.Net) {
	t.Helper()
	vnetMu.Lock()
	defer vnetMu.Unlock()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	opts.CIDR, opts.LoggerFactory = cidr, lf
	wan, err := vnet.NewRouter(&opts)
	if err != nil {
		t.Fatal(err)
	}
	wan.AddChunkFilter(filter)
	if server, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{serverIP}}); err != nil {
		t.Fatal(err)
	}
	if client, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{clientIP}}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*vnet.Net{server, client} {
		if err := wan.AddNet(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := wan.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = wan.Stop() })
	return server, client
}

// TestPublishH264AndOpus: a pion client publishes H.264 and Opus over
// loopback; the hub gets the H.264 as it came and the audio as AAC, both
// spanning the clip, and DELETE ends the session.
func TestPublishH264AndOpus(t *testing.T) {
	t.Parallel()
	r := newRig(t, Config{}, nil)
	video, err := whippub.ReadH264(h264Clip(t, "3"), time.Second/30)
	if err != nil {
		t.Fatal(err)
	}
	audio, err := whippub.ReadOgg(shoaltest.MakeOpusOgg(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	got, done := watchSource(t, r.hub)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ses, err := whippub.Start(ctx, whippub.Options{Endpoint: r.endpoint, Key: testKey,
		VideoMime: webrtc.MimeTypeH264, Video: video, Audio: audio, Speed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := ses.Send(ctx); err != nil {
		t.Fatal(err)
	}
	// A second publisher of the live key is refused with a reason.
	_, err = whippub.Start(ctx, whippub.Options{Endpoint: r.endpoint, Key: testKey, VideoMime: webrtc.MimeTypeH264, Video: video[:1]})
	var refused *whippub.RefusedError
	if !errors.As(err, &refused) || refused.Status != http.StatusConflict || !strings.Contains(refused.Body, "already live") {
		t.Errorf("second publisher: %v", err)
	}
	if err := ses.Close(ctx); err != nil {
		t.Fatal(err)
	}
	r.hub.End(media.StreamKey{Name: "stream1", Rendition: media.RenditionSource})
	<-done
	if len(got.tracks) != 2 || got.tracks[got.vIdx].Codec != media.CodecH264 || got.tracks[got.aIdx].Codec != media.CodecAAC {
		t.Fatalf("tracks %v", ingest.Describe(got.tracks))
	}
	if v := got.tracks[got.vIdx]; v.Width != 320 || v.Height != 240 {
		t.Errorf("video %dx%d", v.Width, v.Height)
	}
	// Frames sent at the end may still be in flight when DELETE lands.
	if d := span(got.video, 90000); d < 2500*time.Millisecond {
		t.Errorf("video spans %s of 3 s (%d frames)", d, len(got.video))
	}
	if d := span(got.audio, 48000); d < 2000*time.Millisecond {
		t.Errorf("audio spans %s of 3 s (%d frames)", d, len(got.audio))
	}
	if n, errs := decodeH264(t, got.tracks[got.vIdx], got.video); n < len(got.video)-1 || errs != "" {
		t.Errorf("decoded %d of %d frames: %s", n, len(got.video), errs)
	}
	if v := promtest.ToFloat64(r.srv.m.Refused.WithLabelValues("already_publishing")); v != 1 {
		t.Errorf("busy refusals %v", v)
	}
}

// TestLossyVP8 publishes VP8 and Opus through pion's in-process network
// with 5% of packets lost and jitter that reorders them: NACK and the
// jitter buffer recover most of it, the rest is skipped to the next
// keyframe, and the H.264 the hub gets spans the clip and decodes cleanly.
func TestLossyVP8(t *testing.T) {
	t.Parallel()
	rnd := rand.New(rand.NewPCG(1, 2))
	var rmu sync.Mutex
	var dropped int
	serverNet, clientNet := newWAN(t, "10.0.0.0/24", "10.0.0.1", "10.0.0.2",
		vnet.RouterConfig{MinDelay: 5 * time.Millisecond, MaxJitter: 15 * time.Millisecond},
		func(vnet.Chunk) bool {
			rmu.Lock()
			defer rmu.Unlock()
			if rnd.Float64() < 0.05 {
				dropped++
				return false
			}
			return true
		})

	r := newRig(t, Config{}, serverNet)
	video, err := whippub.ReadIVF(shoaltest.MakeVP8IVF(t, 320, 240, 4, 30))
	if err != nil {
		t.Fatal(err)
	}
	audio, err := whippub.ReadOgg(shoaltest.MakeOpusOgg(t, 4))
	if err != nil {
		t.Fatal(err)
	}
	got, done := watchSource(t, r.hub)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ses, err := whippub.Start(ctx, whippub.Options{Endpoint: r.endpoint, Key: testKey, Net: clientNet,
		VideoMime: webrtc.MimeTypeVP8, Video: video, Audio: audio, Speed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := ses.Send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ses.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-got.publication
	r.hub.End(media.StreamKey{Name: "stream1", Rendition: media.RenditionSource})
	<-done
	rmu.Lock()
	t.Logf("%d packets dropped by the network; hub got %d video and %d audio access units", dropped, len(got.video), len(got.audio))
	rmu.Unlock()
	if len(got.tracks) != 2 || got.tracks[got.vIdx].Codec != media.CodecH264 || got.tracks[got.aIdx].Codec != media.CodecAAC {
		t.Fatalf("tracks %v", ingest.Describe(got.tracks))
	}
	if d := span(got.video, 90000); d < 3*time.Second {
		t.Errorf("video spans %s of 4 s (%d frames)", d, len(got.video))
	}
	if d := span(got.audio, 48000); d < 3*time.Second {
		t.Errorf("audio spans %s of 4 s", d)
	}
	if n, errs := decodeH264(t, got.tracks[got.vIdx], got.video); n < len(got.video)-1 || errs != "" {
		t.Errorf("decoded %d of %d frames: %s", n, len(got.video), errs)
	}
}

// TestRefusals: wrong content type, no key, unknown key, oversized and
// malformed offers each get a clear error; OPTIONS answers CORS.
func TestRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, Config{}, nil)
	post := func(ctype, key, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, r.endpoint, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	cases := []struct {
		name, ctype, key, body string
		status                 int
		msg                    string
	}{
		{"json", "application/json", testKey, "{}", 415, "application/sdp"},
		{"no key", "application/sdp", "", "v=0", 401, "Bearer"},
		{"unknown key", "application/sdp", "sk_nope", "v=0", 401, "unknown stream key"},
		{"garbage", "application/sdp", testKey, "hello", 400, "SDP offer"},
		{"too large", "application/sdp", testKey, strings.Repeat("a", maxOffer+1), 413, "larger"},
		{"no media", "application/sdp", testKey, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", 400, "offer"},
		// Each candidate is an address the server sends checks to.
		{"candidates", "application/sdp", testKey, "v=0\r\n" + manyCandidates(17), 400, "more than 16 ICE candidate addresses"},
	}
	for _, c := range cases {
		status, body := post(c.ctype, c.key, c.body)
		if status != c.status || !strings.Contains(body, c.msg) {
			t.Errorf("%s: %d %s", c.name, status, body)
		}
	}
	// Naming the stream (?stream=) needs Deps.StreamAuth, which this
	// server lacks: the stream key is not taken in its place.
	endpoint := r.endpoint
	r.endpoint = endpoint + "?stream=stream1"
	if status, body := post("application/sdp", testKey, "v=0"); status != 400 || !strings.Contains(body, "not ?stream=") {
		t.Errorf("?stream= without StreamAuth: %d %s", status, body)
	}
	r.endpoint = endpoint
	req, _ := http.NewRequest(http.MethodOptions, r.endpoint, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 || resp.Header.Get("Access-Control-Allow-Origin") != "*" || resp.Header.Get("Accept-Post") != "application/sdp" {
		t.Errorf("OPTIONS: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ = http.NewRequest(http.MethodDelete, r.endpoint+"/0123456789abcdef0123456789abcdef", nil)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("DELETE of an unknown session: %d", resp.StatusCode)
	}
}

// manyCandidates is n candidate lines for n addresses.
func manyCandidates(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "a=candidate:%d 1 udp 1 192.0.2.1 %d typ host\r\n", i+1, 5000+i)
	}
	return b.String()
}

// TestSlowOfferWithoutKeyHoldsNoSlot: an offer is read and its key checked
// before it takes a session slot: clients with no key, sending their
// bodies slowly, cannot take every slot from the key's owner.
func TestSlowOfferWithoutKeyHoldsNoSlot(t *testing.T) {
	t.Parallel()
	r := newRig(t, Config{MaxSessions: 2, MaxPerIP: 2}, nil)
	// The offers go through a handler that tells when ServeOffer first
	// reads the body: before, each took its slot before that.
	reading := make(chan struct{}, 2)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		req.Body = &firstRead{ReadCloser: req.Body, at: reading}
		r.srv.ServeOffer(w, req)
	}))
	t.Cleanup(hs.Close)
	for range 2 {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		req, _ := http.NewRequest(http.MethodPost, hs.URL, pr)
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer not-a-stream-key")
		go func() {
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		go func() { _, _ = pw.Write([]byte("v=0\r\n")) }() // a first line, then nothing
	}
	for range 2 {
		<-reading
	}
	if n := r.srv.limits.InUse(); n != 0 {
		t.Errorf("offers with no valid key, still being sent, hold %d session slots", n)
	}
	req, _ := http.NewRequest(http.MethodPost, r.endpoint, strings.NewReader("v=0\r\n"))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The offer is unusable: only its admission matters.
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("the stream key's owner: %d %s, want its offer read (400 bad_offer)", resp.StatusCode, body)
	}
}

// firstRead signals at when its first Read begins.
type firstRead struct {
	io.ReadCloser
	at   chan<- struct{}
	once sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(func() { f.at <- struct{}{} })
	return f.ReadCloser.Read(p)
}

// TestVanishedPeerIsReleased: a publisher whose packets stop arriving (the
// network between them drops everything, as when a laptop's Wi-Fi goes)
// loses its session after the read timeout: the publication waits for a
// reconnect and the session's resources are freed, with no DELETE.
func TestVanishedPeerIsReleased(t *testing.T) {
	t.Parallel()
	var cut sync.Mutex
	down := false
	serverNet, clientNet := newWAN(t, "10.0.1.0/24", "10.0.1.1", "10.0.1.2", vnet.RouterConfig{}, func(vnet.Chunk) bool {
		cut.Lock()
		defer cut.Unlock()
		return !down
	})
	r := newRig(t, Config{ReadTimeout: 2 * time.Second}, serverNet)
	video, err := whippub.ReadIVF(shoaltest.MakeVP8IVF(t, 320, 240, 2, 30))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ses, err := whippub.Start(ctx, whippub.Options{Endpoint: r.endpoint, Key: testKey, Net: clientNet,
		VideoMime: webrtc.MimeTypeVP8, Video: video, Speed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := ses.Send(ctx); err != nil {
		t.Fatal(err)
	}
	key := media.StreamKey{Name: "stream1", Rendition: media.RenditionSource}
	if !r.hub.Publishing(key) {
		t.Fatal("the stream is not live after 2 s of video")
	}
	cut.Lock()
	down = true
	cut.Unlock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for r.hub.Publishing(key) || r.srv.streamBusy("stream1") {
		select {
		case <-ctx.Done():
			t.Fatal("the vanished publisher's session was not released")
		case <-tick.C:
		}
	}
	r.srv.mu.Lock()
	n := len(r.srv.sessions) + r.srv.limits.InUse()
	r.srv.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sessions or address slots left", n)
	}
	_ = ses.Close(context.WithoutCancel(ctx))
}

// TestPublishVP9: VP9 (what some browsers prefer) is converted to H.264.
func TestPublishVP9(t *testing.T) {
	t.Parallel()
	r := newRig(t, Config{}, nil)
	path := filepath.Join(t.TempDir(), "clip.ivf")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", "3", "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "500k", "-g", "30",
		"-f", "ivf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	video, err := whippub.ReadIVF(path)
	if err != nil {
		t.Fatal(err)
	}
	got, done := watchSource(t, r.hub)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ses, err := whippub.Start(ctx, whippub.Options{Endpoint: r.endpoint, Key: testKey, VideoMime: webrtc.MimeTypeVP9, Video: video, Speed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := ses.Send(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ses.Close(ctx); err != nil {
		t.Fatal(err)
	}
	<-got.publication
	r.hub.End(media.StreamKey{Name: "stream1", Rendition: media.RenditionSource})
	<-done
	if len(got.tracks) != 1 || got.tracks[0].Codec != media.CodecH264 {
		t.Fatalf("tracks %v", ingest.Describe(got.tracks))
	}
	if d := span(got.video, 90000); d < 2*time.Second {
		t.Errorf("video spans %s of 3 s (%d frames)", d, len(got.video))
	}
	if n, errs := decodeH264(t, got.tracks[0], got.video); n < len(got.video)-1 || errs != "" {
		t.Errorf("decoded %d of %d frames: %s", n, len(got.video), errs)
	}
}
