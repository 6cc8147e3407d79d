package logx

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	l := NewLimiter(time.Hour)
	if ok, _ := l.Allow(); !ok {
		t.Fatal("first call refused")
	}
	for i := 0; i < 5; i++ {
		if ok, _ := l.Allow(); ok {
			t.Fatal("second call within the interval allowed")
		}
	}
	l.last = time.Now().Add(-2 * time.Hour)
	if ok, n := l.Allow(); !ok || n != 5 {
		t.Fatalf("after interval: ok=%v suppressed=%d, want true 5", ok, n)
	}
}
