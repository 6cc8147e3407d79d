package config

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a time.Duration that YAML, text and environment variables
// spell as a Go duration string ("500ms", "2s", "1m30s"). A bare number is
// rejected, except 0, so that "10" is never silently read as 10ns.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns the shortest Go duration string for d: "5m" rather than
// "5m0s". ParseDuration reads every form String writes.
func (d Duration) String() string { return formatDuration(time.Duration(d)) }

// MarshalYAML writes d as a duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML reads a scalar duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a duration must be a single value such as \"2s\"", n.Line)
	}
	v, err := parseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: invalid value %s: %w", n.Line, quote(n.Value), err)
	}
	*d = v
	return nil
}

// MarshalText writes d as a duration string (JSON, slog).
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText reads a duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := parseDuration(string(b))
	if err != nil {
		return fmt.Errorf("invalid value %s: %w", quote(string(b)), err)
	}
	*d = v
	return nil
}

// parseDuration is the one duration parser, shared by YAML, text and the
// environment.
func parseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("not a duration (use a Go duration such as \"500ms\", \"2s\" or \"1m30s\")")
	}
	return Duration(v), nil
}

// formatDuration is time.Duration.String without trailing zero units:
// 5m0s -> 5m, 1h0m0s -> 1h, 1m30s stays.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
