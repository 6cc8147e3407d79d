package uaparse

import (
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		ua   string
		want Agent
	}{
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
			Agent{"desktop", "windows", "chrome"}},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
			Agent{"desktop", "windows", "edge"}},
		{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
			Agent{"desktop", "macos", "safari"}},
		{"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
			Agent{"desktop", "linux", "firefox"}},
		{"Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
			Agent{"desktop", "chromeos", "chrome"}},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
			Agent{"mobile", "ios", "safari"}},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
			Agent{"mobile", "ios", "chrome"}},
		{"Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
			Agent{"tablet", "ios", "safari"}},
		{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
			Agent{"mobile", "android", "chrome"}},
		{"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
			Agent{"tablet", "android", "chrome"}},
		{"Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
			Agent{"mobile", "android", "samsung"}},
		{"Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0",
			Agent{"mobile", "android", "firefox"}},
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0",
			Agent{"desktop", "windows", "opera"}},
		{"Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
			Agent{"tv", "linux", "samsung"}},
		{"Mozilla/5.0 (Web0S; Linux/SmartTV) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/87.0.4280.88 Safari/537.36",
			Agent{"tv", "linux", "chrome"}},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
			Agent{"other", "linux", "chrome"}},
		{"Googlebot/2.1 (+http://www.google.com/bot.html)", Agent{"other", "other", "other"}},
		{"curl/8.5.0", Agent{"other", "other", "other"}},
		{"", Agent{"other", "other", "other"}},
		{"something new", Agent{"other", "other", "other"}},
	} {
		if got := Parse(c.ua); got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.ua, got, c.want)
		}
	}
}

// FuzzParse: whatever the header, the answer is in the fixed sets.
func FuzzParse(f *testing.F) {
	f.Add("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Version/18.1 Mobile/15E148 Safari/604.1")
	f.Add("\xff\xfe")
	f.Fuzz(func(t *testing.T, ua string) {
		a := Parse(ua)
		if !slices.Contains(Devices, a.Device) || !slices.Contains(OSes, a.OS) || !slices.Contains(Browsers, a.Browser) {
			t.Fatalf("Parse(%q) = %+v: outside the fixed sets", ua, a)
		}
	})
}
