package settings

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
)

// Seeds are the proxies ecr-mirror replaces, whose variables it reads.
const (
	seedNginx     = "aws-ecr-http-proxy"
	seedTerricain = "aws_ecr_proxy"
	seedReverse   = "ecr_reverse_proxy"
)

// envAlias is a variable of a proxy ecr-mirror replaces, read with the
// meaning it has there: it gives one of our settings a value, or is
// accepted and explained. Aliases are environment variables only: a
// config file or a flag names our settings.
type envAlias struct {
	vars    []string // the seed's variables it reads
	seed    string   // the proxies whose variables they are
	setting string   // the setting it gives a value; "": explained only
	// value is the setting's value, from the variables as get reads them
	// (trimmed); ok false when the alias does not apply (unset).
	value func(get func(string) string) (v string, ok bool, err error)
	// same reports whether two values of setting mean the same; nil: equal.
	same func(a, b string) bool
	// check, when set, checks the variables against the parsed Config.
	check func(get func(string) string, c *Config) error
	note  string // what the log line says beside the mapping
	// unused is what the log line says when value does not apply.
	unused string
}

// aliases are every seed variable ecr-mirror accepts (docs/migrating.md
// lists them side by side with ours).
var aliases = []envAlias{
	{vars: []string{"PORT"}, seed: seedNginx + ", " + seedReverse, setting: "LISTEN_ADDR", value: portAddr, same: sameAddr},
	{vars: []string{"LISTEN_HOST", "LISTEN_PORT"}, seed: seedTerricain, setting: "LISTEN_ADDR", value: hostPortAddr, same: sameAddr,
		note: "unset, LISTEN_HOST is 0.0.0.0 and LISTEN_PORT 8080, as in " + seedTerricain},
	{vars: []string{"PULL_THROUGH_MIRROR"}, seed: seedNginx + " (fork)", setting: "PULL_THROUGHS", value: single("PULL_THROUGH_MIRROR")},
	{vars: []string{"REGISTRY_HTTP_TLS_CERTIFICATE"}, seed: seedNginx, setting: "TLS_CERTIFICATE", value: withSSL("REGISTRY_HTTP_TLS_CERTIFICATE"),
		unused: "ignored: ENABLE_SSL is not true"},
	{vars: []string{"REGISTRY_HTTP_TLS_KEY"}, seed: seedNginx, setting: "TLS_PRIVATE_KEY", value: withSSL("REGISTRY_HTTP_TLS_KEY"),
		unused: "ignored: ENABLE_SSL is not true"},
	{vars: []string{"ECR_REGISTRY"}, seed: seedReverse, setting: "UPSTREAM", value: single("ECR_REGISTRY"), same: sameUpstream},
	{vars: []string{"REGION"}, seed: seedReverse, setting: "AWS_REGION", value: single("REGION"), same: strings.EqualFold},
	{vars: []string{"DISABLE_PROXY_HEADERS"}, seed: seedTerricain, setting: "TRUSTED_PROXIES", value: disableProxyHeaders,
		note:   "true: no X-Forwarded-* header is trusted, from any address (TRUSTED_PROXIES empty)",
		unused: "false: X-Forwarded-Host/-Proto are honoured from TRUSTED_PROXIES only (none unless it is set), never from any client, as ecr-mirror always does"},
	{vars: []string{"ENABLE_SSL"}, seed: seedNginx, check: checkEnableSSL,
		note: "true: HTTPS with REGISTRY_HTTP_TLS_CERTIFICATE and REGISTRY_HTTP_TLS_KEY (TLS_CERTIFICATE, TLS_PRIVATE_KEY); false: plain HTTP"},
	{vars: []string{"AWS_USE_EC2_ROLE_FOR_AUTH"}, seed: seedNginx,
		note: "not needed: credentials always come from the AWS SDK's default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity (IRSA), profile, container credentials, then the EC2 instance role)"},
	{vars: []string{"RESOLVER"}, seed: seedNginx,
		note: "not needed: host names are resolved by the system resolver (/etc/resolv.conf), as for any Go program"},
	{vars: []string{"REGISTRY"}, seed: seedReverse,
		note: "not needed: the URLs the mirror hands out (Location, Link) are built from the request's Host (or X-Forwarded-Host from TRUSTED_PROXIES)"},
	{vars: []string{"CACHE_KEY"}, seed: seedNginx,
		note: "not needed: content is cached by digest, and each tag's answer is kept per repository and media types"},
	{vars: []string{"CACHE_INACTIVE_TIME"}, seed: seedNginx,
		note: "not used: content stays until CACHE_MAX_SIZE evicts the least recently used images (ecr-mirror cache purge --older-than 30d drops images unused that long, on demand)"},
	{vars: []string{"BEHIND_SSL_PROXY"}, seed: seedNginx,
		note: "not needed: behind a TLS load balancer, list it in TRUSTED_PROXIES and its X-Forwarded-Proto/-Host shape the URLs the mirror hands out"},
}

// aliasValue is the value aliases give one setting.
type aliasValue struct {
	value string
	from  origin
	same  func(a, b string) bool
}

// aliasUse is one alias set in the environment, for the startup log.
type aliasUse struct {
	vars    string // the variables set, comma-separated
	seed    string
	setting string
	note    string
}

// resolveAliases reads the aliases set in the environment: the value
// each gives its setting, and one use each for the log. Two aliases of
// one setting that disagree, and a bad alias value, are errors.
func resolveAliases(getenv func(string) string) (map[string]*aliasValue, []aliasUse, []error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	values := map[string]*aliasValue{}
	var uses []aliasUse
	var errs []error
	for _, a := range aliases {
		set := setVars(a.vars, get)
		if len(set) == 0 {
			continue
		}
		use := aliasUse{vars: strings.Join(set, ", "), seed: a.seed, setting: a.setting, note: a.note}
		if a.value == nil {
			uses = append(uses, use)
			continue
		}
		v, ok, err := a.value(get)
		from := origin{kind: fromAlias, name: use.vars, of: a.setting}
		if !ok && err == nil {
			use.setting, use.note = "", a.unused
		}
		uses = append(uses, use)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", from, err))
		case !ok:
		case values[a.setting] == nil:
			values[a.setting] = &aliasValue{value: v, from: from, same: a.same}
		case !values[a.setting].agrees(v):
			prev := values[a.setting]
			errs = append(errs, fmt.Errorf("%s and %s both set %s, to %s and %s: set one of them", prev.from.name, from.name, a.setting, shown(prev.value), shown(v)))
		}
	}
	return values, uses, errs
}

// setVars are the variables of vars that are set.
func setVars(vars []string, get func(string) string) []string {
	var set []string
	for _, v := range vars {
		if get(v) != "" {
			set = append(set, v)
		}
	}
	return set
}

// agrees reports whether v means what the alias's value means.
func (a *aliasValue) agrees(v string) bool {
	if a.same != nil {
		return a.same(a.value, v)
	}
	return a.value == v
}

// conflict is the error of a setting set both by one of ours (its flag
// or variable) and by an alias, to different meanings; nil if none.
func (s *setting) conflict() error {
	a := s.alias
	if a == nil || (s.from.kind != fromFlag && s.from.kind != fromEnv) || a.agrees(s.value) {
		return nil
	}
	return fmt.Errorf("%s and %s disagree (%s and %s): set one of them (%s is %s's name for it)",
		s.from, a.from.name, shown(s.value), shown(a.value), a.from.name, s.env)
}

// shown is v quoted for an error, unless it may hold credentials (a URL
// with user info), which no message repeats.
func shown(v string) string {
	if strings.Contains(v, "@") {
		return "(a value with credentials, not shown)"
	}
	return strconv.Quote(v)
}

// checkAliases runs the aliases' checks against the parsed Config.
func checkAliases(getenv func(string) string, c *Config) []error {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var errs []error
	for _, a := range aliases {
		if a.check != nil && len(setVars(a.vars, get)) > 0 {
			if err := a.check(get, c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// LogAliases logs, once each, the seed proxies' variables this
// configuration was read with, and which of our settings each gives.
func (c *Config) LogAliases(log *slog.Logger) {
	for _, u := range c.aliasUses {
		attrs := []any{"variable", u.vars, "of", u.seed}
		if u.setting != "" {
			attrs = append(attrs, "setting", u.setting)
		}
		if u.note != "" {
			attrs = append(attrs, "note", u.note)
		}
		msg := "setting of a proxy ecr-mirror replaces, read as " + u.setting
		if u.setting == "" {
			msg = "setting of a proxy ecr-mirror replaces, accepted"
		}
		log.Info(msg, attrs...)
	}
}

// single is the alias that gives a setting the variable's value.
func single(name string) func(func(string) string) (string, bool, error) {
	return func(get func(string) string) (string, bool, error) {
		v := get(name)
		return v, v != "", nil
	}
}

// portAddr is LISTEN_ADDR of PORT: every address, that port.
func portAddr(get func(string) string) (string, bool, error) {
	port := get("PORT")
	if !isPortNumber(port) {
		return "", false, fmt.Errorf("%q is not a port number", port)
	}
	return ":" + port, true, nil
}

// hostPortAddr is LISTEN_ADDR of LISTEN_HOST and LISTEN_PORT, with
// aws_ecr_proxy's defaults for the one unset.
func hostPortAddr(get func(string) string) (string, bool, error) {
	port := cmp.Or(get("LISTEN_PORT"), "8080")
	if !isPortNumber(port) {
		return "", false, fmt.Errorf("LISTEN_PORT %q is not a port number", port)
	}
	return net.JoinHostPort(cmp.Or(get("LISTEN_HOST"), "0.0.0.0"), port), true, nil
}

// isPortNumber reports whether s is a port number, 0 to 65535.
func isPortNumber(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 0 && n <= 65535 && strings.Trim(s, "0123456789") == ""
}

// withSSL gives a TLS file setting the variable's value when ENABLE_SSL
// is true, as aws-ecr-http-proxy reads them.
func withSSL(name string) func(func(string) string) (string, bool, error) {
	return func(get func(string) string) (string, bool, error) {
		on, err := enableSSL(get)
		if err != nil || !on || get(name) == "" {
			return "", false, nil // checkEnableSSL reports a bad ENABLE_SSL
		}
		return get(name), true, nil
	}
}

// enableSSL reads ENABLE_SSL: true or false; unset is false.
func enableSSL(get func(string) string) (bool, error) {
	v := get("ENABLE_SSL")
	if v == "" {
		return false, nil
	}
	on, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("ENABLE_SSL: %q is not true or false", v)
	}
	return on, nil
}

// checkEnableSSL checks that ENABLE_SSL agrees with the TLS settings.
func checkEnableSSL(get func(string) string, c *Config) error {
	on, err := enableSSL(get)
	switch {
	case err != nil:
		return err
	case on && c.TLSCertificate == "":
		return errors.New("ENABLE_SSL: is true, but no certificate is set: set REGISTRY_HTTP_TLS_CERTIFICATE and REGISTRY_HTTP_TLS_KEY (or TLS_CERTIFICATE and TLS_PRIVATE_KEY)")
	case !on && c.TLSCertificate != "":
		return errors.New("ENABLE_SSL and TLS_CERTIFICATE disagree: ENABLE_SSL is false (plain HTTP) but TLS_CERTIFICATE is set (HTTPS): set one of them")
	}
	return nil
}

// disableProxyHeaders is TRUSTED_PROXIES of DISABLE_PROXY_HEADERS: none
// when true; false leaves TRUSTED_PROXIES to say.
func disableProxyHeaders(get func(string) string) (string, bool, error) {
	v := get("DISABLE_PROXY_HEADERS")
	off, err := strconv.ParseBool(v)
	if err != nil {
		return "", false, fmt.Errorf("%q is not true or false", v)
	}
	return "", off, nil
}

// sameAddr reports whether two listen addresses are the same, taking
// 0.0.0.0, :: and an empty host as every address.
func sameAddr(a, b string) bool {
	ha, pa, erra := net.SplitHostPort(a)
	hb, pb, errb := net.SplitHostPort(b)
	if erra != nil || errb != nil {
		return a == b
	}
	every := func(h string) string {
		if h == "0.0.0.0" || h == "::" {
			return ""
		}
		return h
	}
	return every(ha) == every(hb) && pa == pb
}

// sameUpstream reports whether an UPSTREAM and an ECR_REGISTRY (a host,
// or a URL) name the same registry.
func sameUpstream(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimPrefix(strings.ToLower(s), "https://")
		return strings.TrimRight(s, "/")
	}
	return norm(a) == norm(b)
}
