package whep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/webrtc/v4"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/rtcutil"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/whepclient"
	"github.com/shoal-video/shoal/internal/testutil/whippub"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

func TestMain(m *testing.M) {
	ffmpeg.SetLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}

type rig struct {
	hub *stream.Hub
	url string // base: url + "/" + id
}

func newRig(t *testing.T, auth Authorizer) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 10000, Grace: 30 * time.Second}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{MaxViewers: 10, MaxPerIP: 10, ConnectTimeout: 20 * time.Second}, Deps{
		Log: slog.New(slog.DiscardHandler), Hub: hub, Authorize: auth,
		Opus: func(src media.Track) (AudioConverter, error) {
			return ffmpeg.NewAudioConverterTo(src, media.CodecOpus, 64000, nil)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/whep/{id}", func(w http.ResponseWriter, r *http.Request) { srv.ServeOffer(w, r, r.PathValue("id")) })
	mux.HandleFunc("/v1/whep/{id}/{session}", func(w http.ResponseWriter, r *http.Request) {
		srv.ServeResource(w, r, r.PathValue("id"), r.PathValue("session"))
	})
	hs := httptest.NewServer(mux)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(func() { hs.Close(); cancel(); wg.Wait() })
	return &rig{hub: hub, url: hs.URL + "/v1/whep"}
}

func allow(context.Context, string, string, string) (time.Time, error) { return time.Time{}, nil }

// source is a live H.264 + AAC publication paced in real time.
type source struct {
	video []*media.AccessUnit
	audio []*media.AccessUnit
	track media.Track
	aac   media.Track
}

func makeSource(t *testing.T, seconds string) *source {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.h264")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "0", "-g", "15", "-pix_fmt", "yuv420p", "-f", "h264", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	frames, err := whippub.ReadH264(path, time.Second/30)
	if err != nil {
		t.Fatal(err)
	}
	s := &source{}
	for i, f := range frames {
		var nalus h264.AnnexB
		if err := nalus.Unmarshal(f.Data); err != nil {
			t.Fatal(err)
		}
		au := &media.AccessUnit{PTS: int64(i) * 3000, DTS: int64(i) * 3000}
		for _, n := range nalus {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				s.track.SPS = n
			case h264.NALUTypePPS:
				s.track.PPS = n
			case h264.NALUTypeIDR:
				au.Keyframe = true
			}
		}
		au.Payload = nalus
		s.video = append(s.video, au)
	}
	s.track.Codec, s.track.ClockRate, s.track.Width, s.track.Height = media.CodecH264, 90000, 320, 240
	opus, err := whippub.ReadOgg(testutil.MakeOpusOgg(t, 3))
	if err != nil {
		t.Fatal(err)
	}
	conv, err := ffmpeg.NewAudioConverter(media.Track{Codec: media.CodecOpus, ClockRate: 48000, SampleRate: 48000, Channels: 2}, 96000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conv.Close()
	s.aac = conv.Track()
	for i, f := range opus {
		au := &media.AccessUnit{PTS: int64(i) * 960, Keyframe: true, Payload: [][]byte{f.Data}}
		if err := conv.Push(au, func(a *media.AccessUnit) { a.Track = 1; s.audio = append(s.audio, a) }); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// play publishes the source in real time until it ends or ctx is done.
func (s *source) play(ctx context.Context, pub *stream.Publisher) {
	start := time.Now()
	ai := 0
	for _, v := range s.video {
		due := start.Add(media.Duration(v.PTS, 90000))
		tm := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C:
		}
		pub.Write(v)
		for ai < len(s.audio) && media.Duration(s.audio[ai].PTS, 48000) <= media.Duration(v.PTS, 90000) {
			pub.Write(s.audio[ai])
			ai++
		}
	}
}

// TestViewerReceivesSource: a pion viewer receives the live source's H.264
// frames (the same slices that were published, with RTP timestamps that
// only go forward, also across a publisher's reconnect) and its audio as
// Opus; DELETE ends the session.
func TestViewerReceivesSource(t *testing.T) {
	t.Parallel()
	r := newRig(t, allow)
	src := makeSource(t, "3")
	key := media.StreamKey{Name: "live1", Rendition: media.RenditionSource}
	pub, err := r.hub.Publish(key, []media.Track{src.track, src.aac})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	played := make(chan struct{})
	go func() { defer close(played); src.play(ctx, pub) }()

	v, err := whepclient.Start(ctx, r.url+"/live1", "")
	if err != nil {
		t.Fatal(err)
	}
	sent := map[string]bool{}
	for _, au := range src.video {
		sent[string(au.Payload[len(au.Payload)-1])] = true
	}
	var got, keys int
	var last uint32
	receive := func(n int) {
		for end := got + n; got < end; {
			select {
			case f := <-v.Frames:
				if !sent[string(f.LastNAL)] {
					t.Fatalf("frame %d is not one that was published", got)
				}
				if got > 0 && int32(f.RTPTime-last) <= 0 {
					t.Fatalf("frame %d has RTP time %d after %d", got, f.RTPTime, last)
				}
				last = f.RTPTime
				got++
				if f.Key {
					keys++
				}
			case <-ctx.Done():
				t.Fatalf("only %d frames arrived", got)
			}
		}
	}
	receive(30)
	if keys == 0 {
		t.Error("no keyframe arrived")
	}
	<-played
	if n := v.AudioPackets(); n < 20 {
		t.Errorf("%d audio packets", n)
	}
	// The publisher reconnects (timestamps start over): the viewer goes
	// on, and its RTP timestamps keep going forward.
	pub.Close()
	pub, err = r.hub.Publish(key, []media.Track{src.track, src.aac})
	if err != nil {
		t.Fatal(err)
	}
	played = make(chan struct{})
	go func() { defer close(played); src.play(ctx, pub) }()
	receive(30)
	<-played
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
	pub.End()
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, func(_ context.Context, id, token, _ string) (time.Time, error) {
		switch {
		case id == "nope":
			return time.Time{}, ErrNotFound
		case id == "signed" && token != "good":
			return time.Time{}, ErrForbidden
		}
		return time.Time{}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		id, token string
		status    int
		msg       string
	}{
		{"nope", "", 404, "no such live stream"},
		{"signed", "bad", 403, "playback token"},
		{"signed", "good", 404, "not live"},
		{"idle", "", 404, "not live"},
	} {
		_, err := whepclient.Start(ctx, r.url+"/"+c.id, c.token)
		var refused *whepclient.RefusedError
		if !errors.As(err, &refused) || refused.Status != c.status || !strings.Contains(refused.Body, c.msg) {
			t.Errorf("%s/%s: %v", c.id, c.token, err)
		}
	}
	resp, err := http.Post(r.url+"/idle", "text/plain", bytes.NewReader([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 415 {
		t.Errorf("text/plain offer: %d %s", resp.StatusCode, b)
	}
}

// TestOfferCandidatesAreBounded: an offer may list as many ICE candidates
// as a session may trickle, no more: each is an address the server sends
// connectivity checks to, for any viewer of a public stream.
func TestOfferCandidatesAreBounded(t *testing.T) {
	t.Parallel()
	r := newRig(t, allow)
	src := makeSource(t, "4")
	pub, err := r.hub.Publish(media.StreamKey{Name: "live1", Rendition: media.RenditionSource}, []media.Track{src.track, src.aac})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.End()
	viewer, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer viewer.Close()
	if _, err := viewer.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	offer, err := viewer.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	var cands strings.Builder
	for i := range rtcutil.MaxTrickleCandidates + 1 {
		fmt.Fprintf(&cands, "a=candidate:%d 1 udp %d 192.0.2.%d 5000 typ host\r\n", i+1, 2130706431-i, i+1)
	}
	resp, err := http.Post(r.url+"/live1", "application/sdp", strings.NewReader(offer.SDP+cands.String()))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "ICE candidate addresses") {
		t.Fatalf("an offer with %d candidates: %d %s", rtcutil.MaxTrickleCandidates+1, resp.StatusCode, b)
	}
}
