package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/whep"
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
		// Segments are cut at keyframes: ask browsers for one per segment.
		KeyframeInterval: cfg.HLS.SegmentDuration.Std(),
	}
	if cfg.Ingest.WHIPUDPPort != 0 {
		wc.UDPAddr = ":" + strconv.Itoa(cfg.Ingest.WHIPUDPPort)
	}
	return wc
}

// whepConfig is WHEP playback's configuration: the WebRTC settings of the
// WHIP ingest (whose UDP port it shares) and viewer limits.
func whepConfig(cfg config.Config) whep.Config {
	return whep.Config{
		PublicIPs:      config.SplitList(cfg.Ingest.WHIPPublicIPs),
		STUNServers:    config.SplitList(cfg.Ingest.WHIPSTUNServers),
		MaxViewers:     cfg.Ingest.WHEPMaxViewers,
		MaxPerIP:       cfg.Ingest.WHIPMaxSessionsPerIP,
		ConnectTimeout: 30 * time.Second,
	}
}

// whepAuthorizer lets anyone watch a public live stream and needs a valid
// playback token (the bearer) for a signed one, as HLS does.
func whepAuthorizer(store *routing.Store, signed func(id string) bool, pub ed25519.PublicKey) whep.Authorizer {
	return func(ctx context.Context, id, token, ip string) (time.Time, error) {
		if !ids.Valid(id) {
			return time.Time{}, whep.ErrNotFound
		}
		if _, err := store.GetLiveStream(ctx, id); errors.Is(err, routing.ErrNotFound) {
			return time.Time{}, whep.ErrNotFound
		} else if err != nil {
			return time.Time{}, err
		}
		if !signed(id) {
			return time.Time{}, nil
		}
		claims, err := playback.Verify(pub, token, id, time.Now(), ip)
		if err != nil {
			return time.Time{}, whep.ErrForbidden
		}
		return claims.Expires, nil
	}
}
