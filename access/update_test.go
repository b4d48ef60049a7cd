package access

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Update puts new rules and networks in force for the requests that
// follow; a Config that does not validate leaves the one in force.
func TestUpdateSwapsRules(t *testing.T) {
	t.Parallel()
	rules := func(text string) []Rule {
		r, err := ParseRules(text)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	f := newFixture(t, nil, Config{Rules: rules("pull:*:team/")})
	pull := req{method: "GET", path: "/v2/team/app/manifests/v1"}
	check(t, f.do(pull), 418, "")

	if err := f.policy.Update(Config{Rules: rules("pull:*:other/")}); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(pull), 403, "DENIED")

	err := f.policy.Update(Config{Rules: rules("pull:*:team/; push:ci-bot:team/")})
	if err == nil || !strings.Contains(err.Error(), "no htpasswd file") {
		t.Fatalf("Update with a user and no htpasswd file: %v", err)
	}
	check(t, f.do(pull), 403, "DENIED") // still pull:*:other/

	if err := f.policy.Update(Config{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(pull), 403, "DENIED")
	check(t, f.do(req{method: "GET", path: "/v2/team/app/manifests/v1", remote: "10.1.2.3:1"}), 418, "")

	if err := f.policy.Update(Config{}); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(pull), 418, "")
	if f.policy.Enabled() {
		t.Fatal("a policy updated to the zero Config is still enabled")
	}
}

// A policy that started with access control off turns it on when
// updated with an htpasswd file, and keeps an address blocked after
// failed logins when the file is replaced by another.
func TestUpdateHtpasswdKeepsThrottle(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil, Config{})
	pull := req{method: "GET", path: "/v2/team/app/manifests/v1"}
	check(t, f.do(pull), 418, "")

	dir := t.TempDir()
	first, second := filepath.Join(dir, "first"), filepath.Join(dir, "second")
	lines := htpasswdLines(t, map[string]string{"alice": "a-pw"})
	replaceFile(t, first, lines)
	replaceFile(t, second, lines)
	clock := &fakeClock{}
	clock.advance(time.Hour)
	th := newThrottle(clock.now)
	th.limit, th.window, th.backoff = 2, time.Minute, time.Minute
	f.policy.throttle = th
	if err := f.policy.Update(Config{HtpasswdFile: first}); err != nil {
		t.Fatal(err)
	}
	check(t, f.do(pull), 401, "UNAUTHORIZED")
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "a-pw"}), 418, "")
	for i := range 2 {
		check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: fmt.Sprint("guess", i)}), 401, "UNAUTHORIZED")
	}
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "guess-again"}), 429, "TOOMANYREQUESTS")

	if err := f.policy.Update(Config{HtpasswdFile: second}); err != nil {
		t.Fatal(err)
	}
	if f.policy.users().path != second {
		t.Fatalf("htpasswd file %s in force, want %s", f.policy.users().path, second)
	}
	check(t, f.do(req{method: "GET", path: "/v2/", user: "alice", pw: "guess-more"}), 429, "TOOMANYREQUESTS")

	if err := f.policy.Update(Config{HtpasswdFile: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("Update with a missing htpasswd file succeeded")
	}
	if _, err := os.Stat(second); err != nil || f.policy.users().path != second {
		t.Fatalf("a failed Update replaced the htpasswd file in force: %s", f.policy.users().path)
	}
}
