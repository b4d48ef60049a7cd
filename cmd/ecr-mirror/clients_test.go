//go:build linux

// Tests that drive real clients (skopeo, containerd's daemon and ctr)
// against the mirror running in-process in front of the fake ECR. The
// tools come from Debian (`apt-get install skopeo containerd`, which
// .ci/run does); when one is missing these tests fail saying so, except
// under -short, where they skip. The file is Linux-only: containerd's
// daemon is, and it is bound to the test process with Pdeathsig so that
// a test binary killed by -timeout leaves no daemon behind.

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// clientCmdTimeout bounds every run of a client tool.
const clientCmdTimeout = 2 * time.Minute

// requireClientTool returns the path of a client tool the test drives. A
// missing tool fails the test with how to install it; -short skips.
func requireClientTool(t *testing.T, tool string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: not running the real %s", tool)
	}
	p, err := exec.LookPath(tool)
	if err != nil {
		t.Fatalf("%s is not installed (%v). These tests drive the real clients: "+
			"install them with `apt-get install -y skopeo containerd` (Debian/Ubuntu; .ci/run does this), "+
			"or run `go test -short` to skip them", tool, err)
	}
	return p
}

// runTool runs a client tool with a timeout and returns its stdout and
// stderr; the error includes both.
func runTool(t *testing.T, env []string, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clientCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	start := time.Now()
	err = cmd.Run()
	line := filepath.Base(bin) + " " + strings.Join(args, " ")
	t.Logf("%s (%v)", line, time.Since(start).Round(time.Millisecond))
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", clientCmdTimeout, err)
	}
	if err != nil {
		err = fmt.Errorf("%s: %w\nstdout:\n%s\nstderr:\n%s", line, err, outb.String(), errb.String())
	}
	return outb.String(), errb.String(), err
}

// isolatedEnv is the test process's environment without anything that
// points a client at the host's configuration or credentials, with HOME
// and the XDG directories moved to home.
func isolatedEnv(home string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "HOME", strings.HasPrefix(k, "XDG_"), strings.HasPrefix(k, "CONTAINERS_"),
			strings.HasPrefix(k, "CONTAINERD_"), k == "REGISTRIES_CONFIG_PATH",
			k == "REGISTRY_AUTH_FILE", k == "DOCKER_CONFIG":
			continue
		}
		env = append(env, kv)
	}
	return append(env, append([]string{
		"HOME=" + home,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"XDG_RUNTIME_DIR=" + filepath.Join(home, "run"),
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
	}, extra...)...)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ociImage returns a random image made only of OCI media types, so that
// clients store it without converting it and its digests stay those put
// into the fake.
func ociImage(t testing.TB, p v1.Platform, layers int) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range layers {
		l, err := random.Layer(24<<10, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = p.OS, p.Architecture
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// Image-spec's index, in the field order of its Go types (and so of
// containers/image, which re-serializes every index it copies).
type (
	specIndex struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []specDescriptor `json:"manifests"`
	}
	specDescriptor struct {
		MediaType string        `json:"mediaType"`
		Digest    string        `json:"digest"`
		Size      int64         `json:"size"`
		Platform  *specPlatform `json:"platform,omitempty"`
	}
	specPlatform struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
	}
)

// putOCIIndex stores in the fake, under repo:tag, an OCI index of one
// ociImage per platform (the children untagged). The index is written as
// skopeo writes an index back, so that a copy keeps it byte for byte
// (--preserve-digests) and its digest can be checked at the destination.
// It returns the index digest and, per child manifest digest, its blobs.
func putOCIIndex(t testing.TB, fake *fakeecr.Server, repo, tag string, platforms ...v1.Platform) (digest.Digest, map[digest.Digest][]digest.Digest) {
	t.Helper()
	idx := specIndex{SchemaVersion: 2, MediaType: string(types.OCIImageIndex)}
	children := make(map[digest.Digest][]digest.Digest)
	for _, p := range platforms {
		img := ociImage(t, p, 2)
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		m, blobs := putImage(t, fake, repo, "", img)
		children[m] = blobs
		idx.Manifests = append(idx.Manifests, specDescriptor{
			MediaType: string(types.OCIManifestSchema1),
			Digest:    m.String(),
			Size:      int64(len(raw)),
			Platform:  &specPlatform{Architecture: p.Architecture, OS: p.OS},
		})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		t.Fatal(err)
	}
	return fake.PutManifest(repo, tag, string(types.OCIImageIndex), raw), children
}

// fileDigest is the sha256 digest of a file's content.
func fileDigest(t *testing.T, path string) digest.Digest {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return digest.Digest("sha256:" + hex.EncodeToString(h.Sum(nil)))
}

// readOCILayout checks an OCI image layout skopeo wrote: every blob's
// sha256 is its file name. It returns the digests of all blobs and, by
// reference name, the digests index.json points at.
func readOCILayout(t *testing.T, dir string) (blobs []digest.Digest, refs map[string]digest.Digest) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "oci-layout")); err != nil {
		t.Fatalf("not an OCI layout: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(raw, &index); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	refs = make(map[string]digest.Digest)
	for _, d := range index.Manifests {
		refs[d.Annotations["org.opencontainers.image.ref.name"]] = digest.Digest(d.Digest.String())
	}
	entries, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want := digest.Digest("sha256:" + e.Name())
		if err := want.Validate(); err != nil {
			t.Errorf("blob file %s: %v", e.Name(), err)
			continue
		}
		if got := fileDigest(t, filepath.Join(dir, "blobs", "sha256", e.Name())); got != want {
			t.Errorf("blob file %s has digest %s", e.Name(), got)
		}
		blobs = append(blobs, want)
	}
	return blobs, refs
}

// readDirLayout checks what skopeo's dir: transport wrote: every blob
// file (named by its hex digest) and every per-instance manifest
// (<hex>.manifest.json) has the digest its name says. It returns those
// digests and the digest of the top manifest.json.
func readDirLayout(t *testing.T, dir string) (blobs []digest.Digest, top digest.Digest) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		switch name {
		case "version":
			continue
		case "manifest.json":
			top = fileDigest(t, filepath.Join(dir, name))
			continue
		}
		want := digest.Digest("sha256:" + strings.TrimSuffix(name, ".manifest.json"))
		if err := want.Validate(); err != nil {
			t.Errorf("unexpected file %s in dir: layout", name)
			continue
		}
		if got := fileDigest(t, filepath.Join(dir, name)); got != want {
			t.Errorf("file %s has digest %s", name, got)
		}
		blobs = append(blobs, want)
	}
	if top == "" {
		t.Fatalf("dir: layout %s has no manifest.json", dir)
	}
	return blobs, top
}

// sameDigests reports whether got and want hold the same digests.
func sameDigests(got, want []digest.Digest) bool {
	a, b := slices.Clone(got), slices.Clone(want)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// skopeo runs the real skopeo with a private HOME, registries.conf,
// policy, registries.d and an empty auth file, so nothing of the host's
// configuration applies.
type skopeo struct {
	bin, authfile, policy, regsd, tmp string
	env                               []string
}

func newSkopeo(t *testing.T) *skopeo {
	t.Helper()
	bin := requireClientTool(t, "skopeo")
	home := t.TempDir()
	s := &skopeo{
		bin:      bin,
		authfile: filepath.Join(home, "auth.json"),
		policy:   filepath.Join(home, "policy.json"),
		regsd:    filepath.Join(home, "registries.d"),
		tmp:      filepath.Join(home, "tmp"),
	}
	// A per-user registries.conf replaces /etc/containers/registries.conf
	// and its drop-in directory.
	regConf := filepath.Join(home, ".config", "containers", "registries.conf")
	writeFile(t, regConf, "unqualified-search-registries = []\n")
	writeFile(t, s.authfile, "{}\n")
	writeFile(t, s.policy, `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
	for _, d := range []string{s.regsd, s.tmp, filepath.Join(home, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	s.env = isolatedEnv(home,
		"REGISTRIES_CONFIG_PATH="+regConf,
		"CONTAINERS_REGISTRIES_CONF="+regConf,
		"REGISTRY_AUTH_FILE="+s.authfile,
	)
	return s
}

// copy runs `skopeo copy` from the mirror (plain HTTP, anonymous) to dst,
// with more copy options before the references.
func (s *skopeo) copy(t *testing.T, src, dst string, opts ...string) error {
	t.Helper()
	args := []string{
		"--policy", s.policy, "--registries.d", s.regsd, "--tmpdir", s.tmp,
		"--command-timeout", clientCmdTimeout.String(),
		"copy", "--src-tls-verify=false", "--src-no-creds", "--src-authfile", s.authfile,
	}
	args = append(append(args, opts...), src, dst)
	_, _, err := runTool(t, s.env, s.bin, args...)
	return err
}

// waitStored waits until the mirror has committed every digest.
func waitStored(t *testing.T, m *mirror, dgsts ...digest.Digest) {
	t.Helper()
	testwait.Until(t, "content committed to the mirror's store", func() bool {
		for _, d := range dgsts {
			if !m.stored(d) {
				return false
			}
		}
		return true
	})
}

// skopeo copies one image through the mirror by tag into an OCI layout
// and by digest into a dir: layout, bit for bit as pushed into the fake;
// every blob is downloaded from S3 once, and copies from the warm cache
// download nothing.
func TestSkopeoCopyImage(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	manifest, blobs := putImage(t, fake, "team/app", "v1", ociImage(t, linuxAMD64, 3))
	m := startMirror(t, fake, mirrorOpts{})
	src := "docker://" + m.Host + "/team/app"
	want := append([]digest.Digest{manifest}, blobs...)

	// By tag, into an OCI layout.
	out := t.TempDir()
	if err := sk.copy(t, src+":v1", "oci:"+out+":v1"); err != nil {
		t.Fatal(err)
	}
	got, refs := readOCILayout(t, out)
	if refs["v1"] != manifest {
		t.Errorf("index.json names %v, want v1 -> %s", refs, manifest)
	}
	if !sameDigests(got, want) {
		t.Errorf("OCI layout holds %v, want %v", got, want)
	}
	first := fake.Counters()
	for _, b := range blobs {
		if n := first.S3Get[b]; n != 1 {
			t.Errorf("blob %s downloaded %d times from S3, want 1", b, n)
		}
	}
	if first.S3AuthRejected != 0 {
		t.Errorf("S3 rejected %d requests for carrying Authorization", first.S3AuthRejected)
	}
	waitStored(t, m, want...)

	// By digest, into a dir: layout, from the warm cache.
	dir := t.TempDir()
	if err := sk.copy(t, src+"@"+manifest.String(), "dir:"+dir); err != nil {
		t.Fatal(err)
	}
	got, top := readDirLayout(t, dir)
	if top != manifest {
		t.Errorf("dir: manifest.json has digest %s, want %s", top, manifest)
	}
	if !sameDigests(got, blobs) {
		t.Errorf("dir: layout holds %v, want %v", got, blobs)
	}
	second := fake.Counters()
	if second.BlobGet != first.BlobGet || second.ManifestGetByDigest != first.ManifestGetByDigest ||
		second.ManifestGetByTag != first.ManifestGetByTag || second.ManifestHead != first.ManifestHead {
		t.Errorf("a cached copy by digest went upstream: blob GETs %d -> %d, manifest GETs by digest %d -> %d, by tag %d -> %d, HEADs %d -> %d",
			first.BlobGet, second.BlobGet, first.ManifestGetByDigest, second.ManifestGetByDigest,
			first.ManifestGetByTag, second.ManifestGetByTag, first.ManifestHead, second.ManifestHead)
	}

	// By tag again: the tag is revalidated, nothing is downloaded.
	again := t.TempDir()
	if err := sk.copy(t, src+":v1", "oci:"+again+":v1"); err != nil {
		t.Fatal(err)
	}
	if got, refs := readOCILayout(t, again); refs["v1"] != manifest || !sameDigests(got, want) {
		t.Errorf("second copy by tag: index.json %v, blobs %v; want v1 -> %s, blobs %v", refs, got, manifest, want)
	}
	third := fake.Counters()
	for _, b := range blobs {
		if third.S3Get[b] != first.S3Get[b] {
			t.Errorf("a copy from the warm cache downloaded blob %s from S3 again", b)
		}
	}
	if third.BlobGet != first.BlobGet {
		t.Errorf("a copy from the warm cache asked ECR for blobs (%d -> %d)", first.BlobGet, third.BlobGet)
	}
	if third.ManifestHead <= second.ManifestHead {
		t.Errorf("the copy by tag did not revalidate the tag upstream (HEADs %d -> %d)", second.ManifestHead, third.ManifestHead)
	}
}

// skopeo copies a multi-arch OCI index through the mirror with every
// platform (--multi-arch all by tag, --all by digest): the index, each
// child manifest, config and layer land with the digests pushed into the
// fake, each blob downloaded from S3 once.
func TestSkopeoCopyMultiArch(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	idxDigest, children := putOCIIndex(t, fake, "team/multi", "v1", linuxAMD64, linuxARM64)
	m := startMirror(t, fake, mirrorOpts{})
	src := "docker://" + m.Host + "/team/multi"
	want := []digest.Digest{idxDigest}
	var blobs []digest.Digest
	for child, bs := range children {
		want = append(want, child)
		want = append(want, bs...)
		blobs = append(blobs, bs...)
	}

	out := t.TempDir()
	if err := sk.copy(t, src+":v1", "oci:"+out+":v1", "--multi-arch", "all", "--preserve-digests"); err != nil {
		t.Fatal(err)
	}
	got, refs := readOCILayout(t, out)
	if refs["v1"] != idxDigest {
		t.Errorf("index.json names %v, want v1 -> %s", refs, idxDigest)
	}
	if !sameDigests(got, want) {
		t.Errorf("OCI layout holds %v, want %v", got, want)
	}
	first := fake.Counters()
	for _, b := range blobs {
		if n := first.S3Get[b]; n != 1 {
			t.Errorf("blob %s downloaded %d times from S3, want 1", b, n)
		}
	}
	waitStored(t, m, want...)

	dir := t.TempDir()
	if err := sk.copy(t, src+"@"+idxDigest.String(), "dir:"+dir, "--all", "--preserve-digests"); err != nil {
		t.Fatal(err)
	}
	got, top := readDirLayout(t, dir)
	if top != idxDigest {
		t.Errorf("dir: manifest.json has digest %s, want the index %s", top, idxDigest)
	}
	if !sameDigests(got, want[1:]) {
		t.Errorf("dir: layout holds %v, want %v", got, want[1:])
	}
	second := fake.Counters()
	for _, b := range blobs {
		if second.S3Get[b] != first.S3Get[b] {
			t.Errorf("a copy from the warm cache downloaded blob %s from S3 again", b)
		}
	}
	if second.BlobGet != first.BlobGet || second.ManifestGetByDigest != first.ManifestGetByDigest ||
		second.ManifestGetByTag != first.ManifestGetByTag || second.ManifestHead != first.ManifestHead {
		t.Errorf("a cached copy by digest went upstream: %+v -> %+v", first, second)
	}
}

// containerd is a containerd daemon run by a test, on a private socket
// with its own root and state directories.
type containerd struct {
	sock, ctr string
	env       []string
}

// startContainerd starts the real containerd with the CRI plugin and the
// snapshotters that need kernel features disabled, and waits for its
// socket. It is stopped (SIGTERM, then SIGKILL) at cleanup.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	bin := requireClientTool(t, "containerd")
	ctrBin := requireClientTool(t, "ctr")
	// A short directory: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

# The sockets belong to whoever runs the test (containerd would chown
# them to root, which fails unprivileged; fetching content needs no root).
[grpc]
  address = %q
  uid = %d
  gid = %d

[ttrpc]
  address = %q
  uid = %d
  gid = %d

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"),
		sock, os.Getuid(), os.Getgid(), sock+".ttrpc", os.Getuid(), os.Getgid(), filepath.Join(dir, "opt")))

	logs := &testkit.SyncBuffer{}
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Env = isolatedEnv(dir)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(time.Minute):
			t.Errorf("containerd did not stop on SIGTERM within a minute; killing it\n%s", logs)
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	})

	start := time.Now()
	deadline := start.Add(time.Minute)
	for {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("containerd exited before serving: %v\n%s", err, logs)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not open %s within a minute\n%s", sock, logs)
		}
	}
	c := &containerd{sock: sock, ctr: ctrBin, env: isolatedEnv(dir)}
	if _, _, err := c.run(t, "version"); err != nil {
		t.Fatalf("containerd is not answering: %v\n%s", err, logs)
	}
	t.Logf("containerd ready in %v", time.Since(start).Round(time.Millisecond))
	return c
}

// run runs ctr against the daemon in the namespace "test".
func (c *containerd) run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runTool(t, c.env, c.ctr, append([]string{"--address", c.sock, "--namespace", "test", "--timeout", "10s"}, args...)...)
}

// fetch fetches ref's content into the content store (no unpacking, so no
// snapshotter is needed), every platform, resolving hosts from hostsDir.
// It returns the request lines ctr sent (from --http-dump), e.g.
// "GET /v2/library/hello/manifests/latest?ns=docker.io".
func (c *containerd) fetch(t *testing.T, hostsDir, ref string) (requests []string, err error) {
	t.Helper()
	_, stderr, err := c.run(t, "content", "fetch", "--all-platforms", "--http-dump", "--hosts-dir", hostsDir, ref)
	for _, line := range strings.Split(stderr, "\n") {
		for _, method := range []string{"GET ", "HEAD "} {
			if i := strings.Index(line, method+"/v2/"); i >= 0 {
				req, _, _ := strings.Cut(line[i:], " HTTP/")
				requests = append(requests, req)
			}
		}
	}
	return requests, err
}

// imageDigest returns the digest `ctr images ls` shows for ref.
func (c *containerd) imageDigest(t *testing.T, ref string) digest.Digest {
	t.Helper()
	out, _, err := c.run(t, "images", "ls")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == ref {
			return digest.Digest(f[2])
		}
	}
	t.Errorf("ctr images ls has no %s:\n%s", ref, out)
	return ""
}

// content returns the digests in the content store.
func (c *containerd) content(t *testing.T) []digest.Digest {
	t.Helper()
	out, _, err := c.run(t, "content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	var ds []digest.Digest
	for _, f := range strings.Fields(out) {
		ds = append(ds, digest.Digest(f))
	}
	return ds
}

// writeHostsToml configures registry (as named in image references) to be
// pulled through the mirror only. server is the registry's real address,
// given push as its only capability so that a pull never falls back to it
// and the test never leaves the machine.
func writeHostsToml(t *testing.T, hostsDir, registry, server string, m *mirror) {
	t.Helper()
	writeFile(t, filepath.Join(hostsDir, registry, "hosts.toml"), fmt.Sprintf(`server = %q
capabilities = ["push"]

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, server, m.Host))
}

// requestsFor returns the registry requests the fake saw for repository
// repo (every repository when repo is ""), as "METHOD path".
func requestsFor(reqs []fakeecr.Request, repo string) []string {
	prefix := "/v2/"
	if repo != "" {
		prefix += repo + "/"
	}
	var out []string
	for _, r := range reqs {
		if r.Endpoint == fakeecr.EndpointRegistry && strings.HasPrefix(r.Path, prefix) {
			out = append(out, r.Method+" "+r.Path)
		}
	}
	return out
}

// containerd, configured only by hosts.toml files under --hosts-dir,
// pulls docker.io and ghcr.io images through the mirror; it sends
// ?ns=<registry> with every request, and the mirror serves them from the
// ECR pull-through-cache repositories PULL_THROUGHS names (docker-hub/…,
// github/…), not from the repositories named in the path. A registry with
// no mapping gets an error, never the unprefixed repository.
func TestContainerdPullThroughNamespaces(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	fake := fakeecr.Start(t, fakeecr.Options{})

	helloIdx, helloChildren := putOCIIndex(t, fake, "docker-hub/library/hello", "latest", linuxAMD64, linuxARM64)
	helloWant := []digest.Digest{helloIdx}
	for child, bs := range helloChildren {
		helloWant = append(helloWant, child)
		helloWant = append(helloWant, bs...)
	}
	toolManifest, toolBlobs := putImage(t, fake, "github/acme/tool", "v2", ociImage(t, linuxAMD64, 2))
	// Decoys under the unprefixed names: a mirror that ignored ns would
	// serve these.
	decoyHello, _ := putImage(t, fake, "library/hello", "latest", ociImage(t, linuxAMD64, 1))
	decoyTool, _ := putImage(t, fake, "acme/tool", "v2", ociImage(t, linuxAMD64, 1))

	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"PULL_THROUGHS": "docker.io=docker-hub,ghcr.io=github",
	}})
	hosts := t.TempDir()
	writeHostsToml(t, hosts, "docker.io", "https://registry-1.docker.io", m)
	writeHostsToml(t, hosts, "ghcr.io", "https://ghcr.io", m)
	writeHostsToml(t, hosts, "quay.io", "https://quay.io", m)

	const hello, tool = "docker.io/library/hello:latest", "ghcr.io/acme/tool:v2"
	helloSent, helloErr := ctrd.fetch(t, hosts, hello)
	toolSent, toolErr := ctrd.fetch(t, hosts, tool)
	reqs := fake.Counters().Requests
	checkNS(t, hello, helloSent, "/v2/library/hello/", "docker.io")
	checkNS(t, tool, toolSent, "/v2/acme/tool/", "ghcr.io")
	if helloErr != nil {
		t.Errorf("fetching %s through the mirror: %v", hello, helloErr)
	}
	if toolErr != nil {
		t.Errorf("fetching %s through the mirror: %v", tool, toolErr)
	}
	if len(requestsFor(reqs, "docker-hub/library/hello")) == 0 {
		t.Errorf("ECR saw no request for docker-hub/library/hello")
	}
	if len(requestsFor(reqs, "github/acme/tool")) == 0 {
		t.Errorf("ECR saw no request for github/acme/tool")
	}
	if t.Failed() {
		t.Fatalf("ECR saw:\n%s\nmirror log:\n%s", strings.Join(requestsFor(reqs, ""), "\n"), m.Logs)
	}

	if got := ctrd.imageDigest(t, hello); got != helloIdx {
		t.Errorf("%s is %s in containerd, want %s (decoy library/hello is %s)", hello, got, helloIdx, decoyHello)
	}
	if got := ctrd.imageDigest(t, tool); got != toolManifest {
		t.Errorf("%s is %s in containerd, want %s (decoy acme/tool is %s)", tool, got, toolManifest, decoyTool)
	}
	stored := ctrd.content(t)
	for _, d := range append(append(helloWant, toolManifest), toolBlobs...) {
		if !slices.Contains(stored, d) {
			t.Errorf("containerd's content store lacks %s", d)
		}
	}
	for _, r := range append(requestsFor(reqs, "library/hello"), requestsFor(reqs, "acme/tool")...) {
		t.Errorf("ECR was asked for an unprefixed repository: %s", r)
	}

	// quay.io has no mapping: containerd gets an error, not the decoy.
	quaySent, err := ctrd.fetch(t, hosts, "quay.io/acme/tool:v2")
	switch {
	case err == nil:
		t.Errorf("fetching quay.io/acme/tool:v2 (no mapping for quay.io) succeeded")
	case !strings.Contains(err.Error(), "not found"):
		// containerd says "not found" for the mirror's 404; anything else
		// (a refused connection, a fallback to quay.io) proves nothing.
		t.Errorf("fetching quay.io/acme/tool:v2 failed, but not with the mirror's 404: %v", err)
	default:
		t.Logf("unmapped namespace refused, as expected: %s", lastLine(err.Error()))
	}
	checkNS(t, "quay.io/acme/tool:v2", quaySent, "/v2/acme/tool/", "quay.io")
	for _, r := range requestsFor(fake.Counters().Requests, "acme/tool") {
		t.Errorf("an unmapped ns reached ECR as the unprefixed repository: %s", r)
	}
	// What containerd was told: 404 NAME_UNKNOWN naming the namespace.
	resp, body, err := get(t, http.MethodGet, m.URL+"/v2/acme/tool/manifests/v2?ns=quay.io", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte("NAME_UNKNOWN")) || !bytes.Contains(body, []byte("quay.io")) {
		t.Errorf("unmapped ns: %d %s; want 404 NAME_UNKNOWN naming quay.io", resp.StatusCode, body)
	}
}

// checkNS checks that ctr sent its requests for ref to the mirror, under
// the repository path the image reference names, each with ?ns=ns.
func checkNS(t *testing.T, ref string, sent []string, path, ns string) {
	t.Helper()
	if len(sent) == 0 {
		t.Errorf("%s: ctr --http-dump shows no request", ref)
	}
	for _, r := range sent {
		if !strings.Contains(r, " "+path) || !strings.HasSuffix(r, "?ns="+ns) {
			t.Errorf("%s: ctr sent %q, want %s... with ?ns=%s", ref, r, path, ns)
		}
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}

// go-containerregistry pushes an image through the mirror (PUSH=true),
// then skopeo pulls it back through the mirror by digest: every byte
// comes from the cache the push filled, none from upstream.
func TestPushThenSkopeoPullByDigest(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: pushEnv})
	img := ociImage(t, linuxAMD64, 2)
	if err := pushImage(t, m, "team/pushed", "v1", img, newTransport(t)); err != nil {
		t.Fatalf("push through the mirror: %v", err)
	}
	manifest, blobs := imageDigests(t, img)
	for _, b := range blobs {
		if !fake.HasBlob("team/pushed", b) {
			t.Fatalf("upstream lacks pushed blob %s", b)
		}
	}
	waitStored(t, m, append([]digest.Digest{manifest}, blobs...)...)
	before := fake.Counters()

	dir := t.TempDir()
	if err := sk.copy(t, "docker://"+m.Host+"/team/pushed@"+manifest.String(), "dir:"+dir); err != nil {
		t.Fatal(err)
	}
	got, top := readDirLayout(t, dir)
	if top != manifest || !sameDigests(got, blobs) {
		t.Fatalf("dir: layout has manifest %s and blobs %v; want %s and %v", top, got, manifest, blobs)
	}
	after := fake.Counters()
	for _, b := range blobs {
		if after.S3Get[b] != before.S3Get[b] {
			t.Errorf("blob %s was downloaded from upstream after the push", b)
		}
	}
	if after.BlobGet != before.BlobGet || after.ManifestGetByDigest != before.ManifestGetByDigest {
		t.Errorf("the pull by digest went upstream: blob GETs %d -> %d, manifest GETs %d -> %d",
			before.BlobGet, after.BlobGet, before.ManifestGetByDigest, after.ManifestGetByDigest)
	}
}

// containerd pulls from two ECR registries (two accounts of a region)
// through one mirror with a hosts.toml for each: it sends ns=<host>, and
// each image comes from its own registry, none from the other's
// same-named repository.
func TestContainerdPullsFromTwoECRHosts(t *testing.T) {
	t.Parallel()
	ctrd := startContainerd(t)
	first := fakeecr.Start(t, fakeecr.Options{})
	// A second registry that takes the region's token as it comes.
	second := fakeecr.Start(t, fakeecr.Options{Anonymous: true})
	appManifest, appBlobs := putImage(t, first, "team/app", "v1", ociImage(t, linuxAMD64, 2))
	toolManifest, toolBlobs := putImage(t, second, "team/app", "v1", ociImage(t, linuxAMD64, 3))
	m := startMirror(t, first, mirrorOpts{env: map[string]string{"UPSTREAM": "ecr:" + first.URL() + ",ecr:" + second.URL()}})
	hosts := t.TempDir()
	writeHostsToml(t, hosts, first.Host(), first.URL(), m)
	writeHostsToml(t, hosts, second.Host(), second.URL(), m)

	for _, tt := range []struct {
		fake     *fakeecr.Server
		manifest digest.Digest
		blobs    []digest.Digest
	}{
		{first, appManifest, appBlobs},
		{second, toolManifest, toolBlobs},
	} {
		ref := tt.fake.Host() + "/team/app:v1"
		sent, err := ctrd.fetch(t, hosts, ref)
		if err != nil {
			t.Fatalf("fetching %s through the mirror: %v\nmirror log:\n%s", ref, err, m.Logs)
		}
		checkNS(t, ref, sent, "/v2/team/app/", url.QueryEscape(tt.fake.Host()))
		if got := ctrd.imageDigest(t, ref); got != tt.manifest {
			t.Errorf("%s is %s in containerd, want %s", ref, got, tt.manifest)
		}
		stored := ctrd.content(t)
		for _, d := range append([]digest.Digest{tt.manifest}, tt.blobs...) {
			if !slices.Contains(stored, d) {
				t.Errorf("containerd's content store lacks %s of %s", d, ref)
			}
		}
	}
	if !slices.ContainsFunc(second.Counters().Requests, func(r fakeecr.Request) bool { return r.Authorization }) {
		t.Error("the second ECR registry got no request with the region's token")
	}
}

// checkFetched checks that containerd has ref as manifest, with every blob.
func checkFetched(t *testing.T, ctrd *containerd, ref string, manifest digest.Digest, blobs []digest.Digest) {
	t.Helper()
	if got := ctrd.imageDigest(t, ref); got != manifest {
		t.Errorf("%s is %s in containerd, want %s", ref, got, manifest)
	}
	stored := ctrd.content(t)
	for _, d := range append([]digest.Digest{manifest}, blobs...) {
		if !slices.Contains(stored, d) {
			t.Errorf("containerd's content store lacks %s", d)
		}
	}
}
