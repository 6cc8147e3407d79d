package edgecache

import (
	"bytes"
	"strings"
	"testing"
)

var rewriteCases = []struct {
	name, in, want string
}{
	{"media", "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2.000,\nseg-0.m4s\n#EXT-X-ENDLIST\n",
		"#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4?token=T\"\n#EXTINF:2.000,\nseg-0.m4s?token=T\n#EXT-X-ENDLIST\n"},
	{"master", "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\n720p/index.m3u8\n",
		"#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/index.m3u8?token=T\"\n#EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"a\"\n720p/index.m3u8?token=T\n"},
	{"query", "seg.m4s?x=1\n", "seg.m4s?x=1&token=T\n"},
	{"crlf and blanks", "#EXTM3U\r\n\r\nseg.m4s  \r\n", "#EXTM3U\r\n\r\nseg.m4s?token=T  \r\n"},
	{"no final newline", "#EXTM3U\nseg.m4s", "#EXTM3U\nseg.m4s?token=T"},
	{"absolute http", "https://cdn.example/seg.m4s\n", "https://cdn.example/seg.m4s?token=T\n"},
	{"data uri left alone", "#EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AAAA\"\n", "#EXT-X-KEY:METHOD=AES-128,URI=\"data:text/plain;base64,AAAA\"\n"},
	{"skd left alone", "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key\"\n", "#EXT-X-KEY:METHOD=SAMPLE-AES,URI=\"skd://key\"\n"},
	{"not an URI attribute", "#EXT-X-FOO:XURI=\"a\",URI=\"b\"\n", "#EXT-X-FOO:XURI=\"a\",URI=\"b?token=T\"\n"},
	{"two attributes", "#EXT-X-PART:DURATION=1,URI=\"p.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"q.m4s\"\n",
		"#EXT-X-PART:DURATION=1,URI=\"p.m4s?token=T\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"q.m4s?token=T\"\n"},
	{"unterminated", "#EXT-X-MAP:URI=\"init.mp4\n", "#EXT-X-MAP:URI=\"init.mp4\n"},
	{"fragment", "seg.m4s#t=1\n", "seg.m4s?token=T#t=1\n"},
	// LL-HLS (the origin contract's live playlist): parts, the preload
	// hint and rendition reports carry the token too.
	{"ll-hls", "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n" +
		"#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MAP:URI=\"init-s1-0-0.mp4\"\n" +
		"#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:00.000Z\n#EXTINF:2.000,\ns1-0-10.m4s\n" +
		"#EXT-X-PART:DURATION=0.50000,URI=\"s1-0-14-p0.m4s\",INDEPENDENT=YES\n#EXTINF:2.000,\ns1-0-14.m4s\n" +
		"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-0-15-p1.m4s\"\n" +
		"#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=15,LAST-PART=0\n",
		"#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n" +
			"#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:10\n#EXT-X-MAP:URI=\"init-s1-0-0.mp4?token=T\"\n" +
			"#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:00.000Z\n#EXTINF:2.000,\ns1-0-10.m4s?token=T\n" +
			"#EXT-X-PART:DURATION=0.50000,URI=\"s1-0-14-p0.m4s?token=T\",INDEPENDENT=YES\n#EXTINF:2.000,\ns1-0-14.m4s?token=T\n" +
			"#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-0-15-p1.m4s?token=T\"\n" +
			"#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8?token=T\",LAST-MSN=15,LAST-PART=0\n"},
	{"preload hint map", "#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init-s1-1-0.mp4\"\n", "#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init-s1-1-0.mp4?token=T\"\n"},
	{"rendition report with a query", "#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8?x=1\",LAST-MSN=1\n",
		"#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8?x=1&token=T\",LAST-MSN=1\n"},
}

func TestRewritePlaylist(t *testing.T) {
	t.Parallel()
	for _, tc := range rewriteCases {
		if got := string(RewritePlaylist([]byte(tc.in), "T")); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	if got := string(RewritePlaylist([]byte("a.m4s\n"), "a b&c")); got != "a.m4s?token=a+b%26c\n" {
		t.Errorf("token not escaped: %q", got)
	}
	in := []byte("seg.m4s\n")
	if got := RewritePlaylist(in, ""); !bytes.Equal(got, in) {
		t.Errorf("empty token changed the playlist: %q", got)
	}
}

const fuzzToken = "zQ9tok"

func FuzzRewritePlaylist(f *testing.F) {
	for _, tc := range rewriteCases {
		f.Add([]byte(tc.in))
	}
	f.Add([]byte("URI=\"x\"\n#URI=\"\"\n\n#\nURI=\"a\"URI=\"b\""))
	f.Fuzz(func(t *testing.T, in []byte) {
		out := RewritePlaylist(in, fuzzToken)
		if bytes.Count(out, []byte("\n")) != bytes.Count(in, []byte("\n")) {
			t.Fatalf("line count changed: %q -> %q", in, out)
		}
		if bytes.Contains(in, []byte(fuzzToken)) {
			return
		}
		// Taking every inserted parameter out gives the input back.
		back := strings.NewReplacer("?token="+fuzzToken, "", "&token="+fuzzToken, "").Replace(string(out))
		if back != string(in) {
			t.Fatalf("rewrite changed more than URIs:\n in %q\nout %q", in, out)
		}
		// Every URI line carries the token.
		for _, line := range strings.Split(string(out), "\n") {
			l := strings.TrimSpace(line)
			if l != "" && l[0] != '#' && tokenableURI([]byte(l)) && !strings.Contains(l, "token="+fuzzToken) {
				t.Fatalf("URI line %q without the token", line)
			}
		}
	})
}
