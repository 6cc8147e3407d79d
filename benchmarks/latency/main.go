// Command latency measures the delay of real-time delivery on one machine:
// how long a video frame takes from the moment a publisher hands it to the
// network to the moment a WHEP viewer has reassembled it. It prints one
// line:
//
//	bench-latency whep_p50_s=.. whep_p95_s=.. rtmp_to_whep_p50_s=.. rtmp_to_whep_p95_s=.. frames=..
//
// Everything runs in this process, through real sockets on loopback: the
// stream hub, the WHIP ingest, the RTMP ingest and WHEP playback, the same
// packages the origin wires. A clip (H.264 Constrained Baseline, 30 fps, no
// B-frames: what WebRTC senders make) is encoded once with the ffmpeg CLI;
// a pion WHIP client (whip) and a gortmplib RTMP client (rtmp_to_whep)
// publish its frames paced in real time, noting when each frame was sent;
// a pion WHEP viewer notes when each arrives. Frames are matched by their
// last slice, which crosses Shoal unchanged. Encoding and decoding are not
// in the figure (the frames are pre-encoded and not decoded): it is the
// delay Shoal and the network stack add, which is what Shoal controls.
// Details go to standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/webrtc/v4"

	"github.com/shoal-video/shoal/ingest/rtmp"
	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/internal/testutil/whepclient"
	"github.com/shoal-video/shoal/internal/testutil/whippub"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/whep"
)

func main() {
	seconds := flag.Int("seconds", 20, "length of each publication")
	player := flag.Bool("player", true, "also measure hls.js's latency in headless Chromium through an edge (llhls_player_s)")
	flag.Parse()
	ffmpeg.SetLogger(slog.New(slog.DiscardHandler))
	if err := run(*seconds, *player); err != nil {
		fmt.Fprintln(os.Stderr, "bench-latency:", err)
		os.Exit(1)
	}
}

type keys map[string]string

func (k keys) Authorize(_ context.Context, key string) (string, error) {
	if id, ok := k[key]; ok {
		return id, nil
	}
	return "", ingest.ErrUnknownKey
}

type converters struct{}

func (converters) Audio(src media.Track) (whip.AudioConverter, error) {
	return ffmpeg.NewAudioConverter(src, 128_000, nil)
}

func (converters) Video(src media.Track) (whip.VideoConverter, error) {
	return ffmpeg.NewVideoConverter(src, "veryfast", 2*time.Second, nil)
}

func run(seconds int, player bool) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	dir, err := os.MkdirTemp("", "bench-latency")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	clip := filepath.Join(dir, "clip.h264")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-t", fmt.Sprint(seconds), "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
		"-bf", "0", "-g", "60", "-pix_fmt", "yuv420p", "-f", "h264", clip).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ffmpeg: %v\n%s", err, out)
	}
	frames, err := whippub.ReadH264(clip, time.Second/30)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hub, err := stream.New(stream.Config{QueueSize: 4096}, stream.Deps{Log: log})
	if err != nil {
		return err
	}
	auth := keys{"whipkey": "whip1", "rtmpkey": "rtmp1", "llkey": "rtmp2"}
	whipSrv, err := whip.New(whip.Config{UDPAddr: "127.0.0.1:0", MaxSessions: 10, MaxPerIP: 10,
		ConnectTimeout: 20 * time.Second, ReadTimeout: 10 * time.Second},
		whip.Deps{Log: log, Auth: auth, Hub: hub, Convert: converters{}})
	if err != nil {
		return err
	}
	whepSrv, err := whep.New(whep.Config{MaxViewers: 10, MaxPerIP: 10, ConnectTimeout: 20 * time.Second}, whep.Deps{
		Log: log, Hub: hub, UDPMux: whipSrv.UDPMux(),
		Authorize: func(context.Context, string, string, string) (time.Time, error) { return time.Time{}, nil },
		Opus: func(src media.Track) (whep.AudioConverter, error) {
			return ffmpeg.NewAudioConverterTo(src, media.CodecOpus, 64_000, nil)
		},
	})
	if err != nil {
		return err
	}
	rtmpSrv, err := rtmp.New(rtmp.Config{Addr: "127.0.0.1:0", ReadTimeout: 10 * time.Second}, rtmp.Deps{Log: log, Auth: auth, Hub: hub})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/whip", whipSrv.ServeOffer)
	mux.HandleFunc("/v1/whip/{s}", func(w http.ResponseWriter, r *http.Request) { whipSrv.ServeResource(w, r, r.PathValue("s")) })
	mux.HandleFunc("POST /v1/whep/{id}", func(w http.ResponseWriter, r *http.Request) { whepSrv.ServeOffer(w, r, r.PathValue("id")) })
	mux.HandleFunc("/v1/whep/{id}/{s}", func(w http.ResponseWriter, r *http.Request) {
		whepSrv.ServeResource(w, r, r.PathValue("id"), r.PathValue("s"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: mux}
	var wg sync.WaitGroup
	for _, f := range []func(context.Context) error{hub.Run, whipSrv.Run, whepSrv.Run, rtmpSrv.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = f(ctx) }()
	}
	go func() { _ = hs.Serve(ln) }()
	defer func() { _ = hs.Close(); cancel(); wg.Wait() }()
	base := "http://" + ln.Addr().String()

	whipLat, err := measure(ctx, hub, base, "whip1", frames, func(ctx context.Context, sent *sendLog) error {
		s, err := whippub.Start(ctx, whippub.Options{Endpoint: base + "/v1/whip", Key: "whipkey", VideoMime: webrtc.MimeTypeH264,
			Video: frames, Speed: 1, OnFrame: func(i int, at time.Time) { sent.note(frames[i].Data, at) }})
		if err != nil {
			return err
		}
		defer s.Close(context.WithoutCancel(ctx))
		return s.Send(ctx)
	})
	if err != nil {
		return fmt.Errorf("whip: %w", err)
	}
	rtmpLat, err := measure(ctx, hub, base, "rtmp1", frames, func(ctx context.Context, sent *sendLog) error {
		return publishRTMP(ctx, "rtmp://"+rtmpSrv.Addr().String()+"/live/rtmpkey", frames, sent)
	})
	if err != nil {
		return fmt.Errorf("rtmp: %w", err)
	}
	llLat, err := measureLLHLS(ctx, hub, dir, "rtmp2", 500*time.Millisecond, func(ctx context.Context, sent *sendLog) error {
		return publishRTMP(ctx, "rtmp://"+rtmpSrv.Addr().String()+"/live/llkey", frames, sent)
	})
	if err != nil {
		return fmt.Errorf("ll-hls: %w", err)
	}
	fmt.Fprintf(os.Stderr, "whip->whep: %d frames matched; rtmp->whep: %d; rtmp->ll-hls part at the edge: %d\n", len(whipLat), len(rtmpLat), len(llLat))
	playerS := "n/a"
	if player {
		v, err := playerLatency()
		if err != nil {
			return fmt.Errorf("player latency: %w", err)
		}
		playerS = fmt.Sprintf("%.2f", v)
	}
	fmt.Printf("bench-latency whep_p50_s=%.3f whep_p95_s=%.3f rtmp_to_whep_p50_s=%.3f rtmp_to_whep_p95_s=%.3f llhls_edge_p50_s=%.3f llhls_edge_p95_s=%.3f llhls_player_s=%s frames=%d\n",
		pct(whipLat, 50), pct(whipLat, 95), pct(rtmpLat, 50), pct(rtmpLat, 95), pct(llLat, 50), pct(llLat, 95), playerS, len(whipLat)+len(rtmpLat)+len(llLat))
	return nil
}

// sendLog maps a frame's last slice to when it was sent.
type sendLog struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (l *sendLog) note(annexB []byte, at time.Time) {
	var nalus h264.AnnexB
	if nalus.Unmarshal(annexB) != nil || len(nalus) == 0 {
		return
	}
	l.mu.Lock()
	l.at[string(nalus[len(nalus)-1])] = at
	l.mu.Unlock()
}

func (l *sendLog) when(lastNAL []byte) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[string(lastNAL)]
	return t, ok
}

// measure runs publish, joins as a WHEP viewer once the stream is live and
// returns the delay of every frame matched (the first second after joining
// is skipped: the viewer waits there for a keyframe).
func measure(ctx context.Context, hub *stream.Hub, base, id string, frames []whippub.Frame,
	publish func(context.Context, *sendLog) error,
) ([]time.Duration, error) {
	sent := &sendLog{at: map[string]time.Time{}}
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- publish(pctx, sent) }()
	key := media.StreamKey{Name: id, Rendition: media.RenditionSource}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !hub.Publishing(key) {
		select {
		case err := <-errc:
			return nil, fmt.Errorf("the publisher stopped before going live: %v", err)
		case <-tick.C:
		}
	}
	v, err := whepclient.Start(ctx, base+"/v1/whep/"+id, "")
	if err != nil {
		return nil, err
	}
	defer v.Close(context.WithoutCancel(ctx))
	joined := time.Now()
	var lat []time.Duration
	seen := map[string]bool{}
	dups := 0
	defer func() { fmt.Fprintf(os.Stderr, "%s: %d frames arrived twice\n", id, dups) }()
	for {
		select {
		case f := <-v.Frames:
			if seen[string(f.LastNAL)] {
				dups++
				continue
			}
			seen[string(f.LastNAL)] = true
			if f.At.Sub(joined) < time.Second {
				continue
			}
			if at, ok := sent.when(f.LastNAL); ok {
				lat = append(lat, f.At.Sub(at))
			}
		case err := <-errc:
			if err != nil && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			if len(lat) == 0 {
				return nil, errors.New("no frame arrived over WHEP")
			}
			return lat, nil
		}
	}
}

// publishRTMP sends the frames over RTMP with gortmplib's client, paced in
// real time.
func publishRTMP(ctx context.Context, rawURL string, frames []whippub.Frame, sent *sendLog) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	var sps, pps []byte
	var first h264.AnnexB
	if err := first.Unmarshal(frames[0].Data); err != nil {
		return err
	}
	for _, n := range first {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	c := &gortmplib.Client{URL: u, Publish: true}
	if err := c.Initialize(ctx); err != nil {
		return err
	}
	defer c.Close()
	track := &gortmplib.Track{Codec: &codecs.H264{SPS: sps, PPS: pps}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{track}}
	if err := w.Initialize(); err != nil {
		return err
	}
	start := time.Now()
	var pts time.Duration
	for _, f := range frames {
		tm := time.NewTimer(time.Until(start.Add(pts)))
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
		var au h264.AnnexB
		if err := au.Unmarshal(f.Data); err != nil {
			return err
		}
		sent.note(f.Data, time.Now())
		if err := w.WriteH264(track, pts, pts, au); err != nil {
			return err
		}
		pts += f.Duration
	}
	return nil
}

// pct is the p-th percentile of d in seconds.
func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := min(len(s)-1, len(s)*p/100)
	return s[i].Seconds()
}
