// Package tlsreload serves TLS with a certificate that is renewed on disk
// (by cert-manager, certbot, a Kubernetes Secret update, ...) without a
// restart.
//
// A Reloader holds the current certificate and key. Each TLS handshake
// checks, at most once per second, whether either file changed (inode,
// modification time or size); if so the pair is loaded again. A pair that
// does not load, as when a renewal has written the new certificate but not
// yet its key, leaves the previous one in service: the warning is logged
// once, and the pair is retried on later checks until it loads.
// SetFiles moves the Reloader to another pair of files (a changed config
// file), once they load.
//
// Use it with an http.Server, which then also offers HTTP/2:
//
//	r, err := tlsreload.New(certFile, keyFile, log)
//	srv := &http.Server{Handler: h, TLSConfig: r.TLSConfig()}
//	err = srv.ServeTLS(listener, "", "")
package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// checkEvery is how often the files are stat'ed, at most.
const checkEvery = time.Second

// maxPEMSize guards against pointing a setting at a huge file.
const maxPEMSize = 1 << 20

// Reloader serves the current certificate of a pair of PEM files.
type Reloader struct {
	certFile, keyFile string // under mu once New returned (SetFiles)
	log               *slog.Logger
	checkEvery        time.Duration

	current   atomic.Pointer[pair]
	nextCheck atomic.Int64 // unix nanoseconds
	mu        sync.Mutex   // one reload at a time
	// Under mu: certFile and keyFile once New returned; the versions of the files whose load failed, once warned.
	failed versions
	warned bool
}

// pair is one load of the files.
type pair struct {
	cert *tls.Certificate // Leaf set
	seen versions
}

// versions identifies the versions of the two files that were read.
type versions struct{ cert, key os.FileInfo }

func (a versions) equal(b versions) bool {
	return sameVersion(a.cert, b.cert) && sameVersion(a.key, b.key)
}

// sameVersion reports whether a and b describe the same version of a file:
// the same inode (renames and Kubernetes Secret updates make a new one),
// modification time and size. Two missing files (nil) are the same.
func sameVersion(a, b os.FileInfo) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

// New loads the certificate (PEM, leaf first, then any intermediates) and
// its private key (PEM, PKCS#1, PKCS#8 or SEC 1). Errors name the file at
// fault. A nil logger discards.
func New(certFile, keyFile string, log *slog.Logger) (*Reloader, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, checkEvery: checkEvery}
	p, err := r.load()
	if err != nil {
		return nil, err
	}
	r.current.Store(p)
	r.nextCheck.Store(time.Now().Add(r.checkEvery).UnixNano())
	if leaf := p.cert.Leaf; time.Now().After(leaf.NotAfter) {
		log.Warn("TLS certificate has expired", certAttrs(leaf)...)
	}
	return r, nil
}

// TLSConfig returns a server configuration (TLS 1.2 and later) that
// serves the current certificate. Do not set Certificates on it: without
// SNI (clients connecting by IP address) crypto/tls would use those instead.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			r.maybeReload()
			return r.current.Load().cert, nil
		},
	}
}

// Certificate returns the leaf certificate now in service, checking the
// files first as a handshake would.
func (r *Reloader) Certificate() *x509.Certificate {
	r.maybeReload()
	return r.current.Load().cert.Leaf
}

// SetFiles serves the pair of other files from now on, once they load;
// when they do not, the error names the file at fault and the current
// pair stays (and is still watched).
func (r *Reloader) SetFiles(certFile, keyFile string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := &Reloader{certFile: certFile, keyFile: keyFile}
	p, err := next.load()
	if err != nil {
		return err
	}
	r.certFile, r.keyFile = certFile, keyFile
	r.failed, r.warned = versions{}, false
	r.current.Store(p)
	r.log.Info("TLS certificate files changed", append([]any{"cert_file", certFile, "key_file", keyFile}, certAttrs(p.cert.Leaf)...)...)
	return nil
}

// maybeReload loads the files again when they have changed, at most once
// per checkEvery; handshakes meanwhile keep the current pair.
func (r *Reloader) maybeReload() {
	now := time.Now()
	if now.UnixNano() < r.nextCheck.Load() || !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	if now.UnixNano() < r.nextCheck.Load() {
		return
	}
	r.nextCheck.Store(now.Add(r.checkEvery).UnixNano())
	onDisk := versions{stat(r.certFile), stat(r.keyFile)}
	cur := r.current.Load()
	if onDisk.equal(cur.seen) {
		return
	}
	p, err := r.load()
	if err != nil {
		// Files mid-renewal, or gone for a moment: keep serving the old
		// pair, and warn once per version of the files.
		if !r.warned || !onDisk.equal(r.failed) {
			r.log.Warn("TLS certificate changed on disk but does not load; still serving the previous one",
				"error", err, "serving_serial", cur.cert.Leaf.SerialNumber.Text(16))
			r.failed, r.warned = onDisk, true
		}
		return
	}
	r.failed, r.warned = versions{}, false
	r.current.Store(p)
	attrs := certAttrs(p.cert.Leaf)
	if now.After(p.cert.Leaf.NotAfter) {
		r.log.Warn("TLS certificate reloaded, but it has expired", attrs...)
		return
	}
	r.log.Info("TLS certificate reloaded", attrs...)
}

// load reads and checks both files.
func (r *Reloader) load() (*pair, error) {
	certPEM, certInfo, err := readFile(r.certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate file: %w", err)
	}
	keyPEM, keyInfo, err := readFile(r.keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS private key file: %w", err)
	}
	if err := checkPEM(certPEM, func(typ string) bool { return typ == "CERTIFICATE" }); err != nil {
		return nil, fmt.Errorf("TLS certificate file %s: %w", r.certFile, err)
	}
	if err := checkPEM(keyPEM, func(typ string) bool { return strings.HasSuffix(typ, "PRIVATE KEY") }); err != nil {
		return nil, fmt.Errorf("TLS private key file %s: %w", r.keyFile, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The files hold PEM of the right types: what is left is a
		// certificate that does not parse or a key that does not match.
		return nil, fmt.Errorf("TLS certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate file %s: %w", r.certFile, err)
		}
	}
	return &pair{cert: &cert, seen: versions{certInfo, keyInfo}}, nil
}

// stat returns path's FileInfo, or nil when it cannot be stat'ed.
func stat(path string) os.FileInfo {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	return fi
}

// readFile reads a file and returns the version it read.
func readFile(path string) ([]byte, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxPEMSize+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxPEMSize {
		return nil, nil, fmt.Errorf("%s: larger than %d KiB", path, maxPEMSize>>10)
	}
	return data, info, nil
}

// checkPEM reports whether data holds a PEM block of a wanted type, without
// ever echoing the data (it may be a key).
func checkPEM(data []byte, want func(typ string) bool) error {
	var types []string
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if want(b.Type) {
			return nil
		}
		types = append(types, b.Type)
	}
	if len(types) == 0 {
		return errors.New("no PEM data")
	}
	return fmt.Errorf("no suitable PEM block (found %s)", strings.Join(types, ", "))
}

// certAttrs describes a certificate for logs.
func certAttrs(c *x509.Certificate) []any {
	sans := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, net.IP.String(ip))
	}
	for _, u := range c.URIs {
		sans = append(sans, u.String())
	}
	sans = append(sans, c.EmailAddresses...)
	return []any{
		"subject", c.Subject.String(),
		"sans", sans,
		"issuer", c.Issuer.String(),
		"serial", c.SerialNumber.Text(16),
		"not_after", c.NotAfter.UTC().Format(time.RFC3339),
	}
}
