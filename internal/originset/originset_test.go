package originset

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	t.Parallel()
	got, err := Parse(" http://a.internal:8080/ ,https://b.example")
	if err != nil || !slices.Equal(got, []string{"http://a.internal:8080", "https://b.example"}) {
		t.Fatalf("Parse = %q, %v", got, err)
	}
	for in, want := range map[string]string{
		"http://a,,http://b":    "empty entry",
		"http://a,ftp://b":      `"ftp://b" must be an absolute http:// or https:// URL`,
		"http://a,http://a/":    "listed twice",
		"http://a?x=1":          "without query",
		"":                      "empty entry",
		"origin.example.com:80": "must be an absolute",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", in, err, want)
		}
	}
}

// Preference: configured in order, then learned in byte order; a failed
// origin goes last for AvoidFor; learned origins follow the latest list,
// configured ones stay.
func TestOrderAvoidAndLearn(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s, err := New([]string{"http://a", "http://b/"}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	want := func(what string, got, w []string) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("%s: %q, want %q", what, got, w)
		}
	}
	want("order", s.Order(), []string{"http://a", "http://b"})
	if !s.Learn([]string{"https://z.example", "http://b", "not a url", "https://c.example/"}) {
		t.Fatal("Learn: no change reported")
	}
	if s.Learn([]string{"https://c.example", "https://z.example"}) {
		t.Fatal("Learn of the same list reported a change")
	}
	want("learned", s.Order(), []string{"http://a", "http://b", "https://c.example", "https://z.example"})
	want("attempts", s.Attempts(), []string{"http://a", "http://b", "https://c.example", "https://z.example"})
	s.Failed("http://a")
	now = now.Add(time.Second)
	s.Failed("https://c.example")
	want("avoided last", s.Order(), []string{"http://b", "https://z.example", "http://a", "https://c.example"})
	want("attempts", s.Attempts(), []string{"http://b", "https://z.example"})
	now = now.Add(AvoidFor - time.Second)
	want("a back", s.Order(), []string{"http://a", "http://b", "https://z.example", "https://c.example"})
	s.Succeeded("https://c.example")
	want("c back", s.Order(), []string{"http://a", "http://b", "https://c.example", "https://z.example"})
	s.Learn(nil)
	want("learned dropped", s.All(), []string{"http://a", "http://b"})
	s.Failed("https://z.example") // not in the set: no mark
	want("unknown failure", s.Order(), []string{"http://a", "http://b"})

	one, err := New([]string{"http://only"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want("one origin", one.Attempts(), []string{"http://only"})
	if _, err := New(nil, nil); err == nil {
		t.Fatal("New without origins succeeded")
	}
}

// Origins that failed together take their places again when their
// avoidance runs out, but a request tries only the first of them before the
// origins that never failed (and, when it fails again, the next request
// tries the next one); a request is sent to two origins at least.
func TestAttemptsProbation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s, err := New([]string{"http://a", "http://b", "http://c", "http://d"}, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	want := func(what string, got, w []string) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("%s: %q, want %q", what, got, w)
		}
	}
	s.Failed("http://a")
	s.Failed("http://b")
	s.Failed("http://c")
	want("avoided", s.Attempts(), []string{"http://d", "http://a"})
	now = now.Add(AvoidFor)
	want("order", s.Order(), []string{"http://a", "http://b", "http://c", "http://d"})
	want("one on probation", s.Attempts(), []string{"http://a", "http://d"})
	s.Failed("http://a")
	want("the next on probation", s.Attempts(), []string{"http://b", "http://d"})
	s.Succeeded("http://b")
	want("b back", s.Attempts(), []string{"http://b", "http://c", "http://d"})
	s.Failed("http://d")
	s.Failed("http://b")
	want("two at least", s.Attempts(), []string{"http://c", "http://a"})
}
