package main

import (
	"net/http"
	"strings"
	"testing"
)

// readyz asks the mirror's /readyz.
func readyz(t *testing.T, m *mirror) (int, string) {
	t.Helper()
	resp, body, err := get(t, http.MethodGet, m.URL+"/readyz", nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// Readiness means "can serve". An edge mirror restarted with ECR out of
// reach holds no token: with STALE_IF_ERROR and content in its cache it
// serves that content, so it is ready, degraded, saying which checks
// fail; with nothing cached, or without STALE_IF_ERROR, it is not.
// ecr_mirror_upstream_reachable says whether ECR answered last.
func TestReadinessOffline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		env    map[string]string
		empty  bool // the restarted mirror gets a new, empty cache
		status int
		want   []string // in the body
		not    []string // not in the body
		stale  bool     // the tag is served stale
	}{
		{name: "stale, cached", env: map[string]string{"STALE_IF_ERROR": "1h"}, status: 200, stale: true,
			want: []string{"degraded", "failing: ECR token, ECR reachable", "ECR token: FAILING", "ECR reachable: FAILING", "cache directory writable: ok", "cache index open: ok"}},
		{name: "stale, empty cache", env: map[string]string{"STALE_IF_ERROR": "1h"}, empty: true, status: 503,
			want: []string{"cached content: NOT READY", "ECR token: FAILING"}, not: []string{"degraded"}},
		{name: "no stale", status: 503,
			want: []string{"ECR token: NOT READY", "ECR reachable: FAILING"}, not: []string{"degraded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newEdgeSite(t, tt.env)
			if code, body := readyz(t, s.m); code != 200 || strings.Contains(body, "degraded") || !strings.Contains(body, "ECR reachable: ok") {
				t.Fatalf("/readyz online: %d %q", code, body)
			}
			if n := scrape(t, s.m.URL+"/metrics")["ecr_mirror_upstream_reachable"]; n != 1 {
				t.Fatalf("ecr_mirror_upstream_reachable online = %v, want 1", n)
			}
			s.m.Stop()
			s.fake.SetDown(true)
			if tt.empty {
				s.dir = t.TempDir()
			}
			s.start(t, tt.env)

			code, body := readyz(t, s.m)
			if code != tt.status {
				t.Fatalf("/readyz offline: %d %q, want %d", code, body, tt.status)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("/readyz offline %q lacks %q", body, w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(body, n) {
					t.Errorf("/readyz offline %q has %q", body, n)
				}
			}
			if n := scrape(t, s.m.URL+"/metrics")["ecr_mirror_upstream_reachable"]; n != 0 {
				t.Errorf("ecr_mirror_upstream_reachable offline = %v, want 0", n)
			}
			if tt.stale {
				resp, body := s.tag(t, http.MethodGet, "v1", staleAccept)
				s.wantStale(t, http.MethodGet, resp, []byte(body))
			}
		})
	}
}

// A mirror holding a token whose registry requests fail (ECR down while
// the token is still valid) reports ECR unreachable once it has tried:
// with STALE_IF_ERROR it is ready, degraded; without it the token still
// makes it ready, as before. When ECR answers again the gauge goes back
// to 1 and the degradation ends.
func TestReadinessWhenRequestsFail(t *testing.T) {
	t.Parallel()
	for _, stale := range []bool{true, false} {
		name := map[bool]string{true: "stale", false: "no stale"}[stale]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{}
			if stale {
				env["STALE_IF_ERROR"] = "1h"
			}
			s := newEdgeSite(t, env)
			s.fake.SetDown(true)
			s.tag(t, http.MethodGet, "v1", staleAccept) // the attempt that fails
			code, body := readyz(t, s.m)
			if code != 200 || !strings.Contains(body, "ECR reachable: FAILING") || !strings.Contains(body, "ECR token: ok") ||
				strings.Contains(body, "degraded") != stale {
				t.Fatalf("/readyz with ECR down and a valid token: %d %q (degraded expected: %v)", code, body, stale)
			}
			if n := scrape(t, s.m.URL+"/metrics")["ecr_mirror_upstream_reachable"]; n != 0 {
				t.Errorf("ecr_mirror_upstream_reachable = %v with ECR down, want 0", n)
			}
			s.fake.SetDown(false)
			if resp, body := s.tag(t, http.MethodGet, "v1", staleAccept); resp.StatusCode != 200 || resp.Header.Get("Warning") != "" {
				t.Fatalf("tag with ECR back: %d %q %s", resp.StatusCode, resp.Header.Get("Warning"), body)
			}
			if code, body := readyz(t, s.m); code != 200 || strings.Contains(body, "degraded") || !strings.Contains(body, "ECR reachable: ok") {
				t.Fatalf("/readyz with ECR back: %d %q", code, body)
			}
			if n := scrape(t, s.m.URL+"/metrics")["ecr_mirror_upstream_reachable"]; n != 1 {
				t.Errorf("ecr_mirror_upstream_reachable = %v with ECR back, want 1", n)
			}
		})
	}
}
