package app

import (
	"log/slog"
	"strconv"
	"time"

	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// whipConverters back the WHIP ingest's conversions with FFmpeg: Opus to
// AAC, VP8 and VP9 to H.264 with keyframes every segment.
type whipConverters struct {
	preset  string
	segment time.Duration
	log     *slog.Logger
}

func (c whipConverters) Audio(src media.Track) (whip.AudioConverter, error) {
	return ffmpeg.NewAudioConverter(src, 128_000, c.log)
}

func (c whipConverters) Video(src media.Track) (whip.VideoConverter, error) {
	return ffmpeg.NewVideoConverter(src, c.preset, c.segment, c.log)
}

// whipConfig is the WHIP ingest's configuration from the node's.
func whipConfig(cfg config.Config) whip.Config {
	wc := whip.Config{
		PublicIPs:      config.SplitList(cfg.Ingest.WHIPPublicIPs),
		STUNServers:    config.SplitList(cfg.Ingest.WHIPSTUNServers),
		MaxSessions:    cfg.Ingest.WHIPMaxSessions,
		MaxPerIP:       cfg.Ingest.WHIPMaxSessionsPerIP,
		ConnectTimeout: 30 * time.Second,
		ReadTimeout:    cfg.Ingest.ReadTimeout.Std(),
	}
	if cfg.Ingest.WHIPUDPPort != 0 {
		wc.UDPAddr = ":" + strconv.Itoa(cfg.Ingest.WHIPUDPPort)
	}
	return wc
}
