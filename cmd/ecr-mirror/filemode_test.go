package main

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// ownerOnlyViolations walks dir without following links and lists every
// directory that is not 0700 and every regular file that is not 0600.
func ownerOnlyViolations(t *testing.T, dir string) (bad []string, files int) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		perm := info.Mode().Perm()
		switch {
		case d.IsDir() && perm != 0o700, d.Type().IsRegular() && perm != 0o600:
			bad = append(bad, path+" "+perm.String())
		}
		if d.Type().IsRegular() {
			files++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bad, files
}

// The running binary writes nothing under CACHE_DIR that another local
// user can read: not the blobs, not Badger's index files while it runs,
// whatever umask it was started with. A cache command that writes to the
// stopped directory makes it so again; one that only looks (cache ls)
// changes nothing, modes included.
func TestProcessCacheDirOwnerOnly(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	var dgsts []string
	for i := range 3 {
		dgsts = append(dgsts, fake.PutBlob("team/app", testkit.RandomBytes(uint64(60+i), 256<<10)).String())
	}
	dir := filepath.Join(t.TempDir(), "cache") // the binary creates it
	// The child inherits the test process's umask (typically 022).
	p := startProcess(t, bin, fake, dir)
	m := &mirror{URL: "http://" + p.addr, Dir: dir}
	for _, d := range dgsts {
		if resp, _, err := get(t, "GET", m.URL+"/v2/team/app/blobs/"+d, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("pull %s: %v", d, err)
		}
	}
	testwait.Until(t, "the blobs are stored", func() bool {
		_, files := ownerOnlyViolations(t, filepath.Join(dir, "blobs"))
		return files == len(dgsts)
	})
	if bad, _ := ownerOnlyViolations(t, dir); len(bad) > 0 {
		t.Errorf("while serving, not owner-only:\n%s", strings.Join(bad, "\n"))
	}
	// Badger creates its later files (tables, value logs) with 0666 less
	// the umask: the server runs with 077 whatever it inherited.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(status), "\nUmask:\t0077\n") {
		t.Errorf("the server's umask is not 0077:\n%s", status)
	}
	if err, exited := p.signal(t, syscall.SIGTERM, 15*time.Second); !exited || err != nil {
		t.Fatalf("SIGTERM: exited %v, %v", exited, err)
	}
	if bad, _ := ownerOnlyViolations(t, dir); len(bad) > 0 {
		t.Errorf("after shutdown, not owner-only:\n%s", strings.Join(bad, "\n"))
	}
	// As an older version left it, then cache commands on the stopped
	// directory.
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir():
			return os.Chmod(path, 0o755)
		case d.Type().IsRegular():
			return os.Chmod(path, 0o644)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	loose, _ := ownerOnlyViolations(t, dir)
	if code, out, errOut := runBinary(t, bin, dir, "cache", "ls"); code != 0 {
		t.Fatalf("cache ls: exit %d\n%s%s", code, out, errOut)
	}
	if still, _ := ownerOnlyViolations(t, dir); len(still) != len(loose) {
		t.Errorf("cache ls, read-only, changed modes: %d loose entries before, %d after", len(loose), len(still))
	}
	if code, out, errOut := runBinary(t, bin, dir, "cache", "verify", "--repair"); code != 0 {
		t.Fatalf("cache verify --repair: exit %d\n%s%s", code, out, errOut)
	}
	if bad, _ := ownerOnlyViolations(t, dir); len(bad) > 0 {
		t.Errorf("after a cache command that writes, not owner-only:\n%s", strings.Join(bad, "\n"))
	}
}
