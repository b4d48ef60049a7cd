package clientconn

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// testServer is an http.Server on loopback, plain or TLS (HTTP/2 on),
// its listener wrapped by a Budget when one is given.
type testServer struct {
	addr   string
	client *http.Client
}

func startServer(t *testing.T, h http.Handler, b *Budget, useTLS bool) *testServer {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	// A small receive window, so that a client not reading holds the
	// server's writes soon.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			err = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
	var cfg *tls.Config
	if useTLS {
		ca := tlstest.NewCA(t)
		certPEM, keyPEM := ca.Issue(t, "127.0.0.1")
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{pair}}
		srv.TLSConfig = cfg
		tr.TLSClientConfig = &tls.Config{RootCAs: ca.Pool()}
		tr.ForceAttemptHTTP2 = true
	}
	ln := raw
	if b != nil {
		ln = b.Listener(raw, cfg)
	}
	done := make(chan error, 1)
	go func() {
		if useTLS {
			done <- srv.ServeTLS(ln, "", "")
		} else {
			done <- srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		tr.CloseIdleConnections()
	})
	return &testServer{addr: raw.Addr().String(), client: &http.Client{Transport: tr}}
}

// url is the server's URL for path.
func (s *testServer) url(path string) string {
	if s.client.Transport.(*http.Transport).TLSClientConfig != nil {
		return "https://" + s.addr + path
	}
	return "http://" + s.addr + path
}

// randomFile writes n pseudo-random bytes to a new file and returns its
// path and contents.
func randomFile(t *testing.T, seed uint64, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	var s [32]byte
	s[0] = byte(seed)
	rand.NewChaCha8(s).Read(b)
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, b
}
