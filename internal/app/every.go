package app

import (
	"context"
	"time"
)

// every calls f every d, the first time after d, until ctx ends or f says
// it is done.
func every(ctx context.Context, d time.Duration, f func() (done bool)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if f() {
				return
			}
		}
	}
}
