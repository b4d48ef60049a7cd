package settings

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testECR = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"

// writeConfig writes text to config.yaml in a new directory and returns
// its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// parseWith parses args with env, CONFIG_FILE set to a file of text
// (when text is not empty).
func parseWith(t *testing.T, text string, args []string, env map[string]string) (*Config, error) {
	t.Helper()
	e := map[string]string{}
	for k, v := range env {
		e[k] = v
	}
	if text != "" {
		e["CONFIG_FILE"] = writeConfig(t, text)
	}
	return Parse(args, func(k string) string { return e[k] }, io.Discard)
}

// Every bad key or value of a config file is reported with the file,
// its line and the key, together with bad values from elsewhere.
func TestConfigFileErrorsNameKeyAndLine(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		env  map[string]string
		want []string
	}{
		{name: "bad size", text: "upstream: " + testECR + "\n\ncache_max_size: 7x\n",
			want: []string{`config.yaml:3: cache_max_size: "7x" is not a size`}},
		{name: "unknown key", text: "upstream: " + testECR + "\ncache_size: 7g\n",
			want: []string{`config.yaml:2: unknown setting "cache_size"`}},
		{name: "every error at once", text: "upstream: " + testECR + "\nlog_level: loud\npush: maybe\nbogus: 1\n",
			env:  map[string]string{"LISTEN_ADDR": "5000"},
			want: []string{`config.yaml:2: log_level: "loud"`, `config.yaml:3: push: "maybe" is not true or false`, `config.yaml:4: unknown setting "bogus"`, `LISTEN_ADDR: "5000" is not host:port`}},
		{name: "variable as key", text: "upstream: " + testECR + "\nCACHE_MAX_SIZE: 7g\ncache-dir: /x\n",
			want: []string{`config.yaml:2: unknown setting "CACHE_MAX_SIZE": did you mean cache_max_size?`, `config.yaml:3: unknown setting "cache-dir": did you mean cache_dir?`}},
		{name: "list item", text: "upstream: [" + testECR + "]\nallow_networks:\n  - 10.0.0.0/8\n  - everyone\n",
			want: []string{`config.yaml:2: allow_networks: "everyone" is not an IP address or CIDR`}},
		{name: "mapping for a scalar", text: "upstream: " + testECR + "\ncache_dir: {a: b}\n",
			want: []string{`config.yaml:2: cache_dir: want a single value`}},
		{name: "list for pairs", text: "upstream: " + testECR + "\npull_throughs: [docker.io]\n",
			want: []string{`config.yaml:2: pull_throughs: want a value or a mapping`}},
		{name: "comma inside an item", text: "upstream:\n  - \"" + testECR + ",http://x\"\n",
			want: []string{`config.yaml:1: upstream: line 2: item`, "holds a separator"}},
		{name: "set twice", text: "upstream: " + testECR + "\npush: true\npush: false\n",
			want: []string{`config.yaml:3: push: set again (first on line 2)`}},
		{name: "config file in itself", text: "upstream: " + testECR + "\nconfig_file: other.yaml\n",
			want: []string{`config.yaml:2: config_file: is given by CONFIG_FILE`}},
		{name: "not a mapping", text: "- upstream\n", want: []string{`config.yaml:1: want a mapping of settings`}},
		{name: "not yaml", text: "upstream: [\n", want: []string{`config.yaml: line`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseWith(t, tt.text, nil, tt.env)
			if err == nil {
				t.Fatalf("no error; config %+v", cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not say %q", err, w)
				}
			}
		})
	}
}

// A missing config file stops the mirror, naming CONFIG_FILE.
func TestConfigFileMissing(t *testing.T) {
	t.Parallel()
	_, err := Parse(nil, func(k string) string {
		return map[string]string{"UPSTREAM": testECR, "CONFIG_FILE": "/nonexistent/config.yaml"}[k]
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "CONFIG_FILE: open /nonexistent/config.yaml") {
		t.Fatalf("error %v, want one naming CONFIG_FILE and the file", err)
	}
}

// A flag wins over its variable, the variable over the config file, the
// file over the default; errors name where the value was written.
func TestSettingsPrecedence(t *testing.T) {
	t.Parallel()
	const file = "upstream: " + testECR + "\ncache_max_size: 3g\n"
	tests := []struct {
		name    string
		text    string
		args    []string
		env     map[string]string
		want    int64
		wantErr string
	}{
		{name: "default", text: "upstream: " + testECR + "\n", want: 75 << 30},
		{name: "file over default", text: file, want: 3 << 30},
		{name: "variable over file", text: file, env: map[string]string{"CACHE_MAX_SIZE": "2g"}, want: 2 << 30},
		{name: "flag over variable", text: file, args: []string{"-cache-max-size", "1g"}, env: map[string]string{"CACHE_MAX_SIZE": "2g"}, want: 1 << 30},
		{name: "flag config file", args: []string{"-config-file", writeConfig(t, file)}, want: 3 << 30},
		{name: "bad flag named as typed", text: file, args: []string{"--cache-max-size=lots"}, wantErr: `-cache-max-size: "lots"`},
		{name: "bad variable named", text: file, env: map[string]string{"CACHE_MAX_SIZE": "lots"}, wantErr: `CACHE_MAX_SIZE: "lots"`},
		{name: "bad file value overridden still reported", text: "upstream: " + testECR + "\ncache_max_size: 7x\n", env: map[string]string{"CACHE_MAX_SIZE": "2g"},
			wantErr: `config.yaml:2: cache_max_size: "7x" is not a size`},
		{name: "overridden file value checked with the settings before it", text: "upstream: " + testECR + "\npull_throughs: {docker.io: docker-hub}\ndefault_namespace: ghcr.io\n",
			env: map[string]string{"DEFAULT_NAMESPACE": "docker.io"}, wantErr: `config.yaml:3: default_namespace: registry "ghcr.io" is not mapped`},
		{name: "overridden file value that is good", text: "upstream: " + testECR + "\npull_throughs: {docker.io: docker-hub}\ndefault_namespace: docker.io\ncache_max_size: 3g\n",
			env: map[string]string{"DEFAULT_NAMESPACE": "registry-1.docker.io", "CACHE_MAX_SIZE": "2g"}, want: 2 << 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseWith(t, tt.text, tt.args, tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.CacheMaxSize != tt.want {
				t.Fatalf("CACHE_MAX_SIZE = %d, want %d", cfg.CacheMaxSize, tt.want)
			}
		})
	}
}

// A config file writes lists as sequences, key=value lists as mappings,
// and scalars as the variables do; each reads as its variable would.
func TestConfigFileShapes(t *testing.T) {
	t.Parallel()
	fromFile, err := parseWith(t, `
upstream: [`+testECR+`, "ecr-public:https://public.ecr.aws"]
pull_throughs: {docker.io: docker-hub, ghcr.io: github}
namespace_listeners: {":5001": docker.io}
access_rules: ["pull:*:*", "push:ci-bot,release:team/"]
allow_networks: [10.0.0.0/8, "::1"]
push: true
stale_if_error: 72h
max_downloads: 8
htpasswd_file: /h
`, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fromEnv, err := parseWith(t, "", nil, map[string]string{
		"UPSTREAM": testECR + ",ecr-public:https://public.ecr.aws", "PULL_THROUGHS": "docker.io=docker-hub,ghcr.io=github",
		"NAMESPACE_LISTENERS": ":5001=docker.io", "ACCESS_RULES": "pull:*:*; push:ci-bot,release:team/", "ALLOW_NETWORKS": "10.0.0.0/8,::1",
		"PUSH": "true", "STALE_IF_ERROR": "72h", "MAX_DOWNLOADS": "8", "HTPASSWD_FILE": "/h"})
	if err != nil {
		t.Fatal(err)
	}
	if !sameConfig(fromFile, fromEnv) {
		t.Fatalf("from the file:\n%+v\nfrom the environment:\n%+v", fromFile, fromEnv)
	}
}

// sameConfig reports whether a and b configure the same mirror.
func sameConfig(a, b *Config) bool {
	x, y := *a, *b
	x.source, y.source, x.ConfigFile, y.ConfigFile = nil, nil, "", ""
	return reflect.DeepEqual(x, y)
}

// What "config check" writes is a config file that, alone, configures
// the same mirror as the file, variables and flags it came from.
func TestWriteFileRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		text string
		args []string
		env  map[string]string
	}{
		{name: "defaults", env: map[string]string{"UPSTREAM": testECR}},
		{name: "file only", text: "upstream: " + testECR + "\ncache_max_size: 1.5g\nlisten_addr: \":5001\"\nlog_format: json\n"},
		{name: "everything", text: `upstream:
  - ` + testECR + `
  - ecr-public:https://public.ecr.aws
  - oci:https://quay.io
aws_endpoint_url_ecr: http://127.0.0.1:9
pull_throughs: {docker.io: docker-hub}
default_namespace: docker.io
namespace_listeners: {"127.0.0.1:5001": docker.io}
trusted_proxies: [10.0.0.0/8]
tls_certificate: "/etc/tls/a #1.pem"
tls_private_key: /etc/tls/key.pem
htpasswd_file: /h
access_rules: |
  pull:*:*   # everyone
  push:ci-bot:team/
stale_if_error: always
max_client_connections: 10
`, args: []string{"-push", "-region", "us-east-1"}, env: map[string]string{"CACHE_DIR": "/tmp/x y", "AWS_DEFAULT_REGION": "eu-west-2", "UPSTREAM_MAX_RATE": "20m"}},
		{name: "awkward values", env: map[string]string{
			"UPSTREAM": testECR, "CACHE_DIR": "/tmp/a: b #c", "UPSTREAM_DOCKER_CONFIG": `/x/'q' "d".json`, "LOG_LEVEL": "WARN",
			"PULL_THROUGHS": "docker.io=docker-hub", "NAMESPACE_LISTENERS": "[::1]:5001=docker.io", "TRUSTED_PROXIES": "::1, 10.0.0.1",
			"ACCESS_RULES": "pull:fd00::/8:team/\npush:*:*", "LISTEN_ADDR": "[::]:5000", "METRICS_ADDR": "127.0.0.1:9090", "SHUTDOWN_GRACE": "1m30s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want, err := parseWith(t, tt.text, tt.args, tt.env)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := want.WriteFile(&out); err != nil {
				t.Fatal(err)
			}
			got, err := parseWith(t, out.String(), nil, nil)
			if err != nil {
				t.Fatalf("config check's output does not parse: %v\n%s", err, out.String())
			}
			if !sameConfig(got, want) {
				t.Fatalf("config check's output configures another mirror:\n%s\ngot  %+v\nwant %+v", out.String(), got, want)
			}
			for _, s := range settings(&Config{}) {
				if s.env != "CONFIG_FILE" && !strings.Contains(out.String(), s.fileKey()+":") {
					t.Errorf("config check's output lacks %s", s.fileKey())
				}
			}
		})
	}
}

// A secret setting's value never reaches config check's output, which
// says how to give it instead.
func TestWriteFileKeepsSecretsOut(t *testing.T) {
	t.Parallel()
	all := []*setting{{env: "REGISTRY_PASSWORD", help: "a password", secret: true, value: "hunter2", from: origin{kind: fromEnv, name: "REGISTRY_PASSWORD"}}}
	var out bytes.Buffer
	if err := writeSettings(&out, all); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "hunter2") || !strings.Contains(out.String(), "# registry_password: (secret, not printed: set it again by $REGISTRY_PASSWORD)") {
		t.Fatalf("output:\n%s", out.String())
	}
}

// An endpoint URL with credentials is refused, so that no setting today
// holds a secret.
func TestEndpointWithCredentialsRefused(t *testing.T) {
	t.Parallel()
	_, err := parseWith(t, "", nil, map[string]string{"UPSTREAM": testECR, "AWS_ENDPOINT_URL_ECR": "https://user:pw@ecr.example"})
	if err == nil || !strings.Contains(err.Error(), "AWS_ENDPOINT_URL_ECR: must not carry credentials") || strings.Contains(err.Error(), "pw") {
		t.Fatalf("error %v, want one refusing the credentials without echoing them", err)
	}
}

// deploy/config.example.yaml names every setting and parses as it is
// (its upstream, the one setting without a default, uncommented), and
// with every example value in it uncommented too.
func TestExampleConfigFileValues(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../deploy/config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, s := range settings(&Config{}) {
		keys[s.fileKey()] = true
	}
	var out []string
	inValue := false
	for _, line := range strings.Split(string(data), "\n") {
		key, rest, isKey := strings.Cut(strings.TrimPrefix(line, "# "), ":")
		switch {
		case strings.HasPrefix(line, "# ") && isKey && keys[key] && (rest == "" || rest[0] == ' '):
			line, inValue = strings.TrimPrefix(line, "# "), true
		case inValue && strings.HasPrefix(line, "#   "):
			line = strings.TrimPrefix(line, "#")
		default:
			inValue = false
		}
		out = append(out, line)
	}
	text := strings.Join(out, "\n")
	cfg, err := parseWith(t, text, nil, nil)
	if err != nil {
		t.Fatalf("the example with its values uncommented: %v\n%s", err, text)
	}
	if len(cfg.Access.Rules) != 2 || cfg.DefaultNamespace != "docker.io" || len(cfg.NamespaceListeners) != 1 {
		t.Fatalf("the example's values were not all read:\n%s", text)
	}
}

// deploy/config.example.yaml names every setting and parses (with its
// upstream, the one setting without a default, uncommented).
func TestExampleConfigFile(t *testing.T) {
	t.Parallel()
	const path = "../../deploy/config.example.yaml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings(&Config{}) {
		if s.env != "CONFIG_FILE" && !strings.Contains(string(data), s.fileKey()+":") {
			t.Errorf("%s does not name %s", path, s.fileKey())
		}
	}
	if _, err := Parse(nil, func(k string) string {
		return map[string]string{"CONFIG_FILE": path}[k]
	}, io.Discard); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// Any config file either parses, and then what config check writes of
// it parses to the same configuration, or is refused with an error: it
// never panics.
func FuzzConfigFile(f *testing.F) {
	for _, seed := range []string{
		"upstream: " + testECR + "\n",
		"upstream: [" + testECR + ", \"oci:https://quay.io\"]\npull_throughs: {docker.io: docker-hub}\ndefault_namespace: docker.io\n",
		"upstream: " + testECR + "\naccess_rules: |\n  pull:*:*\n  push:ci:team/\nallow_networks: [\"::1\"]\n",
		"upstream: " + testECR + "\ncache_max_size: 1.5g\npush: yes\n",
		"upstream: &u " + testECR + "\nupstream_docker_config: *u\n",
		"- a\n", "a: [b: c]\n", "{}", "",
	} {
		f.Add(seed)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		path := filepath.Join(dir, "fuzz.yaml")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		getenv := func(k string) string { return map[string]string{"CONFIG_FILE": path}[k] }
		cfg, err := Parse(nil, getenv, io.Discard)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := cfg.WriteFile(&out); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		again, err := Parse(nil, getenv, io.Discard)
		if err != nil {
			t.Fatalf("config check's output of %q does not parse: %v\n%s", text, err, out.String())
		}
		if !sameConfig(again, cfg) {
			t.Fatalf("config check's output of %q configures another mirror:\n%s", text, out.String())
		}
	})
}

// FileOrDefault gives the cache commands the config file's value, else
// the default.
func TestFileOrDefault(t *testing.T) {
	t.Parallel()
	path := writeConfig(t, "cache_dir: /srv/cache\n")
	tests := []struct {
		name, file, env, want string
	}{
		{name: "from the file", file: path, env: "CACHE_DIR", want: "/srv/cache"},
		{name: "not in the file", file: path, env: "CACHE_MAX_SIZE", want: "75g"},
		{name: "no file", env: "CACHE_DIR", want: "/var/lib/ecr-mirror"},
		{name: "unreadable file", file: path + ".missing", env: "CACHE_DIR", want: "/var/lib/ecr-mirror"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			getenv := func(k string) string { return map[string]string{"CONFIG_FILE": tt.file}[k] }
			if got := FileOrDefault(getenv, tt.env); got != tt.want {
				t.Fatalf("FileOrDefault(%s) = %q, want %q", tt.env, got, tt.want)
			}
		})
	}
}

// WithConfigFile names the file given, and leaves every other variable
// as it was.
func TestWithConfigFile(t *testing.T) {
	t.Parallel()
	env := map[string]string{"CONFIG_FILE": "/etc/ecr-mirror/old.yaml", "UPSTREAM": "https://example.com"}
	getenv := WithConfigFile(func(k string) string { return env[k] }, "new.yaml")
	if got := getenv("CONFIG_FILE"); got != "new.yaml" {
		t.Errorf("CONFIG_FILE = %q, want new.yaml", got)
	}
	if got := getenv("UPSTREAM"); got != "https://example.com" {
		t.Errorf("UPSTREAM = %q, want the environment's", got)
	}
}
