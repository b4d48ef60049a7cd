package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// defaultHealthTimeout bounds a health check unless -timeout says
// otherwise; it stays under Docker's default HEALTHCHECK timeout (30s).
const defaultHealthTimeout = 10 * time.Second

const healthcheckUsage = `Usage: ecr-mirror healthcheck [-timeout 10s] [-- SERVER FLAGS]

Asks the mirror configured here whether it is alive: GET /healthz on
METRICS_ADDR when set, else on LISTEN_ADDR (https when TLS_CERTIFICATE
is set; a wildcard host such as ":5000" is asked on 127.0.0.1). It reads
the settings the server reads (environment variables; server flags go
after "--"), so a container's HEALTHCHECK needs no arguments. Exits 0
when /healthz answers 200, else 1 with the reason on one line.

Over https the mirror must present the certificate in TLS_CERTIFICATE,
or one issued by a CA certificate that file holds; the names in it are
not checked, as the check dials a local address, not the mirror's name.

ALLOW_NETWORKS holds for /healthz on LISTEN_ADDR: when it leaves out
127.0.0.1 the check is refused (403 DENIED); set METRICS_ADDR, or allow
127.0.0.1/32.

Flags:
`

// runHealthcheck is "ecr-mirror healthcheck": exit 0 when the configured
// mirror answers /healthz with 200, else 1 (Docker reserves 2).
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Duration("timeout", defaultHealthTimeout, "how long to wait for the answer")
	fs.Usage = func() {
		fmt.Fprint(stderr, healthcheckUsage)
		fs.PrintDefaults()
	}
	serverFlags, code, ok := parseFlags(fs, args)
	if !ok {
		return min(code, exitFail)
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: -timeout %s: want a positive duration such as 10s\n", *timeout)
		return exitFail
	}
	cfg, err := settings.Parse(serverFlags, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: invalid configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return exitFail
	}
	target, err := healthTarget(cfg)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		err = target.check(ctx, *timeout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror healthcheck: %v\n", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "ok: %s answered 200\n", target.url)
	return exitOK
}

// healthProbe is where the health check asks, and how.
type healthProbe struct {
	url     string
	setting string      // the setting the address came from, for errors
	tls     *tls.Config // nil: plain HTTP
	// denied says why a 403 is likely: ALLOW_NETWORKS leaves out the
	// loopback address asked from; "" when it does not.
	denied string
}

// healthTarget is the /healthz the server configured by cfg answers:
// METRICS_ADDR's (always plain HTTP) when set, else LISTEN_ADDR's.
func healthTarget(cfg *settings.Config) (healthProbe, error) {
	p := healthProbe{setting: "LISTEN_ADDR"}
	addr, scheme := cfg.ListenAddr, "http"
	if cfg.MetricsAddr != "" {
		p.setting, addr = "METRICS_ADDR", cfg.MetricsAddr
	} else if cfg.TLSCertificate != "" {
		tc, err := pinnedTLS(cfg.TLSCertificate)
		if err != nil {
			return p, err
		}
		p.tls, scheme = tc, "https"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return p, fmt.Errorf("%s %q: %w", p.setting, addr, err)
	}
	host = localHost(host)
	p.url = scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
	if p.setting == "LISTEN_ADDR" && len(cfg.Access.AllowNetworks) > 0 && !allowsLoopback(cfg.Access.AllowNetworks, host) {
		p.denied = "ALLOW_NETWORKS leaves out loopback, where the check asks from: set METRICS_ADDR, or allow 127.0.0.1/32"
	}
	return p, nil
}

// allowsLoopback reports whether nets hold the loopback address a
// request to host comes from (host itself when it is a loopback IP).
func allowsLoopback(nets []netip.Prefix, host string) bool {
	from, err := netip.ParseAddr(host)
	if err != nil || !from.IsLoopback() {
		from = netip.MustParseAddr("127.0.0.1")
	}
	for _, n := range nets {
		if n.Contains(from) {
			return true
		}
	}
	return false
}

// localHost is the host to dial for a listener on host: a wildcard
// (all addresses) is asked on 127.0.0.1, which an IPv6 wildcard
// listener accepts too (dual stack), and which a container without
// IPv6 has, unlike ::1.
func localHost(host string) string {
	switch host {
	case "", "0.0.0.0", "::":
		return "127.0.0.1"
	}
	return host
}

// pinnedTLS trusts the certificates in certFile (TLS_CERTIFICATE: the
// server's own, with its chain) as roots, and nothing else: the server
// must present that certificate, or one issued by a CA certificate the
// file holds. The host name is not checked: the check dials a local
// address, while the certificate names the mirror's public name.
func pinnedTLS(certFile string) (*tls.Config, error) {
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

// check asks p's /healthz once, within ctx; timeout is for the error.
func (p healthProbe) check(ctx context.Context, timeout time.Duration) error {
	// Never through HTTP(S)_PROXY: the mirror is local.
	tr := &http.Transport{Proxy: nil, TLSClientConfig: p.tls, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", p.setting, err)
	}
	req.Header.Set("User-Agent", "ecr-mirror-healthcheck/"+buildinfo.Token(buildinfo.Read().Version))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from %s (%s) within %s (-timeout)", p.url, p.setting, timeout)
		}
		return fmt.Errorf("no answer from %s (%s): %w", p.url, p.setting, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	err = fmt.Errorf("%s (%s) answered %s%s", p.url, p.setting, resp.Status, reasonOf(body))
	if resp.StatusCode == http.StatusForbidden && p.denied != "" {
		err = fmt.Errorf("%w (%s)", err, p.denied)
	}
	return err
}

// reasonOf is the reason in an error answer's body, for one line: an
// OCI error's code and message, else the body's first line.
func reasonOf(body []byte) string {
	if code, msg, ok := registry.ParseErrorBody(body); ok {
		return fmt.Sprintf(": %s: %s", code, msg)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	if line == "" {
		return ""
	}
	return ": " + line
}
