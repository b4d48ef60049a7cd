package tlsreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newReloader loads certFile and keyFile, checking them on every handshake
// when fast is set.
func newReloader(t *testing.T, certFile, keyFile string, fast bool) (*Reloader, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	r, err := New(certFile, keyFile, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if fast {
		r.checkEvery = 0
		r.nextCheck.Store(0)
	}
	return r, logs
}

// serve runs an http.Server with r's configuration the way the mirror
// does (ServeTLS, which also offers HTTP/2) and returns its URL.
func serve(t *testing.T, r *Reloader) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:   http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }),
		TLSConfig: r.TLSConfig(),
		ErrorLog:  log.New(io.Discard, "", 0), // refused handshakes
	}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	return "https://" + l.Addr().String()
}

// get makes a request on a new connection, offering HTTP/2 unless cfg
// limits NextProtos, and returns the response (body read and closed).
func get(t *testing.T, url string, cfg *tls.Config) (*http.Response, error) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true, ForceAttemptHTTP2: cfg.NextProtos == nil}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: time.Minute}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return nil, err
	}
	return resp, nil
}

// peer returns the certificate a new connection to url is served.
func peer(t *testing.T, url string, ca *tlstest.CA) *x509.Certificate {
	t.Helper()
	resp, err := get(t, url, &tls.Config{RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	return resp.TLS.PeerCertificates[0]
}

func TestServesRenewedCertificate(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, "localhost", "127.0.0.1")
	r, logs := newReloader(t, certFile, keyFile, false) // the real once-a-second check
	url := serve(t, r)

	first := peer(t, url, ca)
	if !first.Equal(r.Certificate()) || !slices.Equal(first.DNSNames, []string{"localhost"}) {
		t.Fatalf("served %v %v, want the loaded certificate", first.Subject, first.DNSNames)
	}

	ca.IssueFiles(t, dir, "mirror.test", "127.0.0.1")
	deadline := time.Now().Add(time.Minute)
	for {
		got := peer(t, url, ca)
		if got.SerialNumber.Cmp(first.SerialNumber) != 0 {
			if !slices.Equal(got.DNSNames, []string{"mirror.test"}) {
				t.Fatalf("new certificate has SANs %v", got.DNSNames)
			}
			if !got.Equal(r.Certificate()) {
				t.Fatal("Certificate() is not the served certificate")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate was not served within a minute")
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := logs.String()
	for _, want := range []string{"TLS certificate reloaded", "CN=mirror.test", "mirror.test", "127.0.0.1", "not_after="} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("log shows a key:\n%s", out)
	}
}

func TestKeepsCertificateWhileRenewalIsInvalid(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, "localhost", "127.0.0.1")
	r, logs := newReloader(t, certFile, keyFile, true)
	url := serve(t, r)
	old := peer(t, url, ca)

	write := func(path string, data []byte) {
		t.Helper()
		// In place, as a careless renewal script does.
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	assertOld := func(what string) {
		t.Helper()
		for range 3 {
			if got := peer(t, url, ca); !got.Equal(old) {
				t.Fatalf("%s: a new connection got serial %x, want the old certificate", what, got.SerialNumber)
			}
		}
	}
	oldKey, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	// A renewal caught half-way: the new certificate, the old key.
	newCert, newKey := ca.Issue(t, "renewed.test", "127.0.0.1")
	write(certFile, newCert)
	assertOld("new certificate with old key")
	if n := strings.Count(logs.String(), "does not load"); n != 1 {
		t.Errorf("%d warnings for one bad pair, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "private key does not match") {
		t.Errorf("warning does not say why:\n%s", logs)
	}
	// Then the key lands: the pair is served.
	write(keyFile, newKey)
	if got := peer(t, url, ca); !slices.Equal(got.DNSNames, []string{"renewed.test"}) {
		t.Fatalf("after the key landed: served %v", got.DNSNames)
	}
	old = r.Certificate()

	// A truncated certificate, garbage, files gone: the last good pair stays.
	write(certFile, newCert[:len(newCert)/2])
	assertOld("truncated certificate")
	write(certFile, []byte("not PEM at all"))
	assertOld("garbage certificate")
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	assertOld("key file removed")
	write(keyFile, oldKey)
	assertOld("old key with garbage certificate")

	if strings.Contains(logs.String(), "PRIVATE KEY") || strings.Contains(logs.String(), string(newKey[40:80])) {
		t.Errorf("log shows a key:\n%s", logs)
	}
}

func TestRefusesOldTLS(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), "127.0.0.1")
	r, _ := newReloader(t, certFile, keyFile, false)
	url := serve(t, r)
	tests := []struct {
		name     string
		min, max uint16
		ok       bool
	}{
		{"TLS 1.0", tls.VersionTLS10, tls.VersionTLS10, false},
		{"TLS 1.1", tls.VersionTLS10, tls.VersionTLS11, false},
		{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, true},
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := get(t, url, &tls.Config{RootCAs: ca.Pool(), MinVersion: tt.min, MaxVersion: tt.max})
			if tt.ok != (err == nil) {
				t.Fatalf("err = %v, want success %v", err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "protocol version") {
				t.Fatalf("refused for another reason: %v", err)
			}
			if err == nil && resp.TLS.Version != tt.max {
				t.Fatalf("negotiated %x", resp.TLS.Version)
			}
		})
	}
}

func TestHTTP2(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), "localhost", "127.0.0.1")
	r, _ := newReloader(t, certFile, keyFile, false)

	t.Run("http.Server.ServeTLS", func(t *testing.T) {
		resp, err := get(t, serve(t, r), &tls.Config{RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 || resp.TLS.NegotiatedProtocol != "h2" {
			t.Fatalf("protocol %s (ALPN %q), want HTTP/2", resp.Proto, resp.TLS.NegotiatedProtocol)
		}
	})
	t.Run("httptest", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
		srv.TLS = r.TLSConfig()
		srv.EnableHTTP2 = true
		srv.StartTLS()
		defer srv.Close()
		// httptest adds its own certificate to Certificates, which crypto/tls
		// prefers to GetCertificate when the client sends no server name.
		resp, err := get(t, srv.URL, &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 2 || !resp.TLS.PeerCertificates[0].Equal(r.Certificate()) {
			t.Fatalf("protocol %s, certificate %v", resp.Proto, resp.TLS.PeerCertificates[0].Subject)
		}
	})
	t.Run("HTTP/1.1 clients", func(t *testing.T) {
		resp, err := get(t, serve(t, r), &tls.Config{RootCAs: ca.Pool(), NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.ProtoMajor != 1 {
			t.Fatalf("protocol %s", resp.Proto)
		}
	})
}

func TestNewErrorsNameTheFile(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certPEM, keyPEM := ca.Issue(t, "localhost")
	otherCert, _ := ca.Issue(t, "localhost")
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key := file("tls.crt", certPEM), file("tls.key", keyPEM)
	tests := []struct {
		name      string
		cert, key string
		want      []string
	}{
		{"missing certificate", filepath.Join(dir, "nope.crt"), key, []string{"certificate file", "nope.crt"}},
		{"missing key", cert, filepath.Join(dir, "nope.key"), []string{"private key file", "nope.key"}},
		{"key as certificate", key, key, []string{"certificate file " + key, "PRIVATE KEY"}},
		{"certificate as key", cert, cert, []string{"private key file " + cert, "found CERTIFICATE"}},
		{"not PEM", file("junk.crt", []byte("hello")), key, []string{"junk.crt", "no PEM data"}},
		{"mismatched pair", file("other.crt", otherCert), key, []string{"other.crt", "tls.key", "does not match"}},
		{"empty key", cert, file("empty.key", nil), []string{"private key file", "empty.key", "no PEM data"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cert, tt.key, nil)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), string(keyPEM[30:70])) {
				t.Errorf("error %q shows the key", err)
			}
		})
	}

	r, err := New(cert, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := r.Certificate(); c.Subject.CommonName != "localhost" {
		t.Fatalf("Certificate() = %v", c.Subject)
	}
	if cfg := r.TLSConfig(); cfg.MinVersion != tls.VersionTLS12 || len(cfg.Certificates) != 0 {
		t.Fatalf("TLSConfig: MinVersion %x, %d Certificates", cfg.MinVersion, len(cfg.Certificates))
	}
}

func TestRenewalUnderLoad(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.IssueFiles(t, dir, "127.0.0.1")
	r, _ := newReloader(t, certFile, keyFile, true)
	url := serve(t, r)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := get(t, url, &tls.Config{RootCAs: ca.Pool()}); err != nil {
					t.Errorf("handshake during renewals: %v", err)
					return
				}
			}
		})
	}
	for range 10 {
		ca.IssueFiles(t, dir, "127.0.0.1")
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
}

// SetFiles serves another pair of files from the next handshake; a pair
// that does not load is refused, naming its file, and the current one
// stays in service.
func TestSetFilesSwitchesPair(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), "localhost", "127.0.0.1")
	r, logs := newReloader(t, certFile, keyFile, false)
	url := serve(t, r)
	first := peer(t, url, ca)

	otherDir := t.TempDir()
	otherCert, otherKey := ca.IssueFiles(t, otherDir, "mirror.test", "127.0.0.1")
	if err := r.SetFiles(certFile, filepath.Join(otherDir, "missing.key")); err == nil || !strings.Contains(err.Error(), "TLS private key file") {
		t.Fatalf("SetFiles with a missing key: %v", err)
	}
	if got := peer(t, url, ca); !got.Equal(first) {
		t.Fatal("a refused SetFiles changed the served certificate")
	}
	if err := r.SetFiles(otherCert, otherKey); err != nil {
		t.Fatal(err)
	}
	if got := peer(t, url, ca); !slices.Equal(got.DNSNames, []string{"mirror.test"}) {
		t.Fatalf("served %v after SetFiles, want mirror.test", got.DNSNames)
	}
	if !strings.Contains(logs.String(), "TLS certificate files changed") {
		t.Fatalf("log lacks the change:\n%s", logs)
	}
}
