package verify

import (
	"bytes"

	amp4 "github.com/abema/go-mp4"
)

// fragment is one track fragment (traf) of the video track.
type fragment struct {
	base    uint64 // tfdt
	samples []fragmentSample
}

type fragmentSample struct {
	duration uint32
	cto      int64 // composition time offset
	sync     bool
	payload  []byte
}

// Sample flags (ISO 14496-12 8.8.3.1) and trun flags.
const (
	sampleIsNonSync          = 0x00010000
	trunDataOffsetPresent    = 0x000001
	trunFirstSampleFlags     = 0x000004
	trunSampleDurationFlag   = 0x000100
	trunSampleSizeFlag       = 0x000200
	trunSampleFlagsFlag      = 0x000400
	trunSampleCTOFlag        = 0x000800
	maxBoxesInSegment        = 1 << 16
	trunSampleCountFieldSize = 4
)

// parseFragments reads the fragments (moof + mdat) of an fMP4 media
// segment and returns those of track id, in order. Unlike mediacommon's
// reader it honours a trun's first-sample flags (FFmpeg marks the
// keyframe that way) and a tfhd's base data offset.
func parseFragments(data []byte, id uint32) ([]fragment, error) {
	var frags []fragment
	var moofOffset uint64
	var tfhd *amp4.Tfhd
	var cur *fragment // the traf being read, nil when it is another track's
	inTraf := false
	haveTfdt := false
	var next uint64 // where a trun without a data offset starts
	samples, boxes := 0, 0
	endTraf := func() error {
		if inTraf && cur != nil && !haveTfdt {
			return malformed("a track fragment without tfdt")
		}
		if cur != nil {
			frags = append(frags, *cur)
		}
		cur, tfhd, inTraf, haveTfdt = nil, nil, false, false
		return nil
	}
	_, err := amp4.ReadBoxStructure(bytes.NewReader(data), func(h *amp4.ReadHandle) (any, error) {
		if boxes++; boxes > maxBoxesInSegment {
			return nil, malformed("more than %d boxes", maxBoxesInSegment)
		}
		switch h.BoxInfo.Type {
		case amp4.BoxTypeMoof():
			if len(h.Path) != 1 {
				return nil, malformed("a moof inside another box")
			}
			if err := endTraf(); err != nil {
				return nil, err
			}
			moofOffset = h.BoxInfo.Offset
			return h.Expand()
		case amp4.BoxTypeTraf():
			if len(h.Path) != 2 {
				return nil, malformed("a traf outside a moof")
			}
			if err := endTraf(); err != nil {
				return nil, err
			}
			inTraf = true
			vals, err := h.Expand()
			if err != nil {
				return nil, err
			}
			return vals, endTraf()
		case amp4.BoxTypeTfhd():
			if !inTraf || tfhd != nil {
				return nil, malformed("unexpected tfhd")
			}
			box, _, err := h.ReadPayload()
			if err != nil {
				return nil, err
			}
			tfhd = box.(*amp4.Tfhd)
			next = moofOffset
			if tfhd.GetFlags()&amp4.TfhdBaseDataOffsetPresent != 0 {
				next = tfhd.BaseDataOffset
			}
			if tfhd.TrackID == id {
				cur = &fragment{}
			}
		case amp4.BoxTypeTfdt():
			if tfhd == nil || haveTfdt {
				return nil, malformed("unexpected tfdt")
			}
			box, _, err := h.ReadPayload()
			if err != nil {
				return nil, err
			}
			haveTfdt = true
			if cur != nil {
				cur.base = box.(*amp4.Tfdt).GetBaseMediaDecodeTime()
			}
		case amp4.BoxTypeTrun():
			if tfhd == nil {
				return nil, malformed("a trun before its tfhd")
			}
			if cur == nil {
				return nil, nil // another track's
			}
			// The sample count, read before go-mp4 allocates for it.
			at := h.BoxInfo.Offset + h.BoxInfo.HeaderSize + 4
			if at+trunSampleCountFieldSize > uint64(len(data)) {
				return nil, malformed("truncated trun")
			}
			n := int(uint32(data[at])<<24 | uint32(data[at+1])<<16 | uint32(data[at+2])<<8 | uint32(data[at+3]))
			if n < 0 || n > maxSamples-samples {
				return nil, malformed("more than %d samples", maxSamples)
			}
			box, _, err := h.ReadPayload()
			if err != nil {
				return nil, err
			}
			trun := box.(*amp4.Trun)
			samples += len(trun.Entries)
			return nil, readTrun(data, trun, tfhd, moofOffset, &next, cur)
		}
		return nil, nil
	})
	if err != nil {
		return nil, malformed("fragments: %v", err)
	}
	if err := endTraf(); err != nil {
		return nil, err
	}
	return frags, nil
}

// readTrun adds a trun's samples to f; next is where its data starts
// when it has no data offset, and is moved past it.
func readTrun(data []byte, trun *amp4.Trun, tfhd *amp4.Tfhd, moofOffset uint64, next *uint64, f *fragment) error {
	flags := trun.GetFlags()
	tf := tfhd.GetFlags()
	pos := *next
	if flags&trunDataOffsetPresent != 0 {
		base := moofOffset
		if tf&amp4.TfhdBaseDataOffsetPresent != 0 {
			base = tfhd.BaseDataOffset
		}
		off := int64(base) + int64(trun.DataOffset)
		if off < 0 {
			return malformed("negative data offset")
		}
		pos = uint64(off)
	}
	for i, e := range trun.Entries {
		var s fragmentSample
		switch {
		case flags&trunSampleDurationFlag != 0:
			s.duration = e.SampleDuration
		case tf&amp4.TfhdDefaultSampleDurationPresent != 0:
			s.duration = tfhd.DefaultSampleDuration
		default:
			return malformed("sample %d has no duration", i)
		}
		var size uint32
		switch {
		case flags&trunSampleSizeFlag != 0:
			size = e.SampleSize
		case tf&amp4.TfhdDefaultSampleSizePresent != 0:
			size = tfhd.DefaultSampleSize
		default:
			return malformed("sample %d has no size", i)
		}
		var sf uint32
		switch {
		case flags&trunSampleFlagsFlag != 0:
			sf = e.SampleFlags
		case i == 0 && flags&trunFirstSampleFlags != 0:
			sf = trun.FirstSampleFlags
		case tf&amp4.TfhdDefaultSampleFlagsPresent != 0:
			sf = tfhd.DefaultSampleFlags
		}
		s.sync = sf&sampleIsNonSync == 0
		if flags&trunSampleCTOFlag != 0 {
			if trun.Version == 0 {
				s.cto = int64(e.SampleCompositionTimeOffsetV0)
			} else {
				s.cto = int64(e.SampleCompositionTimeOffsetV1)
			}
		}
		if size == 0 || pos > uint64(len(data)) || uint64(size) > uint64(len(data))-pos {
			return malformed("sample %d (%d bytes at %d) lies outside the segment", i, size, pos)
		}
		s.payload = data[pos : pos+uint64(size)]
		pos += uint64(size)
		f.samples = append(f.samples, s)
	}
	*next = pos
	return nil
}
