package srt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

// A 1920x1080 H.264 SPS and its PPS.
var (
	testSPS = []byte{
		0x67, 0x42, 0xc0, 0x28, 0xd9, 0x00, 0x78, 0x02, 0x27, 0xe5, 0x84, 0x00,
		0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc9, 0x20,
	}
	testPPS = []byte{0x68, 0xcb, 0x8c, 0xb2}
	testIDR = []byte{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}
	testP   = []byte{0x41, 0x9a, 0x24, 0x6c, 0x41}
)

// tsOptions shapes the synthetic stream testTS writes.
type tsOptions struct {
	start     int64 // the first video DTS, 90 kHz (33-bit wraparound is applied on the wire)
	frames    int   // video frames at 30 fps; a keyframe every 30
	dupAt     int   // >0: frame dupAt repeats the DTS of the one before
	inBandAll bool  // every keyframe carries SPS/PPS (otherwise only the first)
}

// testTS writes an MPEG-TS stream with mediacommon's writer: H.264 (with a
// frame before the first keyframe, B-frame-like PTS offsets) and 44.1 kHz
// stereo AAC, two ADTS frames per PES.
func testTS(t testing.TB, o tsOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	video := &mpegts.Track{Codec: &tscodecs.H264{}}
	audio := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 44100, ChannelConfig: 2,
	}}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	const wrap = 1 << 33
	audioSent := 0 // AAC frames written
	for i := -1; i < o.frames; i++ {
		dts := o.start + int64(i)*3000
		if o.dupAt > 0 && i == o.dupAt {
			dts -= 3000
		}
		var au [][]byte
		switch {
		case i == -1:
			au = [][]byte{testP} // before the first keyframe: dropped
		case i%30 == 0 && (i == 0 || o.inBandAll):
			au = [][]byte{testSPS, testPPS, testIDR}
		case i%30 == 0:
			au = [][]byte{testIDR}
		default:
			au = [][]byte{testP}
		}
		if err := w.WriteH264(video, (dts+6000)%wrap, dts%wrap, au); err != nil {
			t.Fatal(err)
		}
		// Audio up to this frame's time, two frames per PES.
		for float64(audioSent+2)*1024/44100 <= float64(i+1)/30 {
			pts := o.start + int64(audioSent)*1024*90000/44100
			if err := w.WriteMPEG4Audio(audio, pts%wrap, [][]byte{{0x21, 0x10, byte(audioSent)}, {0x21, 0x10, byte(audioSent + 1)}}); err != nil {
				t.Fatal(err)
			}
			audioSent += 2
		}
	}
	return buf.Bytes()
}

// collect runs a demuxer over b and returns the tracks it published and
// what it wrote, checking on the way what every publication must satisfy.
func collect(t testing.TB, b []byte) ([]media.Track, []*media.AccessUnit, error) {
	t.Helper()
	var tracks []media.Track
	var aus []*media.AccessUnit
	last := map[int]int64{}
	d := &demuxer{
		warn:    func(string, error) {},
		skipped: func([]string) {},
		start: func(tr []media.Track) (func(*media.AccessUnit), error) {
			if tracks != nil {
				t.Fatal("started twice")
			}
			for _, x := range tr {
				if x.IsVideo() && (len(x.SPS) == 0 || len(x.PPS) == 0) {
					t.Fatalf("video track without parameter sets: %+v", x)
				}
			}
			tracks = tr
			return func(au *media.AccessUnit) {
				if au.Track < 0 || au.Track >= len(tracks) {
					t.Fatalf("access unit of track %d of %d", au.Track, len(tracks))
				}
				if len(au.Payload) == 0 {
					t.Fatal("empty access unit")
				}
				for _, n := range au.Payload {
					if len(n) == 0 {
						t.Fatal("empty NAL unit / frame")
					}
				}
				if au.PTS < au.DTS || au.DTS < 0 {
					t.Fatalf("track %d: PTS %d, DTS %d", au.Track, au.PTS, au.DTS)
				}
				if l, ok := last[au.Track]; ok && au.DTS <= l {
					t.Fatalf("track %d: DTS %d after %d", au.Track, au.DTS, l)
				}
				last[au.Track] = au.DTS
				aus = append(aus, au)
			}, nil
		},
	}
	err := d.run(bytes.NewReader(b))
	return tracks, aus, err
}

// TestDemuxTimestamps: timestamps go on across the 33-bit wraparound, the
// publication starts at the first keyframe, keyframes carry their
// parameter sets, AAC frames are 1024 samples apart in the sample clock,
// and a frame whose DTS does not move forward is dropped.
func TestDemuxTimestamps(t *testing.T) {
	t.Parallel()
	const frames = 150 // 5 s
	for name, o := range map[string]tsOptions{
		"across the wraparound":     {start: 1<<33 - 2*90000, frames: frames},
		"from zero, in-band params": {start: 0, frames: frames, inBandAll: true},
		"a repeated DTS":            {start: 1 << 32, frames: frames, dupAt: 40},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tracks, aus, err := collect(t, testTS(t, o))
			if !errors.Is(err, io.EOF) {
				t.Fatalf("run: %v", err)
			}
			if len(tracks) != 2 || tracks[0].Codec != media.CodecH264 || tracks[1].Codec != media.CodecAAC {
				t.Fatalf("tracks %+v", tracks)
			}
			v, a := tracks[0], tracks[1]
			if !bytes.Equal(v.SPS, testSPS) || !bytes.Equal(v.PPS, testPPS) || v.Width != 1920 || v.Height != 1080 {
				t.Fatalf("video track %+v", v)
			}
			if a.SampleRate != 44100 || a.ClockRate != 44100 || a.Channels != 2 || !bytes.Equal(a.AudioConfig, []byte{0x12, 0x10}) {
				t.Fatalf("audio track %+v", a)
			}
			var video, audio int
			for _, au := range aus {
				if au.Track == 0 {
					in := video // the frame's index in the stream
					if o.dupAt > 0 && video >= o.dupAt {
						in++ // frame dupAt was dropped
					}
					want := int64(in) * 3000
					if au.DTS != want || au.PTS != want+6000 {
						t.Fatalf("frame %d: DTS %d PTS %d, want %d", video, au.DTS, au.PTS, want)
					}
					if key := in%30 == 0; au.Keyframe != key {
						t.Fatalf("frame %d: keyframe %v", video, au.Keyframe)
					} else if key && (!bytes.Equal(au.Payload[0], testSPS) || !bytes.Equal(au.Payload[1], testPPS)) {
						t.Fatalf("keyframe %d does not start with SPS, PPS", video)
					}
					video++
					continue
				}
				// AAC: the sample clock, 1024 samples a frame (±1 for the
				// 90 kHz rounding of the PES timestamps).
				if want := int64(audio) * 1024; au.DTS < want-1 || au.DTS > want+1 || !au.Keyframe {
					t.Fatalf("audio frame %d: %d, want %d", audio, au.DTS, want)
				}
				audio++
			}
			wantVideo := frames
			if o.dupAt > 0 {
				wantVideo--
			}
			if video != wantVideo || audio < 5*44100/1024-2 {
				t.Fatalf("%d video frames, want %d; %d audio frames", video, wantVideo, audio)
			}
		})
	}
}

// TestDemuxBackwardsClock: a stream whose clock keeps going back is ended
// after a few dropped frames instead of being dropped forever.
func TestDemuxBackwardsClock(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	video := &mpegts.Track{Codec: &tscodecs.H264{}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{video}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	write := func(dts int64, au ...[]byte) {
		if err := w.WriteH264(video, dts, dts, au); err != nil {
			t.Fatal(err)
		}
	}
	write(900000, testSPS, testPPS, testIDR)
	for i := 1; i <= maxBadTimestamps+10; i++ {
		write(900000-int64(i)*3000, testP)
	}
	_, aus, err := collect(t, buf.Bytes())
	if err == nil || errors.Is(err, io.EOF) || len(aus) != 1 {
		t.Fatalf("got %d access units, err %v", len(aus), err)
	}
}

// TestDemuxRefusals: streams that cannot be published say why.
func TestDemuxRefusals(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	mp3 := &mpegts.Track{Codec: &tscodecs.MPEG1Audio{}}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{mp3}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTables(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		in     []byte
		reason string
	}{
		"no supported track": {buf.Bytes(), "bad_tracks"},
		"no MPEG-TS":         {bytes.Repeat([]byte("not a transport stream "), 100000), "bad_stream"},
	} {
		_, _, err := collect(t, c.in)
		var se *setupError
		if !errors.As(err, &se) || se.reason != c.reason {
			t.Errorf("%s: %v, want a %s refusal", name, err, c.reason)
		}
	}
}

// FuzzDemux feeds arbitrary bytes to the MPEG-TS path: it must not panic,
// and whatever it publishes satisfies collect's checks.
func FuzzDemux(f *testing.F) {
	ts := testTS(f, tsOptions{start: 1<<33 - 3000, frames: 40})
	f.Add(ts)
	f.Add(ts[:len(ts)/2])
	f.Add(testTS(f, tsOptions{frames: 35, dupAt: 3, inBandAll: true}))
	flipped := bytes.Clone(ts)
	for i := 200; i < len(flipped); i += 97 {
		flipped[i] ^= 0x5a
	}
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, err := collect(t, b); errors.Is(err, errDemuxPanic) {
			t.Fatal(err) // recovered in production, but a bug to report
		}
	})
}

func TestParseStreamID(t *testing.T) {
	t.Parallel()
	for sid, want := range map[string]struct {
		key string
		err error
	}{
		"publish:sk_abc":                  {key: "sk_abc"},
		"PUBLISH:sk_abc":                  {key: "sk_abc"},
		"publish:live/sk_abc":             {key: "sk_abc"},
		"#!::r=live/sk_abc,m=publish":     {key: "sk_abc"},
		"#!::m=publish,r=sk_abc,u=obs":    {key: "sk_abc"},
		"#!::r=/live/sk_abc,m=publish":    {key: "sk_abc"},
		"#!::r=live/sk_abc":               {err: errNotPublish},
		"#!::r=live/sk_abc,m=request":     {err: errNotPublish},
		"#!::r=sk_abc,m=bidirectional":    {err: errNotPublish},
		"read:sk_abc":                     {err: errNotPublish},
		"play:sk_abc":                     {err: errNotPublish},
		"":                                {err: errBadStreamID},
		"sk_abc":                          {err: errBadStreamID},
		"publish:":                        {err: errBadStreamID},
		"publish:live/":                   {err: errBadStreamID},
		"publish:a/b":                     {err: errBadStreamID},
		"publish:a b":                     {err: errBadStreamID},
		"publish%3Ask_abc":                {err: errBadStreamID},
		"#!::r=live/sk_abc,m=publish,m=x": {err: errBadStreamID},
		"#!::r=live/sk_abc,m=push":        {err: errBadStreamID},
		"#!::m=publish":                   {err: errBadStreamID},
		"#!::r":                           {err: errBadStreamID},
		"other:sk_abc":                    {err: errBadStreamID},
	} {
		key, err := parseStreamID(sid)
		if key != want.key || !errors.Is(err, want.err) || (want.err == nil) != (err == nil) {
			t.Errorf("%q: %q %v, want %q %v", sid, key, err, want.key, want.err)
		}
	}
}

// FuzzParseStreamID: any stream id parses without panicking; a key it
// returns is one both forms give back unchanged.
func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{"publish:sk_abc", "#!::r=live/sk_abc,m=publish", "read:x", "#!::m=publish,r=a,u=b", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sid string) {
		key, err := parseStreamID(sid)
		if err != nil {
			if key != "" {
				t.Fatalf("%q: key %q with error %v", sid, key, err)
			}
			return
		}
		for _, again := range []string{"publish:" + key, fmt.Sprintf("#!::r=live/%s,m=publish", key)} {
			if k, err := parseStreamID(again); err != nil || k != key {
				t.Fatalf("%q gave %q, but %q gives %q %v", sid, key, again, k, err)
			}
		}
	})
}
