package healthcheck

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// pinnedTLS trusts the certificates in certFile (TLS_CERTIFICATE: the
// server's own, with its chain) as roots, and nothing else: the server
// must present that certificate, or one issued by a CA certificate the
// file holds. The host name is not checked: the check dials a local
// address, while the certificate names the mirror's public name.
func pinnedTLS(certFile string) (*tls.Config, error) {
	roots, err := readRoots(certFile)
	if err != nil {
		return nil, err
	}
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the server presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		if err != nil {
			return fmt.Errorf("the server's certificate is not the one in TLS_CERTIFICATE %s: %w", certFile, err)
		}
		return nil
	}
	// InsecureSkipVerify turns off only the default checks, which would
	// compare the certificate's names with the local address dialled;
	// VerifyConnection does the chain check instead, on every handshake.
	return &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true, VerifyConnection: verify}, nil
}

// readRoots is a pool of the PEM certificates in certFile.
func readRoots(certFile string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS_CERTIFICATE: %w", err)
	}
	roots, n := x509.NewCertPool(), 0
	for block, rest := pem.Decode(raw); block != nil; block, rest = pem.Decode(rest) {
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS_CERTIFICATE %s: %w", certFile, err)
		}
		roots.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("TLS_CERTIFICATE %s: no PEM certificate in it", certFile)
	}
	return roots, nil
}
