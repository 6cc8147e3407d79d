package app

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// TestDashboardRestream: the Restream section of a live stream's card in
// the dashboard, in headless Chromium. A target added with the form (an
// address that hangs up on every connection) is listed with its stream key
// redacted and the form cleared; an http:// URL is refused with the
// server's message next to the form; while ffmpeg publishes over RTMP the
// page's polling shows the target failed, with the reason; Remove (after
// a confirmation) takes it off the page and out of the API. The typed
// stream key never reaches the page's address, markup or storage.
func TestDashboardRestream(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_INGEST_RESTREAM_ALLOW_PRIVATE=true") // the target is on loopback
	ls := n.createStream("restreamed")

	// A target that hangs up on every connection (held by this test, so
	// no other test can take its port).
	refuser, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer refuser.Close()
	go func() {
		for {
			c, err := refuser.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	const platformKey = "platform-key-7c1e9a"
	targetURL := "rtmp://" + refuser.Addr().String() + "/app/" + platformKey

	b := browser.Start(t)
	tab := b.NewTab(t)
	shots := screenshotDir(t)
	card := `.card.stream[data-id="` + ls.ID + `"]`
	section := card + ` details.restream`
	row := section + ` .restream-item`
	nameInput := `#restream-name-` + ls.ID
	urlInput := `#restream-url-` + ls.ID
	describe := `JSON.stringify((() => { const s = document.querySelector('` + section + `'); return s ? {open: s.open, count: s.dataset.count,
		rows: [...s.querySelectorAll('.restream-item')].map(r => ({state: r.dataset.state, text: r.innerText})),
		formError: s.querySelector('.restream-form-error').textContent, loadError: s.querySelector('.restream-load-error').textContent} : document.body.innerText.slice(0, 500) })())`
	// leaked tells where the page holds the typed stream key, if anywhere.
	leaked := `(() => { const k = '` + platformKey + `'; const where = [];
		if (location.href.includes(k)) where.push('address');
		if (document.documentElement.outerHTML.includes(k)) where.push('markup');
		if ([...document.querySelectorAll('input')].some(i => i.value.includes(k))) where.push('an input');
		if (JSON.stringify(sessionStorage).includes(k) || JSON.stringify(localStorage).includes(k)) where.push('storage');
		return where.join(', ') })()`

	if err := tab.Run(30*time.Second,
		chromedp.Navigate(n.http+"/"),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", testAdminKey+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible(card, chromedp.ByQuery)); err != nil {
		t.Fatalf("signing in to the dashboard: %v", err)
	}
	// Open the section: it loads the (empty) list.
	if err := tab.Run(10*time.Second, chromedp.Click(section+` > summary`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	var ok bool
	pollJS(t, tab, 10*time.Second, `document.querySelector('`+section+`').dataset.count === '0'`, &ok, describe)
	var placeholder string
	evalJS(t, tab, `document.querySelector('`+urlInput+`').placeholder`, &placeholder)
	if !strings.HasPrefix(placeholder, "rtmp://") {
		t.Errorf("URL placeholder %q", placeholder)
	}

	// Add the target with the form.
	if err := tab.Run(10*time.Second,
		chromedp.SendKeys(nameInput, "Hang-up server", chromedp.ByQuery),
		chromedp.SendKeys(urlInput, targetURL, chromedp.ByQuery),
		chromedp.Click(section+` .restream-add`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `document.querySelectorAll('`+row+`').length === 1 && document.querySelector('`+urlInput+`').value === ''`, &ok, describe)
	var shownURL, where string
	evalJS(t, tab, `document.querySelector('`+row+` .restream-url').textContent`, &shownURL)
	if want := "rtmp://" + refuser.Addr().String() + "/app/****"; shownURL != want {
		t.Errorf("listed URL %q, want %q", shownURL, want)
	}
	evalJS(t, tab, leaked, &where)
	if where != "" {
		t.Errorf("after adding a target the page holds its stream key in: %s", where)
	}
	targets := n.restreams(ls.ID)
	added, found := targets["Hang-up server"]
	if len(targets) != 1 || !found || strings.Contains(added.URL, platformKey) {
		t.Fatalf("targets after adding one with the form: %+v", targets)
	}

	// A URL that is not RTMP: refused, with the server's message inline.
	if err := tab.Run(10*time.Second,
		chromedp.SendKeys(nameInput, "Not RTMP", chromedp.ByQuery),
		chromedp.SendKeys(urlInput, "http://x", chromedp.ByQuery),
		chromedp.Click(section+` .restream-add`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	var formError string
	pollJS(t, tab, 10*time.Second, `(() => { const e = document.querySelector('`+section+` .restream-form-error'); return !e.hidden && e.textContent })()`, &formError, describe)
	if !strings.Contains(formError, "scheme must be rtmp or rtmps") {
		t.Errorf("inline error %q, want the server's message about the URL scheme", formError)
	}
	if got := len(n.restreams(ls.ID)); got != 1 {
		t.Errorf("%d targets after a refused one, want 1", got)
	}
	var n1 int
	evalJS(t, tab, `document.querySelectorAll('`+row+`').length`, &n1)
	if n1 != 1 {
		t.Errorf("%d targets listed after a refused one, want 1", n1)
	}

	// Live: the page's polling shows the target failed, with the reason.
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	var failure string
	pollJS(t, tab, 30*time.Second, `(() => { const r = document.querySelector('`+row+`'); const e = r && r.querySelector('.restream-error');
		return r && r.dataset.state === 'failed' && !e.hidden && e.textContent })()`, &failure, describe)
	t.Logf("the page shows the target failed: %q", failure)
	var badge struct {
		Text  string `json:"text"`
		Class string `json:"class"`
	}
	evalJS(t, tab, `(() => { const b = document.querySelector('`+row+` .restream-state'); return {text: b.textContent, class: b.className} })()`, &badge)
	if badge.Text != "Failed" || !strings.Contains(badge.Class, "badge-danger") {
		t.Errorf("failed target's badge %+v", badge)
	}
	if strings.Contains(failure, platformKey) {
		t.Errorf("the failure shown holds the stream key: %q", failure)
	}
	_ = tab.Screenshot(filepath.Join(shots, "app-dashboard-restream.png"))

	// Remove it (confirmed in a dialog): gone from the page and the API.
	if err := tab.Run(10*time.Second,
		chromedp.Click(row+` .restream-remove`, chromedp.ByQuery),
		chromedp.WaitVisible("dialog[open]", chromedp.ByQuery),
		chromedp.Click("dialog[open] .btn-danger-solid", chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `document.querySelectorAll('`+row+`').length === 0 && document.querySelector('`+section+`').dataset.count === '0'`, &ok, describe)
	if targets := n.restreams(ls.ID); len(targets) != 0 {
		t.Errorf("targets after Remove: %+v", targets)
	}
	evalJS(t, tab, leaked, &where)
	if where != "" {
		t.Errorf("the page holds the stream key in: %s", where)
	}

	// With the Live streams tab hidden the list is not polled, though the
	// section is open and the stream may still be live.
	const restreamGETs = `performance.getEntriesByType('resource').filter(e => e.name.endsWith('/restreams')).length`
	var before, after int
	if err := tab.Run(10*time.Second, chromedp.Click(`.tabs a[href="#videos"]`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	evalJS(t, tab, `new Promise(r => setTimeout(r, 3000)).then(() => `+restreamGETs+`)`, &before) // a request under way ends
	evalJS(t, tab, `new Promise(r => setTimeout(r, 6000)).then(() => `+restreamGETs+`)`, &after)
	if after != before {
		t.Errorf("%d restream list requests in 6 s with the section hidden, want none", after-before)
	}
	// Shown again, it polls again.
	if err := tab.Run(10*time.Second, chromedp.Click(`.tabs a[href="#live"]`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, restreamGETs+` > `+strconv.Itoa(after), &ok, describe)

	// The refused POST's 400 is logged by the browser; nothing else may be.
	for _, e := range tab.Errors() {
		if !strings.Contains(e, "status of 400") {
			t.Errorf("page error: %s", e)
		}
	}
	t.Logf("screenshots in %s", shots)
}
