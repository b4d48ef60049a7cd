package auth

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestPickChallenge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		values []string
		want   challenge
		ok     bool
	}{
		{name: "docker hub", values: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/alpine:pull"}}, ok: true},
		{name: "ecr public", values: []string{`Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://public.ecr.aws/token/", "service": "public.ecr.aws", "scope": "aws"}}, ok: true},
		{name: "unquoted, spaced, mixed case", values: []string{`bearer  Realm = https://r.example/t , Service=reg`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://r.example/t", "service": "reg"}}, ok: true},
		{name: "escapes and two scopes", values: []string{`Bearer realm="https://r/t",scope="repository:a:pull repository:b:pull",error="insufficient_scope \"x\""`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://r/t", "scope": "repository:a:pull repository:b:pull", "error": `insufficient_scope "x"`}}, ok: true},
		{name: "basic", values: []string{`Basic realm="Registry Realm"`},
			want: challenge{scheme: "basic", params: map[string]string{"realm": "Registry Realm"}}, ok: true},
		{name: "bearer preferred over basic", values: []string{`Basic realm="x"`, `Bearer realm="https://r/t"`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://r/t"}}, ok: true},
		{name: "two in one value", values: []string{`Basic realm="x", Bearer realm="https://r/t",service="s"`},
			want: challenge{scheme: "bearer", params: map[string]string{"realm": "https://r/t", "service": "s"}}, ok: true},
		{name: "bearer without realm", values: []string{`Bearer service="s"`}},
		{name: "unknown scheme", values: []string{`Negotiate abc`}},
		{name: "none"},
		{name: "garbage", values: []string{`=,,"realm`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := http.Header{"Www-Authenticate": tc.values}
			got, ok := pickChallenge(h)
			if ok != tc.ok || ok && (got.scheme != tc.want.scheme || !maps.Equal(got.params, tc.want.params)) {
				t.Errorf("pickChallenge(%q) = %+v, %v; want %+v, %v", tc.values, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParseChallenges(f *testing.F) {
	f.Add(`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull"`)
	f.Add(`Basic realm="a\"b", Bearer realm=x`)
	f.Add(`"\`)
	f.Fuzz(func(t *testing.T, v string) {
		for _, c := range parseChallenges(v) {
			if c.scheme == "" || c.scheme != strings.ToLower(c.scheme) {
				t.Errorf("parseChallenges(%q) gave scheme %q", v, c.scheme)
			}
		}
	})
}

func TestRequestScope(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ method, path, want string }{
		{http.MethodGet, "/v2/app/manifests/latest", "repository:app:pull"},
		{http.MethodHead, "/v2/team/app/blobs/sha256:abc", "repository:team/app:pull"},
		{http.MethodGet, "/v2/a/blobs/b/manifests/v1", "repository:a/blobs/b:pull"},
		{http.MethodGet, "/v2/library/alpine/tags/list", "repository:library/alpine:pull"},
		{http.MethodGet, "/v2/app/referrers/sha256:abc", "repository:app:pull"},
		{http.MethodPost, "/v2/app/blobs/uploads/", "repository:app:pull,push"},
		{http.MethodPut, "/v2/app/manifests/v1", "repository:app:pull,push"},
		{http.MethodGet, "/v2/", ""},
		{http.MethodGet, "/v2/_catalog", ""},
		{http.MethodGet, "/other/app/manifests/x", ""},
	} {
		req := &http.Request{Method: tc.method, URL: &url.URL{Path: tc.path}}
		if got := requestScope(req); got != tc.want {
			t.Errorf("requestScope(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
	if got := scopesOf("repository:a:pull", "repository:a:pull repository:b:pull"); strings.Join(got, " ") != "repository:a:pull repository:b:pull" {
		t.Errorf("scopesOf merged to %q", got)
	}
}

func TestMayCarryLogin(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{
		"https://auth.docker.io/token":  true,
		"http://127.0.0.1:5000/token":   true,
		"http://[::1]:5000/token":       true,
		"http://localhost/token":        true,
		"http://auth.example/token":     false,
		"http://10.0.0.1/token":         false,
		"http://169.254.169.254/latest": false,
	} {
		u, err := parseRealm(raw)
		if err != nil {
			t.Fatalf("parseRealm(%q): %v", raw, err)
		}
		if got := mayCarryLogin(u); got != want {
			t.Errorf("mayCarryLogin(%s) = %v, want %v", raw, got, want)
		}
	}
	for _, bad := range []string{"", "/token", "ftp://r/t", "https://", "://x"} {
		if _, err := parseRealm(bad); err == nil {
			t.Errorf("parseRealm(%q) accepted it", bad)
		}
	}
}

func TestCredentialNeverPrintsSecret(t *testing.T) {
	t.Parallel()
	c := newCredential("Bearer", "tok-s3cret", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	type holder struct {
		c  credential
		pc *credential
	}
	h := holder{c: c, pc: &c}
	for _, v := range []any{c, &c, h, &h, []credential{c}, map[string]credential{"k": c}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, "s3cret") || strings.Contains(out, "746f6b2d") {
				t.Errorf("fmt %s leaks the credential: %s", verb, out)
			}
		}
	}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "cred", c, "holder", h)
	if strings.Contains(b.String(), "s3cret") {
		t.Errorf("slog leaks the credential: %s", b.String())
	}
	if !strings.Contains(fmt.Sprint(c), "2030-01-01") {
		t.Errorf("fmt.Sprint(credential) = %q, want its expiry", fmt.Sprint(c))
	}
}
