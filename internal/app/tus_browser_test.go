package app

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// tusPage is a page of another site that uploads a file to Shoal with
// tus-js-client, as a platform's upload form would.
const tusPage = `<!doctype html><meta charset="utf-8"><title>another site</title>
<script src="/tus.min.js"></script>
<script>
window.uploadTo = async (endpoint, key, videoID) => {
  const blob = await (await fetch('/clip.mp4')).blob();
  return new Promise((resolve) => {
    const up = new tus.Upload(blob, {
      endpoint, chunkSize: 16 * 1024, retryDelays: [],
      headers: { Authorization: 'Bearer ' + key },
      metadata: { video_id: videoID, filename: 'clip.mp4' },
      onProgress: (sent, total) => { window.progress = [sent, total]; },
      onError: (err) => resolve('error: ' + err),
      onSuccess: () => resolve('ok'),
    });
    up.start();
  });
};
</script>`

// site serves tusPage, tus-js-client (vendored in testdata, MIT) and clip
// on a listener of its own: another origin than the node's.
func site(t *testing.T, ln net.Listener, clip []byte) string {
	t.Helper()
	lib, err := os.ReadFile("testdata/tus-js-client-4.3.1.min.js")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(tusPage))
	})
	mux.HandleFunc("/tus.min.js", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write(lib)
	})
	mux.HandleFunc("/clip.mp4", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		_, _ = w.Write(clip)
	})
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestTusFromAnotherSite: tus-js-client in Chromium, on a page of another
// origin, uploads a video in chunks (CORS preflight, POST, PATCHes) and the
// video is processed; a site not in upload_allowed_origins is refused.
func TestTusFromAnotherSite(t *testing.T) {
	t.Parallel()
	allowedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	otherLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowed := "http://" + allowedLn.Addr().String()
	n := startNode(t, "SHOAL_UPLOAD_ALLOWED_ORIGINS="+allowed)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 3))
	if err != nil {
		t.Fatal(err)
	}
	allowedURL, otherURL := site(t, allowedLn, clip), site(t, otherLn, clip)
	if allowedURL != allowed {
		t.Fatalf("site at %s, want %s", allowedURL, allowed)
	}
	b := browser.Start(t)

	upload := func(page string, v video) string {
		t.Helper()
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(page+"/")); err != nil {
			t.Fatal(err)
		}
		var res string
		evalJS(t, tab, fmt.Sprintf(`window.uploadTo(%q, %q, %q)`, v.Upload.TusURL, testAdminKey, v.ID), &res)
		return res
	}
	v := n.createVideo("from another site")
	if len(clip) < 3*16<<10 {
		t.Fatalf("the clip has %d bytes: too few for several PATCHes", len(clip))
	}
	if res := upload(allowedURL, v); res != "ok" {
		t.Fatalf("tus-js-client from an allowed site: %s", res)
	}
	n.waitFor("the uploaded video processed", 60*time.Second, func() bool {
		s := n.video(v.ID).Status
		return s == "processing" || s == "ready"
	})

	refused := n.createVideo("from a site not allowed")
	if res := upload(otherURL, refused); !strings.HasPrefix(res, "error") {
		t.Fatalf("tus-js-client from a site not allowed: %s, want an error", res)
	}
	if s := n.video(refused.ID).Status; s != "waiting" {
		t.Fatalf("the refused upload's video is %q, want waiting", s)
	}
}
