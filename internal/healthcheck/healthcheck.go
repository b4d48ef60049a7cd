package healthcheck

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Probe is where the health check asks, and how.
type Probe struct {
	// URL is the /healthz asked.
	URL string
	// Setting is the setting the address came from, for errors.
	Setting string
	tls     *tls.Config // nil: plain HTTP
	// denied says why a 403 is likely: ALLOW_NETWORKS leaves out the
	// loopback address asked from; "" when it does not.
	denied string
}

// Target is the /healthz the server configured by cfg answers:
// METRICS_ADDR's (always plain HTTP) when set, else LISTEN_ADDR's.
func Target(cfg *settings.Config) (Probe, error) {
	p := Probe{Setting: "LISTEN_ADDR"}
	addr, scheme := cfg.ListenAddr, "http"
	if cfg.MetricsAddr != "" {
		p.Setting, addr = "METRICS_ADDR", cfg.MetricsAddr
	} else if cfg.TLSCertificate != "" {
		tc, err := pinnedTLS(cfg.TLSCertificate)
		if err != nil {
			return p, err
		}
		p.tls, scheme = tc, "https"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return p, fmt.Errorf("%s %q: %w", p.Setting, addr, err)
	}
	host = localHost(host)
	p.URL = scheme + "://" + net.JoinHostPort(host, port) + "/healthz"
	if p.Setting == "LISTEN_ADDR" && len(cfg.Access.AllowNetworks) > 0 && !allowsLoopback(cfg.Access.AllowNetworks, host) {
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

// Check asks p's /healthz once, within ctx; timeout, the -timeout that
// bounds ctx, is named in the error when it runs out.
func (p Probe) Check(ctx context.Context, timeout time.Duration) error {
	// Never through HTTP(S)_PROXY: the mirror is local.
	tr := &http.Transport{Proxy: nil, TLSClientConfig: p.tls, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", p.Setting, err)
	}
	req.Header.Set("User-Agent", "ecr-mirror-healthcheck/"+buildinfo.Token(buildinfo.Read().Version))
	resp, err := tr.RoundTrip(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("no answer from %s (%s) within %s (-timeout)", p.URL, p.Setting, timeout)
		}
		return fmt.Errorf("no answer from %s (%s): %w", p.URL, p.Setting, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	err = fmt.Errorf("%s (%s) answered %s%s", p.URL, p.Setting, resp.Status, reasonOf(body))
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
