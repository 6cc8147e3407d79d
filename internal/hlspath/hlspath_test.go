package hlspath

import "testing"

func TestParse(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]string{
		"/hls/abc/master.m3u8":             "abc/master.m3u8",
		"/hls/abc/dvr.m3u8":                "abc/dvr.m3u8",
		"/hls/abc/720p/dvr.m3u8":           "abc/720p/dvr.m3u8",
		"/hls/abc/720p/index.m3u8":         "abc/720p/index.m3u8",
		"/hls/abc/720p/s-0-1-p2.m4s":       "abc/720p/s-0-1-p2.m4s",
		"/hls/abc/720p/manifest.txt":       "abc/720p/manifest.txt",
		"/hls/abc/720p/manifest-0.txt":     "abc/720p/manifest-0.txt",
		"/hls/abc/720p/manifest-4200.txt":  "abc/720p/manifest-4200.txt",
		"/hls/abc/720p/manifest-42.txt":    "",
		"/hls/abc/720p/manifest-0100.txt":  "",
		"/hls/abc/index.m3u8":              "",
		"/hls/abc/../master.m3u8":          "",
		"/hls/abc/720p/../../etc/passwd":   "",
		"/hls/abc/720p/manifest-100.txt/x": "",
	} {
		got, ok := Parse(p)
		if (want != "") != ok || got != want {
			t.Errorf("Parse(%q) = %q, %v; want %q", p, got, ok, want)
		}
	}
	for name, want := range map[string]uint64{"manifest-0.txt": 0, "manifest-100.txt": 100, "manifest-123400.txt": 123400} {
		if n, ok := RangeManifest(name); !ok || n != want {
			t.Errorf("RangeManifest(%q) = %d, %v", name, n, ok)
		}
	}
	if !IsMaster("abc/dvr.m3u8") || IsMaster("abc/720p/dvr.m3u8") {
		t.Error("IsMaster")
	}
}

func TestIsPart(t *testing.T) {
	parts := map[string]bool{
		"/hls/a/b/s1-0-14-p0.m4s": true, "/hls/a/b/s1-0-14-p12.m4s": true, "s1-0-14-p3.m4s": true,
		"/hls/a/b/s1-0-14.m4s": false, "/hls/a/b/s1-0-14-p.m4s": false, "/hls/a/b/x-px.m4s": false,
		"/hls/a/b/s1-0-14-p0.mp4": false,
	}
	for k, want := range parts {
		if IsPart(k) != want {
			t.Errorf("IsPart(%q) = %v", k, !want)
		}
	}
}

func TestContentType(t *testing.T) {
	for name, want := range map[string]string{
		"a/b/index.m3u8": "application/vnd.apple.mpegurl", "x-0-1.m4s": "video/iso.segment", "init-x-0-0.mp4": "video/mp4",
		"s.ts": "video/mp2t", "poster.jpg": "image/jpeg", "storyboard.vtt": "text/vtt; charset=utf-8", "source": "", "x.exe": "",
	} {
		if got := ContentType(name); got != want {
			t.Errorf("ContentType(%q) = %q, want %q", name, got, want)
		}
	}
}
