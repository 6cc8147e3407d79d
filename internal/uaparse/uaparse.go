// Package uaparse sorts a User-Agent header into small fixed sets of
// devices, operating systems and browsers, for viewer analytics. It reads
// well-known tokens only; anything else is "other".
package uaparse

import "strings"

// Devices, operating systems and browsers Parse answers.
var (
	Devices  = []string{"desktop", "mobile", "tablet", "tv", "other"}
	OSes     = []string{"windows", "macos", "ios", "android", "linux", "chromeos", "other"}
	Browsers = []string{"chrome", "firefox", "safari", "edge", "opera", "samsung", "other"}
)

// Agent is what Parse made of a User-Agent.
type Agent struct {
	Device, OS, Browser string
}

// maxLen bounds the part of the header read.
const maxLen = 512

// Parse sorts ua into Devices, OSes and Browsers.
func Parse(ua string) Agent {
	if len(ua) > maxLen {
		ua = ua[:maxLen]
	}
	s := strings.ToLower(ua)
	has := func(subs ...string) bool {
		for _, x := range subs {
			if strings.Contains(s, x) {
				return true
			}
		}
		return false
	}
	a := Agent{Device: "other", OS: "other", Browser: "other"}
	if s == "" || has("bot", "crawler", "spider", "curl/", "wget/", "python", "go-http-client", "headlesschrome") {
		// Machines, and headless browsers (tests, scrapers), are no
		// viewers' devices; their OS and browser still tell.
		if !has("headlesschrome") {
			return a
		}
	}
	switch {
	case has("windows phone"):
		a.OS = "other"
	case has("windows"):
		a.OS = "windows"
	case has("iphone", "ipad", "ipod"):
		a.OS = "ios"
	case has("android"):
		a.OS = "android"
	case has("cros"):
		a.OS = "chromeos"
	case has("mac os x", "macintosh"):
		a.OS = "macos"
	case has("linux", "x11"):
		a.OS = "linux"
	}
	switch {
	case has("edg/", "edge/", "edga/", "edgios/"):
		a.Browser = "edge"
	case has("opr/", "opera"):
		a.Browser = "opera"
	case has("samsungbrowser/"):
		a.Browser = "samsung"
	case has("firefox/", "fxios/"):
		a.Browser = "firefox"
	case has("chrome/", "chromium/", "crios/", "headlesschrome/"):
		a.Browser = "chrome"
	case has("safari/") && has("version/", "mobile/"):
		a.Browser = "safari"
	}
	switch {
	case has("headlesschrome"):
		a.Device = "other"
	case has("smart-tv", "smarttv", "googletv", "android tv", "appletv", "apple tv", "hbbtv", "tizen", "webos", "web0s", "roku", "crkey", "aftb", "aftm", "bravia"):
		a.Device = "tv"
	case has("ipad", "tablet", "kindle", "silk/", "playbook"):
		a.Device = "tablet"
	case a.OS == "android" && !has("mobile"):
		a.Device = "tablet" // Android tablets leave "Mobile" out
	case has("mobile", "iphone", "ipod", "windows phone", "blackberry", "opera mini"):
		a.Device = "mobile"
	case a.OS == "windows" || a.OS == "macos" || a.OS == "linux" || a.OS == "chromeos":
		a.Device = "desktop"
	}
	return a
}
