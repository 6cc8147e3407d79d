package ffmpeg

import (
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/logx"
)

var logOnce sync.Once

// probing silences FFmpeg's log while Probe tries encoders that are expected
// to fail on machines without the hardware (it reports why itself).
var probing atomic.Int32

// SetLogger sends FFmpeg's own warnings and errors to log, at most one line
// every few seconds (a corrupt stream makes the decoder complain per
// macroblock), instead of the process's standard error. FFmpeg's logger is
// process-wide: the first call wins.
func SetLogger(log *slog.Logger) {
	logOnce.Do(func() {
		limit := logx.NewLimiter(5 * time.Second)
		astiav.SetLogLevel(astiav.LogLevelWarning)
		astiav.SetLogCallback(func(c astiav.Classer, l astiav.LogLevel, fmt, msg string) {
			if l > astiav.LogLevelWarning || probing.Load() > 0 {
				return
			}
			if ok, n := limit.Allow(); ok {
				log.Warn("ffmpeg: "+strings.TrimSpace(msg), "suppressed_since_last", n)
			}
		})
	})
}
