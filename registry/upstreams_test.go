package registry

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// Requests go to the backend of the upstream their registry names: ns=
// or the listener's default, the default upstream for names of its own
// host and of the registries its pull-through prefixes hold.
func TestRequestsGoToTheirUpstreamsBackend(t *testing.T) {
	t.Parallel()
	const ecrHost = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	ns, err := NewNamespaces(map[string]string{"ghcr.io": "github"}, ecrHost, "127.0.0.1:5200", "docker.io")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("layer")
	dgst := digest.FromBytes(data)
	backends := map[string]*fakeBackend{}
	for _, host := range []string{"", "127.0.0.1:5200", "docker.io"} {
		backends[host] = &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}}
	}
	others := map[string]Backend{"127.0.0.1:5200": backends["127.0.0.1:5200"], "docker.io": backends["docker.io"]}
	tests := []struct {
		name, path, defaultNS string
		backend, upstreamName string
		status                int
	}{
		{name: "no ns: the default upstream", path: "/v2/team/app/blobs/" + dgst.String(), backend: "", upstreamName: "team/app", status: 200},
		{name: "ns of the default upstream", path: "/v2/team/app/blobs/" + dgst.String() + "?ns=" + ecrHost, backend: "", upstreamName: "team/app", status: 200},
		{name: "ns of a pull-through", path: "/v2/acme/tool/blobs/" + dgst.String() + "?ns=ghcr.io", backend: "", upstreamName: "github/acme/tool", status: 200},
		{name: "ns of another upstream", path: "/v2/team/app/blobs/" + dgst.String() + "?ns=127.0.0.1:5200", backend: "127.0.0.1:5200", upstreamName: "team/app", status: 200},
		{name: "Docker Hub upstream, its library/", path: "/v2/nginx/blobs/" + dgst.String() + "?ns=registry-1.docker.io", backend: "docker.io", upstreamName: "library/nginx", status: 200},
		{name: "listener of another upstream", path: "/v2/team/app/blobs/" + dgst.String(), defaultNS: "127.0.0.1:5200", backend: "127.0.0.1:5200", upstreamName: "team/app", status: 200},
		{name: "neither", path: "/v2/team/app/blobs/" + dgst.String() + "?ns=quay.io", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(backends[""], nil, WithNamespaces(ns, tt.defaultNS), WithUpstreams(others))
			for _, b := range backends {
				b.lastReq = nil
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("GET %s: %d %s, want %d", tt.path, rec.Code, rec.Body, tt.status)
			}
			for host, b := range backends {
				switch {
				case host == tt.backend && tt.status == 200 && (b.lastReq == nil || b.lastReq.Name != tt.upstreamName):
					t.Errorf("backend %q got %+v, want a request for %s", host, b.lastReq, tt.upstreamName)
				case (host != tt.backend || tt.status != 200) && b.lastReq != nil:
					t.Errorf("backend %q got a request for %s", host, b.lastReq.Name)
				}
			}
			if tt.status == 404 && !strings.Contains(rec.Body.String(), "NAME_UNKNOWN") {
				t.Errorf("body %s, want NAME_UNKNOWN", rec.Body)
			}
		})
	}
}

// Pushes go to upstreams whose backend is a Pusher (ECR); another
// upstream's are refused 405 UNSUPPORTED naming it, and its existence
// checks are plain HEADs.
func TestPushesGoOnlyToUpstreamsThatTakeThem(t *testing.T) {
	t.Parallel()
	ns, err := NewNamespaces(nil, "ecr.example", "ghcr.io")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("layer")
	dgst := digest.FromBytes(data)
	ecr := &pushBackend{resp: &PushResponse{Status: 202}}
	oci := &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}}
	h := NewHandler(ecr, nil, WithPush(true), WithNamespaces(ns, ""), WithUpstreams(map[string]Backend{"ghcr.io": oci}))
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, body := send(t, "POST", srv.URL+"/v2/acme/tool/blobs/uploads/?ns=ghcr.io", nil, nil)
	if code, msg, _ := ParseErrorBody(body); resp.StatusCode != 405 || code != CodeUnsupported || !strings.Contains(msg, "ghcr.io takes none") {
		t.Fatalf("push to the oci upstream: %d %s, want 405 UNSUPPORTED naming ghcr.io", resp.StatusCode, body)
	}
	if len(ecr.reqs) != 0 {
		t.Fatalf("the ECR backend got %d pushes meant for ghcr.io", len(ecr.reqs))
	}
	resp, _ = send(t, "HEAD", srv.URL+"/v2/acme/tool/blobs/"+dgst.String()+"?ns=ghcr.io", nil, nil)
	if resp.StatusCode != 200 || oci.lastReq == nil || !oci.lastReq.Head {
		t.Fatalf("HEAD on the oci upstream: %d, backend saw %+v; want a plain HEAD answered 200", resp.StatusCode, oci.lastReq)
	}
	resp, body = send(t, "POST", srv.URL+"/v2/team/app/blobs/uploads/", nil, nil)
	if resp.StatusCode != 202 || len(ecr.reqs) != 1 {
		t.Fatalf("push to the ECR upstream: %d %s, ECR backend saw %d pushes", resp.StatusCode, body, len(ecr.reqs))
	}
}

// On a listener of one ECR prefix (WithRepositoryPrefix), names that come
// with no registry are repositories under that prefix, library/ ones
// under the library prefix when there is one; a request naming its
// registry is resolved as anywhere.
func TestPrefixListenerNamesAreUnderItsPrefix(t *testing.T) {
	t.Parallel()
	ns, err := NewNamespaces(map[string]string{"docker.io": "docker-hub"}, "ecr.example")
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("layer")
	dgst := digest.FromBytes(data)
	blob := "/blobs/" + dgst.String()
	tests := []struct {
		name, prefix, library, path, want string
		status                            int
	}{
		{"a name", "quay", "", "/v2/acme/tool" + blob, "quay/acme/tool", 200},
		{"library/ without a library prefix", "docker-hub", "", "/v2/library/nginx" + blob, "docker-hub/library/nginx", 200},
		{"library/ with a library prefix", "ecr-public", "ecr-public/docker", "/v2/library/alpine" + blob, "ecr-public/docker/library/alpine", 200},
		{"other names beside a library prefix", "ecr-public", "ecr-public/docker", "/v2/acme/tool" + blob, "ecr-public/acme/tool", 200},
		{"ns mapped", "quay", "", "/v2/library/nginx" + blob + "?ns=docker.io", "docker-hub/library/nginx", 200},
		{"ns unmapped", "quay", "", "/v2/acme/tool" + blob + "?ns=ghcr.io", "", 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := &fakeBackend{blobs: map[digest.Digest][]byte{dgst: data}}
			h := NewHandler(b, nil, WithNamespaces(ns, ""), WithRepositoryPrefix(tt.prefix, tt.library))
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("GET %s: %d %s, want %d", tt.path, rec.Code, rec.Body, tt.status)
			}
			if tt.status == 200 && (b.lastReq == nil || b.lastReq.Name != tt.want) {
				t.Fatalf("backend got %+v, want a request for %s", b.lastReq, tt.want)
			}
		})
	}
}
