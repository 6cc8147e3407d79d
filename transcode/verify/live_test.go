package verify

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// liveSrc is a live source: an MPEG-TS clip's video moved onto a live
// timeline, with a keyframe grid anchored half a second in.
type liveSrc struct {
	track  media.Track
	aus    []*media.AccessUnit
	anchor int64
}

var (
	liveTSOnce    once
	liveOtherOnce once
)

func tsClip(path, pattern string) error {
	return sh("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", pattern+"=size=640x360:rate=30",
		"-t", "8", "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", "30", "-pix_fmt", "yuv420p", "-f", "mpegts", path)
}

func liveSource(t testing.TB, o *once, pattern string) liveSrc {
	t.Helper()
	path := o.get(t, func(p string) error { return tsClip(p, pattern) }, pattern+".ts")
	var s liveSrc
	err := ffmpeg.DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		if s.aus == nil {
			s.track = tr
		}
		au.PTS += 900_000
		au.DTS += 900_000
		s.aus = append(s.aus, au)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.anchor = s.aus[0].PTS + 45_000 + 1_110 // between two frames
	return s
}

// ladder runs the live pipeline over the source (one rung, the node's
// settings, the anchored grid) and returns the rung's access units.
func (s liveSrc) ladder(t *testing.T, rung ffmpeg.Rung) []*media.AccessUnit {
	t.Helper()
	p, err := ffmpeg.New(ffmpeg.Config{Preset: settings.Preset, KeyframeInterval: settings.SegmentDuration, Anchored: true,
		KeyframeAnchor: s.anchor, Log: quiet}, s.track, []ffmpeg.Rung{rung})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var out []*media.AccessUnit
	emit := func(_ int, au *media.AccessUnit) { out = append(out, au) }
	for _, au := range s.aus {
		if err := p.Push(au, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(emit); err != nil {
		t.Fatal(err)
	}
	return out
}

// cell is the request for grid cell k of a rung's output.
func (s liveSrc) cell(t *testing.T, out []*media.AccessUnit, k int64, rung ffmpeg.Rung) LiveRequest {
	t.Helper()
	step := media.Ticks(settings.SegmentDuration, 90000)
	req := LiveRequest{Source: s.track, Start: s.anchor + k*step, End: s.anchor + (k+1)*step, Anchor: s.anchor,
		Rung: rung, Settings: settings}
	from, to := -1, len(out)
	for i, au := range out {
		switch {
		case !au.Keyframe:
		case from < 0 && au.PTS >= req.Start-1500 && au.PTS < req.End:
			from = i
		case from >= 0 && to == len(out):
			to, req.Next = i, au.PTS
		}
	}
	if from < 0 || to == len(out) {
		t.Fatalf("no whole cell %d in the output", k)
	}
	req.AUs = out[from:to]
	first := 0
	for i, au := range s.aus {
		if au.Keyframe && au.PTS <= req.Start-90_000 {
			first = i
		}
	}
	req.SourceAUs = s.aus[first:]
	return req
}

func checkLive(t *testing.T, req LiveRequest) Report {
	t.Helper()
	rep, err := CheckLive(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	f := rep.Figures
	t.Logf("passed %v: PSNR %.2f dB (reference %.2f), SSIM %.4f, %d frames, %s; %s", rep.Passed, f.PSNR, f.RefPSNR, f.SSIM, f.Frames, f.Elapsed.Round(time.Millisecond), rep.Reason())
	return rep
}

// A live rung's cells made by the ladder pass; a worker that encodes at
// a quarter of the bitrate, sends another video, shifts its timestamps,
// makes another size or sends bytes that do not decode fails the check
// that says so.
func TestCheckLive(t *testing.T) {
	t.Parallel()
	src := liveSource(t, &liveTSOnce, "testsrc2")
	honest := src.ladder(t, rung360)
	for k := int64(1); k <= 2; k++ {
		wantPass(t, checkLive(t, src.cell(t, honest, k, rung360)))
	}

	t.Run("quarter bitrate", func(t *testing.T) {
		t.Parallel()
		low := rung360
		low.Bitrate /= 4
		wantFail(t, checkLive(t, src.cell(t, src.ladder(t, low), 2, rung360)), CheckQuality, []string{"PSNR"})
	})
	t.Run("another video", func(t *testing.T) {
		t.Parallel()
		other := liveSource(t, &liveOtherOnce, "mandelbrot")
		req := src.cell(t, other.ladder(t, rung360), 2, rung360)
		req.SourceAUs = src.cell(t, honest, 2, rung360).SourceAUs
		wantFail(t, checkLive(t, req), CheckQuality, []string{"below"})
	})
	t.Run("shifted", func(t *testing.T) {
		t.Parallel()
		req := src.cell(t, honest, 2, rung360)
		var aus []*media.AccessUnit
		for _, au := range req.AUs {
			c := *au
			c.PTS += 3000
			c.DTS += 3000
			aus = append(aus, &c)
		}
		req.AUs, req.Next = aus, req.Next+3000
		wantFail(t, checkLive(t, req), CheckTiming, []string{"starts at"})
	})
	t.Run("another size", func(t *testing.T) {
		t.Parallel()
		wantFail(t, checkLive(t, src.cell(t, src.ladder(t, rung240), 2, rung360)), CheckResolution, []string{"want 640x360"})
	})
	t.Run("garbage", func(t *testing.T) {
		t.Parallel()
		req := src.cell(t, honest, 2, rung360)
		var aus []*media.AccessUnit
		for i, au := range req.AUs {
			c := *au
			if i > 0 {
				c.Payload = [][]byte{[]byte(strings.Repeat("\x41not video", 50))}
			}
			aus = append(aus, &c)
		}
		req.AUs = aus
		wantFail(t, checkLive(t, req), CheckDecode, nil)
	})
}

// What cannot be checked is an error, never a report; access units that
// are no video are a failed report, never an error or a panic.
func TestCheckLiveRefuses(t *testing.T) {
	t.Parallel()
	src := liveSource(t, &liveTSOnce, "testsrc2")
	ok := src.cell(t, src.ladder(t, rung240), 1, rung240)
	for name, edit := range map[string]func(*LiveRequest){
		"no source":   func(r *LiveRequest) { r.SourceAUs = nil },
		"empty cell":  func(r *LiveRequest) { r.End = r.Start },
		"no bitrate":  func(r *LiveRequest) { r.Rung.Bitrate = 0 },
		"no interval": func(r *LiveRequest) { r.Settings = Settings{} },
		"wrong width": func(r *LiveRequest) { r.Rung.Width = 100 },
	} {
		req := ok
		edit(&req)
		if _, err := CheckLive(t.Context(), req); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	for name, aus := range map[string][]*media.AccessUnit{
		"none":      nil,
		"empty":     {{PTS: ok.Start, DTS: ok.Start, Keyframe: true}},
		"no params": {{PTS: ok.Start, DTS: ok.Start, Keyframe: true, Payload: [][]byte{{0x65, 1, 2, 3}}}},
		"backwards": {ok.AUs[0], {PTS: ok.Start, DTS: ok.AUs[0].DTS - 1, Payload: [][]byte{{0x41, 1}}}},
	} {
		req := ok
		req.AUs = aus
		rep, err := CheckLive(t.Context(), req)
		if err != nil || rep.Passed {
			t.Errorf("%s: passed %v, %v", name, rep.Passed, err)
			continue
		}
		if c, _ := rep.Check(CheckDecode); c.Passed || !strings.Contains(c.Reason, "malformed") {
			t.Errorf("%s: %+v", name, c)
		}
	}
	_, err := ParseLive(nil, 0)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("ParseLive(nil): %v", err)
	}
}

// liveAUs cuts fuzz bytes into access units: each is a length byte, then
// that many bytes split into NAL units at 0x00 bytes; the first byte of
// data picks the timestamps' step, the second flags the keyframes.
func liveAUs(data []byte) ([]*media.AccessUnit, int64) {
	if len(data) < 2 {
		return nil, 0
	}
	step, keys := int64(data[0])*100-1000, data[1]
	data = data[2:]
	var aus []*media.AccessUnit
	var at int64
	for i := 0; len(data) > 0; i++ {
		n := min(int(data[0]), len(data)-1)
		body := data[1 : 1+n]
		data = data[1+n:]
		au := &media.AccessUnit{PTS: at + 3000, DTS: at, Keyframe: keys&(1<<(i%8)) != 0}
		for _, nal := range strings.Split(string(body), "\x00") {
			au.Payload = append(au.Payload, []byte(nal))
		}
		aus = append(aus, au)
		at += step
	}
	return aus, at + 3000
}

// ParseLive never panics on hostile access units, and what it accepts
// has parameter sets, a size and a sample per access unit in decode
// order.
func FuzzParseLive(f *testing.F) {
	src := liveSource(f, &liveTSOnce, "testsrc2")
	var seed []byte
	seed = append(seed, 40, 0xff)
	for _, au := range src.aus[:3] {
		var b []byte
		for i, n := range au.Payload {
			if i > 0 {
				b = append(b, 0)
			}
			b = append(b, n...)
		}
		if len(b) > 255 {
			b = b[:255]
		}
		seed = append(seed, byte(len(b)))
		seed = append(seed, b...)
	}
	f.Add(seed)
	f.Add([]byte{10, 1, 4, 0x67, 0x42, 0, 0x65})
	f.Fuzz(func(t *testing.T, data []byte) {
		aus, next := liveAUs(data)
		p, err := ParseLive(aus, next)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that is not ErrMalformed: %v", err)
			}
			return
		}
		if p.Track.SPS == nil || p.Track.PPS == nil || p.Track.Width <= 0 || len(p.Samples) != len(aus) || p.Duration <= 0 {
			t.Fatalf("accepted: %+v", p)
		}
		for i := 1; i < len(p.Samples); i++ {
			if p.Samples[i].DTS <= p.Samples[i-1].DTS {
				t.Fatalf("sample %d goes back in decode time", i)
			}
		}
	})
}
