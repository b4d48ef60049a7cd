package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/auth"
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
	if _, port, err := net.SplitHostPort(cfg.ListenAddr); err != nil {
		bad("LISTEN_ADDR", "%q is not host:port: %v", cfg.ListenAddr, err)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		bad("LISTEN_ADDR", "%q has no valid port", cfg.ListenAddr)
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

// parseSize reads a byte count: a plain number, or a number with
// k/m/g/t or KiB/MiB/GiB/TiB (case-insensitive, powers of 1024).
func parseSize(s string) (int64, error) {
	v := strings.ToLower(strings.TrimSpace(s))
	shift := uint(0)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, shift = strings.TrimSpace(num), u.shift
			break
		}
	}
	if v == "" {
		return 0, fmt.Errorf("%q is not a size (e.g. 75g, 512MiB, 1073741824)", s)
	}
	if strings.Contains(v, ".") {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f*float64(uint64(1)<<shift) >= 1<<62 {
			return 0, fmt.Errorf("%q is not a size (e.g. 75g, 512MiB, 1073741824)", s)
		}
		return int64(f * float64(uint64(1)<<shift)), nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive size (e.g. 75g, 512MiB, 1073741824)", s)
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n << shift, nil
}

// newLogger builds the process logger.
func newLogger(cfg *config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
