package registry

import (
	"crypto/tls"
	"errors"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestNamespacesUpstream(t *testing.T) {
	t.Parallel()
	n, err := NewNamespaces(map[string]string{"docker.io": "docker-hub", "ghcr.io": "github", "registry.k8s.io": "k8s"},
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, ns, want string
		wantErr        string
	}{
		{name: "team/app", ns: "", want: "team/app"},
		{name: "library/nginx", ns: "docker.io", want: "docker-hub/library/nginx"},
		{name: "nginx", ns: "docker.io", want: "docker-hub/library/nginx"},
		{name: "bitnami/redis", ns: "docker.io", want: "docker-hub/bitnami/redis"},
		{name: "nginx", ns: "registry-1.docker.io", want: "docker-hub/library/nginx"},
		{name: "nginx", ns: "Docker.IO", want: "docker-hub/library/nginx"},
		{name: "acme/tool", ns: "ghcr.io", want: "github/acme/tool"},
		{name: "pause", ns: "registry.k8s.io", want: "k8s/pause"},
		{name: "team/app", ns: "123456789012.dkr.ecr.eu-west-1.amazonaws.com", want: "team/app"},
		{name: "x", ns: "quay.io", wantErr: `namespace "quay.io" is not configured`},
		{name: strings.Repeat("a", 250), ns: "ghcr.io", wantErr: "characters long"},
	}
	for _, tt := range tests {
		t.Run(tt.ns+"/"+tt.name[:min(len(tt.name), 20)], func(t *testing.T) {
			t.Parallel()
			got, err := n.Upstream(tt.name, tt.ns)
			if tt.wantErr != "" {
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(e.Message, tt.wantErr) {
					t.Fatalf("Upstream(%q, %q) = %q, %v; want error containing %q", tt.name, tt.ns, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Upstream(%q, %q) = %q, %v; want %q", tt.name, tt.ns, got, err, tt.want)
			}
		})
	}
	var none *Namespaces
	if _, err := none.Upstream("x", "docker.io"); err == nil {
		t.Fatal("nil Namespaces mapped docker.io")
	}
}

func TestNewNamespacesRejects(t *testing.T) {
	t.Parallel()
	for _, m := range []map[string]string{
		{"docker.io": "Docker-Hub"},
		{"https://ghcr.io": "github"},
		{"": "x"},
		{"docker.io": "a", "registry-1.docker.io": "b"},
	} {
		if _, err := NewNamespaces(m, "ecr"); err == nil {
			t.Errorf("NewNamespaces(%v) accepted it", m)
		}
	}
}

func TestDropParam(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"":                       "",
		"ns=docker.io":           "",
		"n=10&ns=docker.io":      "n=10",
		"ns=a&last=x%2Fy&n=2":    "last=x%2Fy&n=2",
		"nsx=1&ns=2&a=b;c":       "nsx=1&a=b;c",
		"last=a&&ns=docker.io&n": "last=a&n",
	}
	for in, want := range tests {
		if got := dropParam(in, "ns"); got != want {
			t.Errorf("dropParam(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBaseURL(t *testing.T) {
	t.Parallel()
	lb := netip.MustParsePrefix("10.0.0.0/8")
	tests := []struct {
		name    string
		trusted bool
		remote  string
		tls     bool
		hdr     map[string]string
		want    string
	}{
		{name: "own host", remote: "10.1.2.3:4000", want: "http://mirror.example:5000"},
		{name: "tls", remote: "10.1.2.3:4000", tls: true, want: "https://mirror.example:5000"},
		{name: "forwarded but untrusted", remote: "192.0.2.1:4000",
			hdr: map[string]string{"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}, trusted: true, want: "http://mirror.example:5000"},
		{name: "forwarded, no trust configured", remote: "10.1.2.3:4000",
			hdr: map[string]string{"X-Forwarded-Host": "lb.example"}, want: "http://mirror.example:5000"},
		{name: "forwarded by trusted proxy", remote: "10.1.2.3:4000", trusted: true,
			hdr: map[string]string{"X-Forwarded-Host": "registry.corp.example, inner", "X-Forwarded-Proto": "https"}, want: "https://registry.corp.example"},
		{name: "injection refused", remote: "10.1.2.3:4000", trusted: true,
			hdr: map[string]string{"X-Forwarded-Host": "a.example/evil?x=", "X-Forwarded-Proto": "javascript"}, want: "http://mirror.example:5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var opts []HandlerOption
			if tt.trusted {
				opts = append(opts, WithTrustedProxies([]netip.Prefix{lb}))
			}
			h := NewHandler(nil, nil, opts...)
			r := httptest.NewRequest("GET", "http://mirror.example:5000/v2/", nil)
			r.RemoteAddr = tt.remote
			if tt.tls {
				r.TLS = &tls.ConnectionState{}
			}
			for k, v := range tt.hdr {
				r.Header.Set(k, v)
			}
			u := h.baseURL(r)
			if got := u.String(); got != tt.want {
				t.Fatalf("baseURL = %q, want %q", got, tt.want)
			}
		})
	}
}
