package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// seededFake is a fake ECR with a single-platform image team/app:v1 and
// a two-platform index team/multi:v2.
type seededFake struct {
	fake          *fakeecr.Server
	app           digest.Digest   // team/app:v1's manifest
	appBlobs      []digest.Digest // its config and layers
	multi         digest.Digest   // team/multi:v2's index
	multiChildren []digest.Digest // its child manifests
	multiBlobs    []digest.Digest // their configs and layers
}

func newSeededFake(t *testing.T) *seededFake {
	t.Helper()
	s := &seededFake{fake: fakeecr.Start(t, fakeecr.Options{})}
	img, err := random.Image(48<<10, 3)
	if err != nil {
		t.Fatal(err)
	}
	s.app, s.appBlobs = putImage(t, s.fake, "team/app", "v1", img)
	var children map[digest.Digest][]digest.Digest
	s.multi, children = putIndex(t, s.fake, "team/multi", "v2", multiArchIndex(t, linuxAMD64, linuxARM64))
	for child, blobs := range children {
		s.multiChildren = append(s.multiChildren, child)
		s.multiBlobs = append(s.multiBlobs, blobs...)
	}
	return s
}

// all is every digest of both images.
func (s *seededFake) all() []digest.Digest {
	return slices.Concat([]digest.Digest{s.app, s.multi}, s.appBlobs, s.multiChildren, s.multiBlobs)
}

// exportBundle exports both images through a mirror of s and returns the
// archive's path and what export says it wrote.
func exportBundle(t *testing.T, s *seededFake) (string, imageclient.ExportSummary) {
	t.Helper()
	m := startMirror(t, s.fake, mirrorOpts{})
	out := filepath.Join(t.TempDir(), "bundle.tar")
	code, stdout, errOut := cli(t, nil, "export", "--mirror", m.URL, "--json", "-o", out, "team/app:v1", "team/multi:v2")
	if code != exitOK {
		t.Fatalf("export: exit %d\n%s", code, errOut)
	}
	var sum imageclient.ExportSummary
	// Both are Docker-typed in ECR (the index's children are), so both
	// are archived rewritten to OCI types, ECR's manifests beside.
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || len(sum.Images) != 2 ||
		sum.Images[0].SourceDigest != s.app || sum.Images[1].SourceDigest != s.multi ||
		sum.Images[0].MediaType != oci.MediaTypeImageManifest || sum.Images[1].MediaType != oci.MediaTypeImageIndex {
		t.Fatalf("export --json: %v\n%s", err, stdout)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() != sum.Bytes {
		t.Fatalf("archive: %v (summary says %d bytes)", err, sum.Bytes)
	}
	m.Stop()
	return out, sum
}

func TestExportSkopeoReads(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	s := newSeededFake(t)
	bundle, sum := exportBundle(t, s)
	tests := []struct {
		ref  string
		opts []string
		top  digest.Digest
		want []digest.Digest // config and layers, besides manifests
	}{
		{ref: "team/app:v1", top: sum.Images[0].Digest, want: s.appBlobs},
		{ref: "team/multi:v2", opts: []string{"--all"}, top: sum.Images[1].Digest, want: s.multiBlobs},
	}
	for _, tt := range tests {
		dst := filepath.Join(t.TempDir(), "layout")
		args := append([]string{"--policy", sk.policy, "--registries.d", sk.regsd, "--tmpdir", sk.tmp,
			"--command-timeout", clientCmdTimeout.String(), "copy", "--preserve-digests"}, tt.opts...)
		args = append(args, "oci-archive:"+bundle+":"+tt.ref, "oci:"+dst+":copy")
		if _, _, err := runTool(t, sk.env, sk.bin, args...); err != nil {
			t.Fatalf("skopeo copy oci-archive:%s: %v", tt.ref, err)
		}
		blobs, refs := readOCILayout(t, dst) // every file hashes to its name
		if refs["copy"] != tt.top {
			t.Errorf("%s: skopeo's copy names %s, want %s", tt.ref, refs["copy"], tt.top)
		}
		for _, d := range tt.want {
			if !slices.Contains(blobs, d) {
				t.Errorf("%s: skopeo's copy lacks %s (it has %v)", tt.ref, d, blobs)
			}
		}
		if !slices.Contains(blobs, tt.top) {
			t.Errorf("%s: skopeo's copy lacks its manifest %s", tt.ref, tt.top)
		}
	}
}

func TestImportServesOffline(t *testing.T) {
	t.Parallel()
	s := newSeededFake(t)
	bundle, _ := exportBundle(t, s)
	s.fake.ResetCounters()

	// An empty CACHE_DIR at a site whose ECR is unreachable.
	dir := filepath.Join(t.TempDir(), "cache")
	code, stdout, errOut := cli(t, map[string]string{"CACHE_DIR": dir}, "import", "--json", bundle)
	if code != exitOK {
		t.Fatalf("import: exit %d\n%s", code, errOut)
	}
	var rep admin.ImportReport
	// ECR's manifests are imported beside their OCI rewrites, and the
	// tags name ECR's.
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Images) != 2 || rep.New != len(s.all())+4 ||
		rep.Images[0].Name != "team/app:v1" || !rep.Images[0].Tagged || rep.Images[0].Digest != s.app ||
		rep.Images[1].Name != "team/multi:v2" || rep.Images[1].Digest != s.multi {
		t.Fatalf("import --json: %v\n%s", err, stdout)
	}
	s.fake.SetDown(true)
	m := startMirror(t, s.fake, mirrorOpts{dir: dir, env: map[string]string{"STALE_IF_ERROR": "always", "UPSTREAM_TAG_TIMEOUT": "500ms"}})
	for _, ref := range []string{"team/app:v1", "team/app@" + s.app.String()} {
		img, err := pullImage(t, m, ref)
		if err != nil {
			t.Fatalf("pull %s with ECR down: %v", ref, err)
		}
		if d, _ := img.Digest(); d.String() != s.app.String() {
			t.Errorf("pull %s: manifest %s, want %s", ref, d, s.app)
		}
	}
	// The index, by tag, as a multi-platform client asks for it.
	hdr := map[string][]string{"Accept": {oci.MediaTypeImageIndex + ", " + oci.MediaTypeImageManifest}}
	resp, body, err := get(t, "GET", m.URL+"/v2/team/multi/manifests/v2", hdr)
	if err != nil || resp.StatusCode != 200 || digest.FromBytes(body) != s.multi {
		t.Fatalf("index by tag with ECR down: %v %v, digest %s want %s", err, resp, digest.FromBytes(body), s.multi)
	}
	if got := s3Gets(s.fake.Counters()); got != 0 {
		t.Errorf("the offline site fetched %d blobs from ECR", got)
	}
}

// tamper rewrites the archive with one byte flipped in the blob dgst.
func tamper(t *testing.T, src string, dgst digest.Digest) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "tampered.tar")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "blobs/sha256/"+dgst.Encoded() {
			b[len(b)/2] ^= 0x01
			found = true
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("%s is not in %s", dgst, src)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestImportRefusesTampered(t *testing.T) {
	t.Parallel()
	s := newSeededFake(t)
	bundle, _ := exportBundle(t, s)
	for _, mode := range []string{"stopped", "running"} {
		t.Run(mode, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cache")
			env := map[string]string{"CACHE_DIR": dir}
			if mode == "running" {
				startMirror(t, s.fake, mirrorOpts{dir: dir})
			}
			// A layer in the middle of the archive: blobs before it
			// were admitted and must go again.
			bad := s.appBlobs[1]
			code, _, errOut := cli(t, env, "import", tamper(t, bundle, bad))
			if code != exitFail || !strings.Contains(errOut, bad.String()) {
				t.Fatalf("import of a tampered archive: exit %d, want %d naming %s:\n%s", code, exitFail, bad, errOut)
			}
			code, stdout, errOut := cli(t, env, "cache", "ls", "--json")
			if code != exitOK {
				t.Fatalf("cache ls: exit %d\n%s", code, errOut)
			}
			var l admin.Listing
			if err := json.Unmarshal([]byte(stdout), &l); err != nil {
				t.Fatal(err)
			}
			if len(l.Entries) != 0 || len(l.Tags) != 0 {
				t.Errorf("a refused import left %d entries and %d tags: %+v", len(l.Entries), len(l.Tags), l)
			}
		})
	}
}

// listing runs cache ls --json.
func listing(t *testing.T, env map[string]string) admin.Listing {
	t.Helper()
	code, stdout, errOut := cli(t, env, "cache", "ls", "--json")
	if code != exitOK {
		t.Fatalf("cache ls: exit %d\n%s", code, errOut)
	}
	var l admin.Listing
	if err := json.Unmarshal([]byte(stdout), &l); err != nil {
		t.Fatalf("cache ls --json: %v\n%s", err, stdout)
	}
	return l
}

// TestCacheCommandsBothWays runs every cache command on a running mirror
// (admin socket) and on its stopped CACHE_DIR, with the same results.
func TestCacheCommandsBothWays(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"running", "stopped"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := newSeededFake(t)
			m := startMirror(t, s.fake, mirrorOpts{})
			env := map[string]string{"CACHE_DIR": m.Dir, "CACHE_MAX_SIZE": "1g"}
			if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1", "team/multi:v2"); code != exitOK {
				t.Fatalf("warm: exit %d\n%s", code, errOut)
			}
			waitStored(t, m, s.all()...)
			if mode == "stopped" {
				m.Stop()
			} else if _, err := os.Stat(filepath.Join(m.Dir, admin.SocketName)); err != nil {
				t.Fatalf("no admin socket: %v", err)
			}
			// A file lands on disk a moment before its index record.
			var l admin.Listing
			testwait.Until(t, "every entry indexed", func() bool {
				l = listing(t, env)
				return len(l.Entries) == len(s.all())
			})
			stored := map[digest.Digest]admin.Entry{}
			for _, e := range l.Entries {
				stored[e.Digest] = e
			}
			for _, d := range s.all() {
				if _, ok := stored[d]; !ok {
					t.Errorf("cache ls lacks %s", d)
				}
			}
			if e := stored[s.multi]; e.Kind != "index" || stored[s.app].Kind != "manifest" || stored[s.appBlobs[0]].Kind != "blob" {
				t.Errorf("kinds: index %q, manifest %q, blob %q", e.Kind, stored[s.app].Kind, stored[s.appBlobs[0]].Kind)
			}
			if l.Totals.Entries != len(s.all()) || l.Totals.Manifests != 4 || l.Totals.MaxBytes != 1<<30 {
				t.Errorf("totals %+v", l.Totals)
			}
			tags := map[string]digest.Digest{}
			for _, tg := range l.Tags {
				tags[tg.Repository+":"+tg.Tag] = tg.Digest
			}
			if tags["team/app:v1"] != s.app || tags["team/multi:v2"] != s.multi {
				t.Errorf("tags seen: %v", tags)
			}

			// pin by tag, then the pin is listed and its entries marked.
			code, stdout, errOut := cli(t, env, "cache", "pin", "--json", "team/multi:v2")
			if code != exitOK {
				t.Fatalf("pin: exit %d\n%s", code, errOut)
			}
			var pin admin.PinReport
			if err := json.Unmarshal([]byte(stdout), &pin); err != nil || pin.Digest != s.multi || pin.Bytes <= 0 || pin.Fetched != (mode == "running") {
				t.Errorf("pin --json: %v %+v", err, pin)
			}
			l = listing(t, env)
			if len(l.Pins) != 1 || l.Pins[0].Digest != s.multi || l.Pins[0].Names[0] != "team/multi:v2" {
				t.Errorf("pins: %+v", l.Pins)
			}
			// A pinned image is not purged, by name or with --all.
			if code, _, errOut := cli(t, env, "cache", "purge", "team/multi:v2"); code != exitFail || !strings.Contains(errOut, "pinned") {
				t.Errorf("purge of a pinned image: exit %d\n%s", code, errOut)
			}
			code, stdout, errOut = cli(t, env, "cache", "purge", "--all", "--json")
			if code != exitOK {
				t.Fatalf("purge --all: exit %d\n%s", code, errOut)
			}
			var purged admin.PurgeReport
			if err := json.Unmarshal([]byte(stdout), &purged); err != nil || len(purged.Removed) != 1+len(s.appBlobs) || purged.PinnedKept != 1 {
				t.Errorf("purge --all: %v %+v", err, purged)
			}
			l = listing(t, env)
			if want := 1 + len(s.multiChildren) + len(s.multiBlobs); len(l.Entries) != want || len(l.Tags) != 1 {
				t.Errorf("after purge --all: %d entries (want the pinned %d), tags %+v", len(l.Entries), want, l.Tags)
			}
			for _, d := range s.appBlobs {
				if m.stored(d) {
					t.Errorf("purged %s still on disk", d)
				}
			}
			// Unpin, then purge by digest removes it.
			if code, _, errOut := cli(t, env, "cache", "unpin", "team/multi:v2"); code != exitOK {
				t.Fatalf("unpin: exit %d\n%s", code, errOut)
			}
			if code, _, errOut := cli(t, env, "cache", "unpin", "team/multi:v2"); code != exitFail || !strings.Contains(errOut, "not pinned") {
				t.Errorf("second unpin: exit %d\n%s", code, errOut)
			}
			if code, _, errOut := cli(t, env, "cache", "purge", s.multi.String()); code != exitOK {
				t.Fatalf("purge DIGEST: exit %d\n%s", code, errOut)
			}
			if l = listing(t, env); len(l.Entries) != 0 || len(l.Pins) != 0 || len(l.Tags) != 0 {
				t.Errorf("after purging everything: %+v", l)
			}
			// verify finds a byte flipped on disk, both ways.
			if mode == "running" {
				if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1"); code != exitOK {
					t.Fatalf("warm: exit %d\n%s", code, errOut)
				}
				testwait.Until(t, "the image indexed", func() bool { return len(listing(t, env).Entries) == 1+len(s.appBlobs) })
			} else {
				m = startMirror(t, s.fake, mirrorOpts{dir: m.Dir})
				if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1"); code != exitOK {
					t.Fatalf("warm: exit %d\n%s", code, errOut)
				}
				waitStored(t, m, append([]digest.Digest{s.app}, s.appBlobs...)...)
				m.Stop()
			}
			flipByte(t, m.blobPath(s.appBlobs[0]))
			code, stdout, errOut = cli(t, env, "cache", "verify", "--repair")
			if code != exitFail || !strings.Contains(stdout, "bad "+s.appBlobs[0].String()) || !strings.Contains(stdout, "removed "+s.appBlobs[0].String()) {
				t.Errorf("verify --repair: exit %d\n%s%s", code, stdout, errOut)
			}
			if code, _, errOut := cli(t, env, "cache", "verify"); code != exitOK {
				t.Errorf("verify after repair: exit %d\n%s", code, errOut)
			}
		})
	}
}

// flipByte flips a byte in the middle of a stored file (same size, so
// only a rehash finds it).
func flipByte(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A pinned image survives eviction pressure that evicts everything else,
// and a restart. (Sizes are small, the budget in proportion: what counts
// is how the images fall against it.)
func TestPinSurvivesEviction(t *testing.T) {
	t.Parallel()
	const budget = 320 << 10
	fake := fakeecr.Start(t, fakeecr.Options{})
	var images []digest.Digest
	var blobs [][]digest.Digest
	for i := range 6 {
		img, err := random.Image(64<<10, 2) // ~128 KiB an image: 2 fit beside the pin, not 3
		if err != nil {
			t.Fatal(err)
		}
		m, b := putImage(t, fake, "team/app", "v"+string(rune('0'+i)), img)
		images, blobs = append(images, m), append(blobs, b)
	}
	m := startMirror(t, fake, mirrorOpts{maxSize: "320k"})
	env := map[string]string{"CACHE_DIR": m.Dir}
	if code, _, errOut := cli(t, env, "cache", "pin", "team/app:v0"); code != exitOK {
		t.Fatalf("pin: exit %d\n%s", code, errOut)
	}
	pinned := append([]digest.Digest{images[0]}, blobs[0]...)
	for round := range 2 {
		for i := 1; i < len(images); i++ {
			if _, err := pullImage(t, m, "team/app:v"+string(rune('0'+i))); err != nil {
				t.Fatalf("pull v%d: %v", i, err)
			}
			// The client has every byte before the mirror commits the
			// last of them; wait, so that no commit (an unlink here, a
			// rename there) runs while the files are summed below.
			waitStored(t, m, append([]digest.Digest{images[i]}, blobs[i]...)...)
		}
		for _, d := range pinned {
			if !m.stored(d) {
				t.Fatalf("round %d: pinned %s evicted", round, d)
			}
		}
		if m.storedBytes(t) > budget {
			t.Errorf("round %d: %d bytes stored, over the %d byte budget", round, m.storedBytes(t), budget)
		}
		for _, d := range blobs[1] {
			if m.stored(d) {
				t.Errorf("round %d: %s of the oldest unpinned image survived", round, d)
			}
		}
		// Pins survive a restart.
		m.Stop()
		m = startMirror(t, fake, mirrorOpts{dir: m.Dir, maxSize: "320k"})
	}
	// Too large to pin beside it: refused, nothing changes.
	if code, _, errOut := cli(t, env, "cache", "pin", "team/app:v1"); code != exitOK {
		t.Fatalf("second pin: exit %d\n%s", code, errOut)
	}
	img, err := random.Image(128<<10, 1)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, fake, "team/big", "v1", img)
	code, _, errOut := cli(t, env, "cache", "pin", "team/big:v1")
	if code != exitFail || !strings.Contains(errOut, "CACHE_MAX_SIZE") && !strings.Contains(errOut, "budget") {
		t.Errorf("pin beyond the budget: exit %d\n%s", code, errOut)
	}
}

// Purging while another image is being pulled never breaks that pull.
func TestPurgeDuringPull(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(512<<10, 4)
	if err != nil {
		t.Fatal(err)
	}
	_, bigBlobs := putImage(t, fake, "team/big", "v1", img)
	small, err := random.Image(64<<10, 2)
	if err != nil {
		t.Fatal(err)
	}
	putImage(t, fake, "team/small", "v1", small)
	m := startMirror(t, fake, mirrorOpts{})
	env := map[string]string{"CACHE_DIR": m.Dir}
	if _, err := pullImage(t, m, "team/big:v1"); err != nil {
		t.Fatal(err)
	}
	waitStored(t, m, bigBlobs...)
	// Pull the cached big image (files opened and streamed) and the
	// small one (a miss) again and again while purging both.
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	stop := make(chan struct{})
	for _, ref := range []string{"team/big:v1", "team/small:v1"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := pullImage(t, m, ref); err != nil {
					errc <- errors.New(ref + ": " + err.Error())
					return
				}
			}
		}()
	}
	for range 10 {
		for _, args := range [][]string{{"cache", "purge", "team/small:v1"}, {"cache", "purge", "--all"}} {
			if code, _, errOut := cli(t, env, args...); code != exitOK && !strings.Contains(errOut, "not in the cache") && !strings.Contains(errOut, "no record") {
				t.Errorf("%q: exit %d\n%s", args, code, errOut)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("a pull broke during purges: %v", err)
	}
	if code, _, errOut := cli(t, env, "cache", "verify"); code != exitOK {
		t.Errorf("verify after purges: exit %d\n%s", code, errOut)
	}
}

// runBinary runs the ecr-mirror binary with CACHE_DIR=dir and returns its
// exit status and output.
func runBinary(t *testing.T, bin, dir string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "CACHE_DIR="+dir, "CACHE_MAX_SIZE=1g")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// The real binary: the cache commands reach a running mirror process
// through its admin socket, fall back to the directory once it was
// killed (its socket left behind), and a bundle exported from one mirror
// is imported by another.
func TestBinaryCacheTools(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	s := newSeededFake(t)
	dir := t.TempDir()
	p := startProcess(t, bin, s.fake, dir)
	mirrorURL := "http://" + p.addr
	if code, _, errOut := runBinary(t, bin, dir, "warm", "--mirror", mirrorURL, "team/app:v1"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	if code, out, errOut := runBinary(t, bin, dir, "cache", "pin", "team/multi:v2"); code != exitOK || !strings.Contains(out, "pinned team/multi:v2") {
		t.Fatalf("pin on the running process: exit %d\n%s%s", code, out, errOut)
	}
	bundle := filepath.Join(t.TempDir(), "b.tar")
	if code, _, errOut := runBinary(t, bin, dir, "export", "--mirror", mirrorURL, "--quiet", "-o", bundle, "team/app:v1", "team/multi:v2"); code != exitOK {
		t.Fatalf("export: exit %d\n%s", code, errOut)
	}
	running := listingOf(t, bin, dir)

	// kill -9 leaves admin.sock behind; the commands see that no one
	// answers on it and open the directory.
	if _, ok := p.signal(t, syscall.SIGKILL, 10*time.Second); !ok {
		t.Fatal("the mirror did not die")
	}
	if _, err := os.Stat(filepath.Join(dir, admin.SocketName)); err != nil {
		t.Fatalf("want the socket left behind by kill -9: %v", err)
	}
	stopped := listingOf(t, bin, dir)
	if len(stopped.Entries) != len(running.Entries) || len(stopped.Pins) != 1 || stopped.Pins[0].Digest != s.multi ||
		stopped.Totals.Bytes != running.Totals.Bytes || stopped.Totals.PinnedBytes != running.Totals.PinnedBytes {
		t.Errorf("stopped listing differs from the running one:\nrunning %+v\nstopped %+v", running.Totals, stopped.Totals)
	}

	other := filepath.Join(t.TempDir(), "site")
	code, out, errOut := runBinary(t, bin, other, "import", bundle)
	if code != exitOK || !strings.Contains(out, "imported team/app:v1 "+s.app.String()) {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	imported := listingOf(t, bin, other)
	for _, d := range s.all() {
		if !slices.ContainsFunc(imported.Entries, func(e admin.Entry) bool { return e.Digest == d }) {
			t.Errorf("imported cache lacks %s", d)
		}
	}
}

func listingOf(t *testing.T, bin, dir string) admin.Listing {
	t.Helper()
	code, out, errOut := runBinary(t, bin, dir, "cache", "ls", "--json")
	if code != exitOK {
		t.Fatalf("cache ls: exit %d\n%s", code, errOut)
	}
	var l admin.Listing
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("cache ls --json: %v\n%s", err, out)
	}
	return l
}
