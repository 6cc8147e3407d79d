// Package whepclient is a WHEP viewer for tests and benchmarks: a pion
// WebRTC client that receives a stream's H.264 video and Opus audio and
// reports every video frame (its last NAL unit, for matching with what was
// sent) and audio packet as they arrive.
package whepclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"
)

// Frame is one video frame received.
type Frame struct {
	At      time.Time
	Key     bool
	LastNAL []byte // the frame's last NAL unit (its last slice)
	RTPTime uint32 // the frame's RTP timestamp
}

// Viewer is a WHEP session.
type Viewer struct {
	pc       *webrtc.PeerConnection
	resource string
	token    string
	// Frames receives every video frame; AudioPackets counts Opus packets.
	Frames chan Frame

	mu           sync.Mutex
	audioPackets int
	wg           sync.WaitGroup
}

// Start POSTs an offer to url (token: the bearer, "" for none) and starts
// receiving.
func Start(ctx context.Context, url, token string) (*Viewer, error) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(ir))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	v := &Viewer{pc: pc, token: token, Frames: make(chan Frame, 4096)}
	fail := func(err error) (*Viewer, error) {
		_ = pc.Close()
		return nil, err
	}
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return fail(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.wg.Add(1)
		go func() {
			defer v.wg.Done()
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				for {
					if _, _, err := tr.ReadRTP(); err != nil {
						return
					}
					v.mu.Lock()
					v.audioPackets++
					v.mu.Unlock()
				}
			}
			sb := samplebuilder.New(512, &codecs.H264Packet{}, 90000, samplebuilder.WithMaxTimeDelay(200*time.Millisecond))
			for {
				pkt, _, err := tr.ReadRTP()
				if err != nil {
					return
				}
				sb.Push(pkt)
				for s := sb.Pop(); s != nil; s = sb.Pop() {
					var nalus h264.AnnexB
					if nalus.Unmarshal(s.Data) != nil || len(nalus) == 0 {
						continue
					}
					f := Frame{At: time.Now(), LastNAL: nalus[len(nalus)-1], RTPTime: s.PacketTimestamp}
					for _, n := range nalus {
						if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeIDR {
							f.Key = true
						}
					}
					select {
					case v.Frames <- f:
					default:
					}
				}
			}
		}()
	})
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return fail(err)
	}
	req.Header.Set("Content-Type", "application/sdp")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
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
	v.resource = loc.String()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		return fail(err)
	}
	return v, nil
}

// RefusedError is a server's refusal of the offer.
type RefusedError struct {
	Status int
	Body   string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("WHEP offer refused: %d %s", e.Status, e.Body)
}

// AudioPackets is how many audio RTP packets arrived so far.
func (v *Viewer) AudioPackets() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.audioPackets
}

// Close ends the session with DELETE and closes the connection.
func (v *Viewer) Close(ctx context.Context) error {
	var err error
	if req, rerr := http.NewRequestWithContext(ctx, http.MethodDelete, v.resource, nil); rerr == nil {
		var resp *http.Response
		if resp, err = http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	err = errors.Join(err, v.pc.Close())
	v.wg.Wait()
	return err
}
