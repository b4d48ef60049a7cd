package settings

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1073741824", want: 1 << 30},
		{in: "75g", want: 75 << 30},
		{in: "75G", want: 75 << 30},
		{in: "512MiB", want: 512 << 20},
		{in: "512mb", want: 512 << 20},
		{in: "10k", want: 10 << 10},
		{in: "2TiB", want: 2 << 40},
		{in: "1.5g", want: 3 << 29},
		{in: "100b", want: 100},
		{in: " 8m ", want: 8 << 20},
		{in: "", wantErr: true},
		{in: "g", wantErr: true},
		{in: "-5g", wantErr: true},
		{in: "0", wantErr: true},
		{in: "ten", wantErr: true},
		{in: "5x", wantErr: true},
		{in: "99999999999t", wantErr: true},
		{in: "1e3", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseSize(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want && !tt.wantErr {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d (error %v)", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"75g", "1.5GiB", "12", "k", ".1", "0.9b", "4194304t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && (n <= 0 || n > maxSize) {
			t.Fatalf("ParseSize(%q) = %d without error", s, n)
		}
		if err != nil && !strings.Contains(err.Error(), fmt.Sprintf("%q", s)) {
			t.Fatalf("ParseSize(%q): error %q does not quote the value", s, err)
		}
	})
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*testing.T, *Config)
		wantErr []string // substrings the error must contain
	}{
		{
			name: "defaults",
			env:  map[string]string{"UPSTREAM": ecr},
			check: func(t *testing.T, c *Config) {
				if c.Region != "eu-west-1" || c.ListenAddr != ":5000" || c.CacheDir != "/var/lib/ecr-mirror" || c.CacheMaxSize != 75<<30 || c.Upstream.String() != ecr {
					t.Fatalf("got %+v", c)
				}
			},
		},
		{
			name: "flags override env",
			args: []string{"-cache-max-size", "1g", "-listen-addr", "127.0.0.1:0", "serve"},
			env:  map[string]string{"UPSTREAM": ecr, "CACHE_MAX_SIZE": "2g", "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL_ECR": "http://127.0.0.1:9"},
			check: func(t *testing.T, c *Config) {
				if c.CacheMaxSize != 1<<30 || c.ListenAddr != "127.0.0.1:0" || c.Region != "us-east-1" || c.ECREndpoint != "http://127.0.0.1:9" {
					t.Fatalf("got %+v", c)
				}
			},
		},
		{
			name: "host without scheme",
			env:  map[string]string{"UPSTREAM": "123456789012.dkr.ecr.us-west-2.amazonaws.com"},
			check: func(t *testing.T, c *Config) {
				if c.Upstream.Scheme != "https" || c.Region != "us-west-2" {
					t.Fatalf("got %+v", c)
				}
			},
		},
		{
			name: "namespaces, proxies, push",
			env: map[string]string{"UPSTREAM": ecr, "PULL_THROUGHS": "docker.io=docker-hub, ghcr.io=github/", "DEFAULT_NAMESPACE": "registry-1.docker.io",
				"NAMESPACE_LISTENERS": ":5001=docker.io,127.0.0.1:5002=ghcr.io", "TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.5", "PUSH": "true"},
			check: func(t *testing.T, c *Config) {
				if c.PullThroughs["docker.io"] != "docker-hub" || c.PullThroughs["ghcr.io"] != "github" || len(c.PullThroughs) != 2 {
					t.Errorf("PullThroughs = %v", c.PullThroughs)
				}
				if c.DefaultNamespace != "docker.io" || len(c.NamespaceListeners) != 2 || c.NamespaceListeners[1] != (NamespaceListener{"127.0.0.1:5002", "ghcr.io"}) {
					t.Errorf("DefaultNamespace %q, listeners %v", c.DefaultNamespace, c.NamespaceListeners)
				}
				if len(c.TrustedProxies) != 2 || c.TrustedProxies[1].String() != "192.168.1.5/32" || !c.Push {
					t.Errorf("TrustedProxies %v, Push %v", c.TrustedProxies, c.Push)
				}
			},
		},
		{
			name: "bad namespaces named",
			env: map[string]string{"UPSTREAM": ecr, "PULL_THROUGHS": "docker.io,quay.io=Quay,https://x=y", "DEFAULT_NAMESPACE": "ghcr.io",
				"NAMESPACE_LISTENERS": "5001=docker.io", "TRUSTED_PROXIES": "lb.example", "PUSH": "maybe"},
			wantErr: []string{`PULL_THROUGHS: "docker.io" is neither registry=prefix`, `prefix "Quay"`, "not a URL", `DEFAULT_NAMESPACE: registry "ghcr.io" is not mapped`,
				"NAMESPACE_LISTENERS", `TRUSTED_PROXIES: "lb.example"`, `PUSH: "maybe"`},
		},
		{
			name: "security settings",
			env: map[string]string{"UPSTREAM": ecr, "TLS_CERTIFICATE": "/c.pem", "TLS_PRIVATE_KEY": "/k.pem", "HTPASSWD_FILE": "/h",
				"ALLOW_NETWORKS": "10.0.0.0/8,::1", "ACCESS_RULES": "pull:*:*; push:ci:team/", "METRICS_ADDR": ":9090", "SHUTDOWN_GRACE": "5s", "MAX_DOWNLOADS": "0"},
			check: func(t *testing.T, c *Config) {
				if c.TLSCertificate != "/c.pem" || c.Access.HtpasswdFile != "/h" || len(c.Access.AllowNetworks) != 2 || len(c.Access.Rules) != 2 ||
					c.MetricsAddr != ":9090" || c.ShutdownGrace.Seconds() != 5 || c.MaxDownloads != 0 {
					t.Errorf("got %+v", c)
				}
			},
		},
		{
			name: "bad security settings named",
			env: map[string]string{"UPSTREAM": ecr, "TLS_CERTIFICATE": "/c.pem", "ALLOW_NETWORKS": "everyone", "ACCESS_RULES": "read:*:*",
				"METRICS_ADDR": "9090", "SHUTDOWN_GRACE": "soon", "MAX_DOWNLOADS": "-1"},
			wantErr: []string{"TLS_CERTIFICATE and TLS_PRIVATE_KEY go together", `ALLOW_NETWORKS: "everyone"`, "ACCESS_RULES", "METRICS_ADDR", "SHUTDOWN_GRACE", "MAX_DOWNLOADS"},
		},
		{
			name: "client limits",
			env:  map[string]string{"UPSTREAM": ecr, "CLIENT_STALL_TIMEOUT": "2m", "MAX_CLIENT_CONNECTIONS": "5"},
			check: func(t *testing.T, c *Config) {
				if c.ClientStallTimeout != 2*time.Minute || c.MaxClientConnections != 5 {
					t.Fatalf("got %v, %d", c.ClientStallTimeout, c.MaxClientConnections)
				}
			},
		},
		{
			name: "client limits default",
			env:  map[string]string{"UPSTREAM": ecr},
			check: func(t *testing.T, c *Config) {
				if c.ClientStallTimeout != time.Minute || c.MaxClientConnections != 0 {
					t.Fatalf("got %v, %d; want 1m and 0 (auto)", c.ClientStallTimeout, c.MaxClientConnections)
				}
			},
		},
		{name: "shared store not s3, password not echoed", env: map[string]string{"UPSTREAM": ecr, "SHARED_STORE": "https://key:hunter2@bucket/p", "SHARED_STORE_PATH_STYLE": "yes"},
			wantErr: []string{"SHARED_STORE: ", "want s3://BUCKET[/PREFIX]", `SHARED_STORE_PATH_STYLE: "yes" is not true or false`},
			check:   func(*testing.T, *Config) {}},
		{name: "shared store", env: map[string]string{"UPSTREAM": ecr, "SHARED_STORE": "s3://bucket/mirrors/a", "SHARED_STORE_PATH_STYLE": "true"},
			check: func(t *testing.T, c *Config) {
				if c.SharedStore != "s3://bucket/mirrors/a" || !c.SharedStorePathStyle {
					t.Errorf("SharedStore %q, path style %v", c.SharedStore, c.SharedStorePathStyle)
				}
			}},
		{name: "client stall timeout zero", env: map[string]string{"UPSTREAM": ecr, "CLIENT_STALL_TIMEOUT": "0"}, wantErr: []string{`CLIENT_STALL_TIMEOUT: "0"`}},
		{name: "client stall timeout bad", env: map[string]string{"UPSTREAM": ecr, "CLIENT_STALL_TIMEOUT": "soon"}, wantErr: []string{`CLIENT_STALL_TIMEOUT: "soon"`}},
		{name: "client connections zero", env: map[string]string{"UPSTREAM": ecr, "MAX_CLIENT_CONNECTIONS": "0"}, wantErr: []string{`MAX_CLIENT_CONNECTIONS: "0"`}},
		{name: "client connections bad", env: map[string]string{"UPSTREAM": ecr, "MAX_CLIENT_CONNECTIONS": "lots"}, wantErr: []string{`MAX_CLIENT_CONNECTIONS: "lots"`}},
		{name: "missing upstream", env: map[string]string{}, wantErr: []string{"UPSTREAM: is required"}},
		{name: "no region", env: map[string]string{"UPSTREAM": "http://127.0.0.1:5100"}, wantErr: []string{"AWS_REGION"}},
		{
			name: "every bad value named",
			env: map[string]string{"UPSTREAM": "ftp://x", "AWS_REGION": "r", "LISTEN_ADDR": "5000", "CACHE_MAX_SIZE": "lots",
				"LOG_LEVEL": "loud", "LOG_FORMAT": "xml", "AWS_ENDPOINT_URL_ECR": "nope"},
			wantErr: []string{"UPSTREAM", "LISTEN_ADDR", "CACHE_MAX_SIZE", "LOG_LEVEL", "LOG_FORMAT", "AWS_ENDPOINT_URL_ECR"},
		},
		{name: "upstream with path", env: map[string]string{"UPSTREAM": ecr + "/v2/x", "AWS_REGION": "r"}, wantErr: []string{"must not have a path"}},
		{name: "upstream with credentials", env: map[string]string{"UPSTREAM": "https://u:p@host", "AWS_REGION": "r"}, wantErr: []string{"credentials"}},
		{name: "stray argument", args: []string{"pull"}, env: map[string]string{"UPSTREAM": ecr}, wantErr: []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error; config %+v", cfg)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, cfg)
		})
	}
}

// SHARED_STORE_MAX_SIZE takes CACHE_MAX_SIZE's units, 0 or unset for
// unbounded, and needs SHARED_STORE; SHARED_STORE_SWEEP_INTERVAL is a
// positive duration.
func TestSharedStoreBoundSettings(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	for _, tc := range []struct {
		name     string
		env      map[string]string
		max      int64
		interval time.Duration
		wantErr  []string
	}{
		{name: "bound", env: map[string]string{"SHARED_STORE": "s3://bucket", "SHARED_STORE_MAX_SIZE": "2t", "SHARED_STORE_SWEEP_INTERVAL": "1m"},
			max: 2 << 40, interval: time.Minute},
		{name: "unbounded", env: map[string]string{"SHARED_STORE": "s3://bucket", "SHARED_STORE_MAX_SIZE": "0"}, interval: 5 * time.Minute},
		{name: "unset", env: map[string]string{"SHARED_STORE": "s3://bucket"}, interval: 5 * time.Minute},
		{name: "bad values named", env: map[string]string{"SHARED_STORE": "s3://bucket", "SHARED_STORE_MAX_SIZE": "lots", "SHARED_STORE_SWEEP_INTERVAL": "0"},
			wantErr: []string{`SHARED_STORE_MAX_SIZE: "lots" is not a size`, `SHARED_STORE_SWEEP_INTERVAL: "0"`}},
		{name: "no shared store", env: map[string]string{"SHARED_STORE_MAX_SIZE": "1g"},
			wantErr: []string{`SHARED_STORE_MAX_SIZE: "1g" bounds the shared tier, which is off: set SHARED_STORE too`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseEnv(map[string]string{"UPSTREAM": ecr}, tc.env)
			if !parsedAsWanted(t, err, tc.wantErr) {
				return
			}
			if c.SharedStoreMaxSize != tc.max || c.SharedStoreSweepInterval != tc.interval {
				t.Errorf("max %d, interval %v; want %d, %v", c.SharedStoreMaxSize, c.SharedStoreSweepInterval, tc.max, tc.interval)
			}
		})
	}
}
