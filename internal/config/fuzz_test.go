package config

import (
	"os"
	"path/filepath"
	"testing"
)

func FuzzLoadYAML(f *testing.F) {
	if data, err := os.ReadFile(exampleFile); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"---\n",
		"~\n",
		"hsl:\n  live_window: 6\n",
		"hls:\n  live_window: six\n  segment_duration: 40s\n",
		"hls: [1, 2]\n",
		"http_addr: \"[::1]:0\"\npublic_url: https://x/\n",
		"a: &a [*a]\n",
		"base: &b {format: mpegts}\nhls: *b\n",
		"log_level: info\nlog_level: debug\n",
		"log_level: info\n---\nlog_level: debug\n",
		"? [a, b]\n: c\n",
		"hub: {queue_size: 99999999999999999999}\n",
		"admin_key: !!binary aGVsbG8=\n",
		"\xff\xfe",
		"redis_url: \"redis://u:p@h:99999/0\"\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "shoal.yml")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p, nil)
		if err != nil {
			if c != (Config{}) {
				t.Fatalf("Load returned an error and a non-zero config %+v", c)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load returned a config that fails Validate: %v\ninput: %q", err, data)
		}
	})
}
