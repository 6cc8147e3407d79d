package ffmpeg

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	SetLogger(slog.New(slog.DiscardHandler))
	os.Exit(m.Run())
}
