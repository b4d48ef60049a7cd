package access

import (
	"net/url"
	"strings"
	"testing"
)

// A cross-repository mount reads its source: without pull on ?from= the
// mount is dropped before the request goes on, leaving a plain upload.
func TestMountNeedsPullOnSource(t *testing.T) {
	t.Parallel()
	rules, err := ParseRules("pull:alice:team-a/; push:alice:team-a/; pull:bob:team-b/; push:10.0.0.0/8:scratch")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{"alice": "a-pw", "bob": "b-pw"}
	f := newFixture(t, users, Config{Rules: rules})
	const dgst = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	const uploads = "/v2/team-a/stolen/blobs/uploads/"
	tests := []struct {
		name   string
		user   string
		remote string
		query  string
		status int
		code   string
		// wantQuery is the query that reaches the registry handler.
		wantQuery url.Values
	}{
		{name: "own repository", user: "alice", query: "mount=" + dgst + "&from=team-a/app",
			status: 418, wantQuery: url.Values{"mount": {dgst}, "from": {"team-a/app"}}},
		{name: "another team's repository", user: "alice", query: "mount=" + dgst + "&from=team-b/private",
			status: 418, wantQuery: url.Values{}},
		{name: "another team's, ns kept", user: "alice", query: "mount=" + dgst + "&from=team-b/private&ns=docker.io",
			status: 418, wantQuery: url.Values{"ns": {"docker.io"}}},
		{name: "rules see the name, not the namespace", user: "alice", query: "mount=" + dgst + "&from=team-a/app&ns=docker.io",
			status: 418, wantQuery: url.Values{"mount": {dgst}, "from": {"team-a/app"}, "ns": {"docker.io"}}},
		{name: "encoded key", user: "alice", query: "%6Dount=" + dgst + "&%66rom=team-b%2Fprivate",
			status: 418, wantQuery: url.Values{}},
		{name: "hidden behind a semicolon", user: "alice", query: "x=1;mount=" + dgst + "&from=team-b/private",
			status: 418, wantQuery: url.Values{}},
		{name: "mount without from", user: "alice", query: "mount=" + dgst,
			status: 418, wantQuery: url.Values{}},
		{name: "from without mount", user: "alice", query: "from=team-b/private",
			status: 418, wantQuery: url.Values{}},
		{name: "monolithic upload untouched", user: "alice", query: "digest=" + dgst,
			status: 418, wantQuery: url.Values{"digest": {dgst}}},
		{name: "invalid from", user: "alice", query: "mount=" + dgst + "&from=Team-B//x",
			status: 400, code: "NAME_INVALID"},
		{name: "two froms", user: "alice", query: "mount=" + dgst + "&from=team-a/app&from=team-b/private",
			status: 400, code: "NAME_INVALID"},
		{name: "two mounts", user: "alice", query: "mount=" + dgst + "&mount=" + dgst + "&from=team-a/app",
			status: 400, code: "DIGEST_INVALID"},
		{name: "push on target still needed", user: "bob", query: "mount=" + dgst + "&from=team-b/private",
			status: 403, code: "DENIED"},
		{name: "network subject, no pull on source", user: "bob", remote: "10.1.2.3:1", query: "mount=" + dgst + "&from=team-a/app",
			status: 418, wantQuery: url.Values{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := uploads + "?" + tt.query
			if tt.remote != "" {
				path = "/v2/scratch/x/blobs/uploads/?" + tt.query
			}
			w := f.do(req{method: "POST", path: path, user: tt.user, pw: users[tt.user], remote: tt.remote})
			check(t, w, tt.status, tt.code)
			if w.Code != 418 {
				return
			}
			got, err := url.ParseQuery(w.Header().Get("X-Query"))
			if err != nil {
				t.Fatal(err)
			}
			if got.Encode() != tt.wantQuery.Encode() {
				t.Fatalf("query passed on %q, want %q", got.Encode(), tt.wantQuery.Encode())
			}
		})
	}
	if logs := f.logs.String(); !strings.Contains(logs, "cross-repository mount dropped") || !strings.Contains(logs, `"from":"team-b/private"`) {
		t.Errorf("dropped mounts not logged:\n%s", logs)
	}
}

// Without rules every client may pull everything: mounts pass as sent.
func TestMountWithoutRules(t *testing.T) {
	t.Parallel()
	f := newFixture(t, map[string]string{"alice": "a-pw"}, Config{})
	q := "mount=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855&from=team-b/private"
	w := f.do(req{method: "POST", path: "/v2/team-a/x/blobs/uploads/?" + q, user: "alice", pw: "a-pw"})
	check(t, w, 418, "")
	if got := w.Header().Get("X-Query"); got != q {
		t.Fatalf("query %q, want %q", got, q)
	}
}
