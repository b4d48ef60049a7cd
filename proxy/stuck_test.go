package proxy

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/clientconn"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/tmpfs"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// stuckGet sends a blob GET on a raw connection with a small receive
// buffer and reads only the response headers: a client that then stops
// reading.
func stuckGet(t *testing.T, addr, path string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stuck client: status %d", resp.StatusCode)
	}
	return c, br
}

// With the disk full, a download is relayed through memory and waits for
// its slowest reader. A client that stops reading is cut once its write
// has waited the stall timeout (by the watchdog's clock): its connection
// is closed, the download goes on, and another client of the same
// download gets every byte.
func TestStuckClientDoesNotHoldARelayedDownload(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, "24m")
	clk := clockwork.NewFakeClock()
	const timeout = time.Minute
	wd, err := clientconn.NewWatchdog(timeout, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, envOptions{dir: dir, wrap: wd.Wrap})
	// Another server on the same proxy, unwatched: the other clients.
	other := httptest.NewServer(registry.NewHandler(e.proxy, nil))
	t.Cleanup(other.Close)

	data := testkit.RandomBytes(91, 64<<20)
	dgst := e.fake.PutBlob("team/app", data)
	// The first MiB, then a pause until both clients follow the download.
	release := make(chan struct{})
	e.fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Hold: release, Times: 1})
	path := "/v2/team/app/blobs/" + dgst.String()

	_, stuckBody := stuckGet(t, e.srv.Listener.Addr().String(), path)
	resp, err := other.Client().Get(other.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reading client: status %d", resp.StatusCode)
	}
	type result struct {
		n   int64
		got digest.Digest
		err error
	}
	var read atomic.Int64
	done := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(h, counter{&read}), resp.Body)
		done <- result{n, digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil)), err}
	}()
	close(release)

	// The stuck client's write waits; once it has waited the timeout, a
	// sweep cuts it. Until then the reading client is held back.
	for wd.Sweep() == 0 {
		clk.Advance(timeout)
		time.Sleep(10 * time.Millisecond)
	}
	if n := read.Load(); n >= int64(len(data)) {
		t.Fatalf("the reading client had all %d bytes before the stuck one was cut: the download was not held back", n)
	}
	t.Logf("the reading client had %d of %d bytes when the stuck one was cut", read.Load(), len(data))
	select {
	case r := <-done:
		if r.err != nil || r.n != int64(len(data)) || r.got != dgst {
			t.Fatalf("reading client: %d bytes, digest %s, err %v; want %d bytes of %s", r.n, r.got, r.err, len(data), dgst)
		}
	case <-time.After(time.Minute): // only ever reached when failing
		t.Fatalf("the reading client is stuck at %d of %d bytes after the stuck client was cut", read.Load(), len(data))
	}
	// The stuck client's connection was closed before the end of the body.
	n, _ := io.Copy(io.Discard, stuckBody)
	if n >= int64(len(data)) {
		t.Fatalf("the stuck client could still read the whole body (%d bytes)", n)
	}
	e.proxy.Wait()
	if got := e.proxy.InFlight(); got != 0 {
		t.Fatalf("%d downloads in flight after the end", got)
	}
	if st := e.store.Stats(); st.DiskFull != 1 {
		t.Errorf("store stats %+v: want one download relayed for a full disk", st)
	}
	if wd.Cuts() != 1 {
		t.Fatalf("watchdog cut %d responses, want 1", wd.Cuts())
	}
	if f := e.tempFiles(t); len(f) != 0 {
		t.Errorf("temp files left: %v", f)
	}
}

// counter counts bytes written through it.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return len(p), nil
}
