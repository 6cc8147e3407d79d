package rtsp

import (
	"testing"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"

	"github.com/shoal-video/shoal/internal/media"
)

// A key reset or a deleted stream (Disconnect) between ANNOUNCE (the key
// accepted) and RECORD reaches the session: it is closed and never goes
// live. Before, Disconnect found nothing until RECORD. (Found by a review
// helper.)
func TestDisconnectReachesAnAnnouncedSession(t *testing.T) {
	t.Parallel()
	r := newRig(t, 0)
	u, err := base.ParseURL("rtsp://" + r.srv.Addr().String() + "/live/" + testKey)
	if err != nil {
		t.Fatal(err)
	}
	desc := &description.Session{Medias: []*description.Media{{Type: description.MediaTypeVideo,
		Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1,
			SPS: []byte{0x67, 0x64, 0x00, 0x0c, 0xac, 0x3b, 0x50, 0xb0, 0x4b, 0x42, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3d, 0x08},
			PPS: []byte{0x68, 0xee, 0x3c, 0x80}}}}}}
	tcp := gortsplib.TransportTCP
	c := &gortsplib.Client{Transport: &tcp}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Announce(u, desc); err != nil { // the key accepted
		t.Fatal(err)
	}
	if !r.srv.Disconnect("stream1") {
		t.Fatal("Disconnect did not find the session whose key was accepted")
	}
	err = c.SetupAll(u, desc.Medias)
	if err == nil {
		_, err = c.Record()
	}
	if err == nil {
		t.Fatal("the disconnected session could set up and record")
	}
	if r.hub.Publishing(media.StreamKey{Name: "stream1", Rendition: media.RenditionSource}) {
		t.Fatal("a session disconnected after ANNOUNCE is live")
	}
}
