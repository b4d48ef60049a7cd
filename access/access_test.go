package access

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const blobPath = "/blobs/sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// logBuffer collects log output from concurrent requests.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// htpasswdLines returns user:bcrypt lines at MinCost, sorted by user.
func htpasswdLines(t testing.TB, users map[string]string) string {
	t.Helper()
	var lines []string
	for u, pw := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, u+":"+string(h))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// replaceFile writes data to path the way operators (and Kubernetes)
// should: a new file renamed into place.
func replaceFile(t testing.TB, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// fixture is a Policy in front of a handler that records what got through.
type fixture struct {
	policy  *Policy
	handler http.Handler
	logs    *logBuffer
	file    string
	calls   atomic.Int64 // compare calls
	passed  atomic.Int64 // requests that reached next
	sawAuth atomic.Bool  // next saw an Authorization header
}

func newFixture(t testing.TB, users map[string]string, cfg Config) *fixture {
	t.Helper()
	f := &fixture{logs: &logBuffer{}}
	if users != nil {
		f.file = filepath.Join(t.TempDir(), "htpasswd")
		replaceFile(t, f.file, "# mirror users\n\n"+htpasswdLines(t, users))
		cfg.HtpasswdFile = f.file
	}
	log := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if p.users() != nil {
		p.users().compare = func(hash, pw []byte) error {
			f.calls.Add(1)
			return bcrypt.CompareHashAndPassword(hash, pw)
		}
	}
	f.policy = p
	f.handler = p.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.passed.Add(1)
		if r.Header.Get("Authorization") != "" {
			f.sawAuth.Store(true)
		}
		w.Header().Set("X-User", User(r.Context()))
		w.Header().Set("X-Query", r.URL.RawQuery)
		w.WriteHeader(http.StatusTeapot)
	}))
	return f
}

type req struct {
	method, path string
	user, pw     string // no Authorization header when both are empty
	remote       string // default 192.0.2.1:40000
}

func (f *fixture) do(q req) *httptest.ResponseRecorder {
	r := httptest.NewRequest(q.method, q.path, nil)
	r.RemoteAddr = "192.0.2.1:40000"
	if q.remote != "" {
		r.RemoteAddr = q.remote
	}
	if q.user != "" || q.pw != "" {
		r.SetBasicAuth(q.user, q.pw)
	}
	w := httptest.NewRecorder()
	f.handler.ServeHTTP(w, r)
	return w
}

// errorCode returns the first OCI error code of a response body.
func errorCode(t testing.TB, w *httptest.ResponseRecorder) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string }
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("status %d: not an OCI error body: %q", w.Code, w.Body.String())
	}
	return body.Errors[0].Code
}

// check asserts a response: 418 means the request reached the handler.
func check(t *testing.T, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d; body %q", w.Code, status, w.Body.String())
	}
	if code != "" {
		if got := errorCode(t, w); got != code {
			t.Fatalf("code %s, want %s", got, code)
		}
	}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") != `Basic realm="ecr-mirror"` {
		t.Fatalf("WWW-Authenticate %q", w.Header().Get("WWW-Authenticate"))
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"alice": "wonderland", "ci-bot": "s3cret:with:colons"}, Config{})
	tests := []struct {
		name   string
		req    req
		status int
		code   string
		user   string
	}{
		{"no credentials", req{method: "GET", path: "/v2/"}, 401, "UNAUTHORIZED", ""},
		{"no credentials on a manifest", req{method: "GET", path: "/v2/team/app/manifests/latest"}, 401, "UNAUTHORIZED", ""},
		{"wrong password", req{method: "GET", path: "/v2/", user: "alice", pw: "nope"}, 401, "UNAUTHORIZED", ""},
		{"unknown user", req{method: "GET", path: "/v2/", user: "mallory", pw: "wonderland"}, 401, "UNAUTHORIZED", ""},
		{"another user's password", req{method: "GET", path: "/v2/", user: "ci-bot", pw: "wonderland"}, 401, "UNAUTHORIZED", ""},
		{"login probe", req{method: "GET", path: "/v2/", user: "alice", pw: "wonderland"}, 418, "", "alice"},
		{"pull", req{method: "GET", path: "/v2/team/app/manifests/latest", user: "alice", pw: "wonderland"}, 418, "", "alice"},
		{"password with colons", req{method: "HEAD", path: "/v2/team/app" + blobPath, user: "ci-bot", pw: "s3cret:with:colons"}, 418, "", "ci-bot"},
		{"push without rules", req{method: "POST", path: "/v2/team/app/blobs/uploads/", user: "ci-bot", pw: "s3cret:with:colons"}, 418, "", "ci-bot"},
		{"probe outside /v2", req{method: "GET", path: "/healthz"}, 418, "", ""},
		{"metrics outside /v2", req{method: "GET", path: "/metrics"}, 418, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(tt.req)
			check(t, w, tt.status, tt.code)
			if w.Code == 418 && w.Header().Get("X-User") != tt.user {
				t.Fatalf("User = %q, want %q", w.Header().Get("X-User"), tt.user)
			}
			if w.Code != 418 && w.Header().Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Fatal("denial without Docker-Distribution-API-Version")
			}
		})
	}
	if f.sawAuth.Load() {
		t.Fatal("the Authorization header reached the handler")
	}

	// HEAD gets the status and challenge without a body.
	w := f.do(req{method: "HEAD", path: "/v2/team/app/manifests/latest"})
	check(t, w, 401, "")
	if w.Body.Len() != 0 {
		t.Fatalf("HEAD body %q", w.Body.String())
	}
}

func TestNetworks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, Config{AllowNetworks: []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8"),
	}})
	tests := []struct {
		name   string
		remote string
		path   string
		status int
	}{
		{"inside", "10.1.2.3:5000", "/v2/team/app/manifests/latest", 418},
		{"inside, IPv6", "[fd12::1]:5000", "/v2/team/app/manifests/latest", 418},
		{"inside, IPv4-mapped IPv6", "[::ffff:10.1.2.3]:5000", "/v2/team/app/manifests/latest", 418},
		{"inside, bare address", "10.9.9.9", "/v2/", 418},
		{"outside", "192.168.1.1:5000", "/v2/team/app/manifests/latest", 403},
		{"outside, login probe", "192.168.1.1:5000", "/v2/", 403},
		{"outside, IPv6", "[2001:db8::1]:5000", "/v2/team/app/manifests/latest", 403},
		{"unparseable address", "pipe", "/v2/", 403},
		{"outside, probe outside /v2", "192.168.1.1:5000", "/readyz", 403},
		{"outside, metrics", "192.168.1.1:5000", "/metrics", 403},
		{"outside, any other path", "192.168.1.1:5000", "/favicon.ico", 403},
		{"inside, probe", "10.1.2.3:5000", "/healthz", 418},
		{"inside, metrics", "10.1.2.3:5000", "/metrics", 418},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(req{method: "GET", path: tt.path, remote: tt.remote})
			code := ""
			if tt.status == 403 {
				code = "DENIED"
			}
			check(t, w, tt.status, code)
		})
	}
}

func TestRules(t *testing.T) {
	t.Parallel()
	rules, err := ParseRules("pull:alice:team; push:ci-bot:team/,infra/\npull:10.0.0.0/8:docker-hub/ # build farm\npush:fd00::/8:scratch")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"alice": "a-pw", "ci-bot": "c-pw", "bob": "b-pw"}
	f := newFixture(t, users, Config{Rules: rules})
	tests := []struct {
		name         string
		user         string
		method, path string
		remote       string
		status       int
	}{
		{"user pulls under her prefix", "alice", "GET", "/v2/team/app/manifests/latest", "", 418},
		{"prefix itself is a repository", "alice", "GET", "/v2/team/manifests/latest", "", 418},
		{"nested", "alice", "HEAD", "/v2/team/a/b/c" + blobPath, "", 418},
		{"tags", "alice", "GET", "/v2/team/app/tags/list", "", 418},
		{"component boundary", "alice", "GET", "/v2/teamx/app/manifests/latest", "", 403},
		{"other repository", "alice", "GET", "/v2/infra/base/manifests/latest", "", 403},
		{"pull rule refuses PUT", "alice", "PUT", "/v2/team/app/manifests/v1", "", 403},
		{"pull rule refuses upload start", "alice", "POST", "/v2/team/app/blobs/uploads/", "", 403},
		{"pull rule refuses upload GET", "alice", "GET", "/v2/team/app/blobs/uploads/abc", "", 403},
		{"pull rule refuses DELETE", "alice", "DELETE", "/v2/team/app/manifests/v1", "", 403},
		{"catalog needs *", "alice", "GET", "/v2/_catalog", "", 403},
		{"push rule pushes", "ci-bot", "POST", "/v2/team/app/blobs/uploads/", "", 418},
		{"push rule patches", "ci-bot", "PATCH", "/v2/infra/blobs/uploads/abc", "", 418},
		{"push rule puts manifests", "ci-bot", "PUT", "/v2/infra/base/manifests/v1", "", 418},
		{"push includes pull", "ci-bot", "GET", "/v2/team/app/manifests/latest", "", 418},
		{"push boundary", "ci-bot", "PUT", "/v2/infrastructure/manifests/v1", "", 403},
		{"user without rules", "bob", "GET", "/v2/team/app/manifests/latest", "", 403},
		{"user without rules, login probe", "bob", "GET", "/v2/", "", 418},
		{"network rule", "bob", "GET", "/v2/docker-hub/library/nginx/manifests/latest", "10.1.2.3:1", 418},
		{"network rule, other network", "bob", "GET", "/v2/docker-hub/library/nginx/manifests/latest", "192.168.0.1:1", 403},
		{"network rule is pull only", "bob", "PUT", "/v2/docker-hub/library/nginx/manifests/latest", "10.1.2.3:1", 403},
		{"rules see the client's name, not the namespace", "bob", "GET", "/v2/library/nginx/manifests/latest?ns=docker.io", "10.1.2.3:1", 403},
		{"IPv6 network push", "bob", "PUT", "/v2/scratch/x/manifests/v1", "[fd00::7]:1", 418},
		{"IPv6 network boundary", "bob", "PUT", "/v2/scratch2/manifests/v1", "[fd00::7]:1", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := f.do(req{method: tt.method, path: tt.path, user: tt.user, pw: users[tt.user], remote: tt.remote})
			code := ""
			if tt.status == 403 {
				code = "DENIED"
			}
			check(t, w, tt.status, code)
		})
	}

	t.Run("credentials come first", func(t *testing.T) {
		check(t, f.do(req{method: "GET", path: "/v2/team/app/manifests/latest"}), 401, "UNAUTHORIZED")
	})
	t.Run("invalid name", func(t *testing.T) {
		check(t, f.do(req{method: "GET", path: "/v2/Team/manifests/latest", user: "alice", pw: "a-pw"}), 400, "NAME_INVALID")
	})
}

func TestRulesWithoutAuthentication(t *testing.T) {
	t.Parallel()
	rules, err := ParseRules("pull:*:*;push:10.0.0.0/8,192.0.2.7:*")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, nil, Config{Rules: rules})
	tests := []struct {
		name, method, path, remote string
		status                     int
	}{
		{"anyone pulls", "GET", "/v2/any/thing/manifests/latest", "198.51.100.1:1", 418},
		{"anyone lists the catalog", "GET", "/v2/_catalog", "198.51.100.1:1", 418},
		{"outsider may not push", "PUT", "/v2/any/thing/manifests/latest", "198.51.100.1:1", 403},
		{"network pushes", "PUT", "/v2/any/thing/manifests/latest", "10.0.0.1:1", 418},
		{"single address pushes", "POST", "/v2/any/blobs/uploads/", "192.0.2.7:1", 418},
		{"its neighbour does not", "POST", "/v2/any/blobs/uploads/", "192.0.2.8:1", 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, f.do(req{method: tt.method, path: tt.path, remote: tt.remote}), tt.status, "")
		})
	}
}

func TestParseRules(t *testing.T) {
	t.Parallel()
	good := []struct {
		text string
		want string // the rules' String forms, joined by "; "
	}{
		{"", ""},
		{"  # nothing\n\n", ""},
		{"pull:*:*", "pull:*:*"},
		{"PUSH : ci-bot , release : team/ , infra", "push:ci-bot,release:team,infra"},
		{"pull:*:*;push:ci-bot:team/,infra/;pull:10.0.0.0/8:docker-hub/", "pull:*:*; push:ci-bot:team,infra; pull:10.0.0.0/8:docker-hub"},
		{"pull:10.1.2.3/8,192.0.2.1:x", "pull:10.0.0.0/8,192.0.2.1/32:x"},
		{"push:fd00::/8,2001:db8::1:scratch", "push:fd00::/8,2001:db8::1/128:scratch"},
		{"# rules\npull:*:*   # everyone\n;;\npush:ci@corp.example:a/b", "pull:*:*; push:ci@corp.example:a/b"},
	}
	for _, tt := range good {
		rules, err := ParseRules(tt.text)
		if err != nil {
			t.Errorf("ParseRules(%q): %v", tt.text, err)
			continue
		}
		var got []string
		for _, r := range rules {
			got = append(got, r.String())
		}
		if s := strings.Join(got, "; "); s != tt.want {
			t.Errorf("ParseRules(%q) = %q, want %q", tt.text, s, tt.want)
		}
		// String writes what ParseRules reads.
		again, err := ParseRules(strings.Join(got, ";"))
		if err != nil || len(again) != len(rules) {
			t.Errorf("reparse of %q: %v", got, err)
		}
	}

	bad := []struct {
		text string
		want []string // substrings of the error
	}{
		{"pull:*", []string{`rule 1 ("pull:*")`, "want level:subjects:repositories"}},
		{"pull", []string{"want level:subjects:repositories"}},
		{"read:*:*", []string{`level "read"`, "pull or push"}},
		{"pull:10.0.0.0/33:*", []string{`subject "10.0.0.0/33"`, "CIDR"}},
		{"pull:fe80::1%eth0:*", []string{`subject "fe80::1%eth0"`}},
		{"pull::*", []string{`subject ""`}},
		{"pull:alice,:*", []string{`subject ""`}},
		{"pull:a b:*", []string{`subject "a b"`}},
		{"pull:*:", []string{`repository prefix ""`}},
		{"pull:*:Team", []string{`repository prefix "Team"`}},
		{"pull:*:team//app", []string{`repository prefix "team//app"`}},
		{"pull:*:*;push:ci-bot:", []string{`rule 2 ("push:ci-bot:")`, `repository prefix ""`}},
		{"pull:*:*\n# c\npull:*:*;pull:x", []string{`rule 3`}},
	}
	for _, tt := range bad {
		_, err := ParseRules(tt.text)
		if err == nil {
			t.Errorf("ParseRules(%q) succeeded", tt.text)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseRules(%q) = %q, want it to mention %q", tt.text, err, w)
			}
		}
	}
}

func FuzzParseRules(f *testing.F) {
	f.Add("pull:*:*;push:ci-bot:team/,infra/;pull:10.0.0.0/8:docker-hub/")
	f.Add("push:fd00::/8,2001:db8::1:scratch # c\npull:a:b")
	f.Fuzz(func(t *testing.T, text string) {
		rules, err := ParseRules(text)
		if err != nil {
			return
		}
		for _, r := range rules {
			again, err := ParseRules(r.String())
			if err != nil || len(again) != 1 || again[0].String() != r.String() {
				t.Fatalf("%q: %q does not reparse: %v", text, r.String(), err)
			}
		}
	})
}

func TestNewRefusesBadConfig(t *testing.T) {
	t.Parallel()
	users := func(rule string) Config {
		r, err := ParseRules(rule)
		if err != nil {
			t.Fatal(err)
		}
		return Config{Rules: r}
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"users without htpasswd", users("pull:alice:*"), "no htpasswd file"},
		{"missing file", Config{HtpasswdFile: filepath.Join(t.TempDir(), "nope")}, "nope"},
		{"rule without level", Config{Rules: []Rule{{Everyone: true, Repositories: []string{"*"}}}}, "level"},
		{"rule without subject", Config{Rules: []Rule{{Level: Pull, Repositories: []string{"*"}}}}, "no subject"},
		{"rule without repository", Config{Rules: []Rule{{Level: Pull, Everyone: true}}}, "no repository"},
		{"invalid network", Config{AllowNetworks: []netip.Prefix{{}}}, "network 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestHtpasswdRefusesOtherHashes(t *testing.T) {
	t.Parallel()
	good := strings.TrimSpace(htpasswdLines(t, map[string]string{"alice": "pw"}))
	tests := []struct {
		name string
		line string
		want string
	}{
		{"MD5", "bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", `user "bob": MD5`},
		{"SHA-1", "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", `user "bob": SHA-1`},
		{"crypt", "bob:rqXexS6ZhobKA", `user "bob": crypt`},
		{"plain", "bob:password123", `user "bob": plain-text`},
		{"MD5-crypt", "bob:$1$saltsalt$qjXMvbEw8oaL.CzflDugX/", `user "bob": MD5-crypt`},
		{"SHA-512-crypt", "bob:$6$salt$IxDD3jeSOb5eB1CX5LBsqZFVkJdido3OUILO5Ifz5iwMuTS4XMS130MTSuDDl3aCI6WouIL9AjRbLCelDCy.g.", `user "bob": SHA-crypt`},
		{"old bcrypt variant", "bob:$2x$05$abcdefghijklmnopqrstuu5Bn1MIzRBVzqkHLgr6v9YFbsaUCbfzK", `user "bob": unsupported bcrypt variant`},
		{"truncated bcrypt", "bob:" + strings.TrimPrefix(good, "alice:")[:40], `user "bob": malformed bcrypt`},
		{"empty hash", "bob:", `user "bob": empty password hash`},
		{"no colon", "bob", "want user:hash"},
		{"no user", ":" + strings.TrimPrefix(good, "alice:"), "empty user name"},
		{"duplicate", good, `user "alice" again (first on line 2)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "htpasswd")
			// Line 1 is a comment, line 2 alice, line 3 blank, line 4 the bad one.
			replaceFile(t, path, "# users\n"+good+"\n\n"+tt.line+"\n")
			_, err := New(Config{HtpasswdFile: path}, nil)
			if err == nil {
				t.Fatal("New accepted the file")
			}
			msg := err.Error()
			for _, want := range []string{path, "line 4", tt.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if _, hash, _ := strings.Cut(tt.line, ":"); len(hash) > 4 && strings.Contains(msg, hash) {
				t.Errorf("error %q shows the hash", msg)
			}
		})
	}
}

func TestHtpasswdBcryptVariants(t *testing.T) {
	t.Parallel()
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	rest := string(h[4:])
	path := filepath.Join(t.TempDir(), "htpasswd")
	replaceFile(t, path, "a:$2a$"+rest+"\r\nb:$2b$"+rest+"\r\ny:$2y$"+rest+"\r\n")
	p, err := New(Config{HtpasswdFile: path}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"a", "b", "y"} {
		if !p.users().verify(u, "pw") {
			t.Errorf("user %s ($2%s$) does not verify", u, u)
		}
		if p.users().verify(u, "px") {
			t.Errorf("user %s verifies a wrong password", u)
		}
	}
}

func TestHtpasswdReload(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"alice": "a-pw"}, Config{})
	bob := req{method: "GET", path: "/v2/x/manifests/latest", user: "bob", pw: "b-pw"}

	// Checked at most every reloadEvery: a change is not seen at once.
	replaceFile(t, f.file, htpasswdLines(t, map[string]string{"alice": "a-pw", "bob": "b-pw"}))
	check(t, f.do(bob), 401, "UNAUTHORIZED")

	f.policy.users().reloadEvery = 0
	f.policy.users().nextCheck.Store(0)
	check(t, f.do(bob), 418, "")
	if !strings.Contains(f.logs.String(), "htpasswd file reloaded") {
		t.Errorf("no reload log line:\n%s", f.logs)
	}

	// A broken file keeps the previous users, and says so once.
	replaceFile(t, f.file, "bob:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n")
	for range 3 {
		check(t, f.do(bob), 418, "")
	}
	if n := strings.Count(f.logs.String(), "does not load"); n != 1 {
		t.Errorf("%d warnings about the broken file, want 1:\n%s", n, f.logs)
	}

	// So does a missing one.
	if err := os.Remove(f.file); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(bob), 418, "")

	// Removing a user, or changing a password, takes effect even for
	// credentials verified before.
	replaceFile(t, f.file, htpasswdLines(t, map[string]string{"alice": "new-pw"}))
	check(t, f.do(bob), 401, "UNAUTHORIZED")
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "a-pw"}), 401, "UNAUTHORIZED")
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "new-pw"}), 418, "")

	// An in-place rewrite (same inode) is noticed too.
	data := htpasswdLines(t, map[string]string{"alice": "new-pw", "carol": "c-pw"})
	if err := os.WriteFile(f.file, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(req{method: "GET", path: "/v2/", user: "carol", pw: "c-pw"}), 418, "")
}

func TestVerificationCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"ci-bot": "c-pw"}, Config{})

	parallel := func(pw string, want int) {
		t.Helper()
		var wg sync.WaitGroup
		codes := make([]int, 200)
		for i := range codes {
			wg.Go(func() {
				codes[i] = f.do(req{method: "GET", path: fmt.Sprintf("/v2/team/app/blobs/sha256:%064x", i), user: "ci-bot", pw: pw}).Code
			})
		}
		wg.Wait()
		for i, c := range codes {
			if c != want {
				t.Fatalf("request %d: status %d, want %d", i, c, want)
			}
		}
	}

	start := time.Now()
	parallel("c-pw", 418)
	if n := f.calls.Load(); n > 3 {
		t.Errorf("bcrypt ran %d times for 200 parallel requests with one password", n)
	}
	t.Logf("200 parallel requests: %v, %d bcrypt runs", time.Since(start), f.calls.Load())

	// Cached now: no bcrypt at all.
	before := f.calls.Load()
	parallel("c-pw", 418)
	if n := f.calls.Load() - before; n != 0 {
		t.Errorf("bcrypt ran %d times for cached credentials", n)
	}

	// Failures are never cached as success; a repeated wrong password is
	// remembered as wrong and costs no second bcrypt run, while each new
	// one costs a run.
	before = f.calls.Load()
	for range 3 {
		check(t, f.do(req{method: "GET", path: "/v2/", user: "ci-bot", pw: "c-pw "}), 401, "UNAUTHORIZED")
	}
	if n := f.calls.Load() - before; n != 1 {
		t.Errorf("the same wrong password 3 times ran bcrypt %d times, want 1", n)
	}
	before = f.calls.Load()
	for i := range 3 {
		check(t, f.do(req{method: "GET", path: "/v2/", user: "ci-bot", pw: fmt.Sprint("c-pw", i)}), 401, "UNAUTHORIZED")
	}
	if n := f.calls.Load() - before; n != 3 {
		t.Errorf("3 different wrong passwords ran bcrypt %d times, want 3", n)
	}
	// Unknown users also cost a bcrypt run, so they cannot be told apart
	// from known ones by timing.
	before = f.calls.Load()
	check(t, f.do(req{method: "GET", path: "/v2/", user: "nobody", pw: "c-pw"}), 401, "UNAUTHORIZED")
	if n := f.calls.Load() - before; n != 1 {
		t.Errorf("an unknown user ran bcrypt %d times, want 1", n)
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	rules, err := ParseRules("pull:*:*;push:ci-bot:team")
	if err != nil {
		t.Fatal(err)
	}
	const secret = "Tr0ub4dor&3-horse"
	f := newFixture(t, map[string]string{"alice": secret, "ci-bot": secret + "!"}, Config{
		Rules:         rules,
		AllowNetworks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
	})
	f.policy.users().reloadEvery = 0 // log reloads too
	for _, q := range []req{
		{method: "GET", path: "/v2/"},
		{method: "GET", path: "/v2/team/app/manifests/latest", user: "alice", pw: secret},
		{method: "GET", path: "/v2/team/app/manifests/latest", user: "alice", pw: secret + "x"},
		{method: "PUT", path: "/v2/team/app/manifests/latest", user: "alice", pw: secret},
		{method: "PUT", path: "/v2/team/app/manifests/latest", user: "ci-bot", pw: secret + "!"},
		{method: "GET", path: "/v2/", user: "mallory", pw: secret},
		{method: "GET", path: "/v2/", user: "alice", pw: secret, remote: "203.0.113.9:1"},
	} {
		f.do(q)
	}
	logs := f.logs.String()
	for _, leak := range []string{
		secret,
		"Basic ",
		base64.StdEncoding.EncodeToString([]byte("alice:" + secret)),
		"$2a$",
	} {
		if strings.Contains(logs, leak) {
			t.Errorf("logs hold %q:\n%s", leak, logs)
		}
	}
	// Every denial is logged with what an operator needs.
	type line struct {
		Level, Msg, Client, User, Method, Path, Reason string
		Status                                         int
	}
	var denials []line
	for _, s := range strings.Split(strings.TrimSpace(logs), "\n") {
		var l line
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("log line %q: %v", s, err)
		}
		if l.Msg == "access denied" {
			denials = append(denials, l)
		}
	}
	want := []line{
		{"DEBUG", "access denied", "192.0.2.1:40000", "", "GET", "/v2/", "no credentials", 401},
		{"WARN", "access denied", "192.0.2.1:40000", "alice", "GET", "/v2/team/app/manifests/latest", "wrong password", 401},
		{"WARN", "access denied", "192.0.2.1:40000", "alice", "PUT", "/v2/team/app/manifests/latest", "no rule grants push", 403},
		{"WARN", "access denied", "192.0.2.1:40000", "mallory", "GET", "/v2/", "unknown user", 401},
		{"WARN", "access denied", "203.0.113.9:1", "", "GET", "/v2/", "client network not allowed", 403},
	}
	if !slices.Equal(denials, want) {
		t.Errorf("denials logged:\n%+v\nwant\n%+v", denials, want)
	}
}

func TestSummary(t *testing.T) {
	t.Parallel()
	off, err := New(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if off.Enabled() || !strings.HasPrefix(off.Summary(), "off") {
		t.Errorf("zero Config: Enabled %v, Summary %q", off.Enabled(), off.Summary())
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v2/team/app/manifests/v1", nil)
	req.Header.Set("Authorization", "Basic eDp5")
	off.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Auth", r.Header.Get("Authorization"))
	})).ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("X-Auth") != "Basic eDp5" {
		t.Errorf("a disabled policy changed the request: %d, Authorization %q", rec.Code, rec.Header().Get("X-Auth"))
	}

	rules, _ := ParseRules("pull:*:*;push:ci-bot:team/,infra/")
	f := newFixture(t, map[string]string{"alice": "a", "bob": "b", "ci-bot": "c"}, Config{
		AllowNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Rules:         rules,
	})
	got := f.policy.Summary()
	want := "htpasswd " + f.file + ": 3 users (bcrypt); networks: 10.0.0.0/8; rules: pull:*:*; push:ci-bot:team,infra"
	if got != want {
		t.Errorf("Summary\n got %q\nwant %q", got, want)
	}
	if strings.Contains(got, "$2") {
		t.Error("Summary shows a hash")
	}
	g := newFixture(t, map[string]string{"alice": "a"}, Config{})
	if s := g.policy.Summary(); !strings.Contains(s, "every authenticated user may pull and push") {
		t.Errorf("Summary without rules: %q", s)
	}
}

func TestReloadUnderLoad(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"alice": "a-pw"}, Config{})
	f.policy.users().reloadEvery = 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// alice is in every version of the file.
				if w := f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "a-pw"}); w.Code != 418 {
					t.Errorf("alice: status %d during reloads", w.Code)
					return
				}
			}
		})
	}
	for i := range 20 {
		replaceFile(t, f.file, htpasswdLines(t, map[string]string{"alice": "a-pw", fmt.Sprintf("user%d", i): "x"}))
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

// users is the htpasswd file of the Config in force.
func (p *Policy) users() *htpasswd { return p.cur.Load().users }
