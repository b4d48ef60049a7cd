package settings

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

//go:generate go test -count=1 -run TestREADMESettingsTableMatchesSettings . -args -update-readme

// setting is one configuration value bound to its config field: its
// variable (which also names its flag and its config-file key), its
// default, its help for -h and its row in README.md, and the parser that
// checks a value and stores it in the field.
type setting struct {
	env string
	// fallbackEnv is read when env is unset, before the file and the default.
	fallbackEnv string
	// aliases are deprecated flag names still accepted, with a warning.
	aliases []string
	arg     string // what the flag takes, for -h: SIZE, DURATION, argBool...
	shape   shape  // how the config file may write it
	// reload marks a setting a running server applies when its config
	// file changes; every other one needs a restart.
	reload bool
	// secret marks a value "config check" must not print.
	secret bool
	def    string // the default, as a user would write it; "": none
	help   string // the -h text
	// docDefault and doc are README.md's default and meaning columns
	// (Markdown); docDefault "" shows def, or "(none)".
	docDefault, doc string
	// parse checks v (the flag, else the variable, else the file's
	// value, else def, trimmed) and stores it. It runs in list order, so
	// it may read the fields of settings listed before it.
	parse func(v string) error

	flagValue *flagValue  // the flag as given on the command line
	alias     *aliasValue // the value a seed's variable gives it, if set
	value     string      // the value resolved by Parse
	from      origin      // where value came from
}

// argBool is the arg of a true/false setting: its flag may stand alone.
const argBool = "BOOL"

// flagName is the setting's flag: its variable in lower case with dashes.
func (s *setting) flagName() string {
	return strings.ToLower(strings.ReplaceAll(s.env, "_", "-"))
}

// fileKey is the setting's key in a config file: its variable in lower case.
func (s *setting) fileKey() string {
	return strings.ToLower(s.env)
}

// settings lists every setting, bound to the fields of c, in the order
// the usage text and README.md show them. A setting's parser may read
// the fields of settings listed before it.
func settings(c *Config) []*setting {
	return slices.Concat(fileSettings(c), upstreamSettings(c), serverSettings(c), peerSettings(c), namespaceSettings(c),
		forwardProxySettings(c), opsSettings(c), securitySettings(c), limitSettings(c))
}

// fileSettings is the config file the other settings may come from.
func fileSettings(c *Config) []*setting {
	return []*setting{
		{env: configFileEnv, arg: "FILE",
			help:       "YAML file of settings, keyed by their variables in lower case (upstream, cache_max_size, ...); flags and variables override it",
			docDefault: "(none)", doc: "a YAML file of the other settings, keyed by their variables in lower case (see \"Config file\"); flags and variables override it; a change to it is applied to `ACCESS_RULES`, `ALLOW_NETWORKS`, `HTPASSWD_FILE` and the TLS files without a restart",
			parse: bindText(&c.ConfigFile)},
	}
}

// upstreamSettings are the settings of the registry mirrored and how to reach its token API.
func upstreamSettings(c *Config) []*setting {
	return []*setting{
		{env: "UPSTREAM", arg: "[KIND:]URL,...", shape: list,
			help:       "registries to pull from, [KIND:]URL separated by commas, the first the default; KIND ecr, ecr-public or oci, e.g. https://123456789012.dkr.ecr.eu-west-1.amazonaws.com (required)",
			docDefault: "(required)", doc: "the registries mirrored, `[KIND:]URL` separated by commas, the first the default (see \"Several upstreams\"); one ECR registry: `https://123456789012.dkr.ecr.eu-west-1.amazonaws.com`; `http://` is accepted for local use",
			parse: c.parseUpstream},
		{env: "AWS_REGION", arg: "REGION", aliases: []string{"region"}, fallbackEnv: "AWS_DEFAULT_REGION",
			help:       "AWS region of the ECR upstreams whose host names none (default: read from each UPSTREAM host)",
			docDefault: "read from each `UPSTREAM` host", doc: "region for the ECR token API of `ecr` upstreams whose host names none (`AWS_DEFAULT_REGION` also works)",
			parse: c.parseRegion},
		{env: "AWS_ENDPOINT_URL_ECR", arg: "URL", aliases: []string{"ecr-endpoint"},
			help:       "ECR API endpoint for GetAuthorizationToken (default: the AWS SDK's, from the region)",
			docDefault: "the SDK's", doc: "another endpoint for the ECR token API (the AWS SDK's own setting; tests point it at the fake)",
			parse: bindHTTPURL(&c.ECREndpoint)},
		{env: "AWS_ENDPOINT_URL_ECR_PUBLIC", arg: "URL", aliases: []string{"ecr-public-endpoint"},
			help:       "ECR Public API endpoint for its GetAuthorizationToken (default: the AWS SDK's, us-east-1)",
			docDefault: "the SDK's", doc: "another endpoint for ECR Public's token API, used by `ecr-public` upstreams (the AWS SDK's own setting)",
			parse: bindHTTPURL(&c.ECRPublicEndpoint)},
		{env: "UPSTREAM_DOCKER_CONFIG", arg: "FILE",
			help:       "Docker config.json with the logins of the oci upstreams (auths, credHelpers, credsStore); unset: anonymous",
			docDefault: "(none: anonymous)", doc: "a Docker `config.json` whose `auths`, `credHelpers` and `credsStore` give the logins of `oci` upstreams (helpers must be on `PATH`); each login goes to its own registry and token realm only",
			parse: bindText(&c.UpstreamDockerConfig)},
	}
}

// serverSettings are the settings of where the mirror listens and keeps its cache, how it logs, and whether it passes pushes on.
func serverSettings(c *Config) []*setting {
	return []*setting{
		{env: "LISTEN_ADDR", arg: "ADDR", def: ":5000",
			help:  "address to serve the registry API on",
			doc:   "where the registry API is served (plain HTTP)",
			parse: bindAddr(&c.ListenAddr, true)},
		{env: "CACHE_DIR", arg: "DIR", def: "/var/lib/ecr-mirror",
			help:  "directory of the content store and its index",
			doc:   "the store: `blobs/`, `tmp/` and the Badger index `index/`",
			parse: bindNonEmpty(&c.CacheDir)},
		{env: "CACHE_MAX_SIZE", arg: "SIZE", def: "75g",
			help:  "cache budget: bytes, or a number with k/m/g/t or KiB/MiB/GiB/TiB (powers of 1024)",
			doc:   "byte budget: a number of bytes, or with `k`/`m`/`g`/`t` or `KiB`/`MiB`/`GiB`/`TiB` (powers of 1024); decimals (`1.5g`) are rounded down to whole bytes, and a value under one byte is refused",
			parse: bindSize(&c.CacheMaxSize, true)},
		{env: "LOG_LEVEL", arg: "LEVEL", def: "info",
			help: "debug, info, warn or error, in any case (also the seed proxies' trace, warning, critical, fatal)", doc: "`debug`, `info`, `warn` or `error`, in any case; the seed proxies' names are read too: `trace` as `debug`, `warning` as `warn`, `critical`, `fatal` and `panic` as `error`",
			parse: bindLogLevel(&c.LogLevel)},
		{env: "LOG_FORMAT", arg: "FORMAT", def: "text",
			help: "text or json", doc: "`text` or `json`",
			parse: bindLogFormat(&c.LogFormat)},
		{env: "PUSH", arg: argBool, def: "false",
			help:  "pass pushes (blob uploads, manifest PUTs) through to ECR with the mirror's credentials",
			doc:   "pass pushes (blob uploads, manifest PUTs) through to ECR with the mirror's credentials",
			parse: bindBool(&c.Push)},
		{env: "SHARED_STORE", arg: "URL",
			help:       "s3://BUCKET[/PREFIX] of a blob tier shared by several replicas, read before ECR and written after each download (credentials and endpoint from the AWS SDK: AWS_ENDPOINT_URL_S3, profile, IRSA); unset: off",
			docDefault: "(off)", doc: "`s3://BUCKET[/PREFIX]`: an S3-compatible bucket several replicas share for content by digest, read on a local miss before ECR and written once after each download (see \"Shared blob tier (several replicas)\"); credentials and endpoint from the AWS SDK (`AWS_ENDPOINT_URL_S3`, profile, IRSA)",
			parse: bindSharedStore(&c.SharedStore)},
		{env: "SHARED_STORE_PATH_STYLE", arg: argBool, def: "false",
			help:  "address SHARED_STORE's bucket in the URL path (IP endpoints and most on-premises stores need it)",
			doc:   "address the `SHARED_STORE` bucket in the URL path rather than the host name (IP endpoints, MinIO, Ceph RGW, versitygw)",
			parse: bindBool(&c.SharedStorePathStyle)},
		{env: "SHARED_STORE_REGION", arg: "REGION",
			help:       "region of SHARED_STORE's bucket (default: the AWS SDK's, AWS_REGION, else us-east-1)",
			docDefault: "the SDK's", doc: "the region of the `SHARED_STORE` bucket, when it is not the AWS SDK's (`AWS_REGION`, which also names the ECR region); with neither, `us-east-1`",
			parse: bindText(&c.SharedStoreRegion)},
		{env: "SHARED_STORE_MAX_SIZE", arg: "SIZE",
			help:       "bound on SHARED_STORE's bytes, kept by a sweep that deletes whole images least recently used first, never pinned ones (same units as CACHE_MAX_SIZE); unset or 0: unbounded",
			docDefault: "(unbounded)", doc: "bound on the `SHARED_STORE` bucket's content, same units as `CACHE_MAX_SIZE`: a sweep deletes whole images, least recently used first, never pinned ones nor objects younger than 10 minutes (see \"The shared tier's bound\"); set it on every replica; unset or `0`: unbounded",
			parse: c.parseSharedStoreMaxSize},
		{env: "SHARED_STORE_SWEEP_INTERVAL", arg: "DURATION", def: "5m",
			help:  "how often the shared tier is swept down to SHARED_STORE_MAX_SIZE",
			doc:   "how often a replica sweeps the `SHARED_STORE` bucket down to `SHARED_STORE_MAX_SIZE`",
			parse: bindPositiveDuration(&c.SharedStoreSweepInterval)},
	}
}

// parseSharedStoreMaxSize binds SHARED_STORE_MAX_SIZE, which needs
// SHARED_STORE.
func (c *Config) parseSharedStoreMaxSize(v string) error {
	if v == "" || v == "0" {
		c.SharedStoreMaxSize = 0
		return nil
	}
	if err := bindSize(&c.SharedStoreMaxSize, true)(v); err != nil {
		return err
	}
	if c.SharedStore == "" {
		return fmt.Errorf("%q bounds the shared tier, which is off: set SHARED_STORE too", v)
	}
	return nil
}

// bindSharedStore binds an s3://BUCKET[/PREFIX] URL, or "" (off).
func bindSharedStore(dst *string) func(string) error {
	return func(v string) error {
		if v != "" {
			if _, _, err := sharedstore.ParseURL(v); err != nil {
				return err
			}
		}
		*dst = v
		return nil
	}
}

// namespaceSettings are the settings of the registries behind ECR pull-through caches, and the proxies in front.
func namespaceSettings(c *Config) []*setting {
	return []*setting{
		{env: "PULL_THROUGHS", arg: "REGISTRY=PREFIX|PREFIX:PORT,...", shape: pairs,
			help:  "registry=ECR prefix pairs for ECR pull-through-cache rules, e.g. docker.io=docker-hub,ghcr.io=github; a prefix:port entry (aws-ecr-http-proxy's form) opens a listener on that port for the repositories under prefix/",
			doc:   "upstream registries and the ECR pull-through-cache prefixes that hold them, e.g. `docker.io=docker-hub,public.ecr.aws=ecr-public,registry.k8s.io=k8s,ghcr.io=github,quay.io=quay`; an entry `PREFIX:PORT` (aws-ecr-http-proxy's form, e.g. `docker-hub:5001`) opens a listener on that port whose repositories are those under `PREFIX/` in ECR (see docs/migrating.md)",
			parse: c.parsePullThroughs},
		{env: "DEFAULT_NAMESPACE", arg: "REGISTRY",
			help:       "registry of requests on LISTEN_ADDR that name none (containerd's ?ns=), e.g. docker.io for Docker's registry-mirrors (default: the ECR registry itself)",
			docDefault: "(none: ECR repositories by name)", doc: "the registry that requests on `LISTEN_ADDR` naming none belong to, e.g. `docker.io` for the Docker daemon's `registry-mirrors`",
			parse: c.parseDefaultNamespace},
		{env: "NAMESPACE_LISTENERS", arg: "ADDR=REGISTRY,...", shape: pairs,
			help:  "extra addr=registry listeners, one per pull-through cache, e.g. :5001=docker.io,:5002=ghcr.io",
			doc:   "extra listeners, one per registry, for clients that cannot name it: `:5001=docker.io,:5002=ghcr.io`",
			parse: c.parseNamespaceListeners},
		{env: "TRUSTED_PROXIES", arg: "CIDR,...", shape: list,
			help:  "CIDRs or IPs of proxies whose X-Forwarded-Host/-Proto are honoured",
			doc:   "CIDRs or IPs of load balancers whose `X-Forwarded-Host`/`X-Forwarded-Proto` are honoured when the mirror builds URLs",
			parse: bindPrefixes(&c.TrustedProxies)},
	}
}

// opsSettings are the settings of the operator's ports and shutdown.
func opsSettings(c *Config) []*setting {
	return []*setting{
		{env: "METRICS_ADDR", arg: "ADDR",
			help:       "serve /metrics on this address instead of LISTEN_ADDR",
			docDefault: "(none: `/metrics` on `LISTEN_ADDR`)", doc: "serve Prometheus metrics, and the probes too, on an address of their own, outside `ALLOW_NETWORKS`: firewall it for Prometheus and the kubelet",
			parse: bindAddr(&c.MetricsAddr, false)},
		{env: "PPROF_ADDR", arg: "ADDR",
			help:       "serve Go's pprof profiles on this address (off by default; keep it private)",
			docDefault: "(none: off)", doc: "serve Go's pprof profiles here; keep it private",
			parse: bindAddr(&c.PprofAddr, false)},
		{env: "SHUTDOWN_GRACE", arg: "DURATION", def: "30s",
			help:  "how long in-flight requests get to finish on SIGTERM",
			doc:   "on SIGTERM/SIGINT, how long in-flight client streams get to finish (the admin socket's requests too: it closes after the registry listeners); a second signal exits at once",
			parse: bindDuration(&c.ShutdownGrace, "%q is not a duration such as 30s or 2m")},
	}
}

// securitySettings are the settings of HTTPS and client access control.
func securitySettings(c *Config) []*setting {
	return []*setting{
		{env: "TLS_CERTIFICATE", arg: "FILE", reload: true,
			help:       "PEM certificate (chain) file; with TLS_PRIVATE_KEY turns HTTPS on; renewed files are picked up without a restart",
			docDefault: "(none: plain HTTP)", doc: "PEM certificate (chain) file; with `TLS_PRIVATE_KEY`, HTTPS (TLS 1.2+, HTTP/2) on the registry listeners; a renewed pair on disk is picked up within a second, without a restart",
			parse: bindText(&c.TLSCertificate)},
		{env: "TLS_PRIVATE_KEY", arg: "FILE", reload: true,
			help:       "PEM private key file of TLS_CERTIFICATE",
			docDefault: "(none: plain HTTP)", doc: "PEM private key file of `TLS_CERTIFICATE`: set both, or neither",
			parse: bindText(&c.TLSPrivateKey)},
		{env: "HTPASSWD_FILE", arg: "FILE", reload: true,
			help:  "htpasswd file (bcrypt entries only): clients must log in with one of its users",
			doc:   "htpasswd file, bcrypt entries only (`htpasswd -B`); clients log in with Basic auth (`docker login`); re-read when it changes; wrong-login storms are throttled (see \"Operate it\")",
			parse: bindText(&c.Access.HtpasswdFile)},
		{env: "ALLOW_NETWORKS", arg: "CIDR,...", shape: list, reload: true,
			help:       "CIDRs or IPs of the clients allowed to use the mirror (default: any)",
			docDefault: "(any)", doc: "CIDRs or IPs of the clients that may use the mirror; others get 403 `DENIED` on every path of the registry listeners, `/metrics`, `/healthz` and `/readyz` included (not on `METRICS_ADDR`)",
			parse: bindPrefixes(&c.Access.AllowNetworks)},
		{env: "ACCESS_RULES", arg: "RULES", shape: rules, reload: true,
			help:       "who may pull or push which repositories, e.g. 'pull:*:*; push:ci-bot:team/'",
			docDefault: "(everyone past the checks above may pull and push)", doc: "who may pull or push which repositories: `level:subjects:prefixes` rules separated by `;`, e.g. `pull:*:*; push:ci-bot,release:team/,infra/; pull:10.0.0.0/8:docker-hub/` (subjects are htpasswd users, CIDRs or `*`; prefixes match whole path components of the name the client used; a cross-repository mount also needs pull on its `from`)",
			parse: func(v string) (err error) { c.Access.Rules, err = access.ParseRules(v); return err }},
	}
}

// limitSettings are the settings of how the mirror copes with a slow or unreachable ECR and with slow clients.
func limitSettings(c *Config) []*setting {
	return []*setting{
		{env: "STALE_IF_ERROR", arg: "DURATION", def: "0",
			help:       "serve a tag's (or a referrers list's) last answer, up to this old (e.g. 72h, or always), when ECR cannot be reached (0: never)",
			docDefault: "`0` (never)", doc: "for edge sites: serve a tag's (or a referrers list's) last answer, up to this old (`72h`, or `always`), when ECR cannot be reached (see \"Running at an edge site\")",
			parse: bindStaleIfError(&c.StaleIfError)},
		{env: "UPSTREAM_TAG_TIMEOUT", arg: "DURATION", def: proxy.DefaultTagTimeout.String(),
			help:  "how long a tag or referrers lookup waits for ECR before the stale answer (or an error) is given",
			doc:   "how long a tag or referrers lookup waits for ECR before the stale answer (or an error) is given",
			parse: bindPositiveDuration(&c.TagTimeout)},
		{env: "TAG_FRESHNESS", arg: "DURATION", def: "0",
			help:       "answer a tag from its last answer, without asking ECR, while that is younger than this (0: ask ECR every time)",
			docDefault: "`0` (ask every time)", doc: "answer a tag from the cache, without asking ECR, while its last answer is younger than this (e.g. `30s`): a tag moved in ECR is then seen up to this late (see \"Tag lookups\")",
			parse: bindDuration(&c.TagFreshness, "%q is not a duration such as 30s or 0")},
		{env: "UPSTREAM_STALL_TIMEOUT", arg: "DURATION", def: proxy.DefaultStallTimeout.String(),
			help:  "an upstream body that sends nothing this long is resumed (or abandoned)",
			doc:   "an upstream body that sends nothing this long is abandoned (resumed, with `UPSTREAM_RETRIES`)",
			parse: bindPositiveDuration(&c.StallTimeout)},
		{env: "UPSTREAM_RETRIES", arg: "COUNT", def: "5",
			help:  "how often a download cut short is resumed where it stopped",
			doc:   "how often a download cut short is resumed where it stopped",
			parse: bindCount(&c.Retries, "%q is not a count")},
		{env: "UPSTREAM_MAX_RATE", arg: "SIZE",
			help:       "cap on upstream bytes per second, all downloads together, in the CACHE_MAX_SIZE syntax (20m = 20 MiB/s); default unlimited",
			docDefault: "(unlimited)", doc: "cap on upstream bytes per second, all downloads together, in the `CACHE_MAX_SIZE` syntax (`20m` = 20 MiB/s)",
			parse: bindSize(&c.MaxRate, false)},
		{env: "MAX_DOWNLOADS", arg: "COUNT", def: "64",
			help:  "concurrent upstream downloads; past it misses get 429 TOOMANYREQUESTS (0: no cap)",
			doc:   "concurrent upstream downloads; past it a miss gets 429 `TOOMANYREQUESTS` with `Retry-After` (0: no cap)",
			parse: bindCount(&c.MaxDownloads, "%q is not a count (0 for no cap)")},
		{env: "CLIENT_STALL_TIMEOUT", arg: "DURATION", def: "60s",
			help:  "a client that takes no response bytes this long is disconnected (a slow but reading client never is)",
			doc:   "a client that takes no response bytes this long is disconnected (see \"Slow and stuck clients\"); a slow client that keeps reading is never cut",
			parse: bindPositiveDuration(&c.ClientStallTimeout)},
		{env: "MAX_CLIENT_CONNECTIONS", arg: "COUNT", def: "auto",
			help:  "open client connections at most; past it new ones get 503 (auto: what the open-file limit allows)",
			doc:   "client connections open at once on the registry listeners; past it a new connection gets 503 `UNAVAILABLE` with `Retry-After: 1` and is closed. `auto`: what the open-file limit allows, (`ulimit -n` − 512) / 2",
			parse: bindMaxClientConnections(&c.MaxClientConnections)},
	}
}

// checkTogether reports settings that are valid alone but not together.
func (c *Config) checkTogether() error {
	if (c.TLSCertificate == "") != (c.TLSPrivateKey == "") {
		return errors.New("TLS_CERTIFICATE: TLS_CERTIFICATE and TLS_PRIVATE_KEY go together: set both, or neither for plain HTTP")
	}
	return errors.Join(c.checkUpstreamsApart(), c.checkPrefixPorts())
}

// bindText binds a setting any string is valid for.
func bindText(dst *string) func(string) error {
	return func(v string) error { *dst = v; return nil }
}

// bindNonEmpty binds a setting that must not be empty.
func bindNonEmpty(dst *string) func(string) error {
	return func(v string) error {
		*dst = v
		if v == "" {
			return errors.New("is empty")
		}
		return nil
	}
}

// bindHTTPURL binds an optional http(s) URL.
func bindHTTPURL(dst *string) func(string) error {
	return func(v string) error {
		*dst = v
		if v == "" {
			return nil
		}
		u, err := url.Parse(v)
		if err == nil && u.User != nil {
			// Kept out, and not quoted, so that no setting holds a
			// secret that "config check" or a log line could show.
			*dst = ""
			return errors.New("must not carry credentials: the AWS SDK signs its requests")
		}
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%q is not an http(s) URL", v)
		}
		return nil
	}
}

// bindAddr binds a host:port address; optional ones may be empty.
func bindAddr(dst *string, required bool) func(string) error {
	return func(v string) error {
		*dst = v
		if v == "" && !required {
			return nil
		}
		return checkListenAddr(v)
	}
}

// bindSize binds a byte count in ParseSize's syntax; optional ones may be
// empty, leaving 0.
func bindSize(dst *int64, required bool) func(string) error {
	return func(v string) error {
		if v == "" && !required {
			return nil
		}
		n, err := ParseSize(v)
		if err == nil {
			*dst = n
		}
		return err
	}
}

// seedLogLevels are the level names of the proxies ecr-mirror replaces
// (Python's and zerolog's) that slog does not know, and slog's for them.
var seedLogLevels = map[string]string{
	"trace": "debug", "warning": "warn", "critical": "error", "fatal": "error", "panic": "error",
}

// bindLogLevel binds a slog level name, or a seed's (seedLogLevels).
func bindLogLevel(dst *slog.Level) func(string) error {
	return func(v string) error {
		name := cmp.Or(seedLogLevels[strings.ToLower(v)], v)
		if err := dst.UnmarshalText([]byte(name)); err != nil {
			return fmt.Errorf("%q is not one of debug, info, warn, error", v)
		}
		return nil
	}
}

// bindLogFormat binds text or json, in any case.
func bindLogFormat(dst *string) func(string) error {
	return func(v string) error {
		switch *dst = strings.ToLower(v); *dst {
		case "text", "json":
			return nil
		}
		return fmt.Errorf("%q is not text or json", v)
	}
}

// bindBool binds true or false (as strconv.ParseBool reads them).
func bindBool(dst *bool) func(string) error {
	return func(v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*dst = b
		return nil
	}
}

// bindCount binds a non-negative integer; format words the error for v.
func bindCount(dst *int, format string) func(string) error {
	return func(v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf(format, v)
		}
		*dst = n
		return nil
	}
}

// bindDuration binds a duration of 0 or more; format words the error for v.
func bindDuration(dst *time.Duration, format string) func(string) error {
	return func(v string) error {
		d, ok := parseDuration(v)
		if !ok {
			return fmt.Errorf(format, v)
		}
		*dst = d
		return nil
	}
}

// bindPositiveDuration binds a duration of more than 0.
func bindPositiveDuration(dst *time.Duration) func(string) error {
	return func(v string) error {
		d, ok := parseDuration(v)
		if !ok || d == 0 {
			return fmt.Errorf("%q is not a positive duration such as 10s", v)
		}
		*dst = d
		return nil
	}
}

// bindStaleIfError binds STALE_IF_ERROR: a duration, or always.
func bindStaleIfError(dst *time.Duration) func(string) error {
	return func(v string) error {
		if strings.ToLower(v) == "always" {
			*dst = StaleAlways
			return nil
		}
		return bindDuration(dst, "%q is not a duration such as 72h, 0 or always")(v)
	}
}

// bindMaxClientConnections binds a positive count, or auto (0).
func bindMaxClientConnections(dst *int) func(string) error {
	return func(v string) error {
		if strings.ToLower(v) == "auto" {
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive count (or auto)", v)
		}
		*dst = n
		return nil
	}
}

// bindPrefixes binds a comma-separated list of CIDRs or single IP addresses,
// reporting every bad item.
func bindPrefixes(dst *[]netip.Prefix) func(string) error {
	return func(v string) error {
		var errs []error
		for _, p := range SplitList(v) {
			prefix, err := netip.ParsePrefix(p)
			if err != nil {
				addr, aerr := netip.ParseAddr(p)
				if aerr != nil {
					errs = append(errs, fmt.Errorf("%q is not an IP address or CIDR", p))
					continue
				}
				prefix = netip.PrefixFrom(addr, addr.BitLen())
			}
			*dst = append(*dst, prefix.Masked())
		}
		return errors.Join(errs...)
	}
}
