package rtcutil

import "testing"

var fragCases = []struct {
	name string
	body string
	n    int
	end  bool
	err  bool
}{
	{"one candidate", "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef01234567\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\n", 1, false, false},
	{"end", "a=ice-ufrag:abcd\r\na=ice-pwd:x\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=end-of-candidates\r\n", 0, true, false},
	{"two media", "a=mid:0\na=candidate:1 1 udp 1 192.0.2.1 1 typ host\na=mid:1\na=candidate:2 1 udp 1 192.0.2.1 2 typ host\n", 2, false, false},
	{"short candidate", "a=candidate:1 1 udp\r\n", 0, false, true},
	{"garbage", "hello\r\n", 0, false, true},
	{"empty", "", 0, false, false},
}

func TestParseFragment(t *testing.T) {
	for _, c := range fragCases {
		f, err := ParseFragment([]byte(c.body))
		if (err != nil) != c.err {
			t.Errorf("%s: err = %v", c.name, err)
			continue
		}
		if err == nil && (len(f.Candidates) != c.n || f.End != c.end) {
			t.Errorf("%s: %d candidates, end %v", c.name, len(f.Candidates), f.End)
		}
	}
	f, _ := ParseFragment([]byte(fragCases[2].body))
	if f.Candidates[0].Mid != "0" || f.Candidates[1].Mid != "1" || f.Candidates[1].Value != "candidate:2 1 udp 1 192.0.2.1 2 typ host" {
		t.Errorf("candidates %+v", f.Candidates)
	}
	if _, err := ParseFragment(make([]byte, MaxFragment+1)); err == nil {
		t.Error("an oversized fragment was accepted")
	}
}

func FuzzParseFragment(f *testing.F) {
	for _, c := range fragCases {
		f.Add([]byte(c.body))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ParseFragment(b)
		if err != nil {
			return
		}
		for _, c := range fr.Candidates {
			if len(c.Value) <= len("candidate:") {
				t.Fatalf("empty candidate from %q", b)
			}
		}
	})
}
