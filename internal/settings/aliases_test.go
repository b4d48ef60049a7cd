package settings

import (
	"bytes"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

const seedECR = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"

// withECR is env with UPSTREAM set, unless env names the upstream itself.
func withECR(env map[string]string) map[string]string {
	out := map[string]string{"UPSTREAM": seedECR}
	if _, ok := env["ECR_REGISTRY"]; ok {
		delete(out, "UPSTREAM")
	}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// Each seed proxy's variable gives our setting the value it means there.
func TestSeedVariablesGiveOurSettings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   map[string]string
		file  string // config file text, if any
		check func(*Config) bool
	}{
		{"PORT", map[string]string{"PORT": "8080"}, "", func(c *Config) bool { return c.ListenAddr == ":8080" }},
		{"LISTEN_HOST and LISTEN_PORT", map[string]string{"LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": "9000"}, "",
			func(c *Config) bool { return c.ListenAddr == "127.0.0.1:9000" }},
		{"LISTEN_PORT alone listens on 0.0.0.0", map[string]string{"LISTEN_PORT": "9000"}, "", func(c *Config) bool { return c.ListenAddr == "0.0.0.0:9000" }},
		{"LISTEN_HOST alone listens on 8080", map[string]string{"LISTEN_HOST": "::1"}, "", func(c *Config) bool { return c.ListenAddr == "[::1]:8080" }},
		{"same address both ways", map[string]string{"LISTEN_ADDR": ":8080", "PORT": "8080", "LISTEN_PORT": "8080"}, "",
			func(c *Config) bool { return c.ListenAddr == ":8080" }},
		{"ENABLE_SSL with REGISTRY_HTTP_TLS_*", map[string]string{"ENABLE_SSL": "true", "REGISTRY_HTTP_TLS_CERTIFICATE": "/ssl/cert.pem", "REGISTRY_HTTP_TLS_KEY": "/ssl/key.pem"}, "",
			func(c *Config) bool { return c.TLSCertificate == "/ssl/cert.pem" && c.TLSPrivateKey == "/ssl/key.pem" }},
		{"ENABLE_SSL false ignores REGISTRY_HTTP_TLS_*", map[string]string{"ENABLE_SSL": "false", "REGISTRY_HTTP_TLS_CERTIFICATE": "/ssl/cert.pem", "REGISTRY_HTTP_TLS_KEY": "/ssl/key.pem"}, "",
			func(c *Config) bool { return c.TLSCertificate == "" && c.TLSPrivateKey == "" }},
		{"ENABLE_SSL with our TLS settings", map[string]string{"ENABLE_SSL": "1", "TLS_CERTIFICATE": "/c.pem", "TLS_PRIVATE_KEY": "/k.pem"}, "",
			func(c *Config) bool { return c.TLSCertificate == "/c.pem" }},
		{"ECR_REGISTRY, a host", map[string]string{"ECR_REGISTRY": "210987654321.dkr.ecr.us-east-2.amazonaws.com"}, "",
			func(c *Config) bool {
				return c.Upstream.String() == "https://210987654321.dkr.ecr.us-east-2.amazonaws.com" && c.Region == "us-east-2"
			}},
		{"ECR_REGISTRY and the same UPSTREAM", map[string]string{"ECR_REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "UPSTREAM": seedECR + "/"}, "",
			func(c *Config) bool { return c.Upstream.String() == seedECR }},
		{"UPSTREAM as aws-ecr-http-proxy wrote it, with a port", map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-central-1.amazonaws.com:443"}, "",
			func(c *Config) bool {
				return c.Upstream.Host == "123456789012.dkr.ecr.eu-central-1.amazonaws.com:443" && c.Region == "eu-central-1"
			}},
		{"UPSTREAM with a trailing slash", map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-central-1.amazonaws.com/"}, "",
			func(c *Config) bool {
				return c.Upstream.String() == "https://123456789012.dkr.ecr.eu-central-1.amazonaws.com"
			}},
		{"REGION", map[string]string{"REGION": "us-west-2"}, "", func(c *Config) bool { return c.Region == "us-west-2" }},
		{"REGION and AWS_REGION alike", map[string]string{"REGION": "US-WEST-2", "AWS_REGION": "us-west-2"}, "", func(c *Config) bool { return c.Region == "us-west-2" }},
		{"DISABLE_PROXY_HEADERS true over the file's TRUSTED_PROXIES", map[string]string{"DISABLE_PROXY_HEADERS": "true"}, "trusted_proxies: [10.0.0.0/8]\n",
			func(c *Config) bool { return len(c.TrustedProxies) == 0 }},
		{"DISABLE_PROXY_HEADERS false keeps TRUSTED_PROXIES", map[string]string{"DISABLE_PROXY_HEADERS": "false", "TRUSTED_PROXIES": "10.0.0.0/8"}, "",
			func(c *Config) bool {
				return slices.Equal(c.TrustedProxies, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
			}},
		{"PULL_THROUGH_MIRROR", map[string]string{"PULL_THROUGH_MIRROR": "docker-hub:5001,kubernetes:5002"}, "",
			func(c *Config) bool {
				return slices.Equal(c.PrefixListeners, []PrefixListener{{":5001", "docker-hub", ""}, {":5002", "kubernetes", ""}})
			}},
		{"PULL_THROUGHS, both forms", map[string]string{"PULL_THROUGHS": "docker.io=docker-hub, ecr-public:5002, ecr-public-docker:5003"}, "",
			func(c *Config) bool {
				return c.PullThroughs["docker.io"] == "docker-hub" && len(c.PullThroughs) == 1 &&
					slices.Equal(c.PrefixListeners, []PrefixListener{{":5002", "ecr-public", "ecr-public/docker"}, {":5003", "ecr-public/docker", ""}})
			}},
		{"LOG_LEVEL upper case", map[string]string{"LOG_LEVEL": "DEBUG"}, "", func(c *Config) bool { return c.LogLevel == slog.LevelDebug }},
		{"LOG_LEVEL WARNING", map[string]string{"LOG_LEVEL": "WARNING"}, "", func(c *Config) bool { return c.LogLevel == slog.LevelWarn }},
		{"LOG_LEVEL CRITICAL", map[string]string{"LOG_LEVEL": "CRITICAL"}, "", func(c *Config) bool { return c.LogLevel == slog.LevelError }},
		{"LOG_LEVEL trace", map[string]string{"LOG_LEVEL": "trace"}, "", func(c *Config) bool { return c.LogLevel == slog.LevelDebug }},
		{"explained only", map[string]string{"AWS_USE_EC2_ROLE_FOR_AUTH": "true", "RESOLVER": "8.8.8.8", "REGISTRY": "proxy.example.com",
			"CACHE_KEY": "$uri", "CACHE_INACTIVE_TIME": "1y", "BEHIND_SSL_PROXY": "true"}, "",
			func(c *Config) bool { return c.ListenAddr == ":5000" && len(c.aliasUses) == 6 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := parseWith(t, tt.file, nil, withECR(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

// A seed variable that disagrees with our setting, or with another seed
// variable for the same setting, stops the mirror naming both; so does a
// value the seed would not take.
func TestSeedVariableConflictsNameBoth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want []string
	}{
		{"LISTEN_ADDR and PORT", nil, map[string]string{"LISTEN_ADDR": ":5000", "PORT": "8080"}, []string{"LISTEN_ADDR", "PORT"}},
		{"flag and PORT", []string{"-listen-addr", ":5000"}, map[string]string{"PORT": "8080"}, []string{"-listen-addr", "PORT"}},
		{"LISTEN_ADDR and LISTEN_HOST", nil, map[string]string{"LISTEN_ADDR": "127.0.0.1:8080", "LISTEN_HOST": "10.0.0.1"}, []string{"LISTEN_ADDR", "LISTEN_HOST"}},
		{"PORT and LISTEN_PORT", nil, map[string]string{"PORT": "8080", "LISTEN_PORT": "9000"}, []string{"PORT", "LISTEN_PORT", "LISTEN_ADDR"}},
		{"UPSTREAM and ECR_REGISTRY", nil, map[string]string{"UPSTREAM": seedECR, "ECR_REGISTRY": "210987654321.dkr.ecr.us-east-2.amazonaws.com"},
			[]string{"UPSTREAM", "ECR_REGISTRY"}},
		{"credentials never quoted", nil, map[string]string{"UPSTREAM": "https://user:hunter2@a.dkr.ecr.eu-west-1.amazonaws.com", "ECR_REGISTRY": "b.dkr.ecr.eu-west-1.amazonaws.com"},
			[]string{"UPSTREAM", "ECR_REGISTRY", "not shown"}},
		{"AWS_REGION and REGION", nil, map[string]string{"AWS_REGION": "eu-west-1", "REGION": "us-east-1"}, []string{"AWS_REGION", "REGION"}},
		{"AWS_DEFAULT_REGION and REGION", nil, map[string]string{"AWS_DEFAULT_REGION": "eu-west-1", "REGION": "us-east-1"}, []string{"AWS_DEFAULT_REGION", "REGION"}},
		{"TLS_CERTIFICATE and REGISTRY_HTTP_TLS_CERTIFICATE", nil, map[string]string{"ENABLE_SSL": "true", "TLS_CERTIFICATE": "/a.pem", "TLS_PRIVATE_KEY": "/k.pem",
			"REGISTRY_HTTP_TLS_CERTIFICATE": "/b.pem"}, []string{"TLS_CERTIFICATE", "REGISTRY_HTTP_TLS_CERTIFICATE"}},
		{"TRUSTED_PROXIES and DISABLE_PROXY_HEADERS", nil, map[string]string{"TRUSTED_PROXIES": "10.0.0.0/8", "DISABLE_PROXY_HEADERS": "true"},
			[]string{"TRUSTED_PROXIES", "DISABLE_PROXY_HEADERS"}},
		{"PULL_THROUGHS and PULL_THROUGH_MIRROR", nil, map[string]string{"PULL_THROUGHS": "docker.io=docker-hub", "PULL_THROUGH_MIRROR": "docker-hub:5001"},
			[]string{"PULL_THROUGHS", "PULL_THROUGH_MIRROR"}},
		{"ENABLE_SSL false and TLS_CERTIFICATE", nil, map[string]string{"ENABLE_SSL": "false", "TLS_CERTIFICATE": "/a.pem", "TLS_PRIVATE_KEY": "/k.pem"},
			[]string{"ENABLE_SSL", "TLS_CERTIFICATE"}},
		{"ENABLE_SSL without files", nil, map[string]string{"ENABLE_SSL": "true"}, []string{"ENABLE_SSL", "REGISTRY_HTTP_TLS_CERTIFICATE"}},
		{"ENABLE_SSL with a certificate only", nil, map[string]string{"ENABLE_SSL": "true", "REGISTRY_HTTP_TLS_CERTIFICATE": "/a.pem"}, []string{"TLS_PRIVATE_KEY"}},
		{"ENABLE_SSL not a bool", nil, map[string]string{"ENABLE_SSL": "yes please"}, []string{"ENABLE_SSL", `"yes please"`}},
		{"DISABLE_PROXY_HEADERS not a bool", nil, map[string]string{"DISABLE_PROXY_HEADERS": "maybe"}, []string{"DISABLE_PROXY_HEADERS", `"maybe"`}},
		{"PORT not a port", nil, map[string]string{"PORT": "http"}, []string{"PORT", `"http"`}},
		{"LISTEN_PORT out of range", nil, map[string]string{"LISTEN_PORT": "99999"}, []string{"LISTEN_PORT", "99999"}},
		{"PULL_THROUGHS entry of neither form", nil, map[string]string{"PULL_THROUGHS": "docker.io=docker-hub,docker-hub"},
			[]string{"PULL_THROUGHS", `"docker-hub" is neither registry=prefix`}},
		{"PULL_THROUGHS bad port", nil, map[string]string{"PULL_THROUGHS": "docker-hub:http"}, []string{"PULL_THROUGHS", `"docker-hub:http"`}},
		{"PULL_THROUGHS bad prefix", nil, map[string]string{"PULL_THROUGHS": "Docker_Hub!:5001"}, []string{"PULL_THROUGHS", "not a valid ECR repository prefix"}},
		{"PULL_THROUGHS port twice", nil, map[string]string{"PULL_THROUGHS": "docker-hub:5001,quay:5001"}, []string{"PULL_THROUGHS", "port 5001"}},
		{"PULL_THROUGHS on LISTEN_ADDR's default port", nil, map[string]string{"PULL_THROUGHS": "ecr-public:5000"}, []string{"PULL_THROUGHS", "ecr-public:5000", "LISTEN_ADDR :5000"}},
		{"PULL_THROUGHS on PORT", nil, map[string]string{"PULL_THROUGHS": "quay:8080", "PORT": "8080"}, []string{"PULL_THROUGHS", "quay:8080", "LISTEN_ADDR"}},
		{"LOG_LEVEL unknown", nil, map[string]string{"LOG_LEVEL": "LOUD"}, []string{"LOG_LEVEL", `"LOUD"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseWith(t, "", tt.args, withECR(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows a password", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

// Seed variables are environment variables only: a config file or a flag
// names our settings.
func TestSeedVariablesAreNoFileKeysOrFlags(t *testing.T) {
	t.Parallel()
	if _, err := parseWith(t, "port: 8080\n", nil, withECR(nil)); err == nil || !strings.Contains(err.Error(), `unknown setting "port"`) {
		t.Errorf("file key port: %v", err)
	}
	if _, err := parseWith(t, "", []string{"-listen-port", "8080"}, withECR(nil)); err == nil || !strings.Contains(err.Error(), "listen-port") {
		t.Errorf("flag -listen-port: %v", err)
	}
}

// Each seed variable used is logged once, naming the setting it gives.
func TestSeedVariablesAreLoggedOnceEach(t *testing.T) {
	t.Parallel()
	c, err := parseWith(t, "", nil, withECR(map[string]string{"LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": "9000", "RESOLVER": "10.0.0.2", "DISABLE_PROXY_HEADERS": "false"}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	c.LogAliases(slog.New(slog.NewTextHandler(&buf, nil)))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines, got:\n%s", buf.String())
	}
	for i, want := range [][]string{
		{`variable="LISTEN_HOST, LISTEN_PORT"`, "setting=LISTEN_ADDR"},
		{"variable=DISABLE_PROXY_HEADERS", "TRUSTED_PROXIES only"},
		{"variable=RESOLVER", "system resolver"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
}

// "config check" shows a value a seed variable gave as coming from it,
// and what it writes reads back the same, prefix:port entries included.
func TestConfigCheckNamesSeedVariables(t *testing.T) {
	t.Parallel()
	c, err := parseWith(t, "", nil, withECR(map[string]string{"LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": "9000",
		"PULL_THROUGHS": "docker.io=docker-hub,quay:5003"}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.WriteFile(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "# from $LISTEN_HOST, $LISTEN_PORT, read as LISTEN_ADDR\nlisten_addr: 127.0.0.1:9000\n") {
		t.Errorf("config check output lacks LISTEN_ADDR from LISTEN_HOST, LISTEN_PORT:\n%s", buf.String())
	}
	back, err := parseWith(t, buf.String(), nil, nil)
	if err != nil {
		t.Fatalf("reading back:\n%s\n%v", buf.String(), err)
	}
	if back.ListenAddr != c.ListenAddr || !slices.Equal(back.PrefixListeners, c.PrefixListeners) || back.PullThroughs["docker.io"] != "docker-hub" {
		t.Errorf("read back %+v, want %+v", back, c)
	}
}

// CACHE_MAX_SIZE reads every size aws-ecr-http-proxy's nginx took for
// max_size: a number of bytes, or one with k, m or g in either case.
func TestCacheMaxSizeReadsNginxSizes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{"75g": 75 << 30, "100G": 100 << 30, "512m": 512 << 20, "512M": 512 << 20,
		"1024k": 1 << 20, "1024K": 1 << 20, "1073741824": 1 << 30} {
		c, err := parseWith(t, "", nil, withECR(map[string]string{"CACHE_MAX_SIZE": in}))
		if err != nil || c.CacheMaxSize != want {
			t.Errorf("CACHE_MAX_SIZE=%s: %d, %v; want %d", in, c.CacheMaxSize, err, want)
		}
	}
}
