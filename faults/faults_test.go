//go:build faults

package faults

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/handshake"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// chunk0 is an RTMP chunk with a type-0 header on chunk stream csid.
func chunk0(csid byte, length uint32, typ byte, body []byte) []byte {
	h := []byte{csid, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0}
	return append(h, body...)
}

// TestHostileRTMP: 300 connections at once, three times over, each
// completing the handshake and then announcing 10 MiB (a Set Chunk Size
// of 10 MiB, or a 10 MiB message header) and holding the connection; a
// real publisher goes live in the middle of it. The origin's memory stays
// flat: it refuses what is announced before a byte of it is allocated.
func TestHostileRTMP(t *testing.T) {
	rs := redistest.Start(t)
	s := newShoal(t, rs, t.TempDir(), false,
		"SHOAL_INGEST_MAX_CONNECTIONS=5000", "SHOAL_INGEST_MAX_CONNECTIONS_PER_IP=5000")
	s.start()
	ls := s.createStream("under attack")
	rss0, _ := s.memKiB()
	addr := strings.TrimSuffix(strings.TrimPrefix(s.rtmp, "rtmp://"), "/live")

	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 10<<20)
	attacks := [][]byte{
		append(chunk0(2, 4, 1, huge), chunk0(3, 10<<20, 20, []byte{2})...),
		append(chunk0(2, 4, 1, []byte{0, 0, 0x10, 0}), chunk0(3, 10<<20, 20, []byte{2})...),
	}
	const conns, waves = 300, 3
	var closedByServer, failed atomic.Int64
	attack := func() {
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					failed.Add(1)
					return
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, _, err := handshake.DoClient(c, false, false); err != nil {
					failed.Add(1)
					return
				}
				if _, err := c.Write(attacks[i%2]); err != nil {
					failed.Add(1)
					return
				}
				// Hold it: the server must close it, not wait for 10 MiB.
				if _, err := io.Copy(io.Discard, c); err == nil {
					closedByServer.Add(1)
				} else {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
	}
	var wavesDone sync.WaitGroup
	wavesDone.Add(1)
	go func() {
		defer wavesDone.Done()
		for range waves {
			attack()
		}
	}()
	// A real publisher during the attack.
	start := time.Now()
	publisher(t, s.rtmp+"/"+ls.StreamKey)
	s.waitFor("the publisher live during the attack", 30*time.Second, func() bool { return s.status(ls.ID) == "live" })
	liveAfter := time.Since(start)
	wavesDone.Wait()
	s.waitFor("segments after the attack", 20*time.Second, func() bool { return s.segments(ls.ID) >= 2 })
	rss1, peak := s.memKiB()
	refused := s.metric("shoal_ingest_refused_total", `reason="preauth_too_large"`)
	grown := peak - rss0
	t.Logf("RSS %d MiB before, peak %d MiB, %d MiB now; %d of %d closed by the server, %d failed; refused %v; live after %s",
		rss0>>10, peak>>10, rss1>>10, closedByServer.Load(), conns*waves, failed.Load(), refused, liveAfter.Round(100*time.Millisecond))
	pass := grown < 100<<10 && closedByServer.Load() == conns*waves && refused == conns*waves
	if grown >= 100<<10 {
		t.Errorf("the origin's peak RSS grew %d MiB under the attack, want under 100", grown>>10)
	}
	if closedByServer.Load() != conns*waves || refused != conns*waves {
		t.Errorf("%d connections closed by the server and %v refused, want %d each", closedByServer.Load(), refused, conns*waves)
	}
	record(row{
		Fault: "hostile RTMP: handshake, then a 10 MiB chunk size or message header, held open",
		Load:  fmt.Sprintf("%d connections at once x %d waves (%d in all)", conns, waves, conns*waves),
		Survived: fmt.Sprintf("peak RSS +%d MiB (%d -> %d MiB); every connection closed at once; a real publisher live %.1f s after it started, mid-attack",
			grown>>10, rss0>>10, peak>>10, liveAfter.Seconds()),
		Lost: "none", Pass: pass,
	})
}

// TestKill9MidStream: the origin is killed with SIGKILL while a stream is
// live and restarted on the same data dir: the recording is finished and
// plays with every segment written before the kill, and the stream key
// works again; the publisher coming back continues that recording.
func TestKill9MidStream(t *testing.T) {
	rs := redistest.Start(t)
	s := newShoal(t, rs, t.TempDir(), false)
	s.start()
	ls := s.createStream("killed")
	pub := publisher(t, s.rtmp+"/"+ls.StreamKey)
	s.waitFor("the stream live", 30*time.Second, func() bool { return s.status(ls.ID) == "live" })
	s.waitFor("4 segments", 30*time.Second, func() bool { return s.segments(ls.ID) >= 4 })
	before := s.segments(ls.ID)
	s.kill9()
	_ = pub.Process.Kill()

	start := time.Now()
	s.start()
	restart := time.Since(start)
	s.waitFor("the stream idle after the restart", 20*time.Second, func() bool { return s.status(ls.ID) == "idle" })
	_, rec := s.get("/hls/"+ls.ID+"/source/recording.m3u8", "")
	after := strings.Count(string(rec), "#EXTINF")
	ended := strings.Contains(string(rec), "#EXT-X-ENDLIST")
	dur, perr := probeDuration(s.http + "/hls/" + ls.ID + "/master.m3u8")
	first := ""
	for _, line := range strings.Split(string(rec), "\n") {
		if strings.HasSuffix(line, ".m4s") || strings.HasSuffix(line, ".ts") {
			first = line
			break
		}
	}
	// The key works again, and the publisher coming back continues the
	// recording: what was recorded before the kill, a discontinuity, the
	// new segments.
	pub2 := publisher(t, s.rtmp+"/"+ls.StreamKey)
	var liveAgain bool
	liveAgain = poll(30*time.Second, func() bool { return s.status(ls.ID) == "live" })
	continued := poll(30*time.Second, func() bool { return s.segments(ls.ID) >= after+2 })
	_ = pub2.Process.Kill()
	var rec2 []byte
	s.waitFor("the recording finished again", 30*time.Second, func() bool {
		_, rec2 = s.get("/hls/"+ls.ID+"/source/recording.m3u8", "")
		return strings.Contains(string(rec2), "#EXT-X-ENDLIST")
	})
	continued = continued && first != "" && strings.Contains(string(rec2), first+"\n") &&
		strings.Contains(string(rec2), "#EXT-X-DISCONTINUITY") && strings.Contains(string(rec2), "#EXT-X-ENDLIST")
	total := strings.Count(string(rec2), "#EXTINF")
	t.Logf("%d segments before the kill, %d in the finished recording (ENDLIST %v), %.2f s playable; restart %s; live again %v; continued %v (%d segments in all)",
		before, after, ended, dur, restart.Round(100*time.Millisecond), liveAgain, continued, total)
	pass := after >= before && ended && dur >= float64(before)*1.5 && liveAgain && continued
	if !pass {
		t.Errorf("after kill -9: %d of %d segments, ENDLIST %v, %.2f s playable (%s), live again %v, continued %v:\n%s",
			after, before, ended, dur, perr, liveAgain, continued, rec2)
	}
	lost := "none"
	if after < before {
		lost = fmt.Sprintf("%d segments", before-after)
	}
	record(row{
		Fault:    "kill -9 of the origin mid-stream, then a restart on the same data dir",
		Load:     fmt.Sprintf("a live 1-rendition stream, %d segments written", before),
		Survived: fmt.Sprintf("recording finished (ENDLIST) with %d segments, %.1f s playable (ffprobe); ready %.1f s after the restart; the same stream key live again, continuing that recording (%d segments in all after it)", after, dur, restart.Seconds(), total),
		Lost:     lost + " (the segment being built at the kill, under 2 s of media, was never acknowledged)",
		Pass:     pass,
	})
}

// TestRedisFlushed: Redis loses everything (FLUSHALL, as a restart without
// persistence) while a stream is live and an edge serves it: the stream
// keeps publishing, the edge is told to join again at its next heartbeat
// and does, and the API works on the empty Redis (new streams, VOD jobs).
func TestRedisFlushed(t *testing.T) {
	rs := redistest.Start(t)
	s := newShoal(t, rs, t.TempDir(), true)
	s.start()
	ls := s.createStream("flushed")
	pub := publisher(t, s.rtmp+"/"+ls.StreamKey)
	s.waitFor("the stream live", 30*time.Second, func() bool { return s.status(ls.ID) == "live" })
	// A signed stream too: it must not become public when its record goes.
	code, body := s.do("POST", "/v1/live-streams", adminKey, map[string]any{"name": "private", "playback_policy": "signed"})
	var private liveStream
	if code != 201 || json.Unmarshal(body, &private) != nil {
		t.Fatalf("signed stream: %d %s", code, body)
	}
	publisher(t, s.rtmp+"/"+private.StreamKey)
	s.waitFor("the signed stream live", 30*time.Second, func() bool { return s.status(private.ID) == "live" })
	privateMaster := func() int {
		code, _ := s.get("/hls/"+private.ID+"/master.m3u8", "")
		return code
	}
	s.waitFor("the signed stream's master refused without a token", 20*time.Second, func() bool { return privateMaster() == 403 })
	edges := func() int {
		_, b := s.get("/v1/nodes", adminKey)
		return strings.Count(string(b), `"role":"edge"`)
	}
	s.waitFor("the edge joined", 20*time.Second, func() bool { return edges() == 1 })
	s.waitFor("2 segments", 30*time.Second, func() bool { return s.segments(ls.ID) >= 2 })
	// A video ready, and one just uploaded (queued or being processed).
	ready := s.upload(t, "ready before the flush")
	if !s.waitReady(ready, 2*time.Minute) {
		t.Fatal("the first video never became ready")
	}
	queued := s.upload(t, "queued at the flush")

	rs.FlushAll(t)
	flushed := time.Now()
	segs := s.segments(ls.ID)
	rejoined := poll(15*time.Second, func() bool { return edges() == 1 })
	rejoin := time.Since(flushed)
	// The live streams' records are written back.
	reregistered := poll(15*time.Second, func() bool { return s.status(ls.ID) == "live" && s.status(private.ID) == "live" })
	reregister := time.Since(flushed)
	// Its publisher drops and reconnects with the same key.
	_ = pub.Process.Kill()
	publisher(t, s.rtmp+"/"+ls.StreamKey)
	before := s.segments(ls.ID)
	reconnected := poll(30*time.Second, func() bool { return s.segments(ls.ID) >= before+2 })
	kept := poll(15*time.Second, func() bool { return s.segments(ls.ID) >= segs+2 })
	// The edge still serves the live stream; the signed one still needs a
	// token (past the policy cache's few seconds).
	code, _ = request("GET", s.edge+"/hls/"+ls.ID+"/master.m3u8", "", nil)
	originCode, _ := s.get("/hls/"+ls.ID+"/master.m3u8", "")
	stillSigned := !poll(8*time.Second, func() bool { return privateMaster() != 403 })
	// The API works on the empty Redis: a new stream goes live, and a new
	// video is processed (the workers recreate the job queue).
	ls2 := s.createStream("after the flush")
	publisher(t, s.rtmp+"/"+ls2.StreamKey)
	newLive := poll(30*time.Second, func() bool { return s.status(ls2.ID) == "live" })
	vodReady := s.uploadAndWait(t, "after the flush")
	// The videos' records come back from their copies; the queued one is
	// processed again.
	readyBack := s.waitReady(ready, 10*time.Second)
	queuedDone := s.waitReady(queued, 2*time.Minute)
	t.Logf("edge rejoined %v in %s; records restored %v in %s; the publisher reconnected with its key %v; segments kept coming %v; edge master %d, origin %d; signed still refused without a token %v; a new stream live %v",
		rejoined, rejoin.Round(100*time.Millisecond), reregistered, reregister.Round(100*time.Millisecond), reconnected, kept, code, originCode, stillSigned, newLive)
	pass := rejoined && reregistered && reconnected && kept && code == 200 && originCode == 200 && stillSigned && newLive && vodReady &&
		readyBack && queuedDone
	if !vodReady {
		t.Error("a video uploaded after the flush was not processed")
	}
	if !readyBack || !queuedDone {
		t.Errorf("the ready video's record restored %v; the video queued at the flush processed %v", readyBack, queuedDone)
	}
	if !pass {
		t.Errorf("after FLUSHALL: edge rejoined %v, records restored %v, reconnected %v, segments kept coming %v, edge master %d, origin master %d, signed still refused %v, new stream live %v",
			rejoined, reregistered, reconnected, kept, code, originCode, stillSigned, newLive)
	}
	record(row{
		Fault:    "Redis emptied (FLUSHALL) with a stream live and an edge serving it",
		Load:     "2 live streams (one public, one signed), 1 edge, a video ready and one just queued, the API in use",
		Survived: fmt.Sprintf("the broadcasts never stopped; the edge rejoined %.1f s later and still served the public one; the live streams' records were restored %.1f s after the flush and a publisher reconnected with its same key; the signed one still needs a token (its policy is kept on disk); the videos' records came back from their copies on disk and the queued one was processed again; a new stream went live and a new video was processed", rejoin.Seconds(), reregister.Seconds()),
		Lost:     "what only Redis held: records of streams not live, API keys, node tokens, webhooks (run Redis with persistence); nothing on disk",
		Pass:     pass,
	})
}

// TestForgedAndRevokedCredentials: credentials that must stop working do,
// at once: a revoked API key, a key without the scope, a reset stream key,
// a captured node join replayed with another token, a playback token
// bound to another address, and stream-key guessing.
func TestForgedAndRevokedCredentials(t *testing.T) {
	rs := redistest.Start(t)
	s := newShoal(t, rs, t.TempDir(), false, "SHOAL_INGEST_MAX_KEY_FAILURES_PER_MINUTE=1")
	s.start()
	tried, refused := 0, 0
	var failures []string
	expect := func(what string, got, want int) {
		t.Helper()
		tried++
		if got == want {
			refused++
			return
		}
		failures = append(failures, fmt.Sprintf("%s: %d, want %d", what, got, want))
		t.Errorf("%s: %d, want %d", what, got, want)
	}

	// An API key, revoked: 401 on its next request.
	code, body := s.do("POST", "/v1/api-keys", adminKey, map[string]any{"name": "ci"})
	var k struct{ ID, Key string }
	if code != 201 || json.Unmarshal(body, &k) != nil {
		t.Fatalf("create API key: %d %s", code, body)
	}
	if code, _ := s.get("/v1/live-streams", k.Key); code != 200 {
		t.Fatalf("a new API key: %d", code)
	}
	code, _ = s.do("DELETE", "/v1/api-keys/"+k.ID, adminKey, nil)
	if code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	code, _ = s.get("/v1/live-streams", k.Key)
	expect("a revoked API key", code, 401)
	// A read-only key can't mint keys or node tokens.
	code, body = s.do("POST", "/v1/api-keys", adminKey, map[string]any{"name": "dash", "scopes": []string{"read-only"}})
	if code != 201 || json.Unmarshal(body, &k) != nil {
		t.Fatalf("create a read-only key: %d %s", code, body)
	}
	code, _ = s.do("POST", "/v1/api-keys", k.Key, map[string]any{"name": "escalate"})
	expect("a read-only key minting an API key", code, 403)
	code, _ = s.do("POST", "/v1/node-tokens", k.Key, map[string]any{"name": "escalate"})
	expect("a read-only key minting a node token", code, 403)

	// A reset stream key: the old one is refused, the new one goes live.
	ls := s.createStream("reset")
	code, body = s.do("POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", adminKey, nil)
	var reset liveStream
	if code != 200 || json.Unmarshal(body, &reset) != nil || reset.StreamKey == "" || reset.StreamKey == ls.StreamKey {
		t.Fatalf("reset: %d %s", code, body)
	}
	out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", s.rtmp+"/"+ls.StreamKey).CombinedOutput()
	tried++
	if err != nil && strings.Contains(string(out), "unknown stream key") {
		refused++
	} else {
		failures = append(failures, "the reset key was not refused")
		t.Errorf("the reset stream key was not refused: %v %s", err, out)
	}

	// A join captured and replayed with another node token.
	code, body = s.do("POST", "/v1/node-tokens", adminKey, map[string]any{"name": "thief"})
	var nt struct{ Token string }
	if code != 201 || json.Unmarshal(body, &nt) != nil || nt.Token == "" {
		t.Fatalf("node token: %d %s", code, body)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	cap := &capture{}
	c := &nodeproto.Client{OriginURL: s.http, Token: adminKey, Key: priv, HTTP: &http.Client{Transport: cap}}
	if _, err := c.Join(context.Background(), nodeproto.JoinRequest{Role: "edge", Region: "eu", PublicURL: "http://edge.test:8081"}); err != nil {
		t.Fatalf("a real join: %v", err)
	}
	req, _ := http.NewRequest("POST", s.http+"/v1/nodes/join", bytes.NewReader(cap.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+nt.Token)
	req.Header.Set(nodeproto.SignatureHeader, cap.sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	expect("a join replayed with another token", resp.StatusCode, 403)

	// A playback token bound to another address.
	code, body = s.do("POST", "/v1/live-streams", adminKey, map[string]any{"name": "signed", "playback_policy": "signed"})
	var sls liveStream
	if code != 201 || json.Unmarshal(body, &sls) != nil {
		t.Fatalf("signed stream: %d %s", code, body)
	}
	code, body = s.do("POST", "/v1/playback-tokens", adminKey, map[string]any{"id": sls.ID, "ttl_seconds": 600, "ip": "203.0.113.9"})
	var tok struct{ Token string }
	if code != 201 && code != 200 || json.Unmarshal(body, &tok) != nil {
		t.Fatalf("playback token: %d %s", code, body)
	}
	code, _ = s.get("/hls/"+sls.ID+"/master.m3u8?token="+tok.Token, "")
	expect("a playback token bound to another address", code, 403)

	// Stream-key guessing: one wrong key a minute (the reset key was one),
	// then even a right one waits.
	for i := range 6 {
		out, _ := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
			"-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", s.rtmp+"/sk_guess"+fmt.Sprint(i)+"guessguessguessguessguessgue").CombinedOutput()
		tried++
		if strings.Contains(string(out), "unknown stream key") || strings.Contains(string(out), "too many wrong stream keys") {
			refused++
		}
	}
	out, _ = exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=1",
		"-c:v", "libx264", "-preset", "ultrafast", "-f", "flv", s.rtmp+"/"+reset.StreamKey).CombinedOutput()
	tried++
	if strings.Contains(string(out), "too many wrong stream keys") {
		refused++
	} else {
		failures = append(failures, "guessing was not limited")
		t.Errorf("after 6 wrong keys the right one was not held back: %s", out)
	}
	t.Logf("%d of %d forged, revoked or guessed credentials refused", refused, tried)
	record(row{
		Fault: "revoked API key, read-only key minting keys and node tokens, reset stream key, join replayed with another token, token bound to another IP, stream-key guessing",
		Load:  fmt.Sprintf("%d bad credentials tried", tried),
		Survived: fmt.Sprintf("%d of %d refused (401/403, RTMP \"unknown stream key\" / \"too many wrong stream keys\")%s",
			refused, tried, strings.Join(append([]string{""}, failures...), "; ")),
		Lost: "none", Pass: refused == tried,
	})
}

// capture is a transport that keeps the last request's body and node
// signature, as someone on the path would.
type capture struct {
	body []byte
	sig  string
}

func (c *capture) RoundTrip(r *http.Request) (*http.Response, error) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	c.body, c.sig = b, r.Header.Get(nodeproto.SignatureHeader)
	r.Body = io.NopCloser(bytes.NewReader(b))
	return http.DefaultTransport.RoundTrip(r)
}

// TestKill9MidUpload: the origin is killed while a tus upload is half
// sent; after the restart the client asks where to resume, sends the rest,
// and the video is processed to ready with the file it sent.
func TestKill9MidUpload(t *testing.T) {
	rs := redistest.Start(t)
	s := newShoal(t, rs, t.TempDir(), false)
	s.start()
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30:duration=6",
		"-f", "lavfi", "-i", "sine=duration=6", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", clip).CombinedOutput(); err != nil {
		t.Fatalf("making the clip: %v %s", err, out)
	}
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	code, body := s.do("POST", "/v1/videos", adminKey, map[string]string{"title": "killed mid-upload"})
	var v struct {
		ID     string
		Status string
		Upload struct {
			TusURL string `json:"tus_url"`
		}
	}
	if code != 201 || json.Unmarshal(body, &v) != nil {
		t.Fatalf("create video: %d %s", code, body)
	}
	tusDo := func(method, url string, hdr map[string]string, b []byte) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, url, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+adminKey)
		req.Header.Set("Tus-Resumable", "1.0.0")
		for k, val := range hdr {
			req.Header.Set(k, val)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	resp := tusDo("POST", v.Upload.TusURL, map[string]string{
		"Upload-Length": fmt.Sprint(len(data)), "Upload-Metadata": "video_id " + base64.StdEncoding.EncodeToString([]byte(v.ID)),
	}, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 201 || loc == "" {
		t.Fatalf("tus create: %d", resp.StatusCode)
	}
	half := len(data) / 2
	if r := tusDo("PATCH", loc, map[string]string{"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}, data[:half]); r.StatusCode != 204 {
		t.Fatalf("first half: %d", r.StatusCode)
	}
	s.kill9()
	s.start()
	r := tusDo("HEAD", loc, nil, nil)
	off := r.Header.Get("Upload-Offset")
	if r.StatusCode != 200 || off != fmt.Sprint(half) {
		t.Fatalf("HEAD after the restart: %d, offset %q, want %d", r.StatusCode, off, half)
	}
	if r := tusDo("PATCH", loc, map[string]string{"Upload-Offset": off, "Content-Type": "application/offset+octet-stream"}, data[half:]); r.StatusCode != 204 {
		t.Fatalf("the rest: %d", r.StatusCode)
	}
	var status string
	ready := poll(120*time.Second, func() bool {
		_, b := s.get("/v1/videos/"+v.ID, adminKey)
		var got struct{ Status string }
		_ = json.Unmarshal(b, &got)
		status = got.Status
		return status == "ready" || status == "failed"
	})
	dur, perr := probeDuration(s.http + "/hls/" + v.ID + "/master.m3u8")
	t.Logf("resumed at %s of %d bytes after kill -9; video %s; %.2f s playable", off, len(data), status, dur)
	pass := ready && status == "ready" && dur >= 5
	if !pass {
		t.Errorf("after kill -9 mid-upload: status %q, %.2f s playable (%s)", status, dur, perr)
	}
	record(row{
		Fault:    "kill -9 of the origin in the middle of a tus upload, then a restart",
		Load:     fmt.Sprintf("a %d-byte upload, half sent", len(data)),
		Survived: fmt.Sprintf("the client resumed at byte %s (HEAD), sent the rest; the video became %s, %.1f s playable", off, status, dur),
		Lost:     "none",
		Pass:     pass,
	})
}

// uploadAndWait creates a video, PUTs a 3-second clip as its source and
// reports whether it became ready within two minutes.
func (s *shoal) uploadAndWait(t *testing.T, title string) bool {
	t.Helper()
	id := s.upload(t, title)
	return id != "" && s.waitReady(id, 2*time.Minute)
}

// upload creates a video and PUTs a 3-second clip as its source; it
// returns the video's id ("" on failure, reported).
func (s *shoal) upload(t *testing.T, title string) string {
	t.Helper()
	clip := filepath.Join(t.TempDir(), "clip.mp4")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30:duration=3",
		"-c:v", "libx264", "-preset", "ultrafast", clip).CombinedOutput(); err != nil {
		t.Fatalf("making the clip: %v %s", err, out)
	}
	code, body := s.do("POST", "/v1/videos", adminKey, map[string]string{"title": title})
	var v struct{ ID string }
	if code != 201 || json.Unmarshal(body, &v) != nil {
		t.Errorf("create video: %d %s", code, body)
		return ""
	}
	data, err := os.ReadFile(clip)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", s.http+"/v1/videos/"+v.ID+"/source", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("PUT source: %v", err)
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		t.Errorf("PUT source: %d", resp.StatusCode)
		return ""
	}
	return v.ID
}

// waitReady reports whether video id became ready within d.
func (s *shoal) waitReady(id string, d time.Duration) bool {
	return poll(d, func() bool {
		_, b := s.get("/v1/videos/"+id, adminKey)
		var got struct{ Status string }
		_ = json.Unmarshal(b, &got)
		return got.Status == "ready"
	})
}
