package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// rawGet opens a connection to m, sends a GET for path with a small
// receive buffer (128 KiB), and reads the response headers only. The connection
// stays open, its body unread.
func rawGet(t *testing.T, m *mirror, path string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 128<<10)
		})
		return cmp.Or(err, serr)
	}}
	c, err := d.Dial("tcp", m.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, m.Host); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return c, br, resp
}

// Connections that ask for a large cached blob and read nothing are all
// closed once CLIENT_STALL_TIMEOUT passes (a short one here, only to make
// it happen; nothing waits on how long it takes), each short of the body;
// the open-connection count falls back to the scraper's own.
func TestStuckClientsAreDisconnected(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const size = 64 << 20
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(81, size))
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"CLIENT_STALL_TIMEOUT": "1s"}})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })

	const n = 20
	bodies := make([]*bufio.Reader, n)
	for i := range bodies {
		_, br, resp := rawGet(t, m, "/v2/team/app/blobs/"+dgst.String())
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d: status %d", i, resp.StatusCode)
		}
		bodies[i] = br
	}
	// Open: the stuck ones until they are cut, and the scrape's own.
	testwait.Until(t, "the stuck connections closed", func() bool {
		return scrape(t, m.URL+"/metrics")["ecr_mirror_client_connections"] <= 1
	})
	for i, br := range bodies {
		got, _ := io.Copy(io.Discard, br)
		if got >= size {
			t.Fatalf("connection %d was never closed: it could read the whole blob (%d bytes)", i, got)
		}
	}
	if got := scrape(t, m.URL+"/metrics")["ecr_mirror_client_stalls_total"]; got != n {
		t.Errorf("ecr_mirror_client_stalls_total = %v, want %d", got, n)
	}
	if !strings.Contains(m.Logs.String(), "took no response bytes") {
		t.Errorf("no log line says why the clients were cut; logs:\n%s", m.Logs)
	}
}

// With MAX_CLIENT_CONNECTIONS held open, the next connection is answered
// 503 UNAVAILABLE with Retry-After and closed; one closed frees its place.
func TestClientConnectionLimit(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const limit = 5
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"MAX_CLIENT_CONNECTIONS": fmt.Sprint(limit)}})
	var held []net.Conn
	for i := range limit {
		c, br, resp := rawGet(t, m, "/v2/")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("connection %d: status %d", i, resp.StatusCode)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatal(err)
		}
		_ = br
		held = append(held, c)
	}
	c, _, resp := rawGet(t, m, "/v2/")
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != "UNAVAILABLE" {
		t.Fatalf("connection %d: %d, Retry-After %q, body %s; want 503 UNAVAILABLE with Retry-After",
			limit+1, resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the refused connection stayed open (read %d bytes)", n)
	}

	held[0].Close()
	testwait.Until(t, "a new connection served after one closed", func() bool {
		_, _, resp := rawGet(t, m, "/v2/")
		return resp.StatusCode == http.StatusOK
	})
	if !strings.Contains(m.Logs.String(), "connection limit reached") {
		t.Errorf("no log line says connections were refused; logs:\n%s", m.Logs)
	}
}
