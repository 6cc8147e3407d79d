package s3store_test

import (
	"fmt"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if server != nil {
		server.Stop()
	}
	for _, d := range sharedDirs {
		os.RemoveAll(d)
	}
	os.Exit(code)
}

// sharedDirs are the directories of the shared server, removed at exit.
var sharedDirs []string

// startT is the testing.TB that starts the shared server outside any one
// test: its cleanups are never run (TestMain stops the server) and a
// fatal error is kept for the tests to report.
type startT struct {
	testing.TB
	msg string
}

func (s *startT) Helper()                         {}
func (s *startT) Cleanup(func())                  {}
func (s *startT) Log(args ...any)                 { fmt.Fprintln(os.Stderr, args...) }
func (s *startT) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
func (s *startT) TempDir() string {
	d, err := os.MkdirTemp("", "s3store-test-")
	if err != nil {
		s.Fatalf("%v", err)
	}
	sharedDirs = append(sharedDirs, d)
	return d
}
func (s *startT) Fatalf(format string, args ...any) {
	s.msg = fmt.Sprintf(format, args...)
	panic(s.msg)
}
