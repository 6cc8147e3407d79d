package testutil

import "time"

// Retry calls f every interval until it succeeds or timeout has passed,
// and returns its last error: for starting a server again on a port just
// released, which may not be bindable at once.
func Retry(timeout, interval time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		<-tick.C
	}
}
