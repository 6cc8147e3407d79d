package app

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// The router believes no proxy: gin's ClientIP is the TCP peer whatever
// X-Forwarded-For says.
func TestHTTPServerTrustsNoProxy(t *testing.T) {
	s, err := newHTTPServer(httpConfig{Addr: "127.0.0.1:0"},
		httpDeps{Log: slog.New(slog.DiscardHandler), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	eng := s.srv.Handler.(*gin.Engine)
	eng.GET("/ip", func(c *gin.Context) { c.String(http.StatusOK, c.ClientIP()) })
	req := httptest.NewRequest(http.MethodGet, "/ip", nil)
	req.RemoteAddr = "127.0.0.1:4000"
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	req.Header.Set("X-Real-IP", "203.0.113.8")
	rec := httptest.NewRecorder()
	eng.ServeHTTP(rec, req)
	if got := rec.Body.String(); got != "127.0.0.1" {
		t.Fatalf("ClientIP = %q, want the peer 127.0.0.1", got)
	}
}
