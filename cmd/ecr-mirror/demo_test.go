//go:build linux

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// demoScript is hack/demo.sh, from this package's directory.
const demoScript = "../../hack/demo.sh"

// fakeBinary is cmd/fakeecr built once, beside the ecr-mirror binary.
var fakeBinary struct {
	once sync.Once
	err  error
}

// demoBinaries returns a directory holding the ecr-mirror and fakeecr
// commands, for the demo's DEMO_BIN_DIR.
func demoBinaries(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(mirrorBinary(t))
	fakeBinary.once.Do(func() {
		if out, err := exec.Command("go", "build", "-o", dir, "../fakeecr").CombinedOutput(); err != nil {
			fakeBinary.err = err
			t.Logf("go build ../fakeecr: %s", out)
		}
	})
	if fakeBinary.err != nil {
		t.Fatalf("building cmd/fakeecr: %v", fakeBinary.err)
	}
	return dir
}

// demo is a running hack/demo.sh.
type demo struct {
	cmd  *exec.Cmd
	out  *testkit.SyncBuffer
	done chan struct{} // closed when the demo has exited, with err set
	err  error
	addr string // the mirror's host:port, as the demo printed it
}

var demoMirrorLine = regexp.MustCompile(`(?m)^Mirror: +http://(\S+)$`)

// startDemo runs the demo with the test's environment less anything that
// would choose its address or cache, plus env, and waits until it prints
// the mirror's address. It is stopped with SIGTERM at cleanup.
func startDemo(t *testing.T, bins string, env ...string) *demo {
	t.Helper()
	cmd := exec.Command("bash", demoScript)
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "DEMO_"), k == "LISTEN_ADDR", k == "CACHE_DIR", k == "XDG_CACHE_HOME":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(append(cmd.Env, "DEMO_BIN_DIR="+bins), env...)
	d := &demo{cmd: cmd, out: &testkit.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.out, d.out
	// A process group of its own, as a terminal gives a command, so that
	// stop can press Ctrl-C.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })
	testwait.Until(t, "the demo prints the mirror's address", func() bool {
		select {
		case <-d.done:
			t.Fatalf("the demo exited (%v):\n%s", d.err, d.out)
		default:
		}
		if m := demoMirrorLine.FindStringSubmatch(d.out.String()); m != nil {
			d.addr = m[1]
		}
		return d.addr != ""
	})
	return d
}

// stop presses Ctrl-C (SIGINT to the demo's process group, as a terminal
// sends it) and waits for the demo to stop the fake and the mirror and
// exit.
func (d *demo) stop(t *testing.T) {
	t.Helper()
	select {
	case <-d.done:
		return
	default:
	}
	_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT)
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		t.Errorf("the demo did not stop on Ctrl-C:\n%s", d.out)
		<-d.done
	}
}

// sampleManifest is the digest of testdata/sample-image's image, which the
// demo's fake serves as sample/hello:latest.
func sampleManifest(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile("../../testdata/sample-image/index.json")
	if err != nil {
		t.Fatal(err)
	}
	var idx struct{ Manifests []struct{ Digest string } }
	if err := json.Unmarshal(raw, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("testdata/sample-image/index.json: %v, %d manifests", err, len(idx.Manifests))
	}
	return idx.Manifests[0].Digest
}

// pullSample pulls sample/hello:latest through the demo's mirror, every
// blob read to its end (go-containerregistry checks each digest), and
// checks the manifest's digest.
func (d *demo) pullSample(t *testing.T, want string) {
	t.Helper()
	ref, err := name.ParseReference(d.addr+"/sample/hello:latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref)
	if err != nil {
		t.Fatalf("pull through the demo at %s: %v\n%s", d.addr, err, d.out)
	}
	if dgst, err := img.Digest(); err != nil || dgst.String() != want {
		t.Errorf("sample/hello:latest is %v (%v), want %s", dgst, err, want)
	}
	if err := readWhole(img); err != nil {
		t.Fatalf("reading the image through the demo: %v", err)
	}
}

// hack/demo.sh runs beside another demo (each its own fake ECR ports and
// mirror address), keeps its cache in the named directory when Ctrl-C
// stops it (quietly: the demo, not the signal, stops the fake and the
// mirror), and serves the same pull from that cache when started again:
// nothing is downloaded the second time.
func TestDemoKeepsItsCacheAndRunsBesideAnother(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	bins := demoBinaries(t)
	want := sampleManifest(t)
	xdg := t.TempDir()
	cacheDir := filepath.Join(xdg, "ecr-mirror-demo") // the default under XDG_CACHE_HOME

	first := startDemo(t, bins, "XDG_CACHE_HOME="+xdg)
	other := startDemo(t, bins, "DEMO_CACHE_DIR="+t.TempDir())
	if first.addr == other.addr {
		t.Fatalf("two demos both say they serve on %s", first.addr)
	}
	for _, d := range []*demo{first, other} {
		d.pullSample(t, want)
		m := scrape(t, "http://"+d.addr+"/metrics")
		if m["ecr_mirror_downloads_total"] == 0 || m[`ecr_mirror_served_bytes_total{source="upstream"}`] == 0 {
			t.Errorf("a first pull through %s downloaded nothing: %v", d.addr, m)
		}
	}
	if !strings.Contains(first.out.String(), "Cache:    "+cacheDir+" (0B from earlier runs") {
		t.Errorf("the demo does not say it caches in %s, empty:\n%s", cacheDir, first.out)
	}
	first.stop(t)
	if strings.Contains(first.out.String(), "the fake ECR or the mirror stopped") {
		t.Errorf("Ctrl-C reached the fake or the mirror before the demo stopped them:\n%s", first.out)
	}
	if !strings.Contains(first.out.String(), "The cache stays in "+cacheDir) {
		t.Errorf("the demo does not say where its cache stays:\n%s", first.out)
	}

	again := startDemo(t, bins, "XDG_CACHE_HOME="+xdg)
	if !regexp.MustCompile(`Cache: +` + regexp.QuoteMeta(cacheDir) + ` \([1-9][0-9.]*[KM]?B from earlier runs`).MatchString(again.out.String()) {
		t.Errorf("the second start does not report the cached bytes:\n%s", again.out)
	}
	again.pullSample(t, want)
	m := scrape(t, "http://"+again.addr+"/metrics")
	if n := m["ecr_mirror_downloads_total"]; n != 0 {
		t.Errorf("the second run downloaded %v blobs; want all from the kept cache\n%s", n, again.out)
	}
	if m[`ecr_mirror_served_bytes_total{source="cache"}`] == 0 || m[`ecr_mirror_served_bytes_total{source="upstream"}`] != 0 {
		t.Errorf("the second run's bytes: %v from the cache, %v from upstream; want all from the cache",
			m[`ecr_mirror_served_bytes_total{source="cache"}`], m[`ecr_mirror_served_bytes_total{source="upstream"}`])
	}
}
