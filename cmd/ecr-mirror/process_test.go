package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// binary is the ecr-mirror command built once for the tests that run it
// as a process, as operators do.
var binary struct {
	once sync.Once
	path string
	err  error
}

// mirrorBinary returns the built command.
func mirrorBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary; skipped with -short")
	}
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "ecr-mirror-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.path = filepath.Join(dir, "ecr-mirror")
		if out, err := exec.Command("go", "build", "-o", binary.path, ".").CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}

// process is a running ecr-mirror binary.
type process struct {
	cmd  *exec.Cmd
	addr string     // where it listens
	done chan error // Wait's result
	logs testkit.SyncBuffer
}

// startProcess runs the binary against fake with a cache in dir and
// waits until it listens.
func startProcess(t *testing.T, bin string, fake *fakeecr.Server, dir string, extra ...string) *process {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"UPSTREAM="+fake.URL(), "AWS_ENDPOINT_URL_ECR="+fake.TokenURL(), "AWS_REGION=eu-west-1",
		"LISTEN_ADDR=127.0.0.1:0", "CACHE_DIR="+dir, "CACHE_MAX_SIZE=1g", "LOG_FORMAT=json")
	cmd.Env = append(cmd.Env, extra...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.logs.Write(append(sc.Bytes(), '\n'))
			var rec struct{ Msg, Addr, Serves string }
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "listening" && strings.HasPrefix(rec.Serves, "registry API") {
				select {
				case addrc <- rec.Addr:
				default:
				}
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case p.addr = <-addrc:
	case err := <-p.done:
		t.Fatalf("ecr-mirror exited before listening: %v", err)
	case <-time.After(testwait.HangGuard):
		t.Fatal("ecr-mirror did not start listening")
	}
	return p
}

// signal sends sig and waits at most limit for the process to exit.
func (p *process) signal(t *testing.T, sig os.Signal, limit time.Duration) (error, bool) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err // for the cleanup
		return err, true
	case <-time.After(limit):
		return nil, false
	}
}

// SIGTERM in the middle of a download: the binary finishes or cuts the
// client within SHUTDOWN_GRACE, exits 0, leaves nothing half-written, and
// a restart on the same cache serves the blob.
func TestProcessSIGTERMMidDownload(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(50, 2<<20)
	dgst := fake.PutBlob("team/app", data)
	// The body stops after 1 MiB until the mirror gives up on it: the
	// transfer is still running when the signal comes.
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Times: 1})
	dir := t.TempDir()
	p := startProcess(t, bin, fake, dir, "SHUTDOWN_GRACE=500ms", "UPSTREAM_STALL_TIMEOUT=1h")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.addr+"/v2/team/app/blobs/"+dgst.String(), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	// The limits on exits below only catch a process that does not exit
	// at all; they are far beyond the grace period.
	err, exited := p.signal(t, syscall.SIGTERM, time.Minute)
	if !exited {
		t.Fatal("ecr-mirror did not exit within a minute of SIGTERM")
	}
	if err != nil {
		t.Fatalf("ecr-mirror exited with %v after SIGTERM, want 0", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Fatal("the cut transfer ended cleanly")
	}
	m := &mirror{Dir: dir}
	if m.stored(dgst) || len(m.tempFiles(t)) != 0 {
		t.Fatalf("after SIGTERM: stored %v, temp files %v", m.stored(dgst), m.tempFiles(t))
	}

	p2 := startProcess(t, bin, fake, dir)
	m.URL = "http://" + p2.addr
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatalf("pull after restart: %v", err)
	}
}

// A second signal ends the process at once, even while the grace period
// of the first still runs.
func TestProcessSecondSignalExits(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(51, 1<<20))
	// The body stops after 64 KiB for good: the client streams through
	// the grace period.
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 64 << 10, Times: 1})
	p := startProcess(t, bin, fake, t.TempDir(), "SHUTDOWN_GRACE=1h", "UPSTREAM_STALL_TIMEOUT=1h")
	resp, err := http.Get("http://" + p.addr + "/v2/team/app/blobs/" + dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if _, exited := p.signal(t, syscall.SIGTERM, time.Second); exited {
		t.Fatal("exited before the grace period with a client streaming")
	}
	err, exited := p.signal(t, syscall.SIGTERM, time.Minute)
	if !exited {
		t.Fatal("a second SIGTERM did not end the process (within a minute; the grace period is an hour)")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("exit: %v, want killed by the signal", err)
	}
}

// A bad setting stops the binary at startup with exit status 2 and a
// message naming it.
func TestProcessBadConfig(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "UPSTREAM=https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "CACHE_MAX_SIZE=lots", "PUSH=perhaps")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want status 2; output %s", err, out)
	}
	for _, want := range []string{"CACHE_MAX_SIZE", `"lots"`, "PUSH"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output %q does not mention %s", out, want)
		}
	}
}

// kill -9 during 32 concurrent cold pulls of distinct and shared blobs,
// then a restart: no temp file survives, every stored file hashes to its
// digest, and a repeat of all the pulls verifies.
func TestProcessKill9DuringPulls(t *testing.T) {
	t.Parallel()
	bin := mirrorBinary(t)
	fake := fakeecr.Start(t, fakeecr.Options{})
	var blobs []digest.Digest
	for i := range 8 {
		blobs = append(blobs, fake.PutBlob("team/app", testkit.RandomBytes(uint64(60+i), 1<<20+i*4099)))
	}
	// Half the bodies whole (they commit), half held after half their
	// bytes until the kill cuts them.
	for i, b := range blobs {
		if i%2 == 1 {
			fake.SetFault(b, fakeecr.Fault{Mode: fakeecr.FaultStall, Times: 1})
		}
	}
	dir := t.TempDir()
	p := startProcess(t, bin, fake, dir)
	m := &mirror{Dir: dir, URL: "http://" + p.addr}

	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = fetchBlob(t, m, "team/app", blobs[i%len(blobs)]) // cut by the kill, or complete
		}()
	}
	testwait.Until(t, "the whole downloads to commit", func() bool {
		return m.stored(blobs[0]) && m.stored(blobs[2]) && m.stored(blobs[4]) && m.stored(blobs[6])
	})
	testwait.Until(t, "the held downloads to be half way", func() bool { return len(m.tempFiles(t)) == 4 })
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-p.done
	p.done <- nil
	wg.Wait()

	p2 := startProcess(t, bin, fake, dir)
	if tmp := m.tempFiles(t); len(tmp) != 0 {
		t.Fatalf("temp files survived kill -9 and restart: %v", tmp)
	}
	var stored int
	err := filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if got := digest.FromBytes(data).Encoded(); got != d.Name() {
			t.Errorf("stored file %s hashes to %s", path, got)
		}
		stored++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if stored == 0 {
		t.Fatal("nothing was stored before the kill")
	}
	m.URL = "http://" + p2.addr
	for _, b := range blobs {
		if err := fetchBlob(t, m, "team/app", b); err != nil {
			t.Errorf("pull of %s after the restart: %v", b, err)
		}
	}
}
