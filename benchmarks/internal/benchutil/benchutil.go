// Package benchutil holds the small helpers the benchmark programs share.
package benchutil

import (
	"fmt"
	"os/exec"
	"time"
)

// TimeIt runs f and returns its wall time in seconds.
func TimeIt(f func() error) (float64, error) {
	start := time.Now()
	err := f()
	return time.Since(start).Seconds(), err
}

// Sh runs a command; its error carries the command's output.
func Sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v\n%s", name, err, out)
	}
	return nil
}
