package rtsp

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/pion/rtp"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// session is one RTSP session; a publisher's once ANNOUNCE succeeded.
type session struct {
	m   *ingest.Metrics
	log *slog.Logger

	id     string        // the live stream, once announced
	tracks []media.Track // what the publication carries
	feeds  []feed        // one per track: where its packets come from

	mu          sync.Mutex // packets of several medias may arrive on several goroutines
	pub         *stream.Publisher
	ended       bool
	windowStart time.Time
	windowBytes int
	errLog      *logx.Limiter
}

// ptsFunc gives an RTP packet's presentation time in its format's clock
// (a server session's or a client's PacketPTS2).
type ptsFunc func(*description.Media, *rtp.Packet) (int64, bool)

// feed turns the RTP packets of one format into access units of track idx.
type feed struct {
	medi  *description.Media
	forma format.Format
	push  func(ses *session, pts ptsFunc, pkt *rtp.Packet)
}

// setup maps the announced medias to tracks (H.264, H.265, AAC), skipping
// the others with a warning.
func (ses *session) setup(desc *description.Session, log *slog.Logger) ([]media.Track, error) {
	if ses.errLog == nil {
		ses.errLog = logx.NewLimiter(5 * time.Second)
	}
	var tracks []media.Track
	for _, medi := range desc.Medias {
		for _, forma := range medi.Formats {
			idx := len(tracks)
			switch f := forma.(type) {
			case *format.H264:
				dec, err := f.CreateDecoder()
				if err != nil {
					return nil, fmt.Errorf("H.264: %w", err)
				}
				t := media.Track{Codec: media.CodecH264, ClockRate: 90000, SPS: f.SPS, PPS: f.PPS}
				var sps h264.SPS
				if err := sps.Unmarshal(f.SPS); err == nil {
					t.Width, t.Height = sps.Width(), sps.Height()
				}
				tracks = append(tracks, t)
				ses.feeds = append(ses.feeds, feed{medi: medi, forma: forma, push: h264Feed(idx, dec, f)})
			case *format.H265:
				dec, err := f.CreateDecoder()
				if err != nil {
					return nil, fmt.Errorf("H.265: %w", err)
				}
				t := media.Track{Codec: media.CodecH265, ClockRate: 90000, VPS: f.VPS, SPS: f.SPS, PPS: f.PPS}
				var sps h265.SPS
				if err := sps.Unmarshal(f.SPS); err == nil {
					t.Width, t.Height = sps.Width(), sps.Height()
				}
				tracks = append(tracks, t)
				ses.feeds = append(ses.feeds, feed{medi: medi, forma: forma, push: h265Feed(idx, dec, f)})
			case *format.MPEG4Audio:
				if f.Config == nil || f.Config.SampleRate <= 0 {
					return nil, errors.New("AAC: no usable AudioSpecificConfig")
				}
				cfg, err := f.Config.Marshal()
				if err != nil {
					return nil, fmt.Errorf("AAC config: %w", err)
				}
				dec, err := f.CreateDecoder()
				if err != nil {
					return nil, fmt.Errorf("AAC: %w", err)
				}
				ch := int(f.Config.ChannelConfig)
				if ch == 7 {
					ch = 8
				}
				rate := f.Config.SampleRate
				frameLen := int64(1024) // samples per AAC frame
				if f.Config.FrameLengthFlag {
					frameLen = 960
				}
				tracks = append(tracks, media.Track{Codec: media.CodecAAC, ClockRate: rate, AudioConfig: cfg, SampleRate: rate, Channels: ch})
				ses.feeds = append(ses.feeds, feed{medi: medi, forma: forma, push: func(ses *session, ptsOf ptsFunc, pkt *rtp.Packet) {
					pts, ok := ptsOf(medi, pkt)
					if !ok {
						return
					}
					aus, err := dec.Decode(pkt)
					if err != nil {
						if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
							ses.warn("skipping an undecodable AAC packet", err)
						}
						return
					}
					for i, au := range aus {
						ts := pts + int64(i)*frameLen
						ses.write(&media.AccessUnit{Track: idx, PTS: ts, DTS: ts, Keyframe: true, Payload: [][]byte{au}})
					}
				}})
			default:
				log.Warn("ignoring a track of an unsupported codec", "codec", forma.Codec())
				continue
			}
			break // one format per media
		}
	}
	if len(tracks) == 0 {
		return nil, errors.New("no H.264, H.265 or AAC track in the stream")
	}
	return tracks, nil
}

// withParams puts the parameter sets the SDP announced in front of a
// keyframe that does not carry its own (ffmpeg and many cameras send them
// out of band only), so that every keyframe can start a decoder.
func withParams(au [][]byte, has func([]byte) bool, params ...[]byte) [][]byte {
	for _, n := range au {
		if has(n) {
			return au
		}
	}
	out := make([][]byte, 0, len(params)+len(au))
	for _, p := range params {
		if len(p) > 0 {
			out = append(out, p)
		}
	}
	return append(out, au...)
}

// videoCodec is what a video feed needs to know of its codec.
type videoCodec struct {
	name      string
	isKey     func([][]byte) bool
	hasParams func(nalu []byte) bool // the NAL unit is an SPS
	params    func() [][]byte        // the SDP's parameter sets, current
	newDTS    func() dtsExtractor
	benign    func(error) bool // "wait for more packets", not a fault
}

type dtsExtractor interface {
	Extract(au [][]byte, pts int64) (int64, error)
}

type rtpDecoder interface {
	Decode(*rtp.Packet) ([][]byte, error)
}

func h264Feed(idx int, dec *rtph264.Decoder, f *format.H264) func(*session, ptsFunc, *rtp.Packet) {
	return videoFeed(idx, dec, videoCodec{
		name:      "H.264",
		isKey:     h264.IsRandomAccess,
		hasParams: func(n []byte) bool { return len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS },
		params:    func() [][]byte { sps, pps := f.SafeParams(); return [][]byte{sps, pps} },
		newDTS:    func() dtsExtractor { return h264.NewDTSExtractor() },
		benign: func(err error) bool {
			return errors.Is(err, rtph264.ErrMorePacketsNeeded) || errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious)
		},
	})
}

func h265Feed(idx int, dec *rtph265.Decoder, f *format.H265) func(*session, ptsFunc, *rtp.Packet) {
	return videoFeed(idx, dec, videoCodec{
		name:      "H.265",
		isKey:     h265.IsRandomAccess,
		hasParams: func(n []byte) bool { return len(n) > 0 && h265.NALUType((n[0]>>1)&0x3f) == h265.NALUType_SPS_NUT },
		params:    func() [][]byte { vps, sps, pps := f.SafeParams(); return [][]byte{vps, sps, pps} },
		newDTS:    func() dtsExtractor { return h265.NewDTSExtractor() },
		benign: func(err error) bool {
			return errors.Is(err, rtph265.ErrMorePacketsNeeded) || errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious)
		},
	})
}

// videoFeed turns RTP packets into video access units: frames start at the
// first keyframe, keyframes carry their parameter sets, and decoding times
// are derived from the bitstream.
func videoFeed(idx int, dec rtpDecoder, vc videoCodec) func(*session, ptsFunc, *rtp.Packet) {
	var dts dtsExtractor
	return func(ses *session, ptsOf ptsFunc, pkt *rtp.Packet) {
		pts, ok := ptsOf(ses.feedMedia(idx), pkt)
		if !ok {
			return
		}
		au, err := dec.Decode(pkt)
		if err != nil {
			if !vc.benign(err) {
				ses.warn("skipping undecodable "+vc.name+" packets", err)
			}
			return
		}
		key := vc.isKey(au)
		if key {
			au = withParams(au, vc.hasParams, vc.params()...)
		}
		if dts == nil {
			if !key {
				return // wait for the first keyframe
			}
			dts = vc.newDTS()
		}
		d, err := dts.Extract(au, pts)
		if err != nil {
			ses.warn("skipping a "+vc.name+" frame whose decoding time cannot be derived", err)
			return
		}
		ses.write(&media.AccessUnit{Track: idx, PTS: pts, DTS: d, Keyframe: key, Payload: au})
	}
}

// feedMedia returns the media of track idx's feed.
func (ses *session) feedMedia(idx int) *description.Media { return ses.feeds[idx].medi }

// packetSource is where a session's packets come from: a publisher's
// server session, or the client of a pull.
type packetSource interface {
	OnPacketRTP(*description.Media, format.Format, gortsplib.OnPacketRTPFunc)
	PacketPTS2(*description.Media, *rtp.Packet) (int64, bool)
}

// start publishes the packets of src into pub.
func (ses *session) start(pub *stream.Publisher, src packetSource) {
	ses.mu.Lock()
	ses.pub = pub
	ses.mu.Unlock()
	for _, f := range ses.feeds {
		push := f.push
		src.OnPacketRTP(f.medi, f.forma, func(pkt *rtp.Packet) { push(ses, src.PacketPTS2, pkt) })
	}
}

func (ses *session) write(au *media.AccessUnit) {
	n := au.Size()
	ses.m.Bytes.Add(float64(n))
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.pub == nil || ses.ended {
		return
	}
	ses.pub.Write(au)
	ses.windowBytes += n
	now := time.Now()
	if ses.windowStart.IsZero() {
		ses.windowStart = now
	} else if el := now.Sub(ses.windowStart); el >= time.Second {
		ses.m.Bitrate.WithLabelValues(ses.id).Set(float64(ses.windowBytes*8) / el.Seconds())
		ses.windowStart, ses.windowBytes = now, 0
	}
}

func (ses *session) warn(msg string, err error) {
	if ok, n := ses.errLog.Allow(); ok {
		ses.log.Warn(msg, "err", err, "suppressed_since_last", n)
	}
}

// end closes the publication, if the session had one.
func (ses *session) end(err error) {
	ses.mu.Lock()
	pub := ses.pub
	ses.ended = true
	ses.mu.Unlock()
	if pub == nil {
		return
	}
	ses.m.Publishers.Dec()
	ses.m.Bitrate.DeleteLabelValues(ses.id)
	pub.Close()
	ses.log.Info("publisher disconnected", "protocol", "rtsp", "err", err)
}
