package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/shoal-video/shoal/edgecache"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/packager/live"
	"github.com/shoal-video/shoal/packager/origin"
)

// measureLLHLS publishes frames over RTMP (publish) into a packager with
// LL-HLS parts, served by an origin handler through an edge cache on
// loopback, and follows the rendition at the edge like an LL-HLS player:
// a blocking reload for the next part, then the part. It returns, for
// every frame found in a part, the time from its publication to the moment
// the part holding it was fetched whole from the edge.
func measureLLHLS(ctx context.Context, hub *stream.Hub, dir, id string, part time.Duration,
	publish func(context.Context, *sendLog) error,
) ([]time.Duration, error) {
	reg := live.New()
	hlsDir := filepath.Join(dir, "hls")
	pkg, err := packager.New(packager.Config{Dir: hlsDir, SegmentDuration: 2 * time.Second, LiveWindow: 6,
		Format: packager.FormatFMP4, PartDuration: part}, packager.Deps{Hub: hub, Log: slog.New(slog.DiscardHandler), Live: reg})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	wg.Add(1)
	go func() { defer wg.Done(); _ = pkg.Run(ctx) }()
	hlsStore, err := fsstore.New(hlsDir)
	if err != nil {
		return nil, err
	}
	originURL, err := serveOn(ctx, &wg, origin.NewHandler(hlsStore, origin.WithLive(reg)))
	if err != nil {
		return nil, err
	}
	ec, err := edgecache.New(edgecache.Config{OriginURL: originURL, CacheDir: filepath.Join(dir, "edge"), Name: "edge"},
		edgecache.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = ec.Run(ctx) }()
	edgeURL, err := serveOn(ctx, &wg, ec)
	if err != nil {
		return nil, err
	}

	sent := &sendLog{at: map[string]time.Time{}}
	errc := make(chan error, 1)
	go func() { errc <- publish(ctx, sent) }()
	base := edgeURL + "/hls/" + id + "/source/"
	var lat []time.Duration
	var pl string
	// The first playlist: poll until the stream is packaged.
	for {
		body, code, err := get(ctx, base+"index.m3u8")
		if err == nil && code == http.StatusOK && strings.Contains(body, "#EXT-X-PRELOAD-HINT") {
			pl = body
			break
		}
		select {
		case err := <-errc:
			return nil, fmt.Errorf("the publisher stopped before going live: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	started := time.Now()
	fetched := map[string]bool{}
	for {
		msn, nextPart, parts := position(pl)
		for _, p := range parts {
			if fetched[p] {
				continue
			}
			fetched[p] = true
			data, code, err := get(ctx, base+p)
			at := time.Now()
			if err != nil || code != http.StatusOK {
				continue
			}
			if at.Sub(started) < 3*time.Second {
				continue // the start: parts from before the viewer came
			}
			for _, last := range lastNALs([]byte(data)) {
				if t, ok := sent.when(last); ok {
					lat = append(lat, at.Sub(t))
				}
			}
		}
		select {
		case err := <-errc:
			if err != nil && !errors.Is(err, context.Canceled) {
				return nil, err
			}
			if len(lat) == 0 {
				return nil, errors.New("no frame reached the edge in a part")
			}
			return lat, nil
		default:
		}
		if nextPart < 0 {
			// The stream ended: wait for the publisher to say so.
			select {
			case err := <-errc:
				if err != nil && !errors.Is(err, context.Canceled) {
					return nil, err
				}
				return lat, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		body, code, err := get(ctx, base+"index.m3u8?_HLS_msn="+strconv.FormatUint(msn, 10)+"&_HLS_part="+strconv.Itoa(nextPart))
		if err != nil {
			return nil, err
		}
		if code == http.StatusOK {
			pl = body
		}
	}
}

// position reads a live LL-HLS playlist: the msn and part index of its
// preload hint, and the parts it lists.
func position(pl string) (uint64, int, []string) {
	var parts []string
	var seq uint64
	segs := 0
	hint := ""
	for _, l := range strings.Split(pl, "\n") {
		switch {
		case strings.HasPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.ParseUint(strings.TrimPrefix(l, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(l, "#EXT-X-PART:"):
			parts = append(parts, attrURI(l))
		case strings.HasPrefix(l, "#EXT-X-PRELOAD-HINT:"):
			hint = attrURI(l)
		case l != "" && !strings.HasPrefix(l, "#"):
			segs++
		}
	}
	// The hint is "<prefix>-<msn>-p<k>.m4s"; none once the stream ended.
	name := strings.TrimSuffix(hint, ".m4s")
	k := -1
	if i := strings.LastIndex(name, "-p"); i >= 0 {
		k, _ = strconv.Atoi(name[i+2:])
	}
	return seq + uint64(segs), k, parts
}

func attrURI(l string) string {
	_, rest, _ := strings.Cut(l, `URI="`)
	uri, _, _ := strings.Cut(rest, `"`)
	return uri
}

// lastNALs returns the last NAL unit of every sample of an fMP4 fragment.
func lastNALs(data []byte) [][]byte {
	var parts fmp4.Parts
	if err := parts.Unmarshal(data); err != nil {
		return nil
	}
	var out [][]byte
	for _, p := range parts {
		for _, tr := range p.Tracks {
			for _, s := range tr.Samples {
				var au h264.AVCC
				if err := au.Unmarshal(s.Payload); err == nil && len(au) > 0 {
					out = append(out, au[len(au)-1])
				}
			}
		}
	}
	return out
}

func get(ctx context.Context, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), resp.StatusCode, err
}

// serveOn serves h on a loopback port until ctx ends.
func serveOn(ctx context.Context, wg *sync.WaitGroup, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h}
	wg.Add(2)
	go func() { defer wg.Done(); _ = srv.Serve(ln) }()
	go func() { defer wg.Done(); <-ctx.Done(); _ = srv.Close() }()
	return "http://" + ln.Addr().String(), nil
}

// playerLatency runs the end-to-end test that plays a live stream in
// headless Chromium with hls.js in low-latency mode through an edge (the
// real shoal origin and edge, ffmpeg publishing over RTMP in real time, every
// object verified) and returns the latency hls.js reports after 20 s of
// playback. It needs the repository (run from its root, as make does) and
// Chromium.
func playerLatency() (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^TestLowLatencyThroughEdge$", "-v", "./internal/app/").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("go test: %v\n%s", err, lastLines(out, 40))
	}
	m := regexp.MustCompile(`hls\.js low-latency through the edge: latency ([0-9.]+) s`).FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no latency in the test's output:\n%s", lastLines(out, 40))
	}
	fmt.Fprintf(os.Stderr, "%s\n", regexp.MustCompile(`hls\.js low-latency through the edge: [^\n]*`).Find(out))
	return strconv.ParseFloat(string(m[1]), 64)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
