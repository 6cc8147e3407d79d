package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// TestDashboardJoinEdge: "Join as an edge" in the dashboard's nodes view,
// in headless Chromium. A token issued with the panel is shown once, in
// the one command that runs an edge; a real `shoal edge` started with that
// command's environment (only the placeholders of its address, public URL
// and data dir filled in) joins the origin, shows up in the nodes table in
// the command's region, and its page opens from the table. A nameless
// token is refused inline; the token is kept nowhere in the page once the
// panel is closed.
func TestDashboardJoinEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	b := browser.Start(t)
	tab := b.NewTab(t)
	shots := screenshotDir(t)
	describe := `document.getElementById('panel-nodes') ? document.getElementById('panel-nodes').innerText.slice(0, 3000) : document.body.innerText.slice(0, 500)`

	if err := tab.Run(30*time.Second,
		chromedp.Navigate(n.http+"/#nodes"),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", testAdminKey+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible("#join-form", chromedp.ByID)); err != nil {
		t.Fatalf("signing in to the dashboard: %v", err)
	}

	// No name: refused inline, nothing issued.
	if err := tab.Run(10*time.Second, chromedp.Click("#join-submit", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	var msg string
	pollJS(t, tab, 10*time.Second, `(() => { const e = document.getElementById('join-error'); return !e.hidden && e.textContent })()`, &msg, describe)
	if !strings.Contains(msg, "Name the token") {
		t.Errorf("inline error %q", msg)
	}

	// A region the origin would refuse on join: refused here, before a
	// token is issued.
	if err := tab.Run(10*time.Second,
		chromedp.SendKeys("#join-name", "edges from the dashboard", chromedp.ByID),
		chromedp.SendKeys("#join-region", "eu west", chromedp.ByID),
		chromedp.Click("#join-submit", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `(() => { const e = document.getElementById('join-error'); return !e.hidden && e.textContent.includes('region') && e.textContent })()`, &msg, describe)
	var issued bool
	evalJS(t, tab, `!!document.getElementById('join-command')`, &issued)
	if !strings.Contains(msg, "only letters, digits") || issued {
		t.Errorf("region with a space: inline error %q, command shown: %v", msg, issued)
	}

	// Issue a token with a name and a region.
	if err := tab.Run(10*time.Second,
		chromedp.Evaluate(`document.getElementById('join-region').value = ''`, nil),
		chromedp.SendKeys("#join-region", "eu-test", chromedp.ByID),
		chromedp.Click("#join-submit", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	var cmd string
	pollJS(t, tab, 10*time.Second, `(() => { const c = document.getElementById('join-command'); return c && c.textContent })()`, &cmd, describe)
	t.Logf("the panel shows: %s", cmd)
	var once string
	evalJS(t, tab, `document.querySelector('#join-result .key-once').textContent`, &once)
	if !strings.Contains(once, "shown only this once") {
		t.Errorf("no note that the token is shown once: %q", once)
	}
	var hidden bool
	evalJS(t, tab, `document.getElementById('join-error').hidden`, &hidden)
	if !hidden {
		t.Errorf("the earlier error is still shown after a token was issued")
	}

	// The command: environment assignments, then `shoal edge`.
	words := strings.Fields(cmd)
	if len(words) < 3 || strings.Join(words[len(words)-2:], " ") != "shoal edge" {
		t.Fatalf("command %q does not end with `shoal edge`", cmd)
	}
	env := map[string]string{}
	var order []string
	for _, w := range words[:len(words)-2] {
		k, v, ok := strings.Cut(w, "=")
		if !ok || !strings.HasPrefix(k, "SHOAL_") {
			t.Fatalf("command %q: %q is not an environment assignment", cmd, w)
		}
		env[k] = v
		order = append(order, k)
	}
	if env["SHOAL_ORIGIN_URL"] != n.http {
		t.Errorf("SHOAL_ORIGIN_URL=%q, want this origin %q", env["SHOAL_ORIGIN_URL"], n.http)
	}
	if !strings.HasPrefix(env["SHOAL_NODE_TOKEN"], "nt_") || len(env["SHOAL_NODE_TOKEN"]) != 35 {
		t.Errorf("SHOAL_NODE_TOKEN=%q, want a node token (nt_ and 32 characters)", env["SHOAL_NODE_TOKEN"])
	}
	if env["SHOAL_REGION"] != "eu-test" {
		t.Errorf("SHOAL_REGION=%q, want eu-test", env["SHOAL_REGION"])
	}
	for _, k := range []string{"SHOAL_PUBLIC_URL", "SHOAL_EDGE_ADDR", "SHOAL_DATA_DIR"} {
		if env[k] == "" {
			t.Errorf("the command sets no %s", k)
		}
	}

	var copied string
	if err := tab.Run(10*time.Second, chromedp.Click(`#join-result .card-actions .btn-primary`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `(() => { const t = document.querySelector('#toasts .toast'); return t && t.textContent })()`, &copied, describe)
	if copied != "Command copied" {
		t.Errorf("copy button: toast %q", copied)
	}
	_ = tab.Screenshot(filepath.Join(shots, "app-dashboard-join-edge.png"))

	// Run the edge with exactly that environment; only the placeholders
	// (where viewers reach it, where it listens, its data dir) are this
	// machine's. The cache sizes are the tests' usual small ones.
	port := freePort(t)
	edgeURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	fill := map[string]string{
		"SHOAL_PUBLIC_URL": edgeURL,
		"SHOAL_EDGE_ADDR":  fmt.Sprintf("127.0.0.1:%d", port),
		"SHOAL_DATA_DIR":   t.TempDir(),
	}
	var procEnv []string
	for _, k := range order {
		v := env[k]
		if f, ok := fill[k]; ok {
			v = f
		}
		procEnv = append(procEnv, k+"="+v)
	}
	procEnv = append(procEnv, "SHOAL_EDGE_CACHE_BYTES=104857600", "SHOAL_EDGE_MEMORY_BYTES=16777216")
	edge := startProc(t, "edge", procEnv...)

	// It joins: in the API, with the command's region, and in the page.
	var id string
	n.waitFor("the edge to join", 30*time.Second, func() bool {
		for _, ni := range n.nodes() {
			if ni.PublicURL == edgeURL {
				id = ni.ID
				return ni.Region == "eu-test"
			}
		}
		return false
	})
	row := `#nodes-table tr[data-id="` + id + `"]`
	var ok bool
	pollJS(t, tab, 20*time.Second, `!!document.querySelector('`+row+`')`, &ok, describe)
	var region string
	evalJS(t, tab, `document.querySelector('`+row+` td[data-label="Region"]').textContent`, &region)
	if region != "eu-test" {
		t.Errorf("the table shows region %q for the edge, want eu-test", region)
	}
	// The origin (GET /v1/nodes lists it after the edge) is in a table of
	// its own, with what it transcodes with: not among the edges, their
	// totals or charts.
	var servers struct {
		Edges, EdgeTotal, Origin, Encoder string
	}
	pollJS(t, tab, 20*time.Second, `!!document.querySelector('#servers-table tr[data-id="`+originNodeID(n.http)+`"]')`, &ok, describe)
	evalJS(t, tab, `(() => ({
		Edges: String(document.querySelectorAll('#nodes-table tbody tr').length),
		EdgeTotal: document.querySelector('#node-totals .stat-value').textContent,
		Origin: document.querySelector('#servers-table tr[data-id="`+originNodeID(n.http)+`"]').dataset.role,
		Encoder: document.querySelector('#servers-table tr[data-id="`+originNodeID(n.http)+`"] .transcode-encoder').textContent }))()`, &servers)
	if servers.Edges != "1" || servers.EdgeTotal != "1" || servers.Origin != "origin" || servers.Encoder == "" {
		t.Errorf("nodes section: %+v, want 1 edge in the table and totals, and the origin apart with its encoder", servers)
	}

	// Its page opens from the table: state and region, and the figures
	// (or a plain "not available" where this origin has no such API).
	if err := tab.Run(10*time.Second, chromedp.Click(row+` .node-open`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 15*time.Second, `(() => { const d = document.getElementById('node-detail');
		return !d.hidden && d.querySelector('.node-region') && d.querySelector('.node-region').textContent === 'eu-test' &&
			!d.querySelector('[aria-busy]') })()`, &ok, `document.getElementById('node-detail').innerText`)
	var detail struct {
		Title, State   string
		Errors, Charts int
		Usage, QoE     string
	}
	evalJS(t, tab, `(() => { const d = document.getElementById('node-detail'); return {
		Title: d.querySelector('h3').textContent, State: d.querySelector('.kv').dataset.state,
		Errors: d.querySelectorAll('.load-error').length, Charts: d.querySelectorAll('svg.chart-svg').length,
		Usage: d.querySelector('#node-usage').innerText, QoE: d.querySelector('#node-qoe').innerText } })()`, &detail)
	if detail.Title != "Node "+id || detail.State != "active" || detail.Errors != 0 {
		t.Errorf("node page: %+v", detail)
	}
	t.Logf("node page: usage %q; viewers %q", detail.Usage, detail.QoE)
	_ = tab.Screenshot(filepath.Join(shots, "app-dashboard-node-page.png"))

	// The rewards per epoch open (a report list, or a plain "not
	// available" where this origin has no such API), without an error.
	if err := tab.Run(10*time.Second, chromedp.Click(`#epochs > summary`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	var epochs string
	pollJS(t, tab, 10*time.Second, `(() => { const l = document.getElementById('epochs-list'); return l.childElementCount > 0 && l.innerText })()`, &epochs, describe)
	var loadErrors int
	evalJS(t, tab, `document.querySelectorAll('#epochs .load-error').length`, &loadErrors)
	if loadErrors != 0 {
		t.Errorf("rewards per epoch: %q", epochs)
	}
	t.Logf("rewards per epoch: %q", epochs)

	// At phone width nothing overflows sideways.
	if err := tab.Run(10*time.Second, browser.SetViewport(375, 740, true)); err != nil {
		t.Fatal(err)
	}
	if err := tab.WaitFor(5*time.Second, `document.documentElement.scrollWidth <= 375`, `document.documentElement.scrollWidth + ' px wide'`); err != nil {
		t.Errorf("nodes section at 375 px: %v", err)
	}
	_ = tab.FullScreenshot(filepath.Join(shots, "app-dashboard-join-edge-phone.png"))

	// Done: the token leaves the page, and it was never stored.
	token := env["SHOAL_NODE_TOKEN"]
	if err := tab.Run(10*time.Second, chromedp.Click("#join-done", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	var where string
	evalJS(t, tab, `(() => { const k = '`+token+`'; const w = [];
		if (document.documentElement.outerHTML.includes(k)) w.push('markup');
		if (location.href.includes(k)) w.push('address');
		if (JSON.stringify(sessionStorage).includes(k) || JSON.stringify(localStorage).includes(k)) w.push('storage');
		return w.join(', ') })()`, &where)
	if where != "" {
		t.Errorf("after Done the page holds the node token in: %s", where)
	}
	if edge.cmd.ProcessState != nil {
		t.Errorf("the edge exited: %s", edge.stderr.String())
	}

	// A read-only key sees the nodes but may not issue node tokens: the
	// panel says that it takes the admin key.
	code, body := n.do(http.MethodPost, "/v1/api-keys", testAdminKey, map[string]any{"name": "watcher", "scopes": []string{"read-only"}})
	if code != http.StatusCreated {
		t.Fatalf("create a read-only API key: %d %s", code, body)
	}
	var key struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &key); err != nil || key.Key == "" {
		t.Fatalf("API key answer %s: %v", body, err)
	}
	if err := tab.Run(30*time.Second,
		chromedp.Click("#signout", chromedp.ByID),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", key.Key+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible("#join-form", chromedp.ByID),
		chromedp.SendKeys("#join-name", "not allowed", chromedp.ByID),
		chromedp.Click("#join-submit", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `(() => { const e = document.getElementById('join-error'); return !e.hidden && e.textContent })()`, &msg, describe)
	if !strings.Contains(msg, "needs the admin key") {
		t.Errorf("a read-only key's token request: inline error %q", msg)
	}
	var shown bool
	evalJS(t, tab, `!!document.getElementById('join-command')`, &shown)
	if shown {
		t.Errorf("a command is shown though no token was issued")
	}

	// Only the refused token request's 403 is logged: the node page's and
	// the epochs' APIs answered.
	for _, e := range tab.Errors() {
		if !strings.Contains(e, "status of 403") || !strings.Contains(e, "/v1/node-tokens") {
			t.Errorf("page error: %s", e)
		}
	}
	t.Logf("screenshots in %s", shots)
}
