package settings

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/aws/aws-sdk-go-v2/aws"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Config is the whole server configuration. Every setting comes from a
// flag, else from its environment variable, else from the config file,
// else from its default:
// settings() in settings.go binds each field to its flag, variable,
// default, help and parser, so the comments here name only the variable.
type Config struct {
	ConfigFile  string     // CONFIG_FILE; "": none
	Upstream    *url.URL   // UPSTREAM's first entry: the default upstream's URL
	Upstreams   []Upstream // UPSTREAM, the default first
	Region      string     // AWS_REGION; unset, the first ecr upstream's
	ECREndpoint string     // AWS_ENDPOINT_URL_ECR
	// ECRPublicEndpoint is AWS_ENDPOINT_URL_ECR_PUBLIC.
	ECRPublicEndpoint string
	// UpstreamDockerConfig is UPSTREAM_DOCKER_CONFIG: the logins of the
	// oci upstreams; "": anonymous.
	UpstreamDockerConfig string
	ListenAddr           string            // LISTEN_ADDR
	CacheDir             string            // CACHE_DIR
	CacheMaxSize         int64             // CACHE_MAX_SIZE, bytes
	LogLevel             slog.Level        // LOG_LEVEL
	LogFormat            string            // LOG_FORMAT: text or json
	Push                 bool              // PUSH
	SharedStore          string            // SHARED_STORE, s3://BUCKET[/PREFIX]; "": off
	SharedStorePathStyle bool              // SHARED_STORE_PATH_STYLE
	SharedStoreRegion    string            // SHARED_STORE_REGION; "": the AWS SDK's
	PullThroughs         map[string]string // PULL_THROUGHS: registry host to ECR prefix
	DefaultNamespace     string            // DEFAULT_NAMESPACE; "": the ECR registry itself
	// NamespaceListeners are extra listen addresses, each serving one
	// registry's images to clients that name none (NAMESPACE_LISTENERS).
	NamespaceListeners []NamespaceListener
	TrustedProxies     []netip.Prefix // TRUSTED_PROXIES
	MetricsAddr        string         // METRICS_ADDR; "": /metrics on LISTEN_ADDR
	PprofAddr          string         // PPROF_ADDR; "": no pprof
	ShutdownGrace      time.Duration  // SHUTDOWN_GRACE
	MaxDownloads       int            // MAX_DOWNLOADS; 0: no cap
	// TLSCertificate and TLSPrivateKey (TLS_CERTIFICATE, TLS_PRIVATE_KEY)
	// are PEM files; both set turn HTTPS on.
	TLSCertificate, TLSPrivateKey string
	// Access is client access control (HTPASSWD_FILE, ALLOW_NETWORKS,
	// ACCESS_RULES).
	Access access.Config
	// StaleIfError (STALE_IF_ERROR) is how old a tag's last answer may be
	// and still be served when ECR cannot be reached; 0: never;
	// StaleAlways: no limit.
	StaleIfError         time.Duration
	TagTimeout           time.Duration // UPSTREAM_TAG_TIMEOUT
	TagFreshness         time.Duration // TAG_FRESHNESS; 0: ask ECR every time
	StallTimeout         time.Duration // UPSTREAM_STALL_TIMEOUT
	Retries              int           // UPSTREAM_RETRIES
	MaxRate              int64         // UPSTREAM_MAX_RATE, bytes/s; 0: unlimited
	ClientStallTimeout   time.Duration // CLIENT_STALL_TIMEOUT
	MaxClientConnections int           // MAX_CLIENT_CONNECTIONS; 0: auto
	// StallClock times StallTimeout; nil: the real clock. Not a setting:
	// tests set it to fire stalls when they choose.
	StallClock clockwork.Clock
	// SeparateTagLookups turns off the merging of concurrent tag
	// lookups. Not a setting: the baseline of the tag benchmark.
	SeparateTagLookups bool
	// SharedStoreAWS reaches SHARED_STORE's bucket; nil: the AWS SDK's
	// default chain. Not a setting: tests point it at their S3 server.
	SharedStoreAWS *aws.Config
	// ForwardProxy is FORWARD_PROXY_* (forwardproxy.go).
	ForwardProxy ForwardProxy
	// UpstreamDial, when set, makes the connections to the upstreams
	// and the forward proxy's tunnels; UpstreamRootCAs, when set, are
	// the roots the upstreams' certificates are checked against. Not
	// settings: tests give a fake ECR a registry's real name.
	UpstreamDial    func(ctx context.Context, network, addr string) (net.Conn, error)
	UpstreamRootCAs *x509.CertPool

	// SharedStoreMaxSize is SHARED_STORE_MAX_SIZE, bytes; 0: unbounded.
	SharedStoreMaxSize int64
	// SharedStoreSweepInterval is SHARED_STORE_SWEEP_INTERVAL.
	SharedStoreSweepInterval time.Duration
	// SharedStoreClock times the shared tier's sweeps and use records;
	// nil: the real clock. Not a setting: tests sweep when they choose.
	SharedStoreClock clockwork.Clock

	// Peers is PEERS (dns:HOST:PORT or HOST:PORT,...); "": no peers.
	// PeerAddr is PEER_ADDR, PeerSecret PEER_SECRET (never logged),
	// PeerRefresh PEER_REFRESH and PeerTimeout PEER_TIMEOUT.
	Peers, PeerAddr, PeerSecret string
	PeerRefresh, PeerTimeout    time.Duration

	// PrefixListeners are PULL_THROUGHS' prefix:port entries: listeners
	// whose repositories are those under one ECR prefix.
	PrefixListeners []PrefixListener

	source    *source    // nil for a Config not made by Parse
	aliasUses []aliasUse // the seeds' variables read (aliases.go)
}

// StaleAlways is STALE_IF_ERROR=always.
const StaleAlways = time.Duration(1<<63 - 1)

// NamespaceListener is one NAMESPACE_LISTENERS entry.
type NamespaceListener struct {
	Addr      string
	Namespace string
}

// Parse reads flags from args, settings from getenv and from the config
// file that CONFIG_FILE (or -config-file) names, and checks every value:
// a flag wins over its variable, a variable over the file, the file over
// the default. Errors name the setting where the user wrote it (the flag
// as typed, the variable, or the file, line and key) and the bad value;
// every bad setting is reported, not just the first. Deprecated flag
// names are warned of on usageOut, where -h writes the help.
func Parse(args []string, getenv func(string) string, usageOut io.Writer) (*Config, error) {
	cfg := &Config{}
	all := settings(cfg)
	if err := parseFlags(all, args, usageOut); err != nil {
		return nil, err
	}
	aliased, uses, errs := resolveAliases(getenv)
	cfg.aliasUses = uses
	file := &configFile{}
	if path := configFilePath(all, getenv); path != "" {
		var ferrs []error
		file, ferrs = readConfigFile(path, all)
		errs = append(errs, ferrs...)
	}
	for _, s := range all {
		s.alias = aliased[s.env]
		s.value = s.resolve(getenv, file)
		if err := s.conflict(); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := s.parse(s.value); err != nil {
			errs = append(errs, named(s.from.String(), err)...)
		}
	}
	errs = append(errs, checkOverridden(all, file)...)
	if err := cfg.checkTogether(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkAliases(getenv, cfg)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg.source = &source{args: args, getenv: getenv, all: all}
	return cfg, nil
}

// configFilePath is CONFIG_FILE's value: its flag, else its variable.
func configFilePath(all []*setting, getenv func(string) string) string {
	for _, s := range all {
		if s.env == configFileEnv {
			return s.resolve(getenv, &configFile{})
		}
	}
	return ""
}

// checkOverridden checks the file's values that a flag or variable
// overrides, so that a file is never let through with a bad value that
// would stop the mirror once the override is gone. Each is parsed after
// the settings listed before it, with the values they have.
func checkOverridden(all []*setting, file *configFile) []error {
	var errs []error
	for i, s := range all {
		fv, ok := file.values[s.env]
		if !ok || fv.value == "" || s.from.kind == fromFile {
			continue
		}
		scratch := settings(&Config{})
		for j := range i {
			_ = scratch[j].parse(all[j].value) // reported by Parse
		}
		if err := scratch[i].parse(fv.value); err != nil {
			at := origin{kind: fromFile, name: s.fileKey(), path: file.path, line: fv.line}
			errs = append(errs, named(at.String(), err)...)
		}
	}
	return errs
}

// source is how a Config was read, to read it again (Reload) and to
// write it out (WriteFile).
type source struct {
	args   []string
	getenv func(string) string
	all    []*setting // with their values and origins
}

// origin is where a setting's value came from.
type origin struct {
	kind originKind
	name string // the flag as typed, the variable, or the file's key
	path string // the config file
	line int    // in the config file
	of   string // the setting an alias gives a value
}

type originKind int

const (
	fromDefault originKind = iota
	fromFlag
	fromEnv
	fromFile
	fromAlias // a variable of a proxy ecr-mirror replaces (aliases.go)
)

// String names the origin as errors do: -cache-max-size,
// CACHE_MAX_SIZE, or config.yaml:12: cache_max_size.
func (o origin) String() string {
	switch o.kind {
	case fromFlag:
		return "-" + o.name
	case fromFile:
		return fmt.Sprintf("%s:%d: %s", o.path, o.line, o.name)
	case fromAlias:
		return fmt.Sprintf("%s (read as %s)", o.name, o.of)
	}
	return o.name
}

// resolve is the setting's value, trimmed, and records where it came
// from: its flag, else its variable (or the fallback variable), else a
// seed's variable that gives it (aliases.go), else the file, else its
// default.
func (s *setting) resolve(getenv func(string) string, file *configFile) string {
	if f := s.flagValue; f != nil && f.typed != "" {
		if v := strings.TrimSpace(f.value); v != "" {
			s.from = origin{kind: fromFlag, name: f.typed}
			return v
		}
	}
	for _, env := range []string{s.env, s.fallbackEnv} {
		if env == "" {
			continue
		}
		if v := strings.TrimSpace(getenv(env)); v != "" {
			s.from = origin{kind: fromEnv, name: env}
			return v
		}
	}
	if s.alias != nil { // a variable too, and may set a value of ""
		s.from = s.alias.from
		return s.alias.value
	}
	if fv, ok := file.values[s.env]; ok && fv.value != "" {
		s.from = origin{kind: fromFile, name: s.fileKey(), path: file.path, line: fv.line}
		return fv.value
	}
	s.from = origin{kind: fromDefault, name: s.env}
	return s.def
}

// named prefixes err, or each error joined in it, with where the
// setting was written.
func named(where string, err error) []error {
	all := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		all = j.Unwrap()
	}
	out := make([]error, len(all))
	for i, e := range all {
		out[i] = fmt.Errorf("%s: %w", where, e)
	}
	return out
}

// FileOrDefault is the setting of env as the server would take it
// when its variable is unset: from the config file CONFIG_FILE names (as
// getenv gives it), else its default. A config file that cannot be read
// gives the default: "ecr-mirror config check" is where it is checked.
func FileOrDefault(getenv func(string) string, env string) string {
	all := settings(&Config{})
	if path := strings.TrimSpace(getenv(configFileEnv)); path != "" {
		file, _ := readConfigFile(path, all)
		if fv, ok := file.values[env]; ok && fv.value != "" {
			return fv.value
		}
	}
	return Default(env)
}

// Default is the server's default for the setting of env.
func Default(env string) string {
	for _, s := range settings(&Config{}) {
		if s.env == env {
			return s.def
		}
	}
	return ""
}

// parsePullThroughs reads PULL_THROUGHS, registry=prefix pairs and
// prefix:port listeners (prefixlisteners.go), reporting every bad entry.
func (c *Config) parsePullThroughs(v string) error {
	pulls := map[string]string{}
	var errs []error
	for _, pair := range SplitList(v) {
		if !strings.Contains(pair, "=") {
			errs = append(errs, c.addPrefixListener(pair))
			continue
		}
		host, prefix, ok := strings.Cut(pair, "=")
		host, prefix = registry.CanonicalRegistry(host), strings.Trim(strings.TrimSpace(prefix), "/")
		if err := checkPullThrough(pulls, pair, host, prefix, ok); err != nil {
			errs = append(errs, err)
			continue
		}
		pulls[host] = prefix
	}
	c.PullThroughs = pulls
	return errors.Join(errs...)
}

// checkPullThrough checks one PULL_THROUGHS pair against those before it.
func checkPullThrough(pulls map[string]string, pair, host, prefix string, ok bool) error {
	if !ok || host == "" || prefix == "" {
		return fmt.Errorf("%q is not registry=prefix (e.g. docker.io=docker-hub)", pair)
	}
	if _, dup := pulls[host]; dup {
		return fmt.Errorf("registry %s is mapped twice", host)
	}
	if strings.ContainsAny(host, "/ ") {
		return fmt.Errorf("%q: the registry is a host name such as docker.io, not a URL", host)
	}
	if err := registry.ValidateName(prefix); err != nil {
		return fmt.Errorf("prefix %q for %s is not a valid ECR repository prefix: %v", prefix, host, err)
	}
	return nil
}

// mapped checks that PULL_THROUGHS maps host, or that it is an UPSTREAM.
func (c *Config) mapped(host string) error {
	if _, ok := c.PullThroughs[host]; !ok && !c.upstreamHost(host) {
		return fmt.Errorf("registry %q is not mapped in PULL_THROUGHS, nor an UPSTREAM entry", host)
	}
	return nil
}

// parseDefaultNamespace reads DEFAULT_NAMESPACE, a registry PULL_THROUGHS
// maps.
func (c *Config) parseDefaultNamespace(v string) error {
	host := registry.CanonicalRegistry(v)
	if host == "" {
		return nil
	}
	if err := c.mapped(host); err != nil {
		return err
	}
	c.DefaultNamespace = host
	return nil
}

// parseNamespaceListeners reads NAMESPACE_LISTENERS, each addr=registry
// with a registry PULL_THROUGHS maps, reporting every bad pair.
func (c *Config) parseNamespaceListeners(v string) error {
	var errs []error
	for _, pair := range SplitList(v) {
		addr, host, ok := strings.Cut(pair, "=")
		host = registry.CanonicalRegistry(host)
		if !ok || host == "" {
			errs = append(errs, fmt.Errorf("%q is not addr=registry (e.g. :5001=docker.io)", pair))
			continue
		}
		if err := checkListenAddr(addr); err != nil {
			errs = append(errs, fmt.Errorf("%q: %v", pair, err))
			continue
		}
		if err := c.mapped(host); err != nil {
			errs = append(errs, err)
			continue
		}
		c.NamespaceListeners = append(c.NamespaceListeners, NamespaceListener{Addr: strings.TrimSpace(addr), Namespace: host})
	}
	return errors.Join(errs...)
}

// SplitList splits a comma-separated setting, dropping empty items.
func SplitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// checkListenAddr checks a host:port listen address.
func checkListenAddr(addr string) error {
	_, port, err := net.SplitHostPort(strings.TrimSpace(addr))
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	return nil
}

// ParseUpstream checks the registry URL: http(s), a host, no path, query
// or credentials.
func ParseUpstream(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, errors.New("is required: the ECR registry URL, e.g. https://123456789012.dkr.ecr.eu-west-1.amazonaws.com")
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	switch {
	case u.User != nil: // first, so that no error below quotes them
		return nil, fmt.Errorf("must not carry credentials: the mirror gets them from AWS")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("%q: scheme must be https (or http for local use)", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q must not have a query or fragment", raw)
	case strings.Trim(u.Path, "/") != "":
		return nil, fmt.Errorf("%q must not have a path: give the registry root", raw)
	}
	u.Path = ""
	return u, nil
}

// sizeUnits are the suffixes ParseSize accepts, all powers of 1024.
var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"kib", 10}, {"mib", 20}, {"gib", 30}, {"tib", 40},
	{"kb", 10}, {"mb", 20}, {"gb", 30}, {"tb", 40},
	{"k", 10}, {"m", 20}, {"g", 30}, {"t", 40},
	{"b", 0},
}

// maxSize is the largest size ParseSize accepts, 4 EiB.
const maxSize = 1 << 62

// ParseSize reads a byte count: a decimal number (digits, optionally a
// point and more digits) alone or with k/m/g/t or KiB/MiB/GiB/TiB
// (case-insensitive, powers of 1024), rounded down to whole bytes. It
// refuses what is not at least one byte, and more than 4 EiB.
func ParseSize(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	shift := uint(0)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, shift = strings.TrimSpace(num), u.shift
			break
		}
	}
	r, ok := parseDecimal(v)
	if !ok {
		return 0, fmt.Errorf("%q is not a size (e.g. 75g, 512MiB, 1.5g, 1073741824)", s)
	}
	if r.Sign() == 0 {
		return 0, fmt.Errorf("%q is not a positive size (e.g. 75g, 512MiB, 1073741824)", s)
	}
	n := new(big.Int).Lsh(r.Num(), shift)
	n.Quo(n, r.Denom())
	switch {
	case n.Sign() == 0:
		return 0, fmt.Errorf("%q rounds down to 0 bytes: give at least one byte", s)
	case n.Cmp(big.NewInt(maxSize)) > 0:
		return 0, fmt.Errorf("%q is too large (at most 4 EiB)", s)
	}
	return n.Int64(), nil
}

// parseDecimal reads a non-negative decimal number written as digits,
// optionally with a point followed by digits ("12", "1.5", ".5"): no
// sign, exponent, base prefix, underscore, NaN or Inf.
func parseDecimal(v string) (*big.Rat, bool) {
	whole, frac, point := strings.Cut(v, ".")
	digits := func(s string) bool {
		return s != "" && strings.Trim(s, "0123456789") == ""
	}
	if !(digits(whole) && !point || (whole == "" || digits(whole)) && point && digits(frac)) {
		return nil, false
	}
	return new(big.Rat).SetString(v)
}

// ParseAge reads a positive duration that may also be given in days
// ("30d", "1.5d"; at most 100 years), refusing one that rounds down to
// no time.
func ParseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		r, ok := parseDecimal(days)
		if !ok || r.Sign() == 0 || r.Cmp(big.NewRat(100*365, 1)) > 0 {
			return 0, fmt.Errorf("age %q: want a positive number of days such as 30d", s)
		}
		ns := new(big.Int).Mul(r.Num(), big.NewInt(int64(24*time.Hour)))
		if ns.Quo(ns, r.Denom()); ns.Sign() == 0 {
			return 0, fmt.Errorf("age %q: rounds down to no time", s)
		}
		return time.Duration(ns.Int64()), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("age %q: want a positive duration such as 30d, 12h or 90m", s)
	}
	return d, nil
}

// parseDuration reads a Go duration (30s, 1.5h) that is not negative,
// and refuses one that names some time but rounds down to none
// ("0.5ns"), which would switch a setting off instead.
func parseDuration(v string) (time.Duration, bool) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d == 0 && strings.ContainsAny(v, "123456789") {
		return 0, false
	}
	return d, true
}
