package configreload

import (
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/tlsreload"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// tlsFiles are a certificate and its key, issued for host.
type tlsFiles struct{ cert, key string }

func issue(t *testing.T, ca *tlstest.CA, host string) tlsFiles {
	t.Helper()
	cert, key := ca.IssueFiles(t, t.TempDir(), host)
	return tlsFiles{cert, key}
}

// running is an applier over a server started with TLS from files and
// ALLOW_NETWORKS 10.0.0.0/8, its log in logs.
func running(t *testing.T, files tlsFiles) (*applier, *testkit.SyncBuffer) {
	t.Helper()
	cfg := &settings.Config{TLSCertificate: files.cert, TLSPrivateKey: files.key,
		Access: access.Config{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}
	policy, err := access.New(cfg.Access, nil)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := tlsreload.New(files.cert, files.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := &testkit.SyncBuffer{}
	return &applier{cfg: cfg, policy: policy, certs: certs, log: slog.New(slog.NewTextHandler(logs, nil))}, logs
}

// A changed config file puts its access rules and TLS files in force
// together; when one is refused, neither changes.
func TestApplyPutsAllInForceOrNone(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t)
	allow := func(p string) access.Config {
		return access.Config{AllowNetworks: []netip.Prefix{netip.MustParsePrefix(p)}}
	}
	for _, tt := range []struct {
		name string
		// next's TLS files: "new", "same", "broken" (no such files), "off"
		tls     string
		access  access.Config
		wantErr string
		// wantHost is the certificate's name in force after.
		wantHost, wantAccess string
		warned               bool // that TLS on/off needs a restart
	}{
		{name: "new access rules", tls: "same", access: allow("192.168.0.0/16"), wantHost: "old.example.com", wantAccess: "192.168.0.0/16"},
		{name: "new certificate and rules", tls: "new", access: allow("192.168.0.0/16"), wantHost: "new.example.com", wantAccess: "192.168.0.0/16"},
		{name: "broken certificate", tls: "broken", access: allow("192.168.0.0/16"), wantErr: "TLS_CERTIFICATE/TLS_PRIVATE_KEY",
			wantHost: "old.example.com", wantAccess: "10.0.0.0/8"},
		{name: "refused rules roll the certificate back", tls: "new",
			access:  access.Config{HtpasswdFile: filepath.Join(t.TempDir(), "missing")},
			wantErr: "client access control", wantHost: "old.example.com", wantAccess: "10.0.0.0/8"},
		{name: "TLS off", tls: "off", access: allow("192.168.0.0/16"), wantHost: "old.example.com", wantAccess: "192.168.0.0/16", warned: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			old := issue(t, ca, "old.example.com")
			a, logs := running(t, old)
			next := &settings.Config{Access: tt.access}
			switch tt.tls {
			case "same":
				next.TLSCertificate, next.TLSPrivateKey = old.cert, old.key
			case "new":
				files := issue(t, ca, "new.example.com")
				next.TLSCertificate, next.TLSPrivateKey = files.cert, files.key
			case "broken":
				next.TLSCertificate, next.TLSPrivateKey = old.cert+".gone", old.key+".gone"
			}
			err := a.apply(next)
			if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("apply: %v, want %q", err, tt.wantErr)
			}
			if host := a.certs.Certificate().Subject.CommonName; host != tt.wantHost {
				t.Errorf("certificate in force for %s, want %s", host, tt.wantHost)
			}
			if summary := a.policy.Summary(); !strings.Contains(summary, tt.wantAccess) {
				t.Errorf("access in force %q, want %s", summary, tt.wantAccess)
			}
			if (a.cfg == next) != (tt.wantErr == "") {
				t.Errorf("the configuration in force is next: %v, want %v", a.cfg == next, tt.wantErr == "")
			}
			if warned := strings.Contains(logs.String(), "needs a restart"); warned != tt.warned {
				t.Errorf("warned of a restart: %v, want %v\n%s", warned, tt.warned, logs)
			}
		})
	}
}
