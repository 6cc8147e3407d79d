package whip

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
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

// maxFragment bounds a trickle ICE body (a few candidates).
const maxFragment = 16 << 10

// sdpFragment is what a trickle ICE PATCH (RFC 8840 and RFC 9725 section
// 4.3) carries: the ICE credentials it is for and candidates per media
// stream.
type sdpFragment struct {
	ufrag, pwd string
	// candidates are "candidate:..." attribute values with the mid of the
	// media section they came in ("" before any a=mid).
	candidates []fragCandidate
	end        bool // a=end-of-candidates
}

type fragCandidate struct {
	mid, value string
}

// parseFragment parses an application/trickle-ice-sdpfrag body.
func parseFragment(body []byte) (sdpFragment, error) {
	var f sdpFragment
	if len(body) > maxFragment {
		return f, fmt.Errorf("fragment larger than %d bytes", maxFragment)
	}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 1024), maxFragment)
	mid := ""
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		if len(line) < 2 || line[1] != '=' {
			return f, fmt.Errorf("malformed line %q", clip(line))
		}
		if line[0] != 'a' {
			continue // m= lines and others carry nothing we use
		}
		name, value, _ := strings.Cut(line[2:], ":")
		switch name {
		case "ice-ufrag":
			f.ufrag = value
		case "ice-pwd":
			f.pwd = value
		case "mid":
			mid = value
		case "candidate":
			if value == "" || len(strings.Fields(value)) < 8 {
				return f, fmt.Errorf("malformed candidate %q", clip(line))
			}
			f.candidates = append(f.candidates, fragCandidate{mid: mid, value: "candidate:" + value})
		case "end-of-candidates":
			f.end = true
		}
	}
	if err := sc.Err(); err != nil {
		return f, err
	}
	return f, nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
