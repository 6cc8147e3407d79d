package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/pion/rtp"

	"github.com/shoal-video/shoal/internal/testutil"
)

// TestLiveOverRTSP: the ffmpeg CLI publishes to the live stream's
// ingest.rtsp_url over TCP, then over UDP; each time the stream goes live,
// HLS appears, and the recording lasts as long as the clip.
func TestLiveOverRTSP(t *testing.T) {
	t.Parallel()
	n := startNode(t, fmt.Sprintf("SHOAL_RTSP_ADDR=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("SHOAL_INGEST_RTSP_UDP_PORT=%d", testutil.FreeUDPPair(t)))
	for _, transport := range []string{"tcp", "udp"} {
		ls := n.createStream("rtsp " + transport)
		if ls.Ingest.RTSPURL == "" || ls.Ingest.RTSPURL[:7] != "rtsp://" {
			t.Fatalf("ingest.rtsp_url %q", ls.Ingest.RTSPURL)
		}
		cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip(t, 6), "-c", "copy", "-f", "rtsp",
			"-rtsp_transport", transport, ls.Ingest.RTSPURL)
		out := &testutil.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		n.waitFor("the master playlist", 15*time.Second, func() bool {
			code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
			return code == 200
		})
		if s := n.status(ls.ID); s != "live" {
			t.Fatalf("%s: status while publishing = %q, want live", transport, s)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: ffmpeg publish: %v\n%s", transport, err, out.String())
		}
		n.waitFor("ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
		if d := probeDuration(t, ls.Playback.HLSURL); d < 5 || d > 7 {
			t.Fatalf("%s: recording lasts %.3f s, want 6 ± 1", transport, d)
		}
	}
	// One publisher per stream key, whatever the protocol: while RTMP
	// publishes, an RTSP publisher of the same key is refused.
	ls := n.createStream("rtmp first")
	pub := publish(t, clip(t, 20), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the RTMP publisher live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip(t, 6), "-c", "copy", "-f", "rtsp",
		"-rtsp_transport", "tcp", ls.Ingest.RTSPURL).CombinedOutput()
	if err == nil {
		t.Fatalf("a second publisher over RTSP was accepted\n%s", out)
	}
	code, metrics := n.get("/metrics", "")
	if code != 200 || metric(metrics, "shoal_ingest_bytes_total", `protocol="rtsp"`) == 0 {
		t.Fatal("no RTSP ingest bytes in /metrics")
	}
	if metric(metrics, "shoal_ingest_refused_total", `reason="already_publishing"`) < 1 {
		t.Fatal("the second publisher's refusal was not counted")
	}
}

// relay is an RTSP server for tests standing in for a camera: ffmpeg
// publishes to it and Shoal pulls from it.
type relay struct {
	srv       *gortsplib.Server
	addr      string
	mu        sync.Mutex
	stream    *gortsplib.ServerStream
	publisher *gortsplib.ServerSession
}

func startRelay(t *testing.T) *relay {
	t.Helper()
	r := &relay{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	r.srv = &gortsplib.Server{Handler: r, RTSPAddress: r.addr}
	if err := r.srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.srv.Close)
	return r
}

func (r *relay) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream != nil && ctx.Session == r.publisher {
		r.stream.Close()
		r.stream = nil
	}
}

func (r *relay) OnDescribe(*gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, r.stream, nil
}

func (r *relay) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &gortsplib.ServerStream{Server: r.srv, Desc: ctx.Description}
	if err := st.Initialize(); err != nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	r.stream, r.publisher = st, ctx.Session
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (r *relay) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, r.stream, nil
}

func (r *relay) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (r *relay) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	r.mu.Lock()
	st := r.stream
	r.mu.Unlock()
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		_ = st.WritePacketRTP(medi, pkt)
	})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

type pullInfo struct {
	Status    string `json:"status"`
	SourceURL string `json:"source_url"`
	Pull      *struct {
		State string `json:"state"`
		Error string `json:"error"`
	} `json:"pull"`
}

func (n *node) pullInfo(id string) pullInfo {
	n.t.Helper()
	_, b := n.get("/v1/live-streams/"+id, testAdminKey)
	var p pullInfo
	_ = json.Unmarshal(b, &p)
	return p
}

// TestPullFromRTSP: a live stream created with an RTSP source URL is pulled
// from a camera-like server; when the camera's stream stops the pull says
// so and retries, and when it comes back the stream goes on.
func TestPullFromRTSP(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_INGEST_RTSP_PULL_ALLOW_PRIVATE=true") // the camera is on loopback
	cam := startRelay(t)
	camURL := "rtsp://" + cam.addr + "/cam"
	camera := func() *exec.Cmd {
		cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-stream_loop", "-1", "-i", clip(t, 6), "-c", "copy",
			"-f", "rtsp", "-rtsp_transport", "tcp", camURL)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd
	}
	cmd := camera()
	code, b := n.do(http.MethodPost, "/v1/live-streams", testAdminKey, map[string]string{"name": "camera", "source_url": "rtsp://viewer:secret@" + cam.addr + "/cam"})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	var ls liveStream
	_ = json.Unmarshal(b, &ls)
	if p := n.pullInfo(ls.ID); !strings.Contains(p.SourceURL, "viewer:***@") || strings.Contains(p.SourceURL, "secret") {
		t.Fatalf("source_url %q shows the password", p.SourceURL)
	}
	// The relay checks no credentials; the pull sends them all the same.
	n.waitFor("the pulled stream live", 20*time.Second, func() bool {
		p := n.pullInfo(ls.ID)
		return p.Status == "live" && p.Pull != nil && p.Pull.State == "live"
	})
	n.waitFor("the master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if got := probeVideo(t, ls.Playback.HLSURL); got != "h264,640,360" {
		t.Fatalf("pulled HLS video = %q", got)
	}
	// The camera stops: the pull retries and says why.
	_ = cmd.Process.Kill()
	_, _ = cmd.Process.Wait()
	n.waitFor("the pull to retry", 20*time.Second, func() bool {
		p := n.pullInfo(ls.ID)
		return p.Pull != nil && p.Pull.State == "retrying" && p.Pull.Error != ""
	})
	before := n.playlist(ls.ID, "source/recording.m3u8")
	camera()
	n.waitFor("the pull live again", 30*time.Second, func() bool {
		p := n.pullInfo(ls.ID)
		return p.Pull != nil && p.Pull.State == "live"
	})
	n.waitFor("new segments after the camera came back", 20*time.Second, func() bool {
		after := n.playlist(ls.ID, "source/recording.m3u8")
		return strings.Count(after, "#EXTINF") > strings.Count(before, "#EXTINF")
	})
	// Deleting a pulled stream stops its pull for good: it does not come
	// back live, and its HLS output stays gone.
	code, b = n.do(http.MethodPost, "/v1/live-streams", testAdminKey, map[string]string{"name": "doomed", "source_url": camURL})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	var doomed liveStream
	_ = json.Unmarshal(b, &doomed)
	n.waitFor("the second pull live", 20*time.Second, func() bool {
		p := n.pullInfo(doomed.ID)
		return p.Pull != nil && p.Pull.State == "live"
	})
	if code, _ := n.do(http.MethodDelete, "/v1/live-streams/"+doomed.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	// The delete waited for the pull to end: its output goes, and only the
	// first stream is still pulled (that a stopped pull is not started
	// again by the next refresh is TestPullerStopIsFinal's).
	n.waitFor("the deleted stream's output removed", 10*time.Second, func() bool {
		code, _ := n.get("/hls/"+doomed.ID+"/master.m3u8", "")
		return code == http.StatusNotFound
	})
	if _, m := n.get("/metrics", ""); metric(m, "shoal_ingest_publishers", `protocol="rtsp_pull"`) != 1 {
		t.Fatalf("pulls publishing after the delete: %v, want 1", metric(m, "shoal_ingest_publishers", `protocol="rtsp_pull"`))
	}
	// Clearing the source URL stops the pull.
	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+ls.ID, testAdminKey, map[string]string{"source_url": ""}); code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, b)
	}
	n.waitFor("the pull to stop", 20*time.Second, func() bool {
		p := n.pullInfo(ls.ID)
		return p.Pull == nil && p.Status == "idle"
	})
}

// TestResetKeyDisconnects: resetting a live stream's key (revoking a
// leaked one) cuts off whoever publishes with the old key, and the old key
// is refused when it tries again.
func TestResetKeyDisconnects(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("reset")
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	exited := make(chan error, 1)
	go func() { exited <- pub.Wait() }()
	n.waitFor("the stream live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	if code, body := n.do(http.MethodPost, "/v1/live-streams/"+ls.ID+"/reset-stream-key", testAdminKey, nil); code != http.StatusOK {
		t.Fatalf("reset: %d %s", code, body)
	}
	select {
	case <-exited: // ffmpeg's connection was closed under it
	case <-time.After(20 * time.Second):
		t.Fatal("the publisher with the old key is still connected 20 s after the reset")
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip(t, 1), "-c", "copy", "-f", "flv",
		ls.Ingest.RTMPURL+"/"+ls.StreamKey).CombinedOutput(); err == nil {
		t.Fatalf("the old key was accepted again\n%s", out)
	}
}
