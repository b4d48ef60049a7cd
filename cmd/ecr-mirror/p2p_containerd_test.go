//go:build linux

package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// spegelStandIn is what containerd sees of spegel on a node that holds
// none of the image: 200 on /v2/, and 404 with an OCI error for every
// manifest and blob (spegel's answer when no peer has the content). It
// records the requests it gets, as "METHOD path?query".
type spegelStandIn struct {
	srv  *httptest.Server
	mu   sync.Mutex
	seen []string
}

func startSpegelStandIn(t *testing.T) *spegelStandIn {
	t.Helper()
	s := &spegelStandIn{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" || r.URL.Path == "/v2" {
			w.WriteHeader(http.StatusOK)
			return
		}
		s.mu.Lock()
		s.seen = append(s.seen, r.Method+" "+r.URL.RequestURI())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"errors":[{"code":"NOT_FOUND","message":"no peer has it"}]}`)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *spegelStandIn) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// refusedAddr is a loopback address where nothing listens: connecting is
// refused at once, as to a node whose spegel pod is down.
func refusedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// writeP2PHostsToml writes the hosts.toml README's "Behind a P2P engine"
// shows for registry: the P2P engine (p2pHost) first, the mirror second,
// and the registry itself as server, given push only so that the test
// never leaves the machine.
func writeP2PHostsToml(t *testing.T, hostsDir, registry, server, p2pHost string, m *mirror) {
	t.Helper()
	writeFile(t, filepath.Join(hostsDir, registry, "hosts.toml"), fmt.Sprintf(`server = %q
capabilities = ["push"]

[host."http://%s"]
  capabilities = ["pull", "resolve"]

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, server, p2pHost, m.Host))
}

// containerd with spegel listed first and the mirror second: when spegel
// answers 404 (no node has the image), containerd moves on to the mirror
// for the tag and for every manifest and blob, and the image arrives with
// the digests ECR holds under the pull-through prefix.
func TestContainerdMovesFromSpegelToTheMirror(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	manifest, blobs := putImage(t, fake, "docker-hub/library/p2p", "v1", ociImage(t, linuxAMD64, 2))
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	spegel := startSpegelStandIn(t)
	hosts := t.TempDir()
	writeP2PHostsToml(t, hosts, "docker.io", "https://registry-1.docker.io", spegel.srv.Listener.Addr().String(), m)

	const ref = "docker.io/library/p2p:v1"
	sent, err := ctrd.fetch(t, hosts, ref)
	if err != nil {
		t.Fatalf("fetching %s with spegel answering 404: %v\nmirror log:\n%s", ref, err, m.Logs)
	}
	checkFetched(t, ctrd, ref, manifest, blobs)
	// spegel was asked first for the tag and for each blob, with ns.
	asked := spegel.requests()
	for _, want := range append([]string{"/v2/library/p2p/manifests/v1?ns=docker.io"}, blobPaths("library/p2p", blobs)...) {
		if !slices.ContainsFunc(asked, func(r string) bool { return strings.HasSuffix(r, " "+want) }) {
			t.Errorf("containerd did not ask spegel for %s first; spegel saw %q", want, asked)
		}
	}
	checkNS(t, ref, sent, "/v2/library/p2p/", "docker.io")
}

// blobPaths are the paths containerd asks for repo's blobs, with ns.
func blobPaths(repo string, blobs []digest.Digest) []string {
	var out []string
	for _, b := range blobs {
		out = append(out, "/v2/"+repo+"/blobs/"+b.String()+"?ns=docker.io")
	}
	return out
}

// containerd with a spegel that is down (connection refused) listed first
// and the mirror second: every request fails on spegel and is sent again
// to the mirror (containerd 1.6.20 as Debian 12 ships it tries the next
// host on a connection error, for resolving and for fetching), and the
// pull succeeds with ECR's digests.
func TestContainerdWithSpegelDownPullsThroughTheMirror(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	manifest, blobs := putImage(t, fake, "docker-hub/library/p2p", "v1", ociImage(t, linuxAMD64, 2))
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub"}})
	hosts := t.TempDir()
	writeP2PHostsToml(t, hosts, "docker.io", "https://registry-1.docker.io", refusedAddr(t), m)

	const ref = "docker.io/library/p2p:v1"
	sent, err := ctrd.fetch(t, hosts, ref)
	if err != nil {
		t.Fatalf("fetching %s with spegel down: %v\nmirror log:\n%s", ref, err, m.Logs)
	}
	checkFetched(t, ctrd, ref, manifest, blobs)
	checkNS(t, ref, sent, "/v2/library/p2p/", "docker.io")
	tries := map[string]int{}
	for _, r := range sent {
		tries[r]++
	}
	for r, n := range tries {
		if n < 2 {
			t.Errorf("containerd sent %q once: it did not try spegel first", r)
		}
	}
}
