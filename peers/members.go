package peers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"
)

// DefaultRefresh is how often a dns: PEERS is resolved again.
const DefaultRefresh = 15 * time.Second

// CoolOff is how long a member that failed to answer is not asked.
const CoolOff = 10 * time.Second

// resolveTimeout bounds one DNS resolution.
const resolveTimeout = 5 * time.Second

// Spec is a parsed PEERS: a static list of HOST:PORT, or a DNS name
// whose addresses, each with Port, are the members.
type Spec struct {
	Static  []string // HOST:PORT each; nil with DNS
	DNSHost string   // dns:HOST:PORT's HOST
	Port    string   // dns:HOST:PORT's PORT
}

// ParseSpec parses PEERS: "dns:HOST:PORT" or "HOST:PORT,HOST:PORT,...".
func ParseSpec(v string) (Spec, error) {
	if rest, ok := strings.CutPrefix(v, "dns:"); ok {
		host, port, err := splitHostPort(rest)
		if err != nil {
			return Spec{}, fmt.Errorf("%q: %w (want dns:HOST:PORT)", v, err)
		}
		return Spec{DNSHost: host, Port: port}, nil
	}
	var s Spec
	for _, e := range strings.Split(v, ",") {
		e = strings.TrimSpace(e)
		if _, _, err := splitHostPort(e); err != nil {
			return Spec{}, fmt.Errorf("entry %q: %w (want HOST:PORT)", e, err)
		}
		if !slices.Contains(s.Static, e) {
			s.Static = append(s.Static, e)
		}
	}
	return s, nil
}

func splitHostPort(hp string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(hp)
	if err != nil {
		return "", "", err
	}
	if host == "" {
		return "", "", fmt.Errorf("no host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", "", fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return host, port, nil
}

// Resolver looks up a host's addresses; *net.Resolver implements it.
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// MembersOptions configure Members.
type MembersOptions struct {
	Spec Spec
	// Addr is this replica's peer listener (PEER_ADDR): its port, with
	// an address of this host, names this replica among the members.
	Addr string
	// Refresh is how often a DNS spec is resolved; 0: DefaultRefresh.
	Refresh  time.Duration
	Resolver Resolver        // nil: net.DefaultResolver
	Clock    clockwork.Clock // nil: the real clock
	// LocalIPs are this host's addresses; nil: its interfaces'.
	LocalIPs func() ([]net.IP, error)
	Logger   *slog.Logger
}

// Members is the current membership and the cool-off of failed members.
type Members struct {
	opts     MembersOptions
	selfPort string
	mu       sync.Mutex
	list     []string             // sorted HOST:PORT
	self     string               // "" when none is this replica
	failedAt map[string]time.Time // members cooling off, and since when
	lastErr  error                // of the last resolution
}

// NewMembers resolves opts.Spec once: a static list's hosts to find this
// replica among them, a DNS name to learn the members (a failure is
// logged and retried at the next refresh).
func NewMembers(ctx context.Context, opts MembersOptions) (*Members, error) {
	_, port, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("peer listener address %q: %w", opts.Addr, err)
	}
	if opts.Refresh <= 0 {
		opts.Refresh = DefaultRefresh
	}
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if opts.LocalIPs == nil {
		opts.LocalIPs = interfaceIPs
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Members{opts: opts, selfPort: port, failedAt: map[string]time.Time{}}
	m.Refresh(ctx)
	return m, nil
}

// Run resolves a DNS spec again every Refresh until ctx ends.
func (m *Members) Run(ctx context.Context) {
	if m.opts.Spec.DNSHost == "" {
		return
	}
	tick := m.opts.Clock.NewTicker(m.opts.Refresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.Chan():
			m.Refresh(ctx)
		}
	}
}

// Refresh resolves the spec now. A DNS failure keeps the last members.
func (m *Members) Refresh(ctx context.Context) {
	list, err := m.resolve(ctx)
	if err != nil {
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		m.opts.Logger.Warn("resolving PEERS failed; keeping the last members", "peers", m.opts.Spec.DNSHost, "members", m.Members(), "error", err)
		return
	}
	self := m.findSelf(ctx, list)
	m.mu.Lock()
	changed := !slices.Equal(m.list, list) || m.self != self
	m.list, m.self, m.lastErr = list, self, nil
	for member := range m.failedAt {
		if !slices.Contains(list, member) {
			delete(m.failedAt, member) // gone: back, it is asked at once
		}
	}
	m.mu.Unlock()
	if changed {
		m.opts.Logger.Info("peers", "members", list, "self", self)
	}
}

// resolve lists the members, sorted.
func (m *Members) resolve(ctx context.Context) ([]string, error) {
	s := m.opts.Spec
	if s.DNSHost == "" {
		return slices.Sorted(slices.Values(s.Static)), nil
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := m.opts.Resolver.LookupHost(ctx, s.DNSHost)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("%s has no address", s.DNSHost)
	}
	list := make([]string, 0, len(addrs))
	for _, a := range addrs {
		list = append(list, net.JoinHostPort(a, s.Port))
	}
	slices.Sort(list)
	return slices.Compact(list), nil
}

// findSelf is the member that is this replica: PEER_ADDR's port at one
// of this host's addresses; "" when none is.
func (m *Members) findSelf(ctx context.Context, list []string) string {
	local, err := m.opts.LocalIPs()
	if err != nil {
		m.opts.Logger.Warn("listing this host's addresses failed; no member is taken for this replica", "error", err)
		return ""
	}
	for _, member := range list {
		host, port, _ := net.SplitHostPort(member)
		if port != m.selfPort {
			continue
		}
		for _, ip := range m.hostIPs(ctx, host) {
			if slices.ContainsFunc(local, ip.Equal) {
				return member
			}
		}
	}
	return ""
}

// hostIPs are host's addresses: itself when it is an IP, else resolved.
func (m *Members) hostIPs(ctx context.Context, host string) []net.IP {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addrs, err := m.opts.Resolver.LookupHost(ctx, host)
	if err != nil {
		m.opts.Logger.Warn("resolving a peer failed; it is not taken for this replica", "peer", host, "error", err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil {
			ips = append(ips, ip)
		}
	}
	return ips
}

func interfaceIPs() ([]net.IP, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	return ips, nil
}

// Members returns the members, sorted.
func (m *Members) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.list)
}

// Status says how many members are known, whether this replica is one
// of them, and why the last resolution failed (nil: it worked).
func (m *Members) Status() (members int, self bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.list), m.self != "", m.lastErr
}

// Owner returns dgst's owner, and whether it is this replica; "" when
// there are no members.
func (m *Members) Owner(dgst digest.Digest) (owner string, self bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	owner = Owner(m.list, dgst)
	return owner, owner != "" && owner == m.self
}

// Owner is the member of list with the highest weight for dgst
// (rendezvous hashing); "" for an empty list.
func Owner(list []string, dgst digest.Digest) string {
	var best string
	var bestWeight uint64
	for _, member := range list {
		w := weight(member, dgst)
		if best == "" || w > bestWeight || w == bestWeight && member < best {
			best, bestWeight = member, w
		}
	}
	return best
}

// weight is member's score for dgst: the first 8 bytes of
// SHA-256(member NUL dgst).
func weight(member string, dgst digest.Digest) uint64 {
	var b bytes.Buffer
	b.WriteString(member)
	b.WriteByte(0)
	b.WriteString(dgst.String())
	sum := sha256.Sum256(b.Bytes())
	return binary.BigEndian.Uint64(sum[:8])
}

// failed starts member's cool-off.
func (m *Members) failed(member string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failedAt[member] = m.opts.Clock.Now()
}

// coolingOff reports whether member failed less than CoolOff ago.
func (m *Members) coolingOff(member string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.failedAt[member]
	if !ok {
		return false
	}
	if m.opts.Clock.Since(at) >= CoolOff {
		delete(m.failedAt, member)
		return false
	}
	return true
}
