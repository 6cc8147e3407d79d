package ffmpeg

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"
)

// Probe tells whether backend can encode here: it opens a small encoder and
// encodes one frame with it.
func Probe(backendName string) error {
	b, err := backendByName(backendName)
	if err != nil {
		return err
	}
	probing.Add(1)
	defer probing.Add(-1)
	enc, err := b.open(encoderSettings{
		rung:      Rung{Name: "probe", Width: 256, Height: 144, Bitrate: 200_000},
		frameRate: astiav.NewRational(30, 1), gop: 60, preset: "veryfast",
	})
	if err != nil {
		return err
	}
	defer enc.Free()
	f := astiav.AllocFrame()
	defer f.Free()
	f.SetWidth(256)
	f.SetHeight(144)
	f.SetPixelFormat(b.pixelFormat())
	if err := f.AllocBuffer(0); err != nil {
		return fmt.Errorf("probe frame: %w", err)
	}
	f.SetPts(0)
	if err := enc.SendFrame(f); err != nil {
		return fmt.Errorf("encoding a frame: %w", err)
	}
	if err := enc.SendFrame(nil); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	for {
		err := enc.ReceivePacket(pkt)
		if err == nil {
			pkt.Unref()
			return nil
		}
		if errors.Is(err, astiav.ErrEof) {
			return errors.New("the encoder produced nothing")
		}
		if !errors.Is(err, astiav.ErrEagain) {
			return fmt.Errorf("encoding a frame: %w", err)
		}
	}
}
