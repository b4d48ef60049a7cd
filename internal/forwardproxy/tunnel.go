package forwardproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// established is the answer to a CONNECT the proxy takes.
const established = "HTTP/1.1 200 Connection established\r\n\r\n"

// tunnel connects the client of a CONNECT to addr and copies bytes both
// ways, untouched, until either side closes.
func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, addr string) {
	upstream, err := p.opts.Dial(r.Context(), "tcp", addr)
	if err != nil {
		p.opts.Observe(OutcomeFailed)
		p.opts.Logger.Info("forward proxy: tunnel refused or failed", "addr", truncate(addr), "client", r.RemoteAddr, "error", err)
		status := http.StatusBadGateway
		if errors.As(err, new(*refusedError)) {
			status = http.StatusForbidden
		}
		refuse(w, status, fmt.Sprintf("CONNECT %s: %v", truncate(addr), err))
		return
	}
	client, err := hijack(w)
	if err != nil {
		upstream.Close()
		p.opts.Logger.Warn("forward proxy: cannot take over the connection", "client", r.RemoteAddr, "error", err)
		return
	}
	p.opts.Observe(OutcomeTunnelled)
	p.opts.Logger.Debug("forward proxy: tunnelling", "addr", truncate(addr), "client", r.RemoteAddr)
	if !p.tunnels.addConn(client) {
		client.Close()
		upstream.Close()
		return
	}
	defer p.tunnels.removeConn(client)
	if !p.tunnels.addConn(upstream) {
		client.Close()
		upstream.Close()
		return
	}
	defer p.tunnels.removeConn(upstream)
	var half atomic.Bool
	done := make(chan struct{})
	go func() {
		pipe(upstream, client, &half, p.opts.halfClosedIdle)
		close(done)
	}()
	pipe(client, upstream, &half, p.opts.halfClosedIdle)
	<-done
	client.Close()
	upstream.Close()
}

// halfClosedIdle is how long a tunnel one end has closed waits for the
// other end's next bytes: a client that keeps its end open after the
// server closed (or the reverse) would otherwise hold it for ever.
const halfClosedIdle = 2 * time.Minute

// pipe copies src to dst, then half-closes dst. Once either way of the
// tunnel is done (half), a read of src that waits idle fails; the first
// way to finish starts that clock on the other's read.
func pipe(dst, src net.Conn, half *atomic.Bool, idle time.Duration) {
	_, _ = io.Copy(dst, &idleAfterHalf{Conn: src, half: half, idle: idle})
	closeWrite(dst)
	if !half.Swap(true) {
		_ = dst.SetReadDeadline(time.Now().Add(idle)) // the other way may be waiting in a read
	}
}

// idleAfterHalf reads its connection with a deadline idle ahead once
// half is set.
type idleAfterHalf struct {
	net.Conn
	half *atomic.Bool
	idle time.Duration
}

func (r *idleAfterHalf) Read(p []byte) (int, error) {
	if r.half.Load() {
		_ = r.Conn.SetReadDeadline(time.Now().Add(r.idle))
	}
	return r.Conn.Read(p)
}

// closeWrite half-closes c when it can, else closes it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		return
	}
	_ = c.Close()
}

// hijack takes the client's connection over from net/http and answers
// the CONNECT; bytes the client sent early are kept for the reader.
func hijack(w http.ResponseWriter) (net.Conn, error) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	// The server's header deadline may still be set: a tunnel lives as
	// long as its two ends (an intercepted one by its own server's).
	_ = conn.SetDeadline(time.Time{})
	if _, err := io.WriteString(conn, established); err != nil {
		conn.Close()
		return nil, err
	}
	if brw.Reader.Buffered() == 0 {
		return conn, nil
	}
	return &bufferedConn{Conn: conn, r: brw.Reader}, nil
}

// bufferedConn reads what net/http had buffered before the connection.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite half-closes the connection underneath, when it can.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// oneConnListener hands out one connection, then waits until closed;
// closed first (its server shut down before it served), it closes the
// connection.
type oneConnListener struct {
	conn   chan net.Conn
	closed chan struct{}
	once   sync.Once
	addr   net.Addr
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conn: make(chan net.Conn, 1), closed: make(chan struct{}), addr: c.LocalAddr()}
	l.conn <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conn:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	select {
	case c := <-l.conn:
		return c.Close()
	default:
		return nil
	}
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// tracker holds the proxy's open tunnels and intercepted connections'
// servers, so that shutdown ends them.
type tracker struct {
	mu      sync.Mutex
	closed  bool
	conns   map[net.Conn]struct{}
	servers map[*http.Server]struct{}
}

func (t *tracker) addConn(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.conns == nil {
		t.conns = map[net.Conn]struct{}{}
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tracker) removeConn(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.conns, c)
}

func (t *tracker) addServer(s *http.Server) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if t.servers == nil {
		t.servers = map[*http.Server]struct{}{}
	}
	t.servers[s] = struct{}{}
	return true
}

func (t *tracker) removeServer(s *http.Server) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.servers, s)
}

// shutdown refuses new tunnels, shuts the servers down within ctx, then
// closes what is left.
func (t *tracker) shutdown(ctx context.Context) {
	t.mu.Lock()
	t.closed = true
	servers := make([]*http.Server, 0, len(t.servers))
	for s := range t.servers {
		servers = append(servers, s)
	}
	t.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() {
			if s.Shutdown(ctx) != nil {
				_ = s.Close()
			}
		})
	}
	wg.Wait()
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		_ = c.Close()
	}
}

// refusedError is a destination the proxy does not connect to.
type refusedError struct{ addr, reason string }

func (e *refusedError) Error() string {
	return fmt.Sprintf("destination %s refused: %s", e.addr, e.reason)
}

// guardedDial dials through d, but only to public and private
// addresses of other hosts: never loopback or this host's own (the
// mirror's ports, which would take the proxy's address for the
// client's), link-local or fd00:ec2::/32 (the cloud metadata service
// and its credentials), unspecified or multicast ones. Names are
// resolved here and the address checked is dialled.
func guardedDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolving %s: %w", host, err)
		}
		own, err := ownAddrs()
		if err != nil {
			return nil, &refusedError{addr: addr, reason: err.Error()}
		}
		var errs []error
		for _, a := range addrs {
			a = a.Unmap()
			reason := forbidden(a)
			if reason == "" && own[a.WithZone("")] {
				reason = "one of this host's own addresses (the mirror's ports)"
			}
			if reason != "" {
				errs = append(errs, &refusedError{addr: addr, reason: reason})
				continue
			}
			c, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		if len(errs) == 0 {
			return nil, fmt.Errorf("%s has no address", host)
		}
		return nil, errors.Join(errs...)
	}
}

// ownAddrs are the addresses of this host's interfaces, read afresh
// (an interface may gain one).
func ownAddrs() (map[netip.Addr]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("cannot list this host's own addresses: %v", err)
	}
	own := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			own[p.Addr().Unmap().WithZone("")] = true
		}
	}
	return own, nil
}

// awsLocalIPv6 holds the IPv6 addresses of EC2's instance metadata
// service and EKS Pod Identity agent (fd00:ec2::254, fd00:ec2::23):
// unique-local, so no class above covers them.
var awsLocalIPv6 = netip.MustParsePrefix("fd00:ec2::/32")

// forbidden says why the proxy never connects to a, or "".
func forbidden(a netip.Addr) string {
	switch {
	case awsLocalIPv6.Contains(a):
		return "the cloud metadata service's IPv6 range"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast():
		return "a link-local address (such as the cloud metadata service)"
	case a.IsUnspecified():
		return "an unspecified address"
	case a.IsMulticast():
		return "a multicast address"
	}
	return ""
}

// splitAuthority splits a CONNECT's host:port and checks both.
func splitAuthority(authority string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(authority)
	if err != nil {
		return "", "", errors.New("is not host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %q is not a number from 1 to 65535", truncate(port))
	}
	return host, port, checkHost(host)
}

// checkHost accepts an IP address or a DNS name (letters, digits,
// hyphens, underscores and dots; labels of 1 to 63, at most 253 in all).
func checkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if host == "" || len(host) > 253 {
		return errors.New("the host is empty or longer than 253 characters")
	}
	for _, label := range strings.Split(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("host %q has an empty or over-long label", truncate(host))
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("host %q is not a DNS name or IP address", truncate(host))
			}
		}
	}
	return nil
}

// forwardIdle is how long the connection of a forwarded request waits
// idle for the next one to its host.
const forwardIdle = 90 * time.Second

// newForwarder forwards absolute-form requests to hosts not intercepted,
// untouched but for the hop-by-hop headers (Proxy-Authorization among
// them). Idle connections are closed after idle, and at most 100 kept.
func newForwarder(dial func(ctx context.Context, network, addr string) (net.Conn, error), idle time.Duration, log *slog.Logger) http.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			u := *pr.In.URL
			pr.Out.URL = &u
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{DialContext: dial, Proxy: nil, DisableCompression: true,
			MaxIdleConns: 100, MaxIdleConnsPerHost: 8, IdleConnTimeout: idle},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status := http.StatusBadGateway
			if errors.As(err, new(*refusedError)) {
				status = http.StatusForbidden
			}
			refuse(w, status, fmt.Sprintf("forwarding to %s: %v", truncate(r.URL.Host), err))
		},
	}
}
