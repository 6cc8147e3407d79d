package rtcutil

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

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

func TestTrickleBounds(t *testing.T) {
	offerer, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer offerer.Close()
	if _, err := offerer.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	offer, err := offerer.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := pc.SetRemoteDescription(offer); err != nil {
		t.Fatal(err)
	}
	cand := func(i int) Candidate {
		return Candidate{Mid: "0", Value: fmt.Sprintf("candidate:%d 1 udp 2130706431 192.0.2.%d 5000%d typ host", i, i+1, i%10)}
	}
	var tr Trickle
	if err := tr.Add(pc, Fragment{Candidates: []Candidate{{Mid: "0", Value: "candidate:1 1 udp 1 224.0.0.1 5000 typ host"}}}); err == nil {
		t.Error("a multicast candidate was added")
	}
	var f Fragment
	for i := range MaxTrickleCandidates {
		f.Candidates = append(f.Candidates, cand(i))
	}
	if err := tr.Add(pc, f); err != nil {
		t.Fatalf("%d candidates: %v", MaxTrickleCandidates, err)
	}
	if err := tr.Add(pc, Fragment{Candidates: []Candidate{cand(20)}}); err == nil {
		t.Error("a candidate past the bound was added")
	}
	var tr2 Trickle
	if err := tr2.Add(pc, Fragment{End: true}); err != nil {
		t.Fatal(err)
	}
	if err := tr2.Add(pc, Fragment{Candidates: []Candidate{cand(1)}}); err == nil {
		t.Error("a candidate after end-of-candidates was added")
	}
	if err := tr2.Add(pc, Fragment{Ufrag: "someoneelse"}); !errors.Is(err, ErrICERestart) {
		t.Errorf("other credentials: %v", err)
	}
}

// TestOfferCandidates: an offer's own candidates are bounded and checked
// as trickled ones are, and count against the same budget (each is an
// address the server sends STUN checks to).
func TestOfferCandidates(t *testing.T) {
	lines := func(n int, addr string) []byte {
		var b strings.Builder
		b.WriteString("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:0\r\n")
		for i := range n {
			fmt.Fprintf(&b, "a=candidate:%d 1 udp 2130706431 %s %d typ host\r\n", i+1, addr, 50000+i)
		}
		return []byte(b.String())
	}
	var tr Trickle
	if err := tr.Offer(lines(MaxTrickleCandidates+1, "192.0.2.1")); err == nil {
		t.Errorf("an offer with %d candidates was taken", MaxTrickleCandidates+1)
	}
	for _, addr := range []string{"0.0.0.0", "224.0.0.1", "ff02::1"} {
		if err := tr.Offer(lines(1, addr)); err == nil {
			t.Errorf("an offer with a candidate at %s was taken", addr)
		}
	}
	if err := tr.Offer(lines(MaxTrickleCandidates-1, "192.0.2.1")); err != nil {
		t.Fatalf("an offer with %d candidates: %v", MaxTrickleCandidates-1, err)
	}
	// Each address listed for two components (as pion does) and in two
	// m= sections counts once.
	twice := strings.ReplaceAll(string(lines(MaxTrickleCandidates, "192.0.2.7")), " 1 udp ", " 2 udp ")
	var tr2 Trickle
	if err := tr2.Offer([]byte(string(lines(MaxTrickleCandidates, "192.0.2.7")) + twice + twice)); err != nil {
		t.Fatalf("%d addresses, each listed 3 times: %v", MaxTrickleCandidates, err)
	}
	// One more may come by PATCH, not two.
	cand := func(i int) Candidate {
		return Candidate{Mid: "0", Value: fmt.Sprintf("candidate:%d 1 udp 2130706431 192.0.2.9 %d typ host", 100+i, 40000+i)}
	}
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := tr.Add(pc, Fragment{Candidates: []Candidate{cand(1), cand(2)}}); err == nil {
		t.Error("trickled candidates past the offer's share of the budget were taken")
	}
}

// TestReadOfferDeadline: a body sent too slowly is cut off at the
// deadline, with an error, instead of holding the request.
func TestReadOfferDeadline(t *testing.T) {
	got := make(chan error, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := readOffer(w, r, 1<<10, 200*time.Millisecond)
		got <- err
	}))
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A body of 100 bytes, of which one is sent.
	fmt.Fprintf(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nv")
	select {
	case err := <-got:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("a stalled body: %v, want a timeout", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a stalled body held the request past its deadline")
	}
	srv2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := readOffer(w, r, 10, time.Second)
		got <- err
	}))
	defer srv2.Close()
	resp, err := http.Post(srv2.URL, "application/sdp", strings.NewReader(strings.Repeat("x", 11)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-got; !errors.Is(err, ErrOfferTooLarge) {
		t.Fatalf("11 bytes for a bound of 10: %v", err)
	}
}
