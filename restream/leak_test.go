package restream

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/shoal-video/shoal/internal/media"
)

// refusingTarget is an RTMP server (gortmplib's handshake and message
// packages) that accepts connect and createStream and refuses publish with
// an onStatus error whose description describe builds from the publish
// name, as servers that quote the stream name (or a token of it) do.
func refusingTarget(t *testing.T, describe func(name string) string) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		bc := bytecounter.NewReadWriter(c)
		if _, _, err := handshake.DoServer(bc, false); err != nil {
			return
		}
		mrw := message.NewReadWriter(bc, bc, false)
		for {
			msg, err := mrw.Read()
			if err != nil {
				return
			}
			cmd, ok := msg.(*message.CommandAMF0)
			if !ok {
				continue
			}
			switch cmd.Name {
			case "connect":
				_ = mrw.Write(&message.CommandAMF0{ChunkStreamID: cmd.ChunkStreamID, Name: "_result", CommandID: cmd.CommandID,
					Arguments: []any{amf0.Object{{Key: "fmsVer", Value: "LNX 9,0,124,2"}},
						amf0.Object{{Key: "level", Value: "status"}, {Key: "code", Value: "NetConnection.Connect.Success"}}}})
			case "createStream":
				_ = mrw.Write(&message.CommandAMF0{ChunkStreamID: cmd.ChunkStreamID, Name: "_result", CommandID: cmd.CommandID,
					Arguments: []any{nil, float64(1)}})
			case "publish":
				name, _ := cmd.Arguments[1].(string)
				_ = mrw.Write(&message.CommandAMF0{ChunkStreamID: 5, MessageStreamID: 0x1000000, Name: "onStatus", CommandID: cmd.CommandID,
					Arguments: []any{nil, amf0.Object{{Key: "level", Value: "error"}, {Key: "code", Value: "NetStream.Publish.BadName"},
						{Key: "description", Value: describe(name)}}}})
				return
			}
		}
	})
}

// firstFailure publishes a stream with one target at url and returns the
// Error of the first "failed" report: what GET .../restreams (read-only keys
// included), the logs and the live_stream.restream.failed webhook show.
func firstFailure(t *testing.T, url string) string {
	t.Helper()
	r := newRig(t, rigOpts{cfg: testConfig()})
	r.targets.set(testStream, Target{ID: "t1", Name: "target", URL: url})
	pub, err := r.hub.Publish(media.StreamKey{Name: testStream, Rendition: media.RenditionSource}, aacTracks(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.End()
	evs := r.rec.wait(t, "t1", 10*time.Second, "a failure", func(evs []stateEvent) bool { return count(evs, StateFailed) > 0 })
	for _, e := range evs {
		if e.State.State == StateFailed {
			return e.Error
		}
	}
	return ""
}

// A target that refuses the publication with a long description quoting
// the publish name: the key is scrubbed before the reason is cut to length
// (it was cut at 200 bytes first, and a key cut in two was no longer found
// and half shown), and a very long description is cut.
func TestRefusalDescriptionIsScrubbedWhole(t *testing.T) {
	t.Parallel()
	const key = "sk_live_4f9c2e7a1b8d6035e2c4a9f7b1d8e3c6"
	addr := refusingTarget(t, func(name string) string {
		// 180 bytes, then the name: the key straddles byte 200.
		return "Publishing refused by the on_publish hook (HTTP 403 from http://auth.example.internal/rtmp/check, " +
			"request 7f3a9c, policy 'paid-plans-only', account suspended) for stream " + name
	})
	msg := firstFailure(t, "rtmp://"+addr+"/live2/"+key)
	t.Logf("reported error: %q", msg)
	// The whole key is scrubbed; a prefix of it is not.
	if prefix := key[:12]; strings.Contains(msg, prefix) {
		t.Fatalf("the failure report shows the start of the stream key (%q...): %q", prefix, msg)
	}
	long := firstFailure(t, "rtmp://"+refusingTarget(t, func(name string) string { return strings.Repeat("x", 5000) + name })+"/live2/"+key)
	if len(long) > maxErrorText+3 || strings.Contains(long, key[:12]) {
		t.Fatalf("a 5000-byte description: %d bytes reported: %q", len(long), long)
	}
}

// quoteToken refuses a publish name quoting its token= value, as a token
// check (nginx-rtmp on_publish, SRS, Wowza SecureToken) may.
func quoteToken(name string) string {
	_, q, _ := strings.Cut(name, "?")
	for _, kv := range strings.Split(q, "&") {
		if v, ok := strings.CutPrefix(kv, "token="); ok {
			return "invalid or expired token " + v
		}
	}
	return "refused"
}

// The target URL carries its secret in the query (?token=..., as
// nginx-rtmp on_publish, SRS or Wowza SecureToken setups do): a server
// that quotes that one value in its refusal does not get it shown (only
// the whole query was scrubbed).
func TestRefusalQuotingQueryTokenIsScrubbed(t *testing.T) {
	t.Parallel()
	const token = "tok_9d41c8e2a7f05b36"
	addr := refusingTarget(t, quoteToken)
	msg := firstFailure(t, "rtmp://"+addr+"/live/stream1?token="+token+"&region=eu")
	t.Logf("reported error: %q", msg)
	if strings.Contains(msg, token) {
		t.Fatalf("the failure report shows the target's token %q: %q", token, msg)
	}
}

// A token made of the stream name and a signature: scrubbing the name
// first left the signature shown; the longest secret goes first.
func TestRefusalQuotingTokenThatHoldsTheStreamName(t *testing.T) {
	t.Parallel()
	const token = "cam1-1765000000-9f2c4e8a7b1d6035"
	addr := refusingTarget(t, quoteToken)
	msg := firstFailure(t, "rtmp://"+addr+"/live/cam1?token="+token)
	t.Logf("reported error: %q", msg)
	if strings.Contains(msg, "9f2c4e8a7b1d6035") {
		t.Fatalf("the failure report shows the token's signature: %q", msg)
	}
}

// Over-redaction: a query value that is a common word is treated as a
// secret everywhere, so a dial error's own words disappear.
// Short query values (transport=tcp) are no secret of their own: a dial
// error keeps its words.
func TestScrubKeepsWordsOfOtherQueryValues(t *testing.T) {
	t.Parallel()
	got := scrub("dial tcp 203.0.113.7:1935: connect: connection refused",
		"rtmp://a.example/live/sk_live_4f9c2e7a1b8d6035?transport=tcp")
	if !strings.Contains(got, "dial tcp") {
		t.Fatalf("scrubbed to %q", got)
	}
}
