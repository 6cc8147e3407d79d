// Command shoal runs a Shoal node: `shoal dev`, `shoal origin`, `shoal edge`,
// `shoal worker` or `shoal version`. See `shoal help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/shoal-video/shoal/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
