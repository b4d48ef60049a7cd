package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// unauthorizedBody is what the test registries answer with their 401s.
const unauthorizedBody = `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`

// tokenServer is a Bearer token realm: it hands out "regtoken-<n>" for
// the scopes asked, to anonymous requests unless loginRequired, and to
// Basic logins found in users (and POSTed OAuth2 refresh tokens equal to
// users["<identity>"]); other logins get a 401.
type tokenServer struct {
	*httptest.Server
	users         map[string]string // username → password
	loginRequired bool
	accessToken   bool          // answer access_token instead of token
	expiresIn     int           // 0: omitted
	hold          chan struct{} // when set, answers wait until it is closed

	mu       sync.Mutex
	n        int
	grants   map[string][]string // token → scopes
	requests []tokenRequest
}

// tokenRequest is what the realm saw of one token request.
type tokenRequest struct {
	method, service, authorization, refreshToken string
	scopes                                       []string
	refused                                      bool
}

func newTokenServer(t *testing.T, users map[string]string) *tokenServer {
	t.Helper()
	ts := &tokenServer{users: users, grants: map[string][]string{}}
	ts.Server = httptest.NewServer(ts)
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, hasLogin := r.BasicAuth()
	refused := hasLogin && (ts.users[user] == "" || ts.users[user] != pass) || !hasLogin && ts.loginRequired
	seen := tokenRequest{method: r.Method, service: r.URL.Query().Get("service"),
		authorization: r.Header.Get("Authorization"), scopes: r.URL.Query()["scope"], refused: refused}
	if r.Method == http.MethodPost { // OAuth2: an identity token for an access token
		_ = r.ParseForm()
		seen.service, seen.scopes = r.PostForm.Get("service"), strings.Fields(r.PostForm.Get("scope"))
		seen.refreshToken = r.PostForm.Get("refresh_token")
		refused = r.PostForm.Get("grant_type") != "refresh_token" || ts.users["<identity>"] != seen.refreshToken
		seen.refused = refused
	}
	ts.mu.Lock()
	ts.requests = append(ts.requests, seen)
	ts.n++
	tok := fmt.Sprintf("regtoken-%d", ts.n)
	if !refused {
		ts.grants[tok] = seen.scopes
	}
	hold := ts.hold
	ts.mu.Unlock()
	if hold != nil {
		<-hold
	}
	if refused {
		http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
		return
	}
	answer := map[string]any{"token": tok}
	if ts.accessToken {
		answer = map[string]any{"access_token": tok}
	}
	if ts.expiresIn > 0 {
		answer["expires_in"] = ts.expiresIn
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(answer)
}

// grants reports whether tok was issued with scope.
func (ts *tokenServer) grantsScope(tok, scope string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, s := range ts.grants[tok] {
		if s == scope {
			return true
		}
	}
	return false
}

// revoke forgets every token issued so far.
func (ts *tokenServer) revoke() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	clear(ts.grants)
}

func (ts *tokenServer) seen() []tokenRequest {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]tokenRequest(nil), ts.requests...)
}

// testRegistry is a registry that demands a Bearer token from its realm,
// or Basic user:pass when realm is nil. Manifests answer "manifest of
// <repo>"; blob GETs redirect to cdn when set; PUTs echo their body.
type testRegistry struct {
	*httptest.Server
	realm      *tokenServer
	user, pass string

	mu  sync.Mutex
	cdn string // set by redirectTo
	// badTokenStatus (set by refuseBadTokens), when set, answers a Bearer
	// token the realm did not grant (or revoked) with this status, a
	// DENIED error and no challenge, as ECR Public does (400).
	badTokenStatus int
	requests       []registryRequest
}

// redirectTo makes blob GETs redirect to cdn.
func (reg *testRegistry) redirectTo(cdn string) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	reg.cdn = cdn
}

// refuseBadTokens makes unknown Bearer tokens get status (see badTokenStatus).
func (reg *testRegistry) refuseBadTokens(status int) {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	reg.badTokenStatus = status
}

// registryRequest is what the registry saw of one request.
type registryRequest struct {
	method, path, authorization, body string
	status                            int
}

func newTestRegistry(t *testing.T, realm *tokenServer, user, pass string) *testRegistry {
	t.Helper()
	reg := &testRegistry{realm: realm, user: user, pass: pass}
	reg.Server = httptest.NewServer(reg)
	t.Cleanup(reg.Close)
	return reg
}

// host is the registry's host:port, as the transport is given it.
func (reg *testRegistry) host() string { return strings.TrimPrefix(reg.URL, "http://") }

func (reg *testRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	repo, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/")
	scope := "repository:" + repo + ":pull"
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		scope += ",push"
	}
	status := http.StatusOK
	reg.mu.Lock()
	cdn, bad := reg.cdn, reg.badTokenStatus
	reg.mu.Unlock()
	if bad != 0 && strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") && !reg.authorized(r.Header.Get("Authorization"), scope) {
		reg.mu.Lock()
		reg.requests = append(reg.requests, registryRequest{method: r.Method, path: r.URL.Path,
			authorization: r.Header.Get("Authorization"), status: bad})
		reg.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(bad)
		_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"Your Authorization Token is invalid."}]}`)
		return
	}
	if !reg.authorized(r.Header.Get("Authorization"), scope) {
		status = http.StatusUnauthorized
		if reg.realm != nil {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="%s",scope="%s"`, reg.realm.URL, reg.host(), scope))
		} else {
			w.Header().Set("WWW-Authenticate", `Basic realm="test registry"`)
		}
	}
	reg.mu.Lock()
	reg.requests = append(reg.requests, registryRequest{method: r.Method, path: r.URL.Path,
		authorization: r.Header.Get("Authorization"), body: string(body), status: status})
	reg.mu.Unlock()
	switch {
	case status != http.StatusOK:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, unauthorizedBody)
	case cdn != "" && strings.Contains(r.URL.Path, "/blobs/"):
		http.Redirect(w, r, cdn+r.URL.Path, http.StatusTemporaryRedirect)
	case r.Method == http.MethodPut:
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	default:
		_, _ = io.WriteString(w, "manifest of "+repo)
	}
}

func (reg *testRegistry) authorized(header, scope string) bool {
	if reg.realm == nil {
		return header == "Basic "+b64(reg.user+":"+reg.pass)
	}
	tok, ok := strings.CutPrefix(header, "Bearer ")
	return ok && reg.realm.grantsScope(tok, scope)
}

func (reg *testRegistry) seen() []registryRequest {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	return append([]registryRequest(nil), reg.requests...)
}

// unauthorizedCount counts the 401s the registry answered.
func (reg *testRegistry) unauthorizedCount() int {
	n := 0
	for _, r := range reg.seen() {
		if r.status == http.StatusUnauthorized {
			n++
		}
	}
	return n
}

// noAuthCDN stands for S3 or a CDN: it fails the test when a request
// carries Authorization, and answers "blob bytes" otherwise.
func noAuthCDN(t *testing.T) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("redirect target got Authorization %q", a)
			http.Error(w, "Only one auth mechanism allowed", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "blob bytes")
	}))
	t.Cleanup(s.Close)
	return s
}

// ownTransport is a base transport of the test's own (see newTransportEnv).
func ownTransport(t *testing.T) *http.Transport {
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	return base
}

// writeDockerConfig writes a Docker config.json with content into a
// temporary directory and returns its path.
func writeDockerConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// authsConfig is a config.json with one "auths" login for host.
func authsConfig(host, user, pass string) string {
	return fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))
}

// get sends a GET for path to the registry through client and returns
// the status and body.
func get(t *testing.T, client *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// secretFreeLogs returns a debug logger into a buffer that, at cleanup,
// must contain none of secrets.
func secretFreeLogs(t *testing.T, secrets ...string) (*slog.Logger, *lockedBuffer) {
	t.Helper()
	buf := &lockedBuffer{}
	t.Cleanup(func() {
		out := buf.String()
		for _, s := range append(secrets, "regtoken-") {
			if strings.Contains(out, s) {
				t.Errorf("log output contains secret %q:\n%s", s, out)
			}
		}
	})
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}
