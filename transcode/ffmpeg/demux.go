package ffmpeg

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// DemuxVideo reads the first H.264 video stream of a file whose packets are
// Annex B (MPEG-TS, raw .h264) and calls fn with each access unit, PTS and
// DTS in 90 kHz ticks. Parameter sets stay in the access units; the track
// carries the first ones.
func DemuxVideo(path string, fn func(media.Track, *media.AccessUnit) error) error {
	fc := astiav.AllocFormatContext()
	if fc == nil {
		return errors.New("demux: allocating the format context failed")
	}
	defer fc.Free()
	if err := fc.OpenInput(path, nil, nil); err != nil {
		return fmt.Errorf("demux: opening %s: %w", path, err)
	}
	defer fc.CloseInput()
	if err := fc.FindStreamInfo(nil); err != nil {
		return fmt.Errorf("demux: reading %s: %w", path, err)
	}
	var vs *astiav.Stream
	for _, s := range fc.Streams() {
		if s.CodecParameters().CodecID() == astiav.CodecIDH264 {
			vs = s
			break
		}
	}
	if vs == nil {
		return fmt.Errorf("demux: no H.264 video stream in %s", path)
	}
	tb := vs.TimeBase()
	to90k := func(v int64) int64 { return astiav.RescaleQ(v, tb, astiav.NewRational(1, 90000)) }
	track := media.Track{Codec: media.CodecH264, ClockRate: 90000,
		Width: vs.CodecParameters().Width(), Height: vs.CodecParameters().Height()}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	for {
		if err := fc.ReadFrame(pkt); err != nil {
			if errors.Is(err, astiav.ErrEof) {
				return nil
			}
			return fmt.Errorf("demux: %w", err)
		}
		if pkt.StreamIndex() != vs.Index() {
			pkt.Unref()
			continue
		}
		var nalus h264.AnnexB
		err := nalus.Unmarshal(pkt.Data())
		au := &media.AccessUnit{PTS: to90k(pkt.Pts()), DTS: to90k(pkt.Dts()),
			Keyframe: pkt.Flags().Has(astiav.PacketFlagKey)}
		pkt.Unref()
		if err != nil {
			return fmt.Errorf("demux: %s is not Annex B H.264: %w", path, err)
		}
		// Parameter sets stay in band (as ingest delivers a change of
		// them); the first ones also describe the track.
		for _, n := range nalus {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				if track.SPS == nil {
					track.SPS = n
				}
			case h264.NALUTypePPS:
				if track.PPS == nil {
					track.PPS = n
				}
			case h264.NALUTypeAccessUnitDelimiter:
				continue
			}
			au.Payload = append(au.Payload, n)
		}
		if len(au.Payload) == 0 {
			continue
		}
		if err := fn(track, au); err != nil {
			return err
		}
	}
}
