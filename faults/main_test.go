//go:build faults

// Package faults is Shoal's fault suite (`make test-faults`): real shoal
// processes, a real Redis, real publishers and hostile clients, and the
// faults a deployment meets in its first week (a connection flood, kill -9,
// a full disk, Redis restarted empty, forged and revoked credentials). Each
// scenario records a row; TestMain prints the table (and writes it to
// $SHOAL_FAULTS_TABLE when set).
package faults

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// bin is the shoal binary built for the suite.
var bin string

// row is one line of the table.
type row struct {
	Fault    string // what was done
	Load     string // how much of it, with figures
	Survived string // what still worked, with figures
	Lost     string // data lost ("none" is the bar)
	Pass     bool
	NotRun   bool // the machine can't run it (the reason is in Survived)
}

var (
	rowsMu sync.Mutex
	rows   []row
)

func record(r row) {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	rows = append(rows, r)
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "shoal-faults-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "shoal")
	build := exec.Command("go", "build", "-o", bin, "./cmd/shoal")
	build.Dir = ".."
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building shoal:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	table := formatTable()
	fmt.Print(table)
	if p := os.Getenv("SHOAL_FAULTS_TABLE"); p != "" && table != "" {
		if err := os.WriteFile(p, []byte(table), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// formatTable renders the rows as a Markdown table.
func formatTable() string {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("\n| Fault | Load | What still worked | Data lost | Result |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		res := "pass"
		switch {
		case r.NotRun:
			res = "not run"
		case !r.Pass:
			res = "**FAIL**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", esc(r.Fault), esc(r.Load), esc(r.Survived), esc(r.Lost), res)
	}
	return b.String()
}

func esc(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

var _ = io.Discard
