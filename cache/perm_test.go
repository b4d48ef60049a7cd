package cache

import (
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// assertOwnerOnly walks root without following links and fails for every
// directory that is not 0700 and every regular file that is not 0600.
func assertOwnerOnly(t *testing.T, root string) (dirs, files int) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch perm := info.Mode().Perm(); {
		case d.IsDir():
			dirs++
			if perm != 0o700 {
				t.Errorf("directory %s has mode %v, want 0700", path, perm)
			}
		case d.Type().IsRegular():
			files++
			if perm != 0o600 {
				t.Errorf("file %s has mode %v, want 0600", path, perm)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs, files
}

func TestStoreWritesOwnerOnly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "cache") // Open creates it
	s := openStore(t, dir, 1<<30)
	for i := range 20 {
		data, dgst := blob(uint64(i), 64<<10)
		mustPut(t, s, data, dgst)
		if err := s.PutTag(Repo{Name: "team/app"}, "v"+string(rune('a'+i)), AnyAccept, TagRecord{Digest: dgst, Size: int64(len(data)), Checked: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	_, pending := blob(99, 10)
	w, err := s.Create(pending, 10, "application/octet-stream")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("half")); err != nil { // a download in progress in tmp/
		t.Fatal(err)
	}
	// While open: blobs/ and tmp/ are owner-only already; index/ is
	// closed to others by its own mode.
	for _, sub := range []string{blobsDirName, tmpDirName} {
		assertOwnerOnly(t, filepath.Join(dir, sub))
	}
	if fi, err := os.Stat(filepath.Join(dir, indexDirName)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("index/ while open: %v, %v; want mode 0700", fi, err)
	}
	w.Abort(nil)
	if err := s.Close(); err != nil { // flushes Badger's tables
		t.Fatal(err)
	}
	dirs, files := assertOwnerOnly(t, dir)
	index, err := os.ReadDir(filepath.Join(dir, indexDirName))
	if err != nil {
		t.Fatal(err)
	}
	if dirs < 4 || files < 20 || len(index) < 3 {
		t.Errorf("walked %d directories, %d files (index/ holds %d entries): the store wrote less than expected", dirs, files, len(index))
	}
}

func TestOpenMakesOlderModesOwnerOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<30)
	data, dgst := blob(1, 4096)
	mustPut(t, s, data, dgst)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// As an older version left it: 0755 directories, 0644 files.
	loosen := func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.Chmod(path, 0o755)
		}
		return os.Chmod(path, 0o644)
	}
	if err := filepath.WalkDir(dir, loosen); err != nil {
		t.Fatal(err)
	}
	// Links into the store that point outside it: never followed.
	outside := t.TempDir()
	if err := os.Chmod(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	outFile := filepath.Join(outside, "not-the-store's")
	if err := os.WriteFile(outFile, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(outFile, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	links := []struct{ link, target string }{
		{link: filepath.Join(dir, indexDirName, "elsewhere.file"), target: outFile},
		{link: filepath.Join(dir, indexDirName, "elsewhere.dir"), target: outside},
		{link: filepath.Join(dir, blobsDirName, "sha256", "zz"), target: outside},
	}
	for _, l := range links {
		if err := os.Symlink(l.target, l.link); err != nil {
			t.Fatal(err)
		}
	}

	s = openStore(t, dir, 1<<30)
	readEntry(t, s, dgst, data)
	assertOwnerOnly(t, dir)
	for path, want := range map[string]fs.FileMode{outside: 0o755, outFile: 0o644} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s outside the store: %v, %v; want mode %v kept", path, fi, err, want)
		}
	}
	for _, l := range links {
		if fi, err := os.Lstat(l.link); err == nil && fi.Mode().Type() != fs.ModeSymlink {
			t.Errorf("%s is no longer a symlink: %v", l.link, fi.Mode())
		}
	}
}

func TestFixModesLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		make func(t *testing.T, dir string) string // returns the path to check
		want fs.FileMode
	}{
		{name: "file 0000 made 0600", want: 0o600, make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, tmpDirName, "locked")
			writeMode(t, p, 0o000)
			return p
		}},
		{name: "file 0444 made 0600", want: 0o600, make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, blobsDirName, "ro")
			writeMode(t, p, 0o444)
			return p
		}},
		{name: "entry outside the store's directories", want: 0o644, make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "operator-notes")
			writeMode(t, p, 0o644)
			return p
		}},
		{name: "fifo", want: 0o644, make: func(t *testing.T, dir string) string {
			p := filepath.Join(dir, tmpDirName, "fifo")
			if err := syscall.Mkfifo(p, 0o644); err != nil {
				t.Skip("no fifo:", err)
			}
			return p
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for _, sub := range storeDirs() {
				if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			path := tt.make(t, dir)
			if err := fixModes(dir, storeDirs(), slog.New(slog.DiscardHandler)); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Lstat(path)
			if err != nil || fi.Mode().Perm() != tt.want {
				t.Errorf("%s: %v, %v; want mode %v", path, fi, err, tt.want)
			}
			if fi, err := os.Lstat(dir); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("the store's directory: %v, %v; want 0700", fi, err)
			}
		})
	}
}

func writeMode(t *testing.T, path string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
