package s3test

import (
	"fmt"
	"os"
	"sync"
	"testing"
)

// One server shared by the tests of a package that do not stop it (each
// uses its own bucket): started on first use, stopped by StopShared, which
// the package's TestMain calls after m.Run.
var shared struct {
	once sync.Once
	srv  *Server
	err  string
	dirs []string
}

// Shared returns the package's shared server, starting it on first use.
// Tests must not Stop it; they fail when it could not start.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() {
		st := &startT{}
		func() {
			defer func() { _ = recover() }()
			shared.srv = Start(st)
		}()
		if shared.srv == nil {
			shared.err = st.msg
		}
	})
	if shared.srv == nil {
		t.Fatalf("no S3 server: %s", shared.err)
	}
	return shared.srv
}

// StopShared stops the shared server, if it was started, and removes its
// files.
func StopShared() {
	if shared.srv != nil {
		shared.srv.Stop()
	}
	for _, d := range shared.dirs {
		os.RemoveAll(d)
	}
}

// startT is the testing.TB that starts the shared server outside any one
// test: its cleanups never run (StopShared stops the server) and a fatal
// error is kept for the tests to report.
type startT struct {
	testing.TB
	msg string
}

func (s *startT) Helper()                         {}
func (s *startT) Cleanup(func())                  {}
func (s *startT) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (s *startT) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (s *startT) TempDir() string {
	d, err := os.MkdirTemp("", "s3test-shared-")
	if err != nil {
		s.Fatalf("%v", err)
	}
	shared.dirs = append(shared.dirs, d)
	return d
}
func (s *startT) Fatalf(format string, args ...any) {
	s.msg = fmt.Sprintf(format, args...)
	panic(s.msg)
}
func (s *startT) Fatal(args ...any) { s.Fatalf("%s", fmt.Sprint(args...)) }
