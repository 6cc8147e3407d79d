package testutil

import (
	"fmt"
	"os/exec"
	"time"
)

// Process is a server process a test runs (redis-server, weed): its
// output, and Done, closed once it has exited.
type Process struct {
	Cmd  *exec.Cmd
	Out  *Buffer
	Done chan struct{}
}

// StartProcess starts cmd with its standard output and error in Out.
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	p := &Process{Cmd: cmd, Out: &Buffer{}, Done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", cmd.Path, err)
	}
	go func() {
		_ = cmd.Wait()
		close(p.Done)
	}()
	return p, nil
}

// Kill kills the process and waits for its exit.
func (p *Process) Kill() {
	_ = p.Cmd.Process.Kill()
	<-p.Done
}

// ExitedError is WaitReady's error for a process that exited first.
type ExitedError struct{ State string }

func (e *ExitedError) Error() string { return "exited (" + e.State + ")" }

// WaitReady calls ready every tick until it returns nil. It returns an
// ExitedError when the process exits first; after timeout it kills the
// process and returns ready's last error.
func (p *Process) WaitReady(timeout, tick time.Duration, ready func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-p.Done:
			return &ExitedError{State: p.Cmd.ProcessState.String()}
		default:
		}
		err := ready()
		if err == nil {
			return nil
		}
		// Until the next try, the process's exit (checked above) or the
		// deadline.
		select {
		case <-p.Done:
		case <-t.C:
		case <-deadline.C:
			p.Kill()
			return err
		}
	}
}
