package whip

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// vp8Keyframe reports whether frame (a whole VP8 frame, RFC 6386 section
// 9.1) is a keyframe and, when it is, the picture size it declares.
func vp8Keyframe(frame []byte) (key bool, width, height int, err error) {
	if len(frame) < 3 {
		return false, 0, 0, errors.New("vp8: frame shorter than its tag")
	}
	if frame[0]&1 != 0 {
		return false, 0, 0, nil // an inter frame
	}
	if len(frame) < 10 {
		return false, 0, 0, errors.New("vp8: keyframe shorter than its header")
	}
	if frame[3] != 0x9d || frame[4] != 0x01 || frame[5] != 0x2a {
		return false, 0, 0, errors.New("vp8: keyframe without its start code")
	}
	width = int(binary.LittleEndian.Uint16(frame[6:8]) & 0x3fff)
	height = int(binary.LittleEndian.Uint16(frame[8:10]) & 0x3fff)
	if width == 0 || height == 0 {
		return false, 0, 0, fmt.Errorf("vp8: keyframe of %dx%d pixels", width, height)
	}
	return true, width, height, nil
}
