package playback

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
)

const tok = "eyJpZCI6ImFiYyJ9.c2ln-_"

var rewriteCases = []struct {
	name, in, want string
}{
	{
		"master",
		"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
			`#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",DEFAULT=YES,URI="audio/index.m3u8"` + "\n" +
			`#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"` + "\n" +
			"720p/index.m3u8\n" +
			`#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=300000,URI="720p/iframes.m3u8"` + "\n",
		"#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
			`#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English, main",DEFAULT=YES,URI="audio/index.m3u8?token=` + tok + `"` + "\n" +
			`#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2",AUDIO="aud"` + "\n" +
			"720p/index.m3u8?token=" + tok + "\n" +
			`#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=300000,URI="720p/iframes.m3u8?token=` + tok + `"` + "\n",
	},
	{
		"media, LL-HLS",
		"#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n#EXT-X-MAP:URI=\"init-0.mp4\"\r\n" +
			"#EXTINF:2.000,URI=\"not-an-attribute.m4s\"\r\nseg-1.m4s\r\n\r\n" +
			"#EXT-X-PART:DURATION=0.5,URI=\"seg-2.0.m4s?x=1\",INDEPENDENT=YES\r\n" +
			"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-2.1.m4s?\"\r\n" +
			"#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=2\r\n" +
			"  https://cdn.example/seg-3.m4s?a=b&  \r\n" +
			"seg-4.m4s#t=1\r\n" +
			"#EXT-X-ENDLIST",
		"#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n#EXT-X-MAP:URI=\"init-0.mp4?token=" + tok + "\"\r\n" +
			"#EXTINF:2.000,URI=\"not-an-attribute.m4s\"\r\nseg-1.m4s?token=" + tok + "\r\n\r\n" +
			"#EXT-X-PART:DURATION=0.5,URI=\"seg-2.0.m4s?x=1&token=" + tok + "\",INDEPENDENT=YES\r\n" +
			"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg-2.1.m4s?token=" + tok + "\"\r\n" +
			"#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8?token=" + tok + "\",LAST-MSN=2\r\n" +
			"  https://cdn.example/seg-3.m4s?a=b&token=" + tok + "  \r\n" +
			"seg-4.m4s?token=" + tok + "#t=1\r\n" +
			"#EXT-X-ENDLIST",
	},
	{
		"odd tags left alone",
		"\xef\xbb\xbf#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"key\n#X:A=B,URI=\"\",C\n# comment URI=\"x\"\n \t\nx.ts",
		"\xef\xbb\xbf#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"key\n#X:A=B,URI=\"\",C\n# comment URI=\"x\"\n \t\nx.ts?token=" + tok,
	},
	{"empty", "", ""},
	{"blank lines", "\n\n\r\n", "\n\n\r\n"},
}

func TestRewritePlaylist(t *testing.T) {
	t.Parallel()
	for _, c := range rewriteCases {
		got := RewritePlaylist([]byte(c.in), tok)
		if string(got) != c.want {
			t.Errorf("%s:\ngot  %q\nwant %q", c.name, got, c.want)
		}
		if string(RewritePlaylist([]byte(c.in), "")) != c.in {
			t.Errorf("%s: token \"\" changed the playlist", c.name)
		}
	}
}

func TestRewritePlaylistEscapes(t *testing.T) {
	t.Parallel()
	got := string(RewritePlaylist([]byte("#EXT-X-MAP:URI=\"i.mp4\"\na.ts\n"), "a b\"\n#&c"))
	want := "#EXT-X-MAP:URI=\"i.mp4?token=a+b%22%0A%23%26c\"\na.ts?token=a+b%22%0A%23%26c\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// isSubsequence tells whether every byte of a appears in b, in order.
func isSubsequence(a, b []byte) bool {
	i := 0
	for j := 0; i < len(a) && j < len(b); j++ {
		if a[i] == b[j] {
			i++
		}
	}
	return i == len(a)
}

func FuzzRewritePlaylist(f *testing.F) {
	for _, c := range rewriteCases {
		f.Add([]byte(c.in), tok)
		f.Add([]byte(c.in), "")
	}
	f.Add([]byte("#A:URI=\"x\",URI=\"y\"\n"), "t")
	f.Fuzz(func(t *testing.T, body []byte, token string) {
		out := RewritePlaylist(body, token)
		if token == "" {
			if !bytes.Equal(out, body) {
				t.Fatalf("token \"\" changed %q into %q", body, out)
			}
			return
		}
		// Only insertions, never a new line, and every URI line carries
		// the token.
		if !isSubsequence(body, out) {
			t.Fatalf("RewritePlaylist(%q) = %q lost input bytes", body, out)
		}
		if bytes.Count(out, []byte("\n")) != bytes.Count(body, []byte("\n")) {
			t.Fatalf("RewritePlaylist(%q) = %q changed the line count", body, out)
		}
		param := "token=" + url.QueryEscape(token)
		inLines := strings.Split(string(body), "\n")
		outLines := strings.Split(string(out), "\n")
		for i, l := range inLines {
			content := l
			if i == 0 {
				content = strings.TrimPrefix(l, "\xef\xbb\xbf")
			}
			switch {
			case strings.TrimSpace(content) == "":
				if outLines[i] != l {
					t.Fatalf("blank line %q became %q", l, outLines[i])
				}
			case strings.HasPrefix(content, "#"):
				if !strings.Contains(l, `URI="`) && outLines[i] != l {
					t.Fatalf("tag %q became %q", l, outLines[i])
				}
			default:
				if !strings.Contains(outLines[i], param) {
					t.Fatalf("URI line %q became %q, without %s", l, outLines[i], param)
				}
			}
		}
	})
}
