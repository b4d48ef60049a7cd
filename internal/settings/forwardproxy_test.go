package settings

import (
	"path/filepath"
	"slices"
	"testing"
)

// The FORWARD_PROXY_* settings are checked at startup, each error naming
// the setting and the bad value.
func TestForwardProxySettings(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(*testing.T, *Config)
	}{
		{name: "off", env: map[string]string{},
			check: func(t *testing.T, c *Config) {
				if fp := c.ForwardProxy; fp.Addr != "" || fp.Others != "deny" || fp.CADir != filepath.Join("/cache", "forward-proxy-ca") {
					t.Errorf("got %+v", fp)
				}
			}},
		{name: "on, Docker Hub by an API host", env: map[string]string{"FORWARD_PROXY_ADDR": ":3128", "PULL_THROUGHS": "docker.io=docker-hub,ghcr.io=github",
			"FORWARD_PROXY_REGISTRIES": "registry-1.docker.io, ghcr.io", "FORWARD_PROXY_CA_DIR": "/etc/ca", "FORWARD_PROXY_OTHERS": "tunnel"},
			check: func(t *testing.T, c *Config) {
				fp := c.ForwardProxy
				if fp.Addr != ":3128" || !slices.Equal(fp.Registries, []string{"docker.io", "ghcr.io"}) || fp.CADir != "/etc/ca" || fp.Others != "tunnel" {
					t.Errorf("got %+v", fp)
				}
			}},
		{name: "bad addr", env: map[string]string{"FORWARD_PROXY_ADDR": "3128"}, wantErr: []string{`FORWARD_PROXY_ADDR: "3128" is not host:port`}},
		{name: "unmapped registry", env: map[string]string{"FORWARD_PROXY_ADDR": ":3128", "FORWARD_PROXY_REGISTRIES": "quay.io"},
			wantErr: []string{`FORWARD_PROXY_REGISTRIES: registry "quay.io" is not mapped in PULL_THROUGHS`}},
		{name: "registries without addr", env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub", "FORWARD_PROXY_REGISTRIES": "docker.io"},
			wantErr: []string{"FORWARD_PROXY_REGISTRIES: needs FORWARD_PROXY_ADDR"}},
		{name: "two upstreams on one host", env: map[string]string{"FORWARD_PROXY_ADDR": ":3128", "UPSTREAM": ecr + ",http://reg.example.test:5000,http://reg.example.test:6000"},
			wantErr: []string{"FORWARD_PROXY_ADDR: UPSTREAM reg.example.test:5000 and reg.example.test:6000 share host reg.example.test"}},
		{name: "registry with a port", env: map[string]string{"FORWARD_PROXY_ADDR": ":3128", "PULL_THROUGHS": "reg.example.test:5000=local",
			"FORWARD_PROXY_REGISTRIES": "reg.example.test:5000"},
			wantErr: []string{"FORWARD_PROXY_REGISTRIES: reg.example.test:5000 names a port"}},
		{name: "bad others", env: map[string]string{"FORWARD_PROXY_OTHERS": "allow"}, wantErr: []string{`FORWARD_PROXY_OTHERS: "allow" is neither deny nor tunnel`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseEnv(map[string]string{"UPSTREAM": ecr, "CACHE_DIR": "/cache"}, tt.env)
			if !parsedAsWanted(t, err, tt.wantErr) {
				return
			}
			tt.check(t, cfg)
		})
	}
}
