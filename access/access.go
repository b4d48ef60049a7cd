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
	"sync"
	"sync/atomic"
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

// Policy enforces a Config on registry API requests. Update swaps in
// another Config while requests go on; each request is judged by one
// Config, the one in place when it arrived.
type Policy struct {
	log *slog.Logger
	// throttle outlives Updates: an address blocked after failed logins
	// stays blocked whatever the new configuration.
	throttle *throttle
	cur      atomic.Pointer[state]
	updateMu sync.Mutex // one Update at a time
}

// state is one Config in force, with its htpasswd file loaded.
type state struct {
	cfg   Config
	users *htpasswd // nil: no authentication
}

// New validates cfg and loads its htpasswd file. A nil logger discards.
func New(cfg Config, log *slog.Logger) (*Policy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Policy{log: log, throttle: newThrottle(time.Now)}
	st, err := p.build(cfg, nil)
	if err != nil {
		return nil, err
	}
	p.cur.Store(st)
	return p, nil
}

// Update validates cfg and puts it in force for the requests that follow,
// as New would have built it; on an error the Config in force stays. An
// htpasswd file of the same path is kept as loaded (it reloads itself
// when it changes), with the logins it has verified and refused; the
// login throttle (failure counts, blocked addresses) is kept whatever
// changes.
func (p *Policy) Update(cfg Config) error {
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	st, err := p.build(cfg, p.cur.Load())
	if err != nil {
		return err
	}
	p.cur.Store(st)
	return nil
}

// build checks cfg and loads its htpasswd file, reusing prev's when it
// names the same one.
func (p *Policy) build(cfg Config, prev *state) (*state, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	st := &state{cfg: cfg}
	if cfg.HtpasswdFile == "" {
		return st, nil
	}
	if prev != nil && prev.users != nil && prev.users.path == cfg.HtpasswdFile {
		st.users = prev.users
	} else {
		var err error
		if st.users, err = newHtpasswd(cfg.HtpasswdFile, p.log, p.throttle); err != nil {
			return nil, err
		}
	}
	for i, r := range cfg.Rules {
		for _, u := range r.Users {
			if !st.users.has(u) {
				// Not fatal: the user may be added to the file later.
				p.log.Warn("access rule names a user the htpasswd file does not hold", "rule", i+1, "user", u)
			}
		}
	}
	return st, nil
}

// validate checks what New and Update are given.
func validate(cfg Config) error {
	for i, n := range cfg.AllowNetworks {
		if !n.IsValid() {
			return fmt.Errorf("allowed network %d is not a valid CIDR", i+1)
		}
	}
	for i, r := range cfg.Rules {
		if r.Level != Pull && r.Level != Push {
			return fmt.Errorf("access rule %d (%s): level must be pull or push", i+1, r)
		}
		if !r.Everyone && len(r.Users) == 0 && len(r.Networks) == 0 {
			return fmt.Errorf("access rule %d (%s): names no subject", i+1, r)
		}
		if len(r.Repositories) == 0 {
			return fmt.Errorf("access rule %d (%s): names no repository", i+1, r)
		}
		if len(r.Users) > 0 && cfg.HtpasswdFile == "" {
			return fmt.Errorf("access rule %d (%s) names users, but there is no htpasswd file to authenticate them", i+1, r)
		}
	}
	return nil
}

// Enabled reports whether the policy now restricts anything. When it
// does not, the caller should warn that access control is off.
func (p *Policy) Enabled() bool {
	return p.cur.Load().enabled()
}

func (st *state) enabled() bool {
	return st.users != nil || len(st.cfg.AllowNetworks) > 0 || len(st.cfg.Rules) > 0
}

// Summary describes the policy for the startup log, without secrets, e.g.
// "htpasswd /etc/ecr-mirror/htpasswd: 3 users (bcrypt); networks:
// 10.0.0.0/8; rules: pull:*:*; push:ci-bot:team".
func (p *Policy) Summary() string {
	st := p.cur.Load()
	if !st.enabled() {
		return "off: every client may pull (and push, when push is on)"
	}
	var parts []string
	if st.users != nil {
		parts = append(parts, fmt.Sprintf("htpasswd %s: %d users (bcrypt)", st.cfg.HtpasswdFile, st.users.count()))
	} else {
		parts = append(parts, "authentication off")
	}
	if len(st.cfg.AllowNetworks) > 0 {
		nets := make([]string, len(st.cfg.AllowNetworks))
		for i, n := range st.cfg.AllowNetworks {
			nets[i] = n.String()
		}
		parts = append(parts, "networks: "+strings.Join(nets, ", "))
	} else {
		parts = append(parts, "networks: all")
	}
	switch rules := st.cfg.Rules; {
	case len(rules) == 0 && st.users != nil:
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

// Wrap returns next behind the policy (as Update changes it). Every
// request, whatever its path,
// must come from AllowNetworks; /v2/ requests must also pass the login and
// the rules, while others (probes, metrics) need no login. Requests let
// through carry their user (see User) and no longer carry the
// Authorization header.
func (p *Policy) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := p.cur.Load(); st.enabled() {
			p.serve(st, next, w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Messages clients see; they say what to do, not which rule refused.
const (
	challenge = `Basic realm="ecr-mirror"`
	msgLogin  = "authentication required: log in to the mirror with a user from its htpasswd file"
	msgBadPw  = "authentication failed: wrong user name or password"
	msgNet    = "access denied: the mirror does not serve this client's network"
)

func (p *Policy) serve(st *state, next http.Handler, w http.ResponseWriter, r *http.Request) {
	addr := clientAddr(r.RemoteAddr)
	if len(st.cfg.AllowNetworks) > 0 && !inNetworks(addr, st.cfg.AllowNetworks) {
		p.deny(w, r, slog.LevelWarn, "", "client network not allowed", registry.Errorf(registry.CodeDenied, msgNet))
		return
	}
	route, perr := registry.ParseRequest(r.Method, r.URL.Path)
	if errors.Is(perr, registry.ErrNotRegistryPath) {
		next.ServeHTTP(w, r)
		return
	}
	var user string
	if st.users != nil {
		u, pw, ok := r.BasicAuth()
		if !ok {
			// Every login starts with an anonymous request that gets this
			// challenge: routine, so not a warning.
			p.deny(w, r, slog.LevelDebug, "", "no credentials", unauthorized(msgLogin))
			return
		}
		if !p.login(st.users, w, r, addr, u, pw) {
			return
		}
		user = u
	}
	if len(st.cfg.Rules) > 0 && route.Kind != registry.KindBase {
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
		if !st.allowed(user, addr, route.Name, want) {
			what := fmt.Sprintf("repository %q", route.Name)
			if route.Name == "" {
				what = "the catalog"
			}
			p.deny(w, r, slog.LevelWarn, user, "no rule grants "+want.String(),
				registry.Errorf(registry.CodeDenied, "access denied: may not %s %s", want, what))
			return
		}
		if route.Kind == registry.KindUpload && r.Method == http.MethodPost {
			vetted, e := p.vetMount(st, r, user, addr)
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
func (p *Policy) login(users *htpasswd, w http.ResponseWriter, r *http.Request, addr netip.Addr, user, pw string) bool {
	v, retry := users.check(user, pw, addr, true)
	switch v {
	case verdictOK:
		return true
	case verdictWrong, verdictKnown:
		reason := "wrong password"
		if !users.has(user) {
			reason = "unknown user"
		}
		level := slog.LevelWarn
		if v == verdictKnown {
			reason += " (again)"
			level = slog.LevelDebug
		}
		p.deny(w, r, level, user, reason, unauthorized(msgBadPw))
		if v == verdictWrong {
			if left, blocked := users.throttle.blocked(addr); blocked {
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
func (st *state) allowed(user string, addr netip.Addr, name string, level Level) bool {
	for i := range st.cfg.Rules {
		r := &st.cfg.Rules[i]
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
