package cache

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/dirtree"
)

// outsideDir makes a directory outside any store holding keep.txt, a
// subdirectory with a file, and a file named like a blob.
func outsideDir(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	_, dgst := blob(900, 10)
	for path, data := range map[string]string{
		"keep.txt":          "not the store's",
		"sub/inner.txt":     "nor this",
		dgst.Encoded()[:2]:  "",
		dgst.Encoded()[:12]: "like a temp file",
	} {
		p := filepath.Join(out, path)
		if data == "" {
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestOpenRefusesSymlinkedStoreDirs: a symlink in place of a directory
// the store creates and cleans makes Open fail, naming it, before it
// touches anything; what the link points to is left exactly as it was,
// read-only or not, on a new directory or one with content.
func TestOpenRefusesSymlinkedStoreDirs(t *testing.T) {
	t.Parallel()
	subs := []string{blobsDirName, filepath.Join(blobsDirName, "sha256"), tmpDirName, indexDirName,
		filepath.Join(indexDirName, "MANIFEST")}
	for _, sub := range subs {
		for _, mode := range []string{"new", "stored", "read-only"} {
			t.Run(strings.ReplaceAll(sub, "/", "_")+"/"+mode, func(t *testing.T) {
				t.Parallel()
				dir, out := t.TempDir(), outsideDir(t)
				if mode != "new" {
					s := openStore(t, dir, 1<<20)
					data, dgst := blob(901, 100)
					mustPut(t, s, data, dgst)
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
				}
				link := filepath.Join(dir, sub)
				target := out
				if sub == filepath.Join(indexDirName, "MANIFEST") {
					target = filepath.Join(out, "keep.txt")
					if mode == "new" {
						os.MkdirAll(filepath.Dir(link), 0o700)
					}
				}
				if err := os.RemoveAll(link); err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(link), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, link); err != nil {
					t.Fatal(err)
				}
				before, err := dirtree.Snapshot(out, nil)
				if err != nil {
					t.Fatal(err)
				}
				s, openErr := Open(Options{Dir: dir, MaxSize: 1, ReadOnly: mode == "read-only"})
				if openErr == nil {
					s.Close()
				}
				after, err := dirtree.Snapshot(out, nil)
				if err != nil {
					t.Fatal(err)
				}
				if d := dirtree.Diff(before, after); len(d) > 0 {
					t.Errorf("Open changed the link's target:\n%s", strings.Join(d, "\n"))
				}
				if openErr == nil {
					t.Fatalf("Open with %s a symlink succeeded", sub)
				}
				if !strings.Contains(openErr.Error(), link) {
					t.Errorf("Open's error %q does not name %s", openErr, link)
				}
			})
		}
	}
}

// TestOpenRemovesDeeperLinksNotTheirTargets: links further down (in
// tmp/, in place of a fan-out directory or of a blob) are leftovers that
// Open removes as links; it never deletes or changes what they point to.
func TestOpenRemovesDeeperLinksNotTheirTargets(t *testing.T) {
	t.Parallel()
	dir, out := t.TempDir(), outsideDir(t)
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(902, 100)
	mustPut(t, s, data, dgst)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, other := blob(903, 100)
	links := map[string]string{
		filepath.Join(dir, tmpDirName, "dir-link"):                             out,
		filepath.Join(dir, tmpDirName, "file-link"):                            filepath.Join(out, "keep.txt"),
		filepath.Join(dir, blobsDirName, "sha256", "zz"):                       out,
		filepath.Join(dir, blobsDirName, "sha256", other.Encoded()[:2]+"-not"): filepath.Join(out, "sub"),
		filepath.Join(dir, blobsDirName, relBlobPath(other)):                   filepath.Join(out, "keep.txt"),
	}
	for link, target := range links {
		os.MkdirAll(filepath.Dir(link), 0o700)
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	before, err := dirtree.Snapshot(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, 1)
	s.Close()
	after, err := dirtree.Snapshot(out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := dirtree.Diff(before, after); len(d) > 0 {
		t.Fatalf("Open changed what links point to:\n%s", strings.Join(d, "\n"))
	}
	for link := range links {
		if fileExists(link) {
			t.Errorf("link %s left in place", link)
		}
	}
}
