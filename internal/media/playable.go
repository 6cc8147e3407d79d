package media

import (
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// Unplayable says why browsers cannot decode video track t as it is ("" when
// they can, or when its parameter sets cannot tell). Browsers decode H.264
// up to High profile, 8-bit 4:2:0; encoders left on their defaults may send
// High 10, 4:2:2 or 4:4:4 (GStreamer's x264enc fed 10-bit 4:4:4 does),
// which no browser plays: such a source must be transcoded, never served
// as it came.
func Unplayable(t Track) string {
	if t.Codec != CodecH264 || len(t.SPS) == 0 {
		return ""
	}
	var sps h264.SPS
	if err := sps.Unmarshal(t.SPS); err != nil {
		return ""
	}
	switch sps.ProfileIdc {
	case 66, 77, 88, 100:
	default:
		return fmt.Sprintf("H.264 profile %s (profile_idc %d), which browsers cannot decode", h264ProfileName(sps.ProfileIdc), sps.ProfileIdc)
	}
	if sps.ChromaFormatIdc > 1 || sps.BitDepthLumaMinus8 > 0 || sps.BitDepthChromaMinus8 > 0 {
		return fmt.Sprintf("H.264 with %d-bit %s video, which browsers cannot decode",
			8+sps.BitDepthLumaMinus8, [...]string{"4:0:0", "4:2:0", "4:2:2", "4:4:4"}[min(sps.ChromaFormatIdc, 3)])
	}
	return ""
}

func h264ProfileName(idc uint8) string {
	switch idc {
	case 110:
		return "High 10"
	case 122:
		return "High 4:2:2"
	case 244:
		return "High 4:4:4 Predictive"
	case 44:
		return "CAVLC 4:4:4 Intra"
	case 83, 86:
		return "Scalable"
	case 118, 128:
		return "Multiview"
	}
	return "unknown"
}
