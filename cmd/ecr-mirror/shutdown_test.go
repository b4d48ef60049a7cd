package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// A request on the admin socket in flight at shutdown is finished within
// SHUTDOWN_GRACE like the registry listeners' requests, not cut: the
// client holds a blob read through the socket's registry API (the
// mirror's write blocks on it) until the socket is closed to new
// connections, then reads the whole blob.
func TestShutdownFinishesAdminRequests(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	data := testkit.RandomBytes(80, 8<<20) // far more than a socket buffers
	dgst := fake.PutBlob("team/app", data)
	m := startMirror(t, fake, mirrorOpts{})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}

	c := admin.RegistryClient(m.Dir)
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://ecr-mirror/v2/team/app/blobs/" + dgst.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := io.CopyN(h, resp.Body, 4096); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() { m.Stop(); close(stopped) }()
	socket := filepath.Join(m.Dir, admin.SocketName)
	testwait.Until(t, "the admin socket to close", func() bool {
		_, err := os.Stat(socket)
		return errors.Is(err, os.ErrNotExist)
	})
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		t.Fatalf("admin request cut at shutdown after %d more bytes: %v", n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != dgst.String() || n != int64(len(data))-4096 {
		t.Fatalf("read %d bytes with digest %s, want %d with %s", n+4096, got, len(data), dgst)
	}
	<-stopped
}
