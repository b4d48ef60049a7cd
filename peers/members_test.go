package peers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

func TestParseSpec(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Spec
		wantErr bool
	}{
		{in: "a:5001,b:5001", want: Spec{Static: []string{"a:5001", "b:5001"}}},
		{in: " a:5001 , 10.0.0.2:5001,a:5001", want: Spec{Static: []string{"a:5001", "10.0.0.2:5001"}}},
		{in: "[::1]:5001", want: Spec{Static: []string{"[::1]:5001"}}},
		{in: "dns:ecr-mirror-headless.ecr-mirror.svc:5001", want: Spec{DNSHost: "ecr-mirror-headless.ecr-mirror.svc", Port: "5001"}},
		{in: "dns:headless", wantErr: true},
		{in: "dns::5001", wantErr: true},
		{in: "a", wantErr: true},
		{in: "a:5001,", wantErr: true},
		{in: ":5001", wantErr: true},
		{in: "a:0", wantErr: true},
		{in: "a:70000", wantErr: true},
		{in: "a:http", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSpec(tt.in)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseSpec(%q) = %+v, want an error", tt.in, got)
				}
				return
			}
			if err != nil || !slices.Equal(got.Static, tt.want.Static) || got.DNSHost != tt.want.DNSHost || got.Port != tt.want.Port {
				t.Fatalf("ParseSpec(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
		})
	}
}

// digests returns n distinct digests.
func digests(n int) []digest.Digest {
	ds := make([]digest.Digest, n)
	for i := range ds {
		ds[i] = digest.FromString(fmt.Sprint("blob ", i))
	}
	return ds
}

// Rendezvous hashing: a member leaving moves only the digests it owned,
// a member joining takes only digests it then owns, and every member
// owns a fair share.
func TestOwnerMovesOnlyTheChangedMembersShare(t *testing.T) {
	t.Parallel()
	five := []string{"10.0.0.1:5001", "10.0.0.2:5001", "10.0.0.3:5001", "10.0.0.4:5001", "10.0.0.5:5001"}
	four := slices.Delete(slices.Clone(five), 2, 3)
	six := append(slices.Clone(five), "10.0.0.6:5001")
	ds := digests(20000)
	share := map[string]int{}
	moved := 0
	for _, d := range ds {
		before := Owner(five, d)
		share[before]++
		if after := Owner(four, d); after != before {
			moved++
			if before != five[2] {
				t.Fatalf("%s moved from %s to %s when %s left", d, before, after, five[2])
			}
		}
		if after := Owner(six, d); after != before && after != six[5] {
			t.Fatalf("%s moved from %s to %s when %s joined", d, before, after, six[5])
		}
	}
	if moved != share[five[2]] {
		t.Errorf("%d digests moved when a member that owned %d left", moved, share[five[2]])
	}
	for _, m := range five {
		if share[m] < len(ds)/5*8/10 || share[m] > len(ds)/5*12/10 {
			t.Errorf("%s owns %d of %d digests, not about a fifth", m, share[m], len(ds))
		}
	}
	if Owner(nil, ds[0]) != "" {
		t.Error("an empty list has an owner")
	}
}

// fakeResolver answers LookupHost from a table, or fails.
type fakeResolver struct {
	mu    sync.Mutex
	hosts map[string][]string
	err   error
}

func (r *fakeResolver) LookupHost(_ context.Context, host string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	addrs, ok := r.hosts[host]
	if !ok {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	return addrs, nil
}

func (r *fakeResolver) set(host string, addrs []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hosts[host], r.err = addrs, err
}

func localIPs(ips ...string) func() ([]net.IP, error) {
	return func() ([]net.IP, error) {
		var out []net.IP
		for _, s := range ips {
			out = append(out, net.ParseIP(s))
		}
		return out, nil
	}
}

// A dns: spec is resolved again every refresh; a failed resolution keeps
// the last members and says why in Status.
func TestDNSMembersAreResolvedAgainAndKeptOnFailure(t *testing.T) {
	t.Parallel()
	res := &fakeResolver{hosts: map[string][]string{"headless": {"10.0.0.2", "10.0.0.1"}}}
	clk := clockwork.NewFakeClock()
	m, err := NewMembers(t.Context(), MembersOptions{Spec: Spec{DNSHost: "headless", Port: "5001"}, Addr: ":5001",
		Refresh: DefaultRefresh, Resolver: res, Clock: clk, LocalIPs: localIPs("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.Run(ctx)
	if got := m.Members(); !slices.Equal(got, []string{"10.0.0.1:5001", "10.0.0.2:5001"}) {
		t.Fatalf("members %v", got)
	}
	if n, self, err := m.Status(); n != 2 || !self || err != nil {
		t.Fatalf("Status() = %d, %v, %v; want 2, this replica among them, no error", n, self, err)
	}

	res.set("headless", []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}, nil)
	testwait.Until(t, "the members to be resolved again", func() bool {
		clk.Advance(DefaultRefresh)
		return len(m.Members()) == 3
	})

	res.set("headless", nil, errors.New("lookup headless: server misbehaving"))
	testwait.Until(t, "the failed resolution to be reported", func() bool {
		clk.Advance(DefaultRefresh)
		_, _, err := m.Status()
		return err != nil
	})
	if got := m.Members(); len(got) != 3 {
		t.Errorf("after a failed resolution the members are %v, want the last three", got)
	}
}

// The member with PEER_ADDR's port at one of this host's addresses is
// this replica: three replicas on one address find themselves by port.
func TestSelfIsTheMemberWithThisPortAtALocalAddress(t *testing.T) {
	t.Parallel()
	res := &fakeResolver{hosts: map[string][]string{"mirror-1.mirrors": {"10.0.0.7"}}}
	list := []string{"127.0.0.1:5001", "127.0.0.1:5002", "mirror-1.mirrors:5003", "127.0.0.1:5004"}
	tests := []struct {
		addr  string
		local []string
		want  string
	}{
		{addr: ":5002", local: []string{"127.0.0.1", "10.0.0.9"}, want: "127.0.0.1:5002"},
		{addr: "127.0.0.1:5001", local: []string{"127.0.0.1"}, want: "127.0.0.1:5001"},
		{addr: ":5003", local: []string{"127.0.0.1", "10.0.0.7"}, want: "mirror-1.mirrors:5003"},
		{addr: ":5003", local: []string{"127.0.0.1"}, want: ""},
		{addr: ":5009", local: []string{"127.0.0.1"}, want: ""},
		{addr: ":5004", local: []string{"10.0.0.9"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr+fmt.Sprint(tt.local), func(t *testing.T) {
			t.Parallel()
			m, err := NewMembers(t.Context(), MembersOptions{Spec: Spec{Static: list}, Addr: tt.addr, Resolver: res, LocalIPs: localIPs(tt.local...)})
			if err != nil {
				t.Fatal(err)
			}
			m.mu.Lock()
			self := m.self
			m.mu.Unlock()
			if self != tt.want {
				t.Errorf("self = %q, want %q", self, tt.want)
			}
			for _, d := range digests(50) {
				owner, isSelf := m.Owner(d)
				if isSelf != (owner == tt.want && tt.want != "") {
					t.Fatalf("Owner(%s) = %s, %v with self %q", d, owner, isSelf, tt.want)
				}
			}
		})
	}
}

// A member that failed is skipped for CoolOff, then asked again.
func TestFailedMemberCoolsOff(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClock()
	m, err := NewMembers(t.Context(), MembersOptions{Spec: Spec{Static: []string{"10.0.0.1:5001"}}, Addr: ":5001", Clock: clk, LocalIPs: localIPs()})
	if err != nil {
		t.Fatal(err)
	}
	m.failed("10.0.0.1:5001")
	if !m.coolingOff("10.0.0.1:5001") {
		t.Fatal("a member that just failed is not cooling off")
	}
	clk.Advance(CoolOff - 1)
	if !m.coolingOff("10.0.0.1:5001") {
		t.Fatal("the cool-off ended early")
	}
	clk.Advance(1)
	if m.coolingOff("10.0.0.1:5001") {
		t.Fatal("the cool-off did not end")
	}
}

// A member that leaves the membership forgets its cool-off: when it
// comes back (its pod ready again) it is asked at once, and the members
// gone over a long run (pods' addresses change at each restart) are not
// remembered for good.
func TestMemberThatLeavesForgetsItsCoolOff(t *testing.T) {
	t.Parallel()
	res := &fakeResolver{hosts: map[string][]string{"headless": {"10.0.0.1", "10.0.0.2"}}}
	m, err := NewMembers(t.Context(), MembersOptions{Spec: Spec{DNSHost: "headless", Port: "5001"}, Addr: ":5001",
		Resolver: res, Clock: clockwork.NewFakeClock(), LocalIPs: localIPs("10.0.0.2")})
	if err != nil {
		t.Fatal(err)
	}
	m.failed("10.0.0.1:5001")
	res.set("headless", []string{"10.0.0.2"}, nil)
	m.Refresh(t.Context())
	m.mu.Lock()
	remembered := len(m.failedAt)
	m.mu.Unlock()
	if remembered != 0 {
		t.Errorf("%d cool-offs remembered for members gone, want 0", remembered)
	}
	res.set("headless", []string{"10.0.0.1", "10.0.0.2"}, nil)
	m.Refresh(t.Context())
	if m.coolingOff("10.0.0.1:5001") {
		t.Error("a member that came back is still cooling off")
	}
}
