package cache

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/ecr-mirror/ecr-mirror/internal/dirtree"
)

// stageAll stages n and everything it references.
func stageAll(t testing.TB, st *Stage, n *node) {
	t.Helper()
	for _, c := range closure(n) {
		if err := st.Add(c.dgst, c.size(), c.mediaType, bytes.NewReader(c.data)); err != nil {
			t.Fatalf("stage %s: %v", c.name, err)
		}
	}
}

// stageKeys returns the stage/ journal records in the store's index.
func stageKeys(t testing.TB, s *Store) []string {
	t.Helper()
	stages, err := loadStages(s.db)
	if err != nil {
		t.Fatal(err)
	}
	return keys(stages)
}

func TestStageAdmitsAllOrNothing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// budget is MaxSize; old is stored first, then img is staged.
		budget int64
		// run stages img (and more) and admits or discards it.
		run func(t *testing.T, s *Store, st *Stage, img *node) error
		// want says whether img ends stored; wantErr the error, if any.
		want    bool
		wantErr error
	}{
		{name: "admitted", budget: 1 << 20, want: true, run: func(t *testing.T, s *Store, st *Stage, img *node) error {
			stageAll(t, st, img)
			if stored(s, img) || storedOf(s, img.refs...) != "000" {
				t.Fatal("staged content is visible before Admit")
			}
			added, err := st.Admit()
			if len(added) != len(closure(img)) {
				t.Errorf("Admit added %d entries, want %d", len(added), len(closure(img)))
			}
			return err
		}},
		{name: "discarded", budget: 1 << 20, run: func(t *testing.T, s *Store, st *Stage, img *node) error {
			stageAll(t, st, img)
			return st.Discard()
		}},
		{name: "wrong bytes", budget: 1 << 20, wantErr: ErrDigestMismatch, run: func(t *testing.T, s *Store, st *Stage, img *node) error {
			bad := bytes.Clone(img.refs[1].data)
			bad[0] ^= 1
			return st.Add(img.refs[1].dgst, img.refs[1].size(), "", bytes.NewReader(bad))
		}},
		{name: "short body", budget: 1 << 20, wantErr: ErrSizeMismatch, run: func(t *testing.T, s *Store, st *Stage, img *node) error {
			l := img.refs[1]
			return st.Add(l.dgst, l.size(), "", bytes.NewReader(l.data[:10]))
		}},
		{name: "larger than the budget", budget: 5000, wantErr: ErrStageTooLarge, run: func(t *testing.T, s *Store, st *Stage, img *node) error {
			stageAll(t, st, img)
			_, err := st.Admit()
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, tt.budget)
			old := imageNode("old", layerNode("old-l", 800, 1000))
			pull(t, s, old)
			img := imageNode("img", layerNode("l1", 801, 3000), layerNode("l2", 802, 3000))
			st, err := s.NewStage()
			if err != nil {
				t.Fatal(err)
			}
			err = tt.run(t, s, st, img)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			st.Discard()
			wantStored := "000"
			if tt.want {
				wantStored = "111"
			}
			if got := storedOf(s, img, img.refs[1], img.refs[2]); got != wantStored {
				t.Fatalf("image, layers stored = %s, want %s", got, wantStored)
			}
			if !stored(s, old) {
				t.Fatal("the image stored before is gone")
			}
			assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
			if k := stageKeys(t, s); len(k) > 0 {
				t.Fatalf("journal records left: %v", k)
			}
			checkStore(t, s, dir)
			// And so after a restart.
			s.Close()
			s = openStore(t, dir, tt.budget)
			if got := storedOf(s, img, img.refs[1], img.refs[2]); got != wantStored {
				t.Fatalf("after reopen: image, layers stored = %s, want %s", got, wantStored)
			}
			checkStore(t, s, dir)
		})
	}
}

// TestStageEvictionSparesWhatItNeeds: making room for staged content
// evicts the least recently used images, but never one holding stored
// content the staged manifests reference.
func TestStageEvictionSparesWhatItNeeds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 12000)
	base := layerNode("base", 810, 3000)
	older := imageNode("older", base)                            // least recently used, holds base
	other := imageNode("other", layerNode("other-l", 811, 3000)) // next
	pull(t, s, older)
	pull(t, s, other)
	img := imageNode("img", base, layerNode("new", 812, 4500))
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range closure(img) {
		if stored(s, c) {
			st.Need(c.dgst)
			continue
		}
		if err := st.Add(c.dgst, c.size(), c.mediaType, bytes.NewReader(c.data)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Admit(); err != nil {
		t.Fatal(err)
	}
	if got := storedOf(s, older, base, other, img); got != "1101" {
		t.Fatalf("older, base, other, img stored = %s, want other evicted and the rest kept", got)
	}
	checkWhole(t, s, img)
	checkStore(t, s, dir)
}

// crashEnv names the directory TestStageCrashChild works in, and the step
// of Admit at which it kills itself.
const (
	crashDirEnv  = "ECR_MIRROR_TEST_STAGE_DIR"
	crashStepEnv = "ECR_MIRROR_TEST_STAGE_STEP"
)

// crashImage is what TestStageCrashChild stages.
func crashImage() *node {
	return imageNode("crash", layerNode("c1", 820, 5000), layerNode("c2", 821, 7000))
}

// TestStageCrashChild is the process TestStageCrashAdmitsNothing kills:
// it stages crashImage and dies by SIGKILL at the step named, with no
// chance to clean up.
func TestStageCrashChild(t *testing.T) {
	dir, step := os.Getenv(crashDirEnv), os.Getenv(crashStepEnv)
	if dir == "" {
		t.Skip("run by TestStageCrashAdmitsNothing")
	}
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	die := func() { syscall.Kill(os.Getpid(), syscall.SIGKILL); select {} }
	s.stageHook = func(at string) {
		if at == step {
			die()
		}
	}
	st, err := s.NewStage()
	if err != nil {
		t.Fatal(err)
	}
	stageAll(t, st, crashImage())
	if step == "staged" {
		die()
	}
	if _, err := st.Admit(); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("step %q never came", step)
}

// TestStageCrashAdmitsNothing kills a process at every step of an
// admission: afterwards a read-only open shows none of the staged image
// and changes nothing, and the next writing open removes every trace
// of it (files, records, journal, staging directory).
func TestStageCrashAdmitsNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("runs a child process")
	}
	for _, step := range []string{"staged", "journaled", "moved", "indexed"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			kept := imageNode("kept", layerNode("k1", 830, 2000))
			pull(t, s, kept)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestStageCrashChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashStepEnv+"="+step)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child: %v, want killed at %s\n%s", err, step, out)
			}
			img := crashImage()
			onDisk := func() int {
				n := 0
				for _, c := range closure(img) {
					if fileExists(filepath.Join(dir, blobsDirName, relBlobPath(c.dgst))) {
						n++
					}
				}
				return n
			}
			if step == "moved" && onDisk() == 0 {
				t.Fatal("the crash came before the files moved: the test proves nothing")
			}

			before, err := dirtree.Snapshot(dir, nil)
			if err != nil {
				t.Fatal(err)
			}
			ro, err := Open(Options{Dir: dir, MaxSize: 1 << 20, ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := storedOf(ro, append(closure(img), kept)...); got != "00001" {
				t.Errorf("read-only after the crash: image, config, layers, kept = %s, want only kept", got)
			}
			ro.Close()
			after, err := dirtree.Snapshot(dir, func(rel string) bool { return strings.HasPrefix(rel, indexDirName) })
			if err != nil {
				t.Fatal(err)
			}
			// Badger may recover its log to read it; nothing else moves.
			before = slicesWithout(before, indexDirName)
			if d := dirtree.Diff(before, after); len(d) > 0 {
				t.Errorf("a read-only open after the crash changed the directory:\n%s", strings.Join(d, "\n"))
			}

			s = openStore(t, dir, 1<<20)
			if got := storedOf(s, append(closure(img), kept)...); got != "00001" {
				t.Fatalf("after the crash: image, config, layers, kept = %s, want only kept", got)
			}
			checkWhole(t, s, kept)
			if n := onDisk(); n != 0 {
				t.Errorf("%d files of the image left under blobs/", n)
			}
			assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
			if k := stageKeys(t, s); len(k) > 0 {
				t.Errorf("journal records left: %v", k)
			}
			if got := indexed(t, s); len(got) != len(closure(kept)) {
				t.Errorf("index holds %d records, want the %d of kept", len(got), len(closure(kept)))
			}
			err = s.db.View(func(txn *badger.Txn) error {
				_, err := txn.Get(refKey(img.dgst))
				return err
			})
			if !errors.Is(err, badger.ErrKeyNotFound) {
				t.Errorf("ref record of the image: %v, want none", err)
			}
			checkStore(t, s, dir)
		})
	}
}

// slicesWithout drops the snapshot lines under prefix.
func slicesWithout(lines []string, prefix string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
