package s3test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// WeedVersion is the SeaweedFS module version the tests run.
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// weedModule is the throwaway module that builds weed: SeaweedFS's own
// go.mod has a replace directive, so `go install` refuses it, and a
// replace only applies in the main module.
const weedModule = `module shoal.invalid/buildweed

go 1.26

require github.com/seaweedfs/seaweedfs ` + WeedVersion + `

replace github.com/tyler-smith/go-bip39 => github.com/cosmos/go-bip39 v1.0.0
`

// weedImport makes `go mod tidy` keep the weed command's dependencies.
const weedImport = `//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
`

// WeedPath is where the weed binary is: $SHOAL_WEED when set, otherwise
// <cache>/shoal/weed-<WeedVersion>/weed under $XDG_CACHE_HOME or
// ~/.cache.
func WeedPath() (string, error) {
	if p := os.Getenv("SHOAL_WEED"); p != "" {
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("s3test: no $XDG_CACHE_HOME and no home directory for the weed cache: %w", err)
		}
		cache = filepath.Join(home, ".cache")
	}
	return filepath.Join(cache, "shoal", "weed-"+WeedVersion, "weed"), nil
}

// EnsureWeed returns the path of the weed binary, building it first when
// it is missing (a few minutes; the build's output goes to log). Callers
// in several processes at once build it once: the build holds a lock
// file next to the binary. $SHOAL_WEED, when set, must name an existing
// binary: it is never built.
func EnsureWeed(ctx context.Context, log io.Writer) (string, error) {
	bin, err := WeedPath()
	if err != nil {
		return "", err
	}
	if isExec(bin) {
		return bin, nil
	}
	if os.Getenv("SHOAL_WEED") != "" {
		return "", fmt.Errorf("s3test: SHOAL_WEED=%s is not an executable file", bin)
	}
	dir := filepath.Dir(bin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("s3test: weed cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("s3test: weed cache: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("s3test: lock the weed cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if isExec(bin) { // built by another process while we waited
		return bin, nil
	}
	if err := buildWeed(ctx, bin, log); err != nil {
		return "", err
	}
	return bin, nil
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// buildWeed builds weed into bin from a module in a temporary directory
// (outside any repository, so the caller's go.mod is not involved).
func buildWeed(ctx context.Context, bin string, log io.Writer) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("s3test: building weed needs the go command: %w", err)
	}
	mod, err := os.MkdirTemp("", "shoal-buildweed-")
	if err != nil {
		return fmt.Errorf("s3test: %w", err)
	}
	defer os.RemoveAll(mod)
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte(weedModule), 0o644); err != nil {
		return fmt.Errorf("s3test: %w", err)
	}
	if err := os.WriteFile(filepath.Join(mod, "tools.go"), []byte(weedImport), 0o644); err != nil {
		return fmt.Errorf("s3test: %w", err)
	}
	tmp := bin + ".tmp"
	start := time.Now()
	fmt.Fprintf(log, "s3test: building SeaweedFS weed %s into %s (a few minutes, once)\n", WeedVersion, bin)
	for _, args := range [][]string{
		{"mod", "tidy"},
		{"build", "-o", tmp, "github.com/seaweedfs/seaweedfs/weed"},
	} {
		cmd := exec.CommandContext(ctx, goBin, args...)
		cmd.Dir = mod
		// Not the caller's workspace or flags (-mod=vendor and the like).
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		cmd.Stdin = nil
		cmd.Stdout = log
		cmd.Stderr = log
		if err := cmd.Run(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("s3test: go %v for weed %s in %s failed (needs the Go module proxy or a module cache with SeaweedFS): %w", args, WeedVersion, mod, err)
		}
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("s3test: %w", err)
	}
	if _, err := os.Stat(bin); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("s3test: weed was built but %s is missing", bin)
	}
	fmt.Fprintf(log, "s3test: built %s in %s\n", bin, time.Since(start).Round(time.Second))
	return nil
}
