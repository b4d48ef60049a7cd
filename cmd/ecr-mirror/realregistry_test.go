package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// dockerRegistry is a real registry (Debian's docker-registry, the
// distribution project's) run for a test: a plain OCI upstream.
type dockerRegistry struct {
	Host string // 127.0.0.1:port
	cmd  *exec.Cmd
}

// startDockerRegistry runs docker-registry on a free loopback port with
// its storage in a temp dir, without auth, until Stop or the test's end.
// A missing binary fails the test saying how to install it; -short skips.
func startDockerRegistry(t *testing.T) *dockerRegistry {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not running the real docker-registry")
	}
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatalf("docker-registry is not installed (%v): install it with `apt-get install -y docker-registry` "+
			"(Debian/Ubuntu; .ci/run does this), or run `go test -short` to skip this test", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := ln.Addr().String()
	ln.Close() // the registry takes the port; another taker makes the wait below fail
	dir := t.TempDir()
	config := filepath.Join(dir, "config.yml")
	body := fmt.Sprintf("version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", filepath.Join(dir, "data"), host)
	if err := os.WriteFile(config, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", config)
	out := &testkit.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting docker-registry: %v", err)
	}
	r := &dockerRegistry{Host: host, cmd: cmd}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			t.Logf("docker-registry's output:\n%s", out)
		}
	})
	testwait.Until(t, "docker-registry to answer /v2/", func() bool {
		resp, err := http.Get("http://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return r
}

// Stop ends the registry process (the one this test started) and waits.
func (r *dockerRegistry) Stop() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
}

// A real registry as a plain OCI upstream: images pushed there are pulled
// through the mirror on its listener, the second pull served from the
// cache without a download, and with the registry gone the tag is served
// stale and its content from the cache.
func TestRealRegistryAsPlainUpstream(t *testing.T) {
	t.Parallel()
	reg := startDockerRegistry(t)
	img, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Host+"/team/app:v1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testwait.HangGuard)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
		t.Fatalf("pushing to docker-registry: %v", err)
	}
	want, _ := img.Digest()

	ecr := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, ecr, mirrorOpts{env: map[string]string{
		"UPSTREAM":            "ecr:" + ecr.URL() + ",oci:http://" + reg.Host,
		"NAMESPACE_LISTENERS": "127.0.0.1:0=" + reg.Host,
		"STALE_IF_ERROR":      "1h",
	}})
	on := m.listener(0)
	pull := func(what string) {
		t.Helper()
		got, err := pullImage(t, on, "team/app:v1")
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if d, _ := got.Digest(); d != want {
			t.Fatalf("%s: pulled %s, want %s", what, d, want)
		}
	}
	pull("first pull")
	downloads := func() float64 { return scrape(t, m.URL+"/metrics")["ecr_mirror_downloads_total"] }
	testwait.Until(t, "the image's 3 blob downloads counted", func() bool { return downloads() >= 3 })
	before := downloads()
	pull("second pull")
	if after := downloads(); after != before {
		t.Fatalf("the second pull started %v downloads, want none", after-before)
	}
	reg.Stop()
	pull("pull with the registry gone")
	if n := scrape(t, m.URL+"/metrics")[`ecr_mirror_cache_requests_total{outcome="stale"}`]; n != 1 {
		t.Fatalf("stale answers: %v, want the tag's one", n)
	}
}
