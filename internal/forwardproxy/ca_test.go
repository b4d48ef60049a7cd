package forwardproxy

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// A CA generated on first use keeps its key to its user (0600, directory
// 0700) and is read back, not replaced, by the next LoadCA.
func TestGeneratedCAIsPrivateAndReused(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "ca")
	ca, created, err := LoadCA(dir, nil)
	if err != nil || !created {
		t.Fatalf("LoadCA: created %v, %v", created, err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, CAKeyFile): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s: mode %v, want %v", path, got, want)
		}
	}
	if c := ca.Certificate(); !c.IsCA || c.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("generated CA: IsCA %v, key %v; want an ECDSA CA", c.IsCA, c.PublicKeyAlgorithm)
	}
	again, created, err := LoadCA(dir, nil)
	if err != nil || created {
		t.Fatalf("second LoadCA: created %v, %v", created, err)
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) || again.Fingerprint() != ca.Fingerprint() {
		t.Error("the second LoadCA has another CA")
	}
	if n := strings.Count(ca.Fingerprint(), ":"); n != 31 {
		t.Errorf("fingerprint %q: want 32 hex pairs", ca.Fingerprint())
	}
}

// An operator's CA is used as given; half a CA, or a certificate that
// is no CA, is refused naming the files.
func TestLoadCARefusesBadDirectories(t *testing.T) {
	t.Parallel()
	own := tlstest.NewCA(t)
	leafPEM, leafKey := own.Issue(t, "not-a-ca.example")
	tests := []struct {
		name    string
		files   map[string][]byte
		wantErr string
	}{
		{name: "certificate only", files: map[string][]byte{CACertFile: leafPEM}, wantErr: "has one of ca.crt and ca.key but not the other"},
		{name: "key only", files: map[string][]byte{CAKeyFile: leafKey}, wantErr: "has one of ca.crt and ca.key but not the other"},
		{name: "not a CA", files: map[string][]byte{CACertFile: leafPEM, CAKeyFile: leafKey}, wantErr: "is not a CA certificate"},
		{name: "garbage", files: map[string][]byte{CACertFile: []byte("junk"), CAKeyFile: []byte("junk")}, wantErr: "reading the CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, _, err := LoadCA(dir, nil)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadCA: %v, want an error saying %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("the error quotes the key: %v", err)
			}
		})
	}
}

// Leaf certificates name exactly their host (a DNS name or an IP),
// chain to the CA, live a day, come from memory while fresh and are
// issued again when less than an hour is left.
func TestLeafCertificates(t *testing.T) {
	t.Parallel()
	clk := &fixedClock{t: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	ca, _, err := LoadCA(t.TempDir(), clk.now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	first, err := ca.Leaf("Registry.Example.Test")
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "registry.example.test" || len(leaf.IPAddresses) != 0 {
		t.Errorf("names %v %v, want registry.example.test only", leaf.DNSNames, leaf.IPAddresses)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "registry.example.test", Roots: pool, CurrentTime: clk.now()}); err != nil {
		t.Errorf("leaf does not verify against the CA: %v", err)
	}
	if got := leaf.NotAfter.Sub(clk.now()); got != leafLifetime {
		t.Errorf("leaf lives %v past now, want %v", got, leafLifetime)
	}
	clk.advance(leafLifetime - leafRenew - time.Minute)
	if again, _ := ca.Leaf("registry.example.test"); again != first {
		t.Error("a fresh leaf was issued again")
	}
	clk.advance(2 * time.Minute)
	if renewed, _ := ca.Leaf("registry.example.test"); renewed == first || !renewed.Leaf.NotAfter.After(leaf.NotAfter) {
		t.Error("a leaf with less than an hour left was served again")
	}
	ipLeaf, err := ca.Leaf("10.1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if ips := ipLeaf.Leaf.IPAddresses; len(ips) != 1 || !ips[0].Equal(net.ParseIP("10.1.2.3")) || len(ipLeaf.Leaf.DNSNames) != 0 {
		t.Errorf("IP leaf names %v %v", ipLeaf.Leaf.IPAddresses, ipLeaf.Leaf.DNSNames)
	}
}

// A CA given in a read-only directory (a mounted Secret, its files
// symbolic links) is used as it is, nothing written.
func TestGivenCAInAReadOnlyDirectory(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	made, _, err := LoadCA(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{CACertFile, CAKeyFile} {
		if err := os.Symlink(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	ca, created, err := LoadCA(dir, nil)
	if err != nil || created {
		t.Fatalf("LoadCA of a given CA: created %v, %v", created, err)
	}
	if ca.Fingerprint() != made.Fingerprint() {
		t.Error("the given CA was not the one used")
	}
	if _, err := ca.Leaf("registry.example.test"); err != nil {
		t.Errorf("issuing from the given CA: %v", err)
	}
}

// An expired CA is refused at start, naming its file and when it
// expired: every certificate it issued would fail every client's TLS
// handshake.
func TestLoadCARefusesAnExpiredCA(t *testing.T) {
	t.Parallel()
	clk := &fixedClock{t: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	ca, _, err := LoadCA(dir, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	clk.advance(caLifetime + time.Hour)
	_, _, err = LoadCA(dir, clk.now)
	if err == nil || !strings.Contains(err.Error(), ca.CertPath()) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("LoadCA of an expired CA: %v, want an error naming %s and saying it expired", err, ca.CertPath())
	}
}
