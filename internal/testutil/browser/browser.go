// Package browser runs a real headless Chromium for tests, through the
// DevTools protocol (chromedp).
//
// Start launches Debian's /usr/bin/chromium (the package "chromium", which
// `make test` installs) with a fresh profile; the test's cleanup closes it.
// When Chromium is not installed, the test is skipped with a message, except
// under CI (the CI variable set), where that is a failure: CI installs it.
//
// Each Tab records the page's console errors and uncaught exceptions, so
// that a test can require a page to load without errors.
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// DefaultPath is where Debian's chromium package installs the browser.
const DefaultPath = "/usr/bin/chromium"

// Flags are the command-line flags Chromium runs with (besides a fresh
// --user-data-dir and the DevTools port): headless, no sandbox (tests run
// as root in containers), no background traffic to Google, and media may
// play without a user gesture.
var Flags = []string{
	"--headless",
	"--no-sandbox",
	"--disable-gpu",
	"--disable-quic",
	"--no-first-run",
	"--disable-background-networking",
	"--disable-component-update",
	"--disable-sync",
	"--autoplay-policy=no-user-gesture-required",
	// Not in the brief's list but needed for robust runs in containers:
	// a small /dev/shm crashes tabs, and audio output may not exist.
	"--disable-dev-shm-usage",
	"--mute-audio",
	"--hide-scrollbars",
	"--no-default-browser-check",
	"--password-store=basic",
	"--window-size=1280,800",
}

// Browser is a running Chromium.
type Browser struct {
	ctx context.Context // the browser's chromedp context
}

// Option changes how Start launches Chromium.
type Option func(*options)

type options struct {
	flags []string
}

// WithFlags adds command-line flags ("--name" or "--name=value") to Flags,
// for example the fake camera and microphone of WebRTC tests:
//
//	browser.Start(t, browser.WithFlags(browser.FakeMediaFlags...))
func WithFlags(flags ...string) Option {
	return func(o *options) { o.flags = append(o.flags, flags...) }
}

// FakeMediaFlags make getUserMedia answer with Chromium's fake camera (a
// test pattern) and microphone (a beep) without asking, and let WebRTC
// connect over the loopback interface (test servers listen on 127.0.0.1).
var FakeMediaFlags = []string{
	"--use-fake-device-for-media-stream",
	"--use-fake-ui-for-media-stream",
	"--allow-loopback-in-peer-connection",
}

// Path returns the Chromium binary to use: $SHOAL_CHROMIUM, else
// /usr/bin/chromium, else "chromium" or "chromium-browser" on PATH. It
// returns "" when none is installed.
func Path() string {
	if p := os.Getenv("SHOAL_CHROMIUM"); p != "" {
		return p
	}
	if st, err := os.Stat(DefaultPath); err == nil && !st.IsDir() {
		return DefaultPath
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// Start launches Chromium for t, with Flags and those of WithFlags. It
// skips t when Chromium is missing and the CI variable is unset, and fails
// it when CI is set.
func Start(t testing.TB, opt ...Option) *Browser {
	t.Helper()
	var o options
	for _, f := range opt {
		f(&o)
	}
	path := Path()
	if path == "" {
		msg := "browser: Chromium is not installed (apt-get install chromium; `make test` installs it)"
		if os.Getenv("CI") != "" {
			t.Fatalf("%s, and CI is set: CI must run the browser tests", msg)
		}
		t.Skipf("%s: skipping the browser test (set CI=1 to make this a failure)", msg)
	}
	// A fresh profile, removed by our own cleanup: Chromium's helper
	// processes may still write to it for a moment after the browser
	// exits, which t.TempDir's cleanup reports as a failure.
	profile, err := os.MkdirTemp("", "shoal-chromium-")
	if err != nil {
		t.Fatalf("browser: profile directory: %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(profile),
		chromedp.WSURLReadTimeout(30 * time.Second),
	}
	for _, f := range append(append([]string(nil), Flags...), o.flags...) {
		name, value, hasValue := strings.Cut(strings.TrimPrefix(f, "--"), "=")
		if hasValue {
			opts = append(opts, chromedp.Flag(name, value))
		} else {
			opts = append(opts, chromedp.Flag(name, true))
		}
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(func(string, ...any) {}))
	t.Cleanup(func() {
		cancel()      // closes the browser
		cancelAlloc() // waits for its process to exit
		removeAll(t, profile)
	})
	// Start the browser now, so that a broken install fails here, clearly.
	// (The first Run allocates the browser for the context it is given, so
	// it gets the browser's own context, not one with a timeout: the
	// allocator's WSURLReadTimeout bounds the start.)
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("browser: starting %s: %v", path, err)
	}
	return &Browser{ctx: ctx}
}

// removeAll removes dir, retrying for a few seconds while exiting helper
// processes still write to it.
func removeAll(t testing.TB, dir string) {
	var err error
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 50 {
		if err = os.RemoveAll(dir); err == nil {
			return
		}
		<-tick.C
	}
	t.Logf("browser: could not remove the profile %s: %v", dir, err)
}

// Tab is a browser tab that records console errors and exceptions.
type Tab struct {
	Ctx context.Context

	mu     sync.Mutex
	errs   []string
	logs   []string
	cancel context.CancelFunc
}

// NewTab opens a tab; it is closed when t ends.
func (b *Browser) NewTab(t testing.TB) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	tab := &Tab{Ctx: ctx, cancel: cancel}
	chromedp.ListenTarget(ctx, tab.onEvent)
	if err := chromedp.Run(ctx); err != nil {
		cancel()
		t.Fatalf("browser: opening a tab: %v", err)
	}
	t.Cleanup(cancel)
	return tab
}

func (tab *Tab) onEvent(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range ev.Args {
			if a.Value != nil {
				parts = append(parts, strings.Trim(string(a.Value), `"`))
			} else if a.Description != "" {
				parts = append(parts, a.Description)
			}
		}
		line := fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(parts, " "))
		tab.add(line, ev.Type == runtime.APITypeError || ev.Type == runtime.APITypeAssert)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg += " " + d.Exception.Description
		}
		tab.add(fmt.Sprintf("exception: %s (%s:%d:%d)", msg, d.URL, d.LineNumber, d.ColumnNumber), true)
	case *cdplog.EventEntryAdded:
		e := ev.Entry
		line := fmt.Sprintf("log.%s [%s]: %s %s", e.Level, e.Source, e.Text, e.URL)
		tab.add(line, e.Level == cdplog.LevelError)
	}
}

func (tab *Tab) add(line string, isErr bool) {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.logs = append(tab.logs, line)
	if isErr {
		tab.errs = append(tab.errs, line)
	}
}

// Errors returns the console errors and exceptions seen so far.
func (tab *Tab) Errors() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]string(nil), tab.errs...)
}

// Logs returns every console line, log entry and exception seen so far.
func (tab *Tab) Logs() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return append([]string(nil), tab.logs...)
}

// ResetErrors forgets the errors seen so far (before loading a page that
// is expected to be clean).
func (tab *Tab) ResetErrors() {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	tab.errs = nil
}

// Run runs actions in the tab within timeout.
func (tab *Tab) Run(timeout time.Duration, actions ...chromedp.Action) error {
	ctx, cancel := context.WithTimeout(tab.Ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, actions...)
}

// SetViewport sets the tab's viewport in CSS pixels (mobile emulates a
// phone: touch and a device scale factor of 2).
func SetViewport(width, height int64, mobile bool) chromedp.Action {
	return chromedp.ActionFunc(func(ctx context.Context) error {
		scale := 1.0
		if mobile {
			scale = 2
		}
		return emulation.SetDeviceMetricsOverride(width, height, scale, mobile).Do(ctx)
	})
}

// WaitFor polls the JavaScript expression expr until it is true, within
// timeout; the error then tells what last was returned by describe (a
// JavaScript expression too, for the failure message).
func (tab *Tab) WaitFor(timeout time.Duration, expr, describe string) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var ok bool
		err := tab.Run(5*time.Second, chromedp.Evaluate(expr, &ok))
		if err == nil && ok {
			return nil
		}
		if time.Now().After(deadline) {
			var state string
			if describe != "" {
				_ = tab.Run(5*time.Second, chromedp.Evaluate(describe, &state))
			}
			return fmt.Errorf("timed out after %s waiting for %s (eval error: %v; state: %s)", timeout, expr, err, state)
		}
		<-tick.C
	}
}

// Screenshot writes a PNG of the viewport to path.
func (tab *Tab) Screenshot(path string) error {
	var buf []byte
	if err := tab.Run(20*time.Second, chromedp.CaptureScreenshot(&buf)); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, buf, 0o644)
}

// FullScreenshot writes a PNG of the whole page to path.
func (tab *Tab) FullScreenshot(path string) error {
	var buf []byte
	// Quality 100 makes chromedp capture a PNG.
	if err := tab.Run(20*time.Second, chromedp.FullScreenshot(&buf, 100)); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, buf, 0o644)
}
