// Package whippub is a WHIP publisher for tests and benchmarks: a pion
// WebRTC client that publishes prepared frames (VP8 or H.264 video, Opus
// audio) paced in real time, the way OBS or a browser would.
package whippub

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"
	pmedia "github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
	"golang.org/x/sync/errgroup"
)

// Frame is one encoded frame and how long it lasts.
type Frame struct {
	Data     []byte
	Duration time.Duration
}

// Options configure a publication.
type Options struct {
	// Endpoint is the WHIP URL (http://HOST/v1/whip), Key the stream key.
	Endpoint, Key string
	// VideoMime is webrtc.MimeTypeVP8 or webrtc.MimeTypeH264.
	VideoMime string
	Video     []Frame
	Audio     []Frame // Opus
	// Net, when set, is the network the client uses (pion's vnet).
	Net transport.Net
	// Speed paces the frames: 1 is real time.
	Speed float64
	// OnFrame, when set, is called as each video frame is sent.
	OnFrame func(i int, at time.Time)
}

// Session is a published WHIP session.
type Session struct {
	pc       *webrtc.PeerConnection
	resource string
	opts     Options
	video    *webrtc.TrackLocalStaticSample
	audio    *webrtc.TrackLocalStaticSample
	// connected is closed once ICE and DTLS are up: frames sent before
	// that would be lost.
	connected chan struct{}
}

// Start negotiates a session; Send then sends the frames and Close ends it.
func Start(ctx context.Context, o Options) (*Session, error) {
	if o.Speed <= 0 {
		o.Speed = 1
	}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if o.Net != nil {
		se.SetNet(o.Net)
	}
	// NACK responder, RTCP reports and TWCC, as browsers have.
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	s := &Session{pc: pc, opts: o, connected: make(chan struct{})}
	var once sync.Once
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(s.connected) })
		}
	})
	fail := func(err error) (*Session, error) {
		_ = pc.Close()
		return nil, err
	}
	if len(o.Video) > 0 {
		if s.video, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: o.VideoMime}, "video", "shoal"); err != nil {
			return fail(err)
		}
		if err := addSendOnly(pc, s.video); err != nil {
			return fail(err)
		}
	}
	if len(o.Audio) > 0 {
		if s.audio, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "shoal"); err != nil {
			return fail(err)
		}
		if err := addSendOnly(pc, s.audio); err != nil {
			return fail(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return fail(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return fail(err)
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return fail(ctx.Err())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.Endpoint, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+o.Key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail(err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fail(&RefusedError{Status: resp.StatusCode, Body: string(body)})
	}
	loc, err := resp.Location()
	if err != nil {
		return fail(fmt.Errorf("answer without a Location: %w", err))
	}
	s.resource = loc.String()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fail(err)
	}
	return s, nil
}

// RefusedError is a server's refusal of the offer.
type RefusedError struct {
	Status int
	Body   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("WHIP offer refused: %d %s", e.Status, e.Body)
}

func addSendOnly(pc *webrtc.PeerConnection, t webrtc.TrackLocal) error {
	tr, err := pc.AddTransceiverFromTrack(t, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return err
	}
	go func() { // read RTCP (PLI, NACK are handled by interceptors) until the sender closes
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Sender().Read(buf); err != nil {
				return
			}
		}
	}()
	return nil
}

// Resource is the session's URL.
func (s *Session) Resource() string { return s.resource }

// Send waits for the connection, then sends every frame, paced, and
// returns when all are sent.
func (s *Session) Send(ctx context.Context) error {
	select {
	case <-s.connected:
	case <-ctx.Done():
		return fmt.Errorf("waiting for the WebRTC connection: %w", ctx.Err())
	}
	var g errgroup.Group
	if s.video != nil {
		g.Go(func() error { return s.pace(ctx, s.video, s.opts.Video, s.opts.OnFrame) })
	}
	if s.audio != nil {
		g.Go(func() error { return s.pace(ctx, s.audio, s.opts.Audio, nil) })
	}
	return g.Wait()
}

func (s *Session) pace(ctx context.Context, t *webrtc.TrackLocalStaticSample, frames []Frame, on func(int, time.Time)) error {
	start := time.Now()
	var at time.Duration
	for i, f := range frames {
		due := start.Add(time.Duration(float64(at) / s.opts.Speed))
		if d := time.Until(due); d > 0 {
			tm := time.NewTimer(d)
			select {
			case <-ctx.Done():
				tm.Stop()
				return ctx.Err()
			case <-tm.C:
			}
		}
		if on != nil {
			on(i, time.Now())
		}
		if err := t.WriteSample(pmedia.Sample{Data: f.Data, Duration: f.Duration}); err != nil {
			return err
		}
		at += f.Duration
	}
	return nil
}

// Close ends the session with DELETE and closes the peer connection.
func (s *Session) Close(ctx context.Context) error {
	var err error
	if s.resource != "" {
		req, rerr := http.NewRequestWithContext(ctx, http.MethodDelete, s.resource, nil)
		if rerr == nil {
			req.Header.Set("Authorization", "Bearer "+s.opts.Key)
			var resp *http.Response
			if resp, err = http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("DELETE %s: %s", s.resource, resp.Status)
				}
			}
		}
	}
	return errors.Join(err, s.pc.Close())
}

// ReadIVF reads a VP8 IVF file's frames.
func ReadIVF(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, hdr, err := ivfreader.NewWith(f)
	if err != nil {
		return nil, err
	}
	dur := time.Second * time.Duration(hdr.TimebaseNumerator) / time.Duration(hdr.TimebaseDenominator)
	var out []Frame
	for {
		b, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Frame{Data: b, Duration: dur})
	}
}

// ReadOgg reads an Ogg Opus file (one packet per page, 20 ms each).
func ReadOgg(path string) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		return nil, err
	}
	var out []Frame
	for {
		page, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(page) == 0 || bytes.HasPrefix(page, []byte("OpusTags")) {
			continue
		}
		out = append(out, Frame{Data: page, Duration: 20 * time.Millisecond})
	}
}

// ReadH264 reads an Annex-B H.264 file into access units of frameDur each.
// An access unit ends where the next one starts: a parameter set, SEI or
// delimiter after a slice, or a slice that begins a new picture
// (first_mb_in_slice 0), so frames of several slices stay whole.
func ReadH264(path string, frameDur time.Duration) ([]Frame, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := h264reader.NewReader(f)
	if err != nil {
		return nil, err
	}
	var out []Frame
	var cur []byte
	haveSlice := false
	flush := func() {
		if haveSlice {
			out = append(out, Frame{Data: cur, Duration: frameDur})
			cur, haveSlice = nil, false
		}
	}
	for {
		nal, err := r.NextNAL()
		if errors.Is(err, io.EOF) {
			flush()
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(nal.Data) == 0 {
			continue
		}
		t := nal.Data[0] & 0x1f
		isSlice := t == 1 || t == 5
		switch {
		case isSlice && len(nal.Data) > 1 && nal.Data[1]&0x80 != 0: // first_mb_in_slice == 0
			flush()
		case !isSlice && (t == 6 || t == 7 || t == 8 || t == 9):
			flush()
		}
		cur = append(cur, 0, 0, 0, 1)
		cur = append(cur, nal.Data...)
		if isSlice {
			haveSlice = true
		}
	}
}
