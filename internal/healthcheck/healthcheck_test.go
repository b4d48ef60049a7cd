package healthcheck

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// configOf parses the settings env gives, beside an UPSTREAM.
func configOf(t *testing.T, env map[string]string) *settings.Config {
	t.Helper()
	all := map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"}
	for k, v := range env {
		all[k] = v
	}
	cfg, err := settings.Parse(nil, func(k string) string { return all[k] }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The check asks the address the server listens on: a wildcard host
// on 127.0.0.1, METRICS_ADDR first, https with TLS.
func TestTargetFollowsTheListeners(t *testing.T) {
	t.Parallel()
	certFile, keyFile := tlstest.NewCA(t).IssueFiles(t, t.TempDir(), "mirror.example.com")
	for _, tt := range []struct {
		name    string
		env     map[string]string
		want    string
		setting string
		denied  bool // a 403 is explained by ALLOW_NETWORKS
	}{
		{name: "default", env: map[string]string{}, want: "http://127.0.0.1:5000/healthz"},
		{name: "ALLOW_NETWORKS without loopback", env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8"}, want: "http://127.0.0.1:5000/healthz", denied: true},
		{name: "ALLOW_NETWORKS with loopback", env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8,127.0.0.1"}, want: "http://127.0.0.1:5000/healthz"},
		{name: "ALLOW_NETWORKS without ::1", env: map[string]string{"ALLOW_NETWORKS": "127.0.0.1", "LISTEN_ADDR": "[::1]:5000"}, want: "http://[::1]:5000/healthz", denied: true},
		{name: "ALLOW_NETWORKS beside METRICS_ADDR", env: map[string]string{"ALLOW_NETWORKS": "10.0.0.0/8", "METRICS_ADDR": ":9090"}, want: "http://127.0.0.1:9090/healthz", setting: "METRICS_ADDR"},
		{name: "IPv4 wildcard", env: map[string]string{"LISTEN_ADDR": "0.0.0.0:6000"}, want: "http://127.0.0.1:6000/healthz"},
		{name: "IPv6 wildcard", env: map[string]string{"LISTEN_ADDR": "[::]:6000"}, want: "http://127.0.0.1:6000/healthz"},
		{name: "IPv6 loopback", env: map[string]string{"LISTEN_ADDR": "[::1]:6000"}, want: "http://[::1]:6000/healthz"},
		{name: "one address", env: map[string]string{"LISTEN_ADDR": "10.1.2.3:6000"}, want: "http://10.1.2.3:6000/healthz"},
		{name: "TLS", env: map[string]string{"TLS_CERTIFICATE": certFile, "TLS_PRIVATE_KEY": keyFile}, want: "https://127.0.0.1:5000/healthz"},
		{name: "METRICS_ADDR, plain even with TLS", env: map[string]string{"METRICS_ADDR": ":9090", "TLS_CERTIFICATE": certFile, "TLS_PRIVATE_KEY": keyFile},
			want: "http://127.0.0.1:9090/healthz", setting: "METRICS_ADDR"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Target(configOf(t, tt.env))
			wantSetting := tt.setting
			if wantSetting == "" {
				wantSetting = "LISTEN_ADDR"
			}
			if err != nil || p.URL != tt.want || p.Setting != wantSetting || (p.tls != nil) != strings.HasPrefix(tt.want, "https") || (p.denied != "") != tt.denied {
				t.Fatalf("got %q from %s (TLS %v, denied hint %q) %v, want %q from %s (denied hint: %v)",
					p.URL, p.Setting, p.tls != nil, p.denied, err, tt.want, wantSetting, tt.denied)
			}
		})
	}
}

// A certificate file that cannot be read or holds no certificate is
// an error naming TLS_CERTIFICATE and the file.
func TestTargetRejectsBadCertificateFiles(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, file, want string
	}{
		{name: "missing", file: "/nonexistent/cert.pem", want: "TLS_CERTIFICATE: open /nonexistent/cert.pem"},
		{name: "no certificate", file: "healthcheck.go", want: "TLS_CERTIFICATE healthcheck.go: no PEM certificate in it"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := configOf(t, nil)
			cfg.TLSCertificate = tt.file // as Parse would not let through
			if _, err := Target(cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}

// The reason shown is an OCI error's code and message, else the
// body's first line, cut at 200 characters.
func TestReasonOf(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, body, want string
	}{
		{name: "OCI error", body: `{"errors":[{"code":"DENIED","message":"not from here"}]}`, want: ": DENIED: not from here"},
		{name: "text", body: "\n  draining\nmore\n", want: ": draining"},
		{name: "empty", body: "", want: ""},
		{name: "long", body: strings.Repeat("x", 300), want: ": " + strings.Repeat("x", 200) + "…"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := reasonOf([]byte(tt.body)); got != tt.want {
				t.Fatalf("reasonOf(%q) = %q, want %q", tt.body, got, tt.want)
			}
		})
	}
}

// probeOf is the probe of a server at srv, over TLS with certFile
// when set, ALLOW_NETWORKS as allow says.
func probeOf(t *testing.T, srv *httptest.Server, certFile, keyFile, allow string) Probe {
	t.Helper()
	env := map[string]string{"LISTEN_ADDR": srv.Listener.Addr().String()}
	if certFile != "" {
		env["TLS_CERTIFICATE"], env["TLS_PRIVATE_KEY"] = certFile, keyFile
	}
	if allow != "" {
		env["ALLOW_NETWORKS"] = allow
	}
	p, err := Target(configOf(t, env))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Check passes on 200 only, and says why otherwise: the status, the
// reason in the body, and ALLOW_NETWORKS for a 403 it explains.
func TestCheckReportsTheAnswer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name   string
		status int
		body   string
		allow  string
		want   string // "" passes
	}{
		{name: "alive", status: http.StatusOK, body: "ok"},
		{name: "not ready", status: http.StatusServiceUnavailable, body: "cache unwritable\n", want: "(LISTEN_ADDR) answered 503 Service Unavailable: cache unwritable"},
		{name: "denied", status: http.StatusForbidden, body: `{"errors":[{"code":"DENIED","message":"no"}]}`, allow: "10.0.0.0/8",
			want: "answered 403 Forbidden: DENIED: no (ALLOW_NETWORKS leaves out loopback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var agent string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" {
					http.NotFound(w, r)
					return
				}
				agent = r.UserAgent()
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			t.Cleanup(srv.Close)
			err := probeOf(t, srv, "", "", tt.allow).Check(context.Background(), time.Minute)
			if (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Check: %v, want %q", err, tt.want)
			}
			if !strings.HasPrefix(agent, "ecr-mirror-healthcheck/") {
				t.Fatalf("User-Agent %q, want ecr-mirror-healthcheck/...", agent)
			}
		})
	}
}

// Over https the server must present the certificate configured (or
// one its CA issued), whatever names it holds.
func TestCheckTrustsTheConfiguredCertificateOnly(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, "mirror.example.com") // not the address asked
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake
	srv.StartTLS()
	t.Cleanup(srv.Close)
	other, _ := tlstest.NewCA(t).Issue(t, "mirror.example.com")
	for _, tt := range []struct {
		name string
		pem  []byte // TLS_CERTIFICATE's content
		want string
	}{
		{name: "the server's certificate", pem: certPEM},
		{name: "the server's certificate and its CA", pem: append(append([]byte{}, certPEM...), ca.CertPEM()...)},
		{name: "its CA only", pem: ca.CertPEM()},
		{name: "another CA's certificate", pem: other, want: "not the one in TLS_CERTIFICATE"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			if err := os.WriteFile(certFile, tt.pem, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			p := probeOf(t, srv, certFile, keyFile, "")
			err := p.Check(context.Background(), time.Minute)
			if !strings.HasPrefix(p.URL, "https://") || (err == nil) != (tt.want == "") || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("Check of %s: %v, want %q", p.URL, err, tt.want)
			}
		})
	}
}

// A server that never answers fails the check once its context ends,
// and the error names -timeout.
func TestCheckGivesUpWhenTheContextEnds(t *testing.T) {
	t.Parallel()
	arrived, release := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		close(arrived)
		<-release
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	p := probeOf(t, srv, "", "", "")
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-arrived; cancel() }()
	err := p.Check(ctx, 7*time.Second)
	if err == nil || !strings.Contains(err.Error(), "no answer from "+p.URL+" (LISTEN_ADDR) within 7s (-timeout)") {
		t.Fatalf("Check of a silent server: %v, want no answer within 7s (-timeout)", err)
	}
}
