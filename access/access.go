package access

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Config says who may use the mirror. The zero Config lets everyone in.
type Config struct {
	// HtpasswdFile is an Apache htpasswd file of bcrypt entries (htpasswd
	// -B). When set, every /v2/ request needs Basic credentials of one of
	// its users. Default "": no authentication.
	HtpasswdFile string
	// AllowNetworks, when non-empty, are the only client networks served.
	// Default: all.
	AllowNetworks []netip.Prefix
	// Rules, when non-empty, are the only grants of repository access (see
	// ParseRules). Default: every client may pull and push.
	Rules []Rule
}

// Policy enforces a Config on registry API requests.
type Policy struct {
	cfg   Config
	log   *slog.Logger
	users *htpasswd // nil: no authentication
}

// New validates cfg and loads its htpasswd file. A nil logger discards.
func New(cfg Config, log *slog.Logger) (*Policy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Policy{cfg: cfg, log: log}
	for i, n := range cfg.AllowNetworks {
		if !n.IsValid() {
			return nil, fmt.Errorf("allowed network %d is not a valid CIDR", i+1)
		}
	}
	for i, r := range cfg.Rules {
		if r.Level != Pull && r.Level != Push {
			return nil, fmt.Errorf("access rule %d (%s): level must be pull or push", i+1, r)
		}
		if !r.Everyone && len(r.Users) == 0 && len(r.Networks) == 0 {
			return nil, fmt.Errorf("access rule %d (%s): names no subject", i+1, r)
		}
		if len(r.Repositories) == 0 {
			return nil, fmt.Errorf("access rule %d (%s): names no repository", i+1, r)
		}
		if len(r.Users) > 0 && cfg.HtpasswdFile == "" {
			return nil, fmt.Errorf("access rule %d (%s) names users, but there is no htpasswd file to authenticate them", i+1, r)
		}
	}
	if cfg.HtpasswdFile != "" {
		var err error
		if p.users, err = newHtpasswd(cfg.HtpasswdFile, log); err != nil {
			return nil, err
		}
		for i, r := range cfg.Rules {
			for _, u := range r.Users {
				if !p.users.has(u) {
					// Not fatal: the user may be added to the file later.
					log.Warn("access rule names a user the htpasswd file does not hold", "rule", i+1, "user", u)
				}
			}
		}
	}
	return p, nil
}

// Enabled reports whether the policy restricts anything. When it does not,
// Wrap returns its handler unchanged; the caller should warn at startup that
// access control is off.
func (p *Policy) Enabled() bool {
	return p.users != nil || len(p.cfg.AllowNetworks) > 0 || len(p.cfg.Rules) > 0
}

// Summary describes the policy for the startup log, without secrets, e.g.
// "htpasswd /etc/ecr-mirror/htpasswd: 3 users (bcrypt); networks:
// 10.0.0.0/8; rules: pull:*:*; push:ci-bot:team".
func (p *Policy) Summary() string {
	if !p.Enabled() {
		return "off: every client may pull (and push, when push is on)"
	}
	var parts []string
	if p.users != nil {
		parts = append(parts, fmt.Sprintf("htpasswd %s: %d users (bcrypt)", p.cfg.HtpasswdFile, p.users.count()))
	} else {
		parts = append(parts, "authentication off")
	}
	if len(p.cfg.AllowNetworks) > 0 {
		nets := make([]string, len(p.cfg.AllowNetworks))
		for i, n := range p.cfg.AllowNetworks {
			nets[i] = n.String()
		}
		parts = append(parts, "networks: "+strings.Join(nets, ", "))
	} else {
		parts = append(parts, "networks: all")
	}
	switch rules := p.cfg.Rules; {
	case len(rules) == 0 && p.users != nil:
		parts = append(parts, "rules: none (every authenticated user may pull and push)")
	case len(rules) == 0:
		parts = append(parts, "rules: none (every allowed client may pull and push)")
	default:
		text := make([]string, len(rules))
		for i, r := range rules {
			text[i] = r.String()
		}
		if s := strings.Join(text, "; "); len(s) <= 200 {
			parts = append(parts, "rules: "+s)
		} else {
			parts = append(parts, fmt.Sprintf("rules: %d", len(rules)))
		}
	}
	return strings.Join(parts, "; ")
}

type userKey struct{}

// User returns the authenticated user of a request that Wrap let through,
// or "" when authentication is off.
func User(ctx context.Context) string {
	u, _ := ctx.Value(userKey{}).(string)
	return u
}

// Wrap returns next behind the policy. Every request, whatever its path,
// must come from AllowNetworks; /v2/ requests must also pass the login and
// the rules, while others (probes, metrics) need no login. Requests let
// through carry their user (see User) and no longer carry the
// Authorization header.
func (p *Policy) Wrap(next http.Handler) http.Handler {
	if !p.Enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(next, w, r)
	})
}

// Messages clients see; they say what to do, not which rule refused.
const (
	challenge = `Basic realm="ecr-mirror"`
	msgLogin  = "authentication required: log in to the mirror with a user from its htpasswd file"
	msgBadPw  = "authentication failed: wrong user name or password"
	msgNet    = "access denied: the mirror does not serve this client's network"
)

func (p *Policy) serve(next http.Handler, w http.ResponseWriter, r *http.Request) {
	addr := clientAddr(r.RemoteAddr)
	if len(p.cfg.AllowNetworks) > 0 && !inNetworks(addr, p.cfg.AllowNetworks) {
		p.deny(w, r, slog.LevelWarn, "", "client network not allowed", registry.Errorf(registry.CodeDenied, msgNet))
		return
	}
	route, perr := registry.ParseRequest(r.Method, r.URL.Path)
	if errors.Is(perr, registry.ErrNotRegistryPath) {
		next.ServeHTTP(w, r)
		return
	}
	var user string
	if p.users != nil {
		u, pw, ok := r.BasicAuth()
		if !ok {
			// Every login starts with an anonymous request that gets this
			// challenge: routine, so not a warning.
			p.deny(w, r, slog.LevelDebug, "", "no credentials", unauthorized(msgLogin))
			return
		}
		if !p.login(w, r, addr, u, pw) {
			return
		}
		user = u
	}
	if len(p.cfg.Rules) > 0 && route.Kind != registry.KindBase {
		if perr != nil {
			// A path the registry would refuse anyway names nothing the
			// rules could grant.
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			registry.WriteError(w, r, perr)
			return
		}
		want := Pull
		if route.Kind == registry.KindUpload || r.Method != http.MethodGet && r.Method != http.MethodHead {
			want = Push
		}
		if !p.allowed(user, addr, route.Name, want) {
			what := fmt.Sprintf("repository %q", route.Name)
			if route.Name == "" {
				what = "the catalog"
			}
			p.deny(w, r, slog.LevelWarn, user, "no rule grants "+want.String(),
				registry.Errorf(registry.CodeDenied, "access denied: may not %s %s", want, what))
			return
		}
		if route.Kind == registry.KindUpload && r.Method == http.MethodPost {
			vetted, e := p.vetMount(r, user, addr)
			if e != nil {
				w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
				registry.WriteError(w, r, e)
				return
			}
			r = vetted
		}
	}
	r2 := r.WithContext(context.WithValue(r.Context(), userKey{}, user))
	if _, ok := r.Header["Authorization"]; ok {
		// The credentials are for the mirror; nothing past here needs them.
		r2.Header = r.Header.Clone()
		r2.Header.Del("Authorization")
	}
	next.ServeHTTP(w, r2)
}

// login checks Basic credentials; when they fail, it has answered and
// logged why. A storm of wrong logins is refused (429 with Retry-After)
// without running bcrypt, see htpasswd.check; it is logged at warn once per
// address blocked and at debug per request, so that it cannot flood the log.
func (p *Policy) login(w http.ResponseWriter, r *http.Request, addr netip.Addr, user, pw string) bool {
	v, retry := p.users.check(user, pw, addr, true)
	switch v {
	case verdictOK:
		return true
	case verdictWrong, verdictKnown:
		reason := "wrong password"
		if !p.users.has(user) {
			reason = "unknown user"
		}
		level := slog.LevelWarn
		if v == verdictKnown {
			reason += " (again)"
			level = slog.LevelDebug
		}
		p.deny(w, r, level, user, reason, unauthorized(msgBadPw))
		if v == verdictWrong {
			if left, blocked := p.users.throttle.blocked(addr); blocked {
				p.log.LogAttrs(r.Context(), slog.LevelWarn, "too many failed logins: address blocked",
					slog.String("client", r.RemoteAddr), slog.Duration("for", left.Round(time.Second)))
			}
		}
	case verdictBlocked:
		p.deny(w, r, slog.LevelDebug, user, "address blocked after failed logins",
			tooManyLogins(retry, "too many failed logins from this address: retry later"))
	case verdictBusy:
		p.deny(w, r, slog.LevelDebug, user, "every bcrypt slot busy",
			tooManyLogins(retry, "the mirror is busy checking other logins: retry shortly"))
	}
	return false
}

// tooManyLogins is a 429 TOOMANYREQUESTS that says when to retry, in whole
// seconds, at least one.
func tooManyLogins(retry time.Duration, msg string) *registry.Error {
	e := registry.Errorf(registry.CodeTooManyRequests, "%s", msg)
	secs := max(1, int64((retry+time.Second-1)/time.Second))
	e.Header = http.Header{"Retry-After": {strconv.FormatInt(secs, 10)}}
	return e
}

// allowed reports whether some rule grants user at addr level on the
// repository name ("" for all of them).
func (p *Policy) allowed(user string, addr netip.Addr, name string, level Level) bool {
	for i := range p.cfg.Rules {
		r := &p.cfg.Rules[i]
		if r.Level >= level && r.matches(user, addr) && r.covers(name) {
			return true
		}
	}
	return false
}

func unauthorized(msg string) *registry.Error {
	e := registry.Errorf(registry.CodeUnauthorized, "%s", msg)
	e.Header = http.Header{"Www-Authenticate": {challenge}}
	return e
}

// deny answers r with e and logs it: client, user, method and path, never
// credentials.
func (p *Policy) deny(w http.ResponseWriter, r *http.Request, level slog.Level, user, reason string, e *registry.Error) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	registry.WriteError(w, r, e)
	attrs := []slog.Attr{
		slog.String("client", r.RemoteAddr),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", e.HTTPStatus()),
		slog.String("reason", reason),
	}
	if user != "" {
		attrs = append(attrs, slog.String("user", shorten(user)))
	}
	p.log.LogAttrs(r.Context(), level, "access denied", attrs...)
}

// shorten keeps a client-chosen user name in a log line short.
func shorten(user string) string {
	if len(user) > 64 {
		return user[:64] + "..."
	}
	return user
}

// clientAddr parses r.RemoteAddr ("ip:port", or a bare IP when a proxy
// layer has rewritten it); the zero Addr when it is neither.
func clientAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(remote); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}
