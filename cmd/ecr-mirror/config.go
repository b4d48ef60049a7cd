package main

import (
	"errors"
	"flag"
	"fmt"
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
	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// config is the whole server configuration. Every setting comes from a
// flag, else from its environment variable, else from its default.
type config struct {
	Upstream     *url.URL   // UPSTREAM, required
	Region       string     // AWS_REGION; default: read from the UPSTREAM host
	ECREndpoint  string     // AWS_ENDPOINT_URL_ECR; default: the AWS SDK's
	ListenAddr   string     // LISTEN_ADDR; default ":5000"
	CacheDir     string     // CACHE_DIR; default "/var/lib/ecr-mirror"
	CacheMaxSize int64      // CACHE_MAX_SIZE; default 75 GiB
	LogLevel     slog.Level // LOG_LEVEL; default info
	LogFormat    string     // LOG_FORMAT: text or json; default text
	Push         bool       // PUSH: pass pushes through to ECR; default false
	// PullThroughs maps upstream registry hosts to the ECR
	// pull-through-cache prefixes that hold them (PULL_THROUGHS).
	PullThroughs map[string]string
	// DefaultNamespace is the registry of requests on LISTEN_ADDR that
	// name none (DEFAULT_NAMESPACE); default "": the ECR registry itself.
	DefaultNamespace string
	// NamespaceListeners are extra listen addresses, each serving one
	// registry's images to clients that name none (NAMESPACE_LISTENERS).
	NamespaceListeners []namespaceListener
	// TrustedProxies are the networks whose X-Forwarded-Host and
	// X-Forwarded-Proto are honoured (TRUSTED_PROXIES); default none.
	TrustedProxies []netip.Prefix
	MetricsAddr    string        // METRICS_ADDR; default "": /metrics on LISTEN_ADDR
	PprofAddr      string        // PPROF_ADDR; default "": no pprof
	ShutdownGrace  time.Duration // SHUTDOWN_GRACE; default 30s
	MaxDownloads   int           // MAX_DOWNLOADS; default 64
	// TLSCertificate and TLSPrivateKey (TLS_CERTIFICATE, TLS_PRIVATE_KEY)
	// are PEM files; both set turn HTTPS on. Default: plain HTTP.
	TLSCertificate, TLSPrivateKey string
	// Access is client access control (HTPASSWD_FILE, ALLOW_NETWORKS,
	// ACCESS_RULES); default: off.
	Access access.Config
	// StaleIfError (STALE_IF_ERROR) is how old a tag's last answer may be
	// and still be served when ECR cannot be reached; 0 (default): never;
	// "always": no limit.
	StaleIfError time.Duration
	TagTimeout   time.Duration // UPSTREAM_TAG_TIMEOUT; default 10s
	StallTimeout time.Duration // UPSTREAM_STALL_TIMEOUT; default 30s
	Retries      int           // UPSTREAM_RETRIES; default 5
	MaxRate      int64         // UPSTREAM_MAX_RATE, bytes/s; default 0: unlimited
	// ClientStallTimeout (CLIENT_STALL_TIMEOUT) cuts a client that takes no
	// response bytes this long; default 60s.
	ClientStallTimeout time.Duration
	// MaxClientConnections (MAX_CLIENT_CONNECTIONS) caps open client
	// connections; default 0 ("auto"): what the open-file limit allows.
	MaxClientConnections int
	// stallClock times StallTimeout; nil: the real clock. Not a setting:
	// tests set it to fire stalls when they choose.
	stallClock clockwork.Clock
}

// staleAlways is STALE_IF_ERROR=always.
const staleAlways = time.Duration(1<<63 - 1)

// namespaceListener is one NAMESPACE_LISTENERS entry.
type namespaceListener struct {
	Addr      string
	Namespace string
}

// setting is one configuration value: its flag, its variable, its default.
type setting struct {
	flag, env, def, usage string
	value                 string
}

// settings lists every setting in the order the usage text shows them.
func settings() []*setting {
	return []*setting{
		{flag: "upstream", env: "UPSTREAM", usage: "ECR registry URL, e.g. https://123456789012.dkr.ecr.eu-west-1.amazonaws.com (required)"},
		{flag: "region", env: "AWS_REGION", usage: "AWS region of the registry (default: read from the UPSTREAM host)"},
		{flag: "ecr-endpoint", env: "AWS_ENDPOINT_URL_ECR", usage: "ECR API endpoint for GetAuthorizationToken (default: the AWS SDK's, from the region)"},
		{flag: "listen-addr", env: "LISTEN_ADDR", def: ":5000", usage: "address to serve the registry API on"},
		{flag: "cache-dir", env: "CACHE_DIR", def: "/var/lib/ecr-mirror", usage: "directory of the content store and its index"},
		{flag: "cache-max-size", env: "CACHE_MAX_SIZE", def: "75g", usage: "cache budget: bytes, or a number with k/m/g/t or KiB/MiB/GiB/TiB (powers of 1024)"},
		{flag: "log-level", env: "LOG_LEVEL", def: "info", usage: "debug, info, warn or error"},
		{flag: "log-format", env: "LOG_FORMAT", def: "text", usage: "text or json"},
		{flag: "push", env: "PUSH", def: "false", usage: "pass pushes (blob uploads, manifest PUTs) through to ECR with the mirror's credentials"},
		{flag: "pull-throughs", env: "PULL_THROUGHS", usage: "registry=ECR prefix pairs for ECR pull-through-cache rules, e.g. docker.io=docker-hub,ghcr.io=github"},
		{flag: "default-namespace", env: "DEFAULT_NAMESPACE", usage: "registry of requests on LISTEN_ADDR that name none (containerd's ?ns=), e.g. docker.io for Docker's registry-mirrors (default: the ECR registry itself)"},
		{flag: "namespace-listeners", env: "NAMESPACE_LISTENERS", usage: "extra addr=registry listeners, one per pull-through cache, e.g. :5001=docker.io,:5002=ghcr.io"},
		{flag: "trusted-proxies", env: "TRUSTED_PROXIES", usage: "CIDRs or IPs of proxies whose X-Forwarded-Host/-Proto are honoured"},
		{flag: "metrics-addr", env: "METRICS_ADDR", usage: "serve /metrics on this address instead of LISTEN_ADDR"},
		{flag: "pprof-addr", env: "PPROF_ADDR", usage: "serve Go's pprof profiles on this address (off by default; keep it private)"},
		{flag: "shutdown-grace", env: "SHUTDOWN_GRACE", def: "30s", usage: "how long in-flight requests get to finish on SIGTERM"},
		{flag: "tls-certificate", env: "TLS_CERTIFICATE", usage: "PEM certificate (chain) file; with TLS_PRIVATE_KEY turns HTTPS on; renewed files are picked up without a restart"},
		{flag: "tls-private-key", env: "TLS_PRIVATE_KEY", usage: "PEM private key file of TLS_CERTIFICATE"},
		{flag: "htpasswd-file", env: "HTPASSWD_FILE", usage: "htpasswd file (bcrypt entries only): clients must log in with one of its users"},
		{flag: "allow-networks", env: "ALLOW_NETWORKS", usage: "CIDRs or IPs of the clients allowed to use the mirror (default: any)"},
		{flag: "access-rules", env: "ACCESS_RULES", usage: "who may pull or push which repositories, e.g. 'pull:*:*; push:ci-bot:team/'"},
		{flag: "stale-if-error", env: "STALE_IF_ERROR", def: "0", usage: "serve a tag's last answer, up to this old (e.g. 72h, or always), when ECR cannot be reached (0: never)"},
		{flag: "upstream-tag-timeout", env: "UPSTREAM_TAG_TIMEOUT", def: "10s", usage: "how long a tag lookup waits for ECR before the stale answer (or an error) is given"},
		{flag: "upstream-stall-timeout", env: "UPSTREAM_STALL_TIMEOUT", def: "30s", usage: "an upstream body that sends nothing this long is resumed (or abandoned)"},
		{flag: "upstream-retries", env: "UPSTREAM_RETRIES", def: "5", usage: "how often a download cut short is resumed where it stopped"},
		{flag: "upstream-max-rate", env: "UPSTREAM_MAX_RATE", usage: "cap on upstream bytes per second, all downloads together, in the CACHE_MAX_SIZE syntax (20m = 20 MiB/s); default unlimited"},
		{flag: "max-downloads", env: "MAX_DOWNLOADS", def: "64", usage: "concurrent upstream downloads; past it misses get 429 TOOMANYREQUESTS (0: no cap)"},
		{flag: "client-stall-timeout", env: "CLIENT_STALL_TIMEOUT", def: "60s", usage: "a client that takes no response bytes this long is disconnected (a slow but reading client never is)"},
		{flag: "max-client-connections", env: "MAX_CLIENT_CONNECTIONS", def: "auto", usage: "open client connections at most; past it new ones get 503 (auto: what the open-file limit allows)"},
	}
}

// parseConfig reads flags from args and settings from getenv, and checks
// every value. Errors name the setting and the bad value.
func parseConfig(args []string, getenv func(string) string, usageOut io.Writer) (*config, error) {
	fs := flag.NewFlagSet("ecr-mirror", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	all := settings()
	for _, s := range all {
		fs.StringVar(&s.value, s.flag, "", fmt.Sprintf("%s [$%s]", s.usage, s.env))
	}
	fs.Usage = func() {
		fmt.Fprintf(usageOut, "Usage: ecr-mirror [flags]\n\nA caching pull-through mirror for AWS ECR. Each flag can also be set by its environment variable.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 && fs.Arg(0) != "serve" || fs.NArg() > 1 {
		return nil, fmt.Errorf("unexpected arguments %q: ecr-mirror takes only flags", fs.Args())
	}
	get := map[string]string{}
	for _, s := range all {
		v := s.value
		if v == "" {
			v = strings.TrimSpace(getenv(s.env))
		}
		if v == "" {
			v = s.def
		}
		get[s.env] = v
	}

	var cfg config
	var errs []error
	bad := func(env string, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", env, fmt.Sprintf(format, args...)))
	}

	if u, err := parseUpstream(get["UPSTREAM"]); err != nil {
		bad("UPSTREAM", "%v", err)
	} else {
		cfg.Upstream = u
	}
	cfg.Region = get["AWS_REGION"]
	if cfg.Region == "" {
		cfg.Region = strings.TrimSpace(getenv("AWS_DEFAULT_REGION"))
	}
	if cfg.Region == "" && cfg.Upstream != nil {
		if r, ok := auth.RegionFromHost(cfg.Upstream.Host); ok {
			cfg.Region = r
		} else {
			bad("AWS_REGION", "not set, and the UPSTREAM host %q does not name a region (expected <account>.dkr.ecr.<region>.amazonaws.com)", cfg.Upstream.Host)
		}
	}
	if e := get["AWS_ENDPOINT_URL_ECR"]; e != "" {
		if u, err := url.Parse(e); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("AWS_ENDPOINT_URL_ECR", "%q is not an http(s) URL", e)
		}
		cfg.ECREndpoint = e
	}
	cfg.ListenAddr = get["LISTEN_ADDR"]
	if err := checkListenAddr(cfg.ListenAddr); err != nil {
		bad("LISTEN_ADDR", "%v", err)
	}
	cfg.CacheDir = get["CACHE_DIR"]
	if cfg.CacheDir == "" {
		bad("CACHE_DIR", "is empty")
	}
	if n, err := parseSize(get["CACHE_MAX_SIZE"]); err != nil {
		bad("CACHE_MAX_SIZE", "%v", err)
	} else {
		cfg.CacheMaxSize = n
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(get["LOG_LEVEL"])); err != nil {
		bad("LOG_LEVEL", "%q is not one of debug, info, warn, error", get["LOG_LEVEL"])
	}
	switch cfg.LogFormat = strings.ToLower(get["LOG_FORMAT"]); cfg.LogFormat {
	case "text", "json":
	default:
		bad("LOG_FORMAT", "%q is not text or json", get["LOG_FORMAT"])
	}
	cfg.PullThroughs, cfg.DefaultNamespace, cfg.NamespaceListeners = parseNamespaces(get, bad)
	cfg.TrustedProxies = parsePrefixes("TRUSTED_PROXIES", get["TRUSTED_PROXIES"], bad)
	for _, a := range []struct{ env, addr string }{{"METRICS_ADDR", get["METRICS_ADDR"]}, {"PPROF_ADDR", get["PPROF_ADDR"]}} {
		if a.addr != "" {
			if err := checkListenAddr(a.addr); err != nil {
				bad(a.env, "%v", err)
			}
		}
	}
	cfg.MetricsAddr, cfg.PprofAddr = get["METRICS_ADDR"], get["PPROF_ADDR"]
	if d, ok := parseDuration(get["SHUTDOWN_GRACE"]); !ok {
		bad("SHUTDOWN_GRACE", "%q is not a duration such as 30s or 2m", get["SHUTDOWN_GRACE"])
	} else {
		cfg.ShutdownGrace = d
	}
	if n, err := strconv.Atoi(get["MAX_DOWNLOADS"]); err != nil || n < 0 {
		bad("MAX_DOWNLOADS", "%q is not a count (0 for no cap)", get["MAX_DOWNLOADS"])
	} else {
		cfg.MaxDownloads = n
	}
	cfg.TLSCertificate, cfg.TLSPrivateKey = get["TLS_CERTIFICATE"], get["TLS_PRIVATE_KEY"]
	if (cfg.TLSCertificate == "") != (cfg.TLSPrivateKey == "") {
		bad("TLS_CERTIFICATE", "TLS_CERTIFICATE and TLS_PRIVATE_KEY go together: set both, or neither for plain HTTP")
	}
	cfg.Access.HtpasswdFile = get["HTPASSWD_FILE"]
	cfg.Access.AllowNetworks = parsePrefixes("ALLOW_NETWORKS", get["ALLOW_NETWORKS"], bad)
	if rules, err := access.ParseRules(get["ACCESS_RULES"]); err != nil {
		bad("ACCESS_RULES", "%v", err)
	} else {
		cfg.Access.Rules = rules
	}
	switch v := get["STALE_IF_ERROR"]; strings.ToLower(v) {
	case "always":
		cfg.StaleIfError = staleAlways
	default:
		if d, ok := parseDuration(v); !ok {
			bad("STALE_IF_ERROR", "%q is not a duration such as 72h, 0 or always", v)
		} else {
			cfg.StaleIfError = d
		}
	}
	for _, d := range []struct {
		env string
		dst *time.Duration
	}{{"UPSTREAM_TAG_TIMEOUT", &cfg.TagTimeout}, {"UPSTREAM_STALL_TIMEOUT", &cfg.StallTimeout}, {"CLIENT_STALL_TIMEOUT", &cfg.ClientStallTimeout}} {
		if v, ok := parseDuration(get[d.env]); !ok || v == 0 {
			bad(d.env, "%q is not a positive duration such as 10s", get[d.env])
		} else {
			*d.dst = v
		}
	}
	if v := get["MAX_CLIENT_CONNECTIONS"]; strings.ToLower(v) != "auto" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			bad("MAX_CLIENT_CONNECTIONS", "%q is not a positive count (or auto)", v)
		} else {
			cfg.MaxClientConnections = n
		}
	}
	if n, err := strconv.Atoi(get["UPSTREAM_RETRIES"]); err != nil || n < 0 {
		bad("UPSTREAM_RETRIES", "%q is not a count", get["UPSTREAM_RETRIES"])
	} else {
		cfg.Retries = n
	}
	if v := get["UPSTREAM_MAX_RATE"]; v != "" {
		if n, err := parseSize(v); err != nil {
			bad("UPSTREAM_MAX_RATE", "%v", err)
		} else {
			cfg.MaxRate = n
		}
	}
	if b, err := strconv.ParseBool(get["PUSH"]); err != nil {
		bad("PUSH", "%q is not true or false", get["PUSH"])
	} else {
		cfg.Push = b
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &cfg, nil
}

// parseNamespaces reads PULL_THROUGHS, DEFAULT_NAMESPACE and
// NAMESPACE_LISTENERS, reporting bad values through bad.
func parseNamespaces(get map[string]string, bad func(env, format string, args ...any)) (map[string]string, string, []namespaceListener) {
	pulls := map[string]string{}
	for _, pair := range splitList(get["PULL_THROUGHS"]) {
		host, prefix, ok := strings.Cut(pair, "=")
		host, prefix = registry.CanonicalRegistry(host), strings.Trim(strings.TrimSpace(prefix), "/")
		if !ok || host == "" || prefix == "" {
			bad("PULL_THROUGHS", "%q is not registry=prefix (e.g. docker.io=docker-hub)", pair)
			continue
		}
		if _, dup := pulls[host]; dup {
			bad("PULL_THROUGHS", "registry %s is mapped twice", host)
			continue
		}
		if strings.ContainsAny(host, "/ ") {
			bad("PULL_THROUGHS", "%q: the registry is a host name such as docker.io, not a URL", host)
			continue
		}
		if err := registry.ValidateName(prefix); err != nil {
			bad("PULL_THROUGHS", "prefix %q for %s is not a valid ECR repository prefix: %v", prefix, host, err)
			continue
		}
		pulls[host] = prefix
	}
	mapped := func(env, host string) bool {
		if _, ok := pulls[host]; !ok {
			bad(env, "registry %q is not mapped in PULL_THROUGHS", host)
			return false
		}
		return true
	}
	def := registry.CanonicalRegistry(get["DEFAULT_NAMESPACE"])
	if def != "" && !mapped("DEFAULT_NAMESPACE", def) {
		def = ""
	}
	var listeners []namespaceListener
	for _, pair := range splitList(get["NAMESPACE_LISTENERS"]) {
		addr, host, ok := strings.Cut(pair, "=")
		host = registry.CanonicalRegistry(host)
		if !ok || host == "" {
			bad("NAMESPACE_LISTENERS", "%q is not addr=registry (e.g. :5001=docker.io)", pair)
			continue
		}
		if err := checkListenAddr(addr); err != nil {
			bad("NAMESPACE_LISTENERS", "%q: %v", pair, err)
			continue
		}
		if mapped("NAMESPACE_LISTENERS", host) {
			listeners = append(listeners, namespaceListener{Addr: strings.TrimSpace(addr), Namespace: host})
		}
	}
	return pulls, def, listeners
}

// parsePrefixes reads a list of CIDRs or single IP addresses.
func parsePrefixes(env, v string, bad func(env, format string, args ...any)) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range splitList(v) {
		prefix, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				bad(env, "%q is not an IP address or CIDR", p)
				continue
			}
			prefix = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, prefix.Masked())
	}
	return out
}

// splitList splits a comma-separated setting, dropping empty items.
func splitList(v string) []string {
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

// parseUpstream checks the registry URL: http(s), a host, no path, query
// or credentials.
func parseUpstream(raw string) (*url.URL, error) {
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
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("%q: scheme must be https (or http for local use)", raw)
	case u.Host == "" || u.Hostname() == "":
		return nil, fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("must not carry credentials: the mirror gets them from AWS")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, fmt.Errorf("%q must not have a query or fragment", raw)
	case strings.Trim(u.Path, "/") != "":
		return nil, fmt.Errorf("%q must not have a path: give the registry root", raw)
	}
	u.Path = ""
	return u, nil
}

// sizeUnits are the suffixes parseSize accepts, all powers of 1024.
var sizeUnits = []struct {
	suffix string
	shift  uint
}{
	{"kib", 10}, {"mib", 20}, {"gib", 30}, {"tib", 40},
	{"kb", 10}, {"mb", 20}, {"gb", 30}, {"tb", 40},
	{"k", 10}, {"m", 20}, {"g", 30}, {"t", 40},
	{"b", 0},
}

// maxSize is the largest size parseSize accepts, 4 EiB.
const maxSize = 1 << 62

// parseSize reads a byte count: a decimal number (digits, optionally a
// point and more digits) alone or with k/m/g/t or KiB/MiB/GiB/TiB
// (case-insensitive, powers of 1024), rounded down to whole bytes. It
// refuses what is not at least one byte, and more than 4 EiB.
func parseSize(s string) (int64, error) {
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

// newLogger builds the process logger.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
