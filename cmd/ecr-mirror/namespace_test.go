package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// One mirror serves ECR repositories by name, ECR pull-through-cache
// namespaces by containerd's ?ns=, and a Docker Hub listener for the
// Docker daemon's registry-mirrors; the cache is shared between names.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(64<<10, 2)
	hello, blobs := putImage(t, fake, "docker-hub/library/hello", "latest", img)
	putImage(t, fake, "team/app", "v1", img) // the same image under another name
	tool, _ := putImage(t, fake, "github/acme/tool", "v2", img)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"PULL_THROUGHS":       "docker.io=docker-hub, ghcr.io=github",
		"NAMESPACE_LISTENERS": "127.0.0.1:0=docker.io",
	}})
	if len(m.Extra) != 1 {
		t.Fatalf("namespace listeners: %v", m.Extra)
	}
	dockerHub := "http://" + m.Extra[0]
	tests := []struct {
		name, url string
		want      digest.Digest
		code      registry.Code
		message   string
	}{
		{name: "containerd docker.io", url: m.URL + "/v2/library/hello/manifests/latest?ns=docker.io", want: hello},
		{name: "official image without library/", url: m.URL + "/v2/hello/manifests/latest?ns=docker.io", want: hello},
		{name: "Docker Hub API host as ns", url: m.URL + "/v2/library/hello/manifests/latest?ns=registry-1.docker.io", want: hello},
		{name: "containerd ghcr.io", url: m.URL + "/v2/acme/tool/manifests/v2?ns=ghcr.io", want: tool},
		{name: "ECR repository by name", url: m.URL + "/v2/team/app/manifests/v1", want: hello},
		{name: "ECR host as ns", url: m.URL + "/v2/team/app/manifests/v1?ns=" + fake.Host(), want: hello},
		{name: "docker daemon mirror listener", url: dockerHub + "/v2/library/hello/manifests/latest", want: hello},
		{name: "unmapped ns", url: m.URL + "/v2/library/hello/manifests/latest?ns=quay.io", code: registry.CodeNameUnknown, message: `"quay.io" is not configured`},
		{name: "not in ECR", url: m.URL + "/v2/library/nope/manifests/latest?ns=docker.io", code: registry.CodeNameUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := get(t, "GET", tt.url, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
			if err != nil {
				t.Fatal(err)
			}
			if tt.code != "" {
				code, msg, _ := registry.ParseErrorBody(body)
				if resp.StatusCode != 404 || code != tt.code || !strings.Contains(msg, tt.message) {
					t.Fatalf("got %d %s %q, want 404 %s containing %q", resp.StatusCode, code, msg, tt.code, tt.message)
				}
				return
			}
			if resp.StatusCode != 200 || digest.FromBytes(body) != tt.want {
				t.Fatalf("got %d with digest %s, want %s", resp.StatusCode, digest.FromBytes(body), tt.want)
			}
		})
	}
	// Blobs through a namespace, then the same digests under another
	// name: one download each.
	for _, b := range blobs {
		for _, u := range []string{m.URL + "/v2/library/hello/blobs/" + b.String() + "?ns=docker.io", m.URL + "/v2/team/app/blobs/" + b.String()} {
			resp, body, err := get(t, "GET", u, nil)
			if err != nil || resp.StatusCode != 200 || digest.FromBytes(body) != b {
				t.Fatalf("GET %s: %v %v", u, err, resp)
			}
		}
		if n := fake.Counters().S3Get[b]; n != 1 {
			t.Errorf("blob %s downloaded %d times for two names, want 1", b, n)
		}
	}
	var sawPrefixed bool
	for _, r := range fake.Counters().Requests {
		if strings.HasPrefix(r.Path, "/v2/docker-hub/library/hello/") {
			sawPrefixed = true
		}
		if strings.Contains(r.Query, "ns=") {
			t.Errorf("upstream got the ns parameter: %s?%s", r.Path, r.Query)
		}
	}
	if !sawPrefixed {
		t.Error("upstream never saw the docker-hub/library/hello repository")
	}
}

// URLs handed out follow the client's own host; X-Forwarded-* only from
// trusted proxies.
func TestLinksFollowClientHost(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(1024, 1)
	for _, tag := range []string{"a", "b", "c"} {
		putImage(t, fake, "team/app", tag, img)
	}
	for _, tt := range []struct {
		name    string
		trusted string
		host    string
		want    string
	}{
		{name: "CNAME", host: "registry.corp.example:5000", want: "<http://registry.corp.example:5000/v2/team/app/tags/list?"},
		{name: "forwarded, untrusted", host: "", want: "<http://127.0.0.1"},
		{name: "forwarded, trusted", trusted: "127.0.0.0/8", want: "<https://lb.corp.example/v2/team/app/tags/list?"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := startMirror(t, fake, mirrorOpts{env: map[string]string{"TRUSTED_PROXIES": tt.trusted}})
			req, _ := http.NewRequest("GET", m.URL+"/v2/team/app/tags/list?n=1", nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			req.Header.Set("X-Forwarded-Host", "lb.corp.example")
			req.Header.Set("X-Forwarded-Proto", "https")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if link := resp.Header.Get("Link"); !strings.HasPrefix(link, tt.want) {
				t.Fatalf("Link = %q, want it to start with %q", link, tt.want)
			}
		})
	}
}
