package ids

import (
	"strings"
	"testing"
)

func TestNewIsValid(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id := New()
		if len(id) != idLen || !Valid(id) {
			t.Fatalf("New() = %q: not a valid id", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
	s := NewSecret("sk")
	if !LooksLikeSecret("sk", s) || LooksLikeSecret("api", s) {
		t.Fatalf("secret %q has the wrong shape", s)
	}
}

func TestValidRejectsTricks(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "..", "../etc", "a/b", "a%2fb", "a\\b", "A", "a.b", "a b", "a\x00", strings.Repeat("a", 65), "%2e%2e"} {
		if Valid(s) {
			t.Errorf("Valid(%q) = true, want false", s)
		}
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	if !Equal("abc", "abc") || Equal("abc", "abd") || Equal("abc", "") {
		t.Fatal("Equal is wrong")
	}
	if Hash("x") == Hash("y") || len(Hash("x")) != 64 {
		t.Fatal("Hash is wrong")
	}
}

func FuzzValid(f *testing.F) {
	for _, s := range []string{"abc", "..", "a/b", "%2e", "x\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if Valid(s) && strings.ContainsAny(s, "./\\%\x00 ") {
			t.Fatalf("Valid accepted %q", s)
		}
	})
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                     "",
		"rtsp://cam/s":                         "rtsp://cam/s",
		"rtsp://admin:hunter2@10.0.0.5:554/s1": "rtsp://admin:***@10.0.0.5:554/s1",
		"rtsp://cam/s?user=a&password=b":       "rtsp://cam/s?***",
		"rtsp://a:b@[::1/x":                    "rtsp://***",
		"not a url %zz":                        "***",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
