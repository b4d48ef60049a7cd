package forwardproxy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The CA's files in its directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Lifetimes: the generated CA's, and its leaf certificates', renewed in
// memory once less than leafRenew of it is left.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 24 * time.Hour
	leafRenew    = time.Hour
	leafBackdate = 5 * time.Minute // clocks of clients that run a little behind
	maxLeaves    = 1024
)

// CA issues the certificates the proxy presents for the registry hosts
// it intercepts. Its key is read from (or generated into) its directory
// and never leaves the process otherwise; leaf certificates live in
// memory only.
type CA struct {
	cert     *x509.Certificate
	certPEM  []byte
	key      crypto.Signer
	certPath string
	now      func() time.Time

	mu     sync.Mutex
	leaves map[string]*tls.Certificate // by host
}

// LoadCA reads dir/ca.crt and dir/ca.key, or, when neither exists,
// generates an ECDSA P-256 CA there (dir 0700, key 0600); created says
// which. An expired CA is an error. now is the clock of the certificates' validity (nil: time.Now).
func LoadCA(dir string, now func() time.Time) (ca *CA, created bool, err error) {
	if now == nil {
		now = time.Now
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		if err := generateCA(dir, certPath, keyPath, now()); err != nil {
			return nil, false, err
		}
		created = true
	case errors.Is(certErr, fs.ErrNotExist) != errors.Is(keyErr, fs.ErrNotExist):
		return nil, false, fmt.Errorf("%s: has one of %s and %s but not the other: give both, or neither to have a CA generated", dir, CACertFile, CAKeyFile)
	}
	ca, err = readCA(certPath, keyPath)
	if err != nil {
		return nil, false, err
	}
	if end := ca.cert.NotAfter; !now().Before(end) {
		// Its leaves would expire with it: every handshake would fail.
		return nil, false, fmt.Errorf("%s expired on %s: replace ca.crt and ca.key (or remove both to have a CA generated), and have the nodes trust the new certificate", certPath, end.UTC().Format(time.RFC3339))
	}
	ca.now = now
	return ca, created, nil
}

// readCA loads a CA certificate and its key from PEM files.
func readCA(certPath, keyPath string) (*CA, error) {
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		// The error names the files, never the key's bytes.
		return nil, fmt.Errorf("reading the CA: %w", err)
	}
	cert := pair.Leaf
	if cert == nil {
		if cert, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", certPath, err)
		}
	}
	if !cert.IsCA || cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s is not a CA certificate (basic constraints CA:true, key usage certSign)", certPath)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: the key cannot sign", keyPath)
	}
	return &CA{
		cert:     cert,
		certPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key:      key,
		certPath: certPath,
		leaves:   map[string]*tls.Certificate{},
	}, nil
}

// generateCA writes a new CA into dir: the key first (0600, by rename),
// so that a crash leaves no certificate without its key.
func generateCA(dir, certPath, keyPath string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating the CA directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("restricting the CA directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating the CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "ecr-mirror forward-proxy CA", Organization: []string{"ecr-mirror"}},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("signing the CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding the CA key: %w", err)
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	return writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFile writes data to path through a temporary file in its
// directory, created with mode.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once renamed
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// CertPEM is the CA certificate, PEM-encoded, for clients to trust.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// CertPath is the CA certificate's file.
func (ca *CA) CertPath() string { return ca.certPath }

// Certificate is the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Fingerprint is the SHA-256 of the CA certificate, as colon-separated
// hex pairs (what openssl x509 -fingerprint -sha256 prints).
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.cert.Raw)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	pairs := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		pairs = append(pairs, h[i:i+2])
	}
	return strings.Join(pairs, ":")
}

// Leaf returns a certificate for host (a DNS name or an IP address),
// issued by the CA, from memory while it has more than an hour left.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	host = strings.ToLower(host)
	now := ca.now()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c := ca.leaves[host]; c != nil && c.Leaf.NotAfter.Sub(now) > leafRenew {
		return c, nil
	}
	c, err := ca.issue(host, now)
	if err != nil {
		return nil, err
	}
	if len(ca.leaves) >= maxLeaves {
		clear(ca.leaves)
	}
	ca.leaves[host] = c
	return c, nil
}

// issue signs a fresh leaf certificate for host, valid from now.
func (ca *CA) issue(host string, now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating a key for %s: %w", host, err)
	}
	notAfter := now.Add(leafLifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("signing a certificate for %s: %w", host, err)
	}
	return &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// newSerial is a random 127-bit serial number.
func newSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) // crypto/rand does not fail
	return n
}
