package main

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/dirtree"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// snapshot describes every file of dir, or fails the test.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	s, err := dirtree.Snapshot(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReadOnlyCommandsKeepAStoppedCache: "cache ls" and "cache verify"
// (without --repair) on a stopped mirror's cache, with a budget far
// smaller than its content (an operator's shell without the service's
// settings), list and verify everything and change nothing: every file,
// the index's included, is as it was.
func TestReadOnlyCommandsKeepAStoppedCache(t *testing.T) {
	t.Parallel()
	s := newSeededFake(t)
	m := startMirror(t, s.fake, mirrorOpts{})
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1", "team/multi:v2"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	waitStored(t, m, s.all()...)
	testwait.Until(t, "every entry indexed", func() bool {
		return len(listing(t, map[string]string{"CACHE_DIR": m.Dir}).Entries) == len(s.all())
	})
	m.Stop()
	// A damaged layer: verify reports it, and without --repair keeps it.
	flipByte(t, m.blobPath(s.appBlobs[0]))
	// Left by a crash: the server's start removes it, a look must not.
	if err := os.WriteFile(filepath.Join(m.Dir, "tmp", "leftover"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, m.Dir)

	env := map[string]string{"CACHE_DIR": m.Dir, "CACHE_MAX_SIZE": "1k"}
	l := listing(t, env)
	if len(l.Entries) != len(s.all()) || l.Totals.MaxBytes != 1024 {
		t.Errorf("cache ls with CACHE_MAX_SIZE=1k lists %d entries (max %d), want all %d", len(l.Entries), l.Totals.MaxBytes, len(s.all()))
	}
	code, out, errOut := cli(t, env, "cache", "verify")
	if code != exitFail || !strings.Contains(out, "bad "+s.appBlobs[0].String()) || strings.Contains(out, "removed") {
		t.Errorf("cache verify: exit %d, want %d reporting %s and removing nothing\n%s%s", code, exitFail, s.appBlobs[0], out, errOut)
	}
	if d := dirtree.Diff(before, snapshot(t, m.Dir)); len(d) > 0 {
		t.Fatalf("read-only commands changed the cache:\n%s", strings.Join(d, "\n"))
	}
	// Looking again still sees it all.
	if l := listing(t, env); len(l.Entries) != len(s.all()) {
		t.Errorf("second cache ls lists %d entries, want %d", len(l.Entries), len(s.all()))
	}
	// The mirror's start with that budget does evict, and says so.
	m = startMirror(t, s.fake, mirrorOpts{dir: m.Dir, maxSize: "1k"})
	for _, want := range []string{"budget is smaller than the stored content", "max_size=1024", "evicted_entries=", "stored_bytes="} {
		if !strings.Contains(m.Logs.String(), want) {
			t.Errorf("the start's logs lack %q:\n%s", want, m.Logs.String())
		}
	}
}

// blobsOnDisk counts the files under dir named by the hex of one of
// want's digests and holding its whole size, wherever they are.
func blobsOnDisk(t *testing.T, dir string, want map[digest.Digest]int64) int {
	t.Helper()
	n := 0
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		size, ok := want[digest.NewDigestFromEncoded(digest.SHA256, d.Name())]
		if fi, err := d.Info(); ok && err == nil && fi.Size() == size {
			n++
		}
		return nil
	})
	return n
}

// TestProcessKill9DuringImportAdmitsNothing: "ecr-mirror import" killed
// by SIGKILL once it holds three blobs of the archive on disk (the
// archive comes through a FIFO, held back after the third) leaves none
// of the archive in the cache: not listed by "cache ls", not after the
// mirror's restart, and its staging is gone.
func TestProcessKill9DuringImportAdmitsNothing(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	s := newSeededFake(t)
	bundle, _ := exportBundle(t, s)
	archived := map[digest.Digest]int64{}
	dir := filepath.Join(t.TempDir(), "cache")
	fifo := filepath.Join(t.TempDir(), "bundle.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "import", "--quiet", fifo)
	cmd.Env = append(os.Environ(), "CACHE_DIR="+dir, "CACHE_MAX_SIZE=1g")
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })

	// Feed the archive entry by entry; hold it after the third blob.
	const held = 3
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	in, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(w)
	for len(archived) < held {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("the archive has fewer than %d blobs: %v", held, err)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
		if name, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && h.Typeflag == tar.TypeReg {
			archived[digest.NewDigestFromEncoded(digest.SHA256, name)] = h.Size
		}
	}
	testwait.Until(t, "the import to hold three blobs on disk", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("import exited early: %v\n%s", err, errOut.String())
		default:
		}
		return blobsOnDisk(t, dir, archived) == held
	})
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := <-exited; !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("import: %v, want killed", err)
	}

	// A look at the stopped cache, then the mirror's start.
	if l := listingOf(t, bin, dir); len(l.Entries) != 0 || len(l.Tags) != 0 {
		t.Errorf("cache ls after the kill lists %d entries and %d tags, want none", len(l.Entries), len(l.Tags))
	}
	startProcess(t, bin, s.fake, dir)
	if l := listingOf(t, bin, dir); len(l.Entries) != 0 || len(l.Tags) != 0 {
		t.Errorf("after the restart cache ls lists %d entries and %d tags, want none", len(l.Entries), len(l.Tags))
	}
	if n := blobsOnDisk(t, dir, archived); n != 0 {
		t.Errorf("%d blobs of the killed import are still on disk", n)
	}
	if tmp, err := os.ReadDir(filepath.Join(dir, "tmp")); err != nil || len(tmp) != 0 {
		t.Errorf("tmp/ after the restart: %v, %v; want empty", tmp, err)
	}
}

// serveErr runs the mirror on dir through the real config parser and
// returns the error it stops with; a mirror that starts listening
// instead is stopped and reported.
func serveErr(t *testing.T, fake *fakeecr.Server, dir string) error {
	t.Helper()
	env := map[string]string{"UPSTREAM": fake.URL(), "AWS_REGION": "eu-west-1", "AWS_ENDPOINT_URL_ECR": fake.TokenURL(),
		"LISTEN_ADDR": "127.0.0.1:0", "CACHE_DIR": dir, "CACHE_MAX_SIZE": "1g"}
	cfg, err := settings.Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, slog.New(slog.DiscardHandler), func([]net.Addr) { listening <- struct{}{} })
	}()
	select {
	case err := <-done:
		return err
	case <-listening:
		cancel()
		<-done
		return nil
	}
}

// TestSymlinkedStoreDirsTouchNothingOutside: with CACHE_DIR/tmp or
// CACHE_DIR/blobs/sha256 a symlink to a directory outside CACHE_DIR, the
// mirror refuses to start and every cache command refuses to run, each
// naming the link, and nothing outside changes (keep.txt, a
// subdirectory).
func TestSymlinkedStoreDirsTouchNothingOutside(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	for _, sub := range []string{"tmp", "blobs/sha256"} {
		t.Run(strings.ReplaceAll(sub, "/", "_"), func(t *testing.T) {
			t.Parallel()
			dir, out := t.TempDir(), t.TempDir()
			s, err := cache.Open(cache.Options{Dir: dir, MaxSize: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Put(digest.FromString("x"), "", []byte("x")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for path, data := range map[string]string{"keep.txt": "keep", "sub/inner.txt": "inner", "2d/leftover": "x"} {
				os.MkdirAll(filepath.Join(out, filepath.Dir(path)), 0o700)
				if err := os.WriteFile(filepath.Join(out, path), []byte(data), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			link := filepath.Join(dir, sub)
			if err := os.RemoveAll(link); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(out, link); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, out)
			archive := filepath.Join(t.TempDir(), "empty.tar")
			if err := os.WriteFile(archive, nil, 0o600); err != nil {
				t.Fatal(err)
			}

			if err := serveErr(t, fake, dir); err == nil || !strings.Contains(err.Error(), link) {
				t.Errorf("the mirror's start: %v, want a refusal naming %s", err, link)
			}
			env := map[string]string{"CACHE_DIR": dir, "CACHE_MAX_SIZE": "1k"}
			for _, args := range [][]string{
				{"cache", "ls"}, {"cache", "verify"}, {"cache", "verify", "--repair"},
				{"cache", "pin", "team/app:v1"}, {"cache", "unpin", "team/app:v1"},
				{"cache", "purge", "--all"}, {"import", archive},
			} {
				code, _, errOut := cli(t, env, args...)
				if code == exitOK || !strings.Contains(errOut, link) {
					t.Errorf("%s: exit %d, want a refusal naming %s:\n%s", strings.Join(args, " "), code, link, errOut)
				}
			}
			if d := dirtree.Diff(before, snapshot(t, out)); len(d) > 0 {
				t.Fatalf("files outside CACHE_DIR changed:\n%s", strings.Join(d, "\n"))
			}
		})
	}
}
