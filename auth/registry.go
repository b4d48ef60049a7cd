package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/singleflight"
)

// refusalMemory is how long a login the token realm refused is not
// presented again.
const refusalMemory = time.Minute

// Login returns the credentials to present to one registry and its token
// realm; a zero authn.AuthConfig means anonymous. DockerConfig.Login and
// SourceLogin make them.
type Login func(ctx context.Context) (authn.AuthConfig, error)

// RegistryOptions configure NewRegistryTransport. The zero value is
// usable: anonymous tokens only.
type RegistryOptions struct {
	// Login gives the registry's credentials; nil: anonymous.
	Login Login
	// AnonymousFallback makes the transport go on anonymously when Login
	// fails or the token realm refuses its credentials (logged once), as
	// for ECR Public, instead of passing the registry's 401 on.
	AnonymousFallback bool
	// Logger receives challenge and token events; nil discards them.
	Logger *slog.Logger
	// Now is the clock for token expiry; nil means time.Now.
	Now func() time.Time
	// FetchTimeout bounds one token fetch; 0 means 30s.
	FetchTimeout time.Duration
	// OnTokenFetch, when set, is called after every request to the token
	// realm with its error (nil when a token came), e.g. for metrics or
	// reachability. It must not block.
	OnTokenFetch func(err error)
}

// NewRegistryTransport returns an http.RoundTripper that answers a
// registry's own authentication challenges, for requests whose URL host
// equals registryHost (host[:port], case-insensitive, or a URL's host);
// every other
// request (a redirect to S3 or a CDN) goes to base untouched. A nil base
// means http.DefaultTransport.
//
// On a 401 with "WWW-Authenticate: Bearer realm=…,service=…,scope=…" it
// fetches a token from the realm for the request's repository scope
// (pull, or pull,push for writes, merged with the challenge's scope),
// anonymously or with the Login's Basic credentials, caches it per scope
// until a margin before it expires, and retries the request once. Once a
// registry has challenged, later requests fetch their scope's token ahead,
// so a new repository costs one token fetch and no 401. With "Basic" it
// sends the Login's credentials (to a plain-http registry too, the
// operator's choice, with a warning logged once), or passes the 401 on
// when there are none.
// A token the registry refuses without a challenge (ECR Public answers an
// expired one with 400 DENIED) is replaced and the request retried once.
// A request with a body is retried only when GetBody can replay it. When
// the realm refuses the credentials, the registry's 401 is returned as is:
// one retry at most, never a loop; the refused login is not presented
// again for a minute (with AnonymousFallback, tokens are fetched
// anonymously meanwhile).
//
// Credentials and tokens are added to a clone of the request, never the
// caller's, so an http.Client following a redirect cannot copy them to
// another host. The realm gets this registry's credentials only, only over
// https (or to a loopback address), and redirects from it are not
// followed. Tokens never appear in logs or errors. When a token cannot be
// had at all (the realm is unreachable or answers nonsense), RoundTrip
// returns a *CredentialsError.
func NewRegistryTransport(registryHost string, base http.RoundTripper, opts RegistryOptions) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if strings.Contains(registryHost, "://") {
		if u, err := url.Parse(registryHost); err == nil {
			registryHost = u.Host
		}
	}
	t := &registryTransport{
		host: registryHost, base: base, login: opts.Login, fallback: opts.AnonymousFallback,
		log: opts.Logger, now: opts.Now, fetchTimeout: opts.FetchTimeout, onFetch: opts.OnTokenFetch,
		tokens: newTokenCache(),
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if t.now == nil {
		t.now = time.Now
	}
	if t.fetchTimeout <= 0 {
		t.fetchTimeout = defaultFetchTimeout
	}
	return t
}

type registryTransport struct {
	host         string
	base         http.RoundTripper
	login        Login
	fallback     bool
	log          *slog.Logger
	now          func() time.Time
	fetchTimeout time.Duration
	onFetch      func(error)

	group       singleflight.Group
	fellBack    atomic.Bool // the anonymous fallback was logged
	httpRealmed atomic.Bool // the plain-http realm warning was logged
	plainBasic  atomic.Bool // the plain-http Basic login warning was logged

	tokens *tokenCache // Bearer tokens by scope

	mu      sync.Mutex
	scheme  string   // "bearer" or "basic" once the registry challenged
	realm   *url.URL // the Bearer realm
	service string
	basic   credential

	refusal      *RefusedError // the realm's last refusal of the login
	refusedUntil time.Time     // when the login may be presented again
}

// RoundTrip implements http.RoundTripper.
func (t *registryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL == nil || !strings.EqualFold(req.URL.Host, t.host) {
		return t.base.RoundTrip(req)
	}
	scope := requestScope(req)
	sent, err := t.ahead(req.Context(), scope)
	if err != nil {
		closeRequestBody(req)
		return nil, &CredentialsError{Host: t.host, Err: err}
	}
	resp, err := t.base.RoundTrip(withCredential(req, sent))
	switch {
	case err != nil:
		return nil, err
	case resp.StatusCode == http.StatusUnauthorized:
		return t.answer(req, resp, scope, sent)
	case sent.scheme == "Bearer" && rejectsBearer(req, resp):
		return t.renew(req, resp, scope, sent)
	}
	return resp, nil
}

// rejectsBearer reports whether resp refuses a Bearer token without a
// challenge: ECR Public answers an expired or invalid token with 400
// {"errors":[{"code":"DENIED"}]}, not 401. A HEAD has no body to tell, so
// any 400 to it counts. A 403 is a permission, not a token, matter.
func rejectsBearer(req *http.Request, resp *http.Response) bool {
	return resp.StatusCode == http.StatusBadRequest && (req.Method == http.MethodHead || deniesToken(resp))
}

// renew replaces the token the registry refused without a challenge
// (sent) with a new one from the realm it challenged with before, and
// retries once; the refusal is returned when no new token can be had.
func (t *registryTransport) renew(req *http.Request, resp *http.Response, scope string, sent credential) (*http.Response, error) {
	t.mu.Lock()
	realm, service := t.realm, t.service
	t.mu.Unlock()
	if realm == nil {
		return resp, nil
	}
	fresh, err := t.token(req.Context(), tokenRequest{realm: realm, service: service, scopes: scopesOf(scope, "")}, scope, sent)
	if err != nil || fresh.equal(sent) {
		t.log.Info("registry refused its token and no new one could be had", "host", t.host, "scope", scope, "error", err)
		return resp, nil
	}
	t.log.Info("registry refused its token without a challenge; retrying with a new one",
		"host", t.host, "scope", scope, "status", resp.StatusCode)
	return t.retry(req, resp, fresh)
}

// retry sends req again with cred, in place of resp, if req's body can be
// replayed; otherwise resp is the answer.
func (t *registryTransport) retry(req *http.Request, resp *http.Response, cred credential) (*http.Response, error) {
	if !replayable(req) {
		return resp, nil
	}
	again := withCredential(req, cred)
	if req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		again.Body = body
	}
	drain(resp)
	return t.base.RoundTrip(again)
}

// CloseIdleConnections passes through to base.
func (t *registryTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// ahead returns what to send before any challenge of this request: the
// cached credential for scope, or, once the registry is known to want
// Bearer tokens, a token fetched now. A refused fetch sends nothing, so
// that the registry's own 401 reaches the caller.
func (t *registryTransport) ahead(ctx context.Context, scope string) (credential, error) {
	t.mu.Lock()
	scheme, realm, service := t.scheme, t.realm, t.service
	cached := t.basic
	t.mu.Unlock()
	if scheme != "basic" {
		cached = t.tokens.get(scope)
	}
	if scheme == "" || cached.usable(t.now()) || scheme == "basic" || scope == "" {
		return cached, nil
	}
	cred, err := t.token(ctx, tokenRequest{realm: realm, service: service, scopes: []string{scope}}, scope, credential{})
	if _, refused := errors.AsType[*RefusedError](err); refused {
		return credential{}, nil
	}
	return cred, err
}

// answer handles the registry's 401 to a request that carried sent: it
// learns the challenge, gets a new credential and retries once, or
// returns the 401 when there is nothing new to try.
func (t *registryTransport) answer(req *http.Request, resp *http.Response, scope string, sent credential) (*http.Response, error) {
	ch, ok := pickChallenge(resp.Header)
	if !ok {
		return resp, nil
	}
	fresh, err := t.respond(req, ch, scope, sent)
	_, refused := errors.AsType[*RefusedError](err)
	switch {
	case refused || errors.Is(err, errNoLogin):
		t.log.Debug("passing the registry's 401 on", "host", t.host, "scope", scope, "error", err)
		return resp, nil
	case err != nil:
		drain(resp)
		return nil, &CredentialsError{Host: t.host, Err: err}
	case fresh.isZero() || fresh.equal(sent):
		return resp, nil
	}
	return t.retry(req, resp, fresh)
}

// respond learns challenge ch and returns the credential that answers it.
func (t *registryTransport) respond(req *http.Request, ch challenge, scope string, sent credential) (credential, error) {
	ctx := req.Context()
	if ch.scheme == "basic" {
		t.mu.Lock()
		t.scheme = "basic"
		t.mu.Unlock()
		cred, err := t.basicCredential(ctx)
		if err == nil && !mayCarryLogin(req.URL) && !t.plainBasic.Swap(true) {
			t.log.Warn("the registry asks for its login over plain http: it crosses the network readable; use https",
				"host", t.host)
		}
		return cred, err
	}
	realm, err := parseRealm(ch.params["realm"])
	if err != nil {
		return credential{}, err
	}
	t.mu.Lock()
	t.scheme, t.realm, t.service = "bearer", realm, ch.params["service"]
	t.mu.Unlock()
	key := scope
	if key == "" {
		key = ch.params["scope"]
	}
	tr := tokenRequest{realm: realm, service: ch.params["service"], scopes: scopesOf(scope, ch.params["scope"])}
	return t.token(ctx, tr, key, sent)
}

// basicCredential is the Login's Basic credential, cached for the
// requests ahead; errNoLogin when there is none.
func (t *registryTransport) basicCredential(ctx context.Context) (credential, error) {
	login, err := t.credentials(ctx)
	if err != nil {
		return credential{}, err
	}
	cred, ok := basicHeader(login)
	if !ok {
		return credential{}, errNoLogin
	}
	t.mu.Lock()
	t.basic = cred
	t.mu.Unlock()
	return cred, nil
}

// token returns the Bearer token for key: the cached one unless it is
// stale (the one the registry just refused) or due, else one fetched for
// tr. Concurrent fetches for one key are merged, and run detached from
// the caller that started them, bounded by the fetch timeout.
func (t *registryTransport) token(ctx context.Context, tr tokenRequest, key string, stale credential) (credential, error) {
	flight := tr.realm.String() + " " + tr.service + " " + key
	if !stale.isZero() {
		// A refresh after a refusal: a flight that may answer with the
		// refused token itself is no use to it.
		flight += " refresh"
	}
	ch := t.group.DoChan(flight, func() (any, error) {
		if cur := t.tokens.get(key); cur.usable(t.now()) && !cur.equal(stale) {
			return cur, nil
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.fetchTimeout)
		defer cancel()
		cred, err := t.fetchToken(fctx, tr)
		if err != nil {
			return credential{}, err
		}
		t.tokens.put(key, cred, t.now())
		t.log.Debug("fetched registry token", "host", t.host, "scope", key, "token", cred)
		return cred, nil
	})
	select {
	case <-ctx.Done():
		return credential{}, fmt.Errorf("auth: waiting for a token for %s: %w", t.host, context.Cause(ctx))
	case r := <-ch:
		cred, _ := r.Val.(credential)
		return cred, r.Err
	}
}

// fetchToken asks the realm with the Login, falling back to an anonymous
// request when so configured. A login the realm refused is not presented
// again for refusalMemory: meanwhile requests go anonymously (with
// AnonymousFallback) or get the refusal without asking the realm, so a
// wrong password does not hammer it (or lock the account).
func (t *registryTransport) fetchToken(ctx context.Context, tr tokenRequest) (credential, error) {
	login, err := t.credentials(ctx)
	if err != nil {
		return credential{}, err
	}
	if login.RegistryToken != "" {
		return newCredential("Bearer", login.RegistryToken, time.Time{}), nil
	}
	if hasLogin(login) && !mayCarryLogin(tr.realm) {
		if !t.httpRealmed.Swap(true) {
			t.log.Warn("token realm is plain http: fetching tokens anonymously, credentials are sent over https only",
				"host", t.host, "realm_host", tr.realm.Host)
		}
		login = authn.AuthConfig{}
	}
	if refusal := t.recentRefusal(); refusal != nil && hasLogin(login) {
		if !t.fallback {
			return credential{}, refusal
		}
		login = authn.AuthConfig{}
	}
	tr.login = login
	cred, err := t.askRealm(ctx, tr)
	refusal, refused := errors.AsType[*RefusedError](err)
	if !refused || !hasLogin(login) {
		return cred, err
	}
	t.mu.Lock()
	t.refusal, t.refusedUntil = refusal, t.now().Add(refusalMemory)
	t.mu.Unlock()
	if !t.fallback {
		t.log.Warn("token realm refused the configured login; check it (not presented again for a minute)",
			"host", t.host, "error", err)
		return cred, err
	}
	t.fallBack(err)
	tr.login = authn.AuthConfig{}
	return t.askRealm(ctx, tr)
}

// askRealm is one token request, reported to OnTokenFetch.
func (t *registryTransport) askRealm(ctx context.Context, tr tokenRequest) (credential, error) {
	cred, err := requestToken(ctx, t.base, tr, t.now)
	if t.onFetch != nil {
		t.onFetch(err)
	}
	return cred, err
}

// recentRefusal is the realm's refusal of the login if it is recent.
func (t *registryTransport) recentRefusal() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.refusal == nil || !t.now().Before(t.refusedUntil) {
		return nil
	}
	return t.refusal
}

// credentials calls the Login; with AnonymousFallback its failure means
// anonymous.
func (t *registryTransport) credentials(ctx context.Context) (authn.AuthConfig, error) {
	if t.login == nil {
		return authn.AuthConfig{}, nil
	}
	login, err := t.login(ctx)
	if err != nil && t.fallback {
		t.fallBack(err)
		return authn.AuthConfig{}, nil
	}
	if err != nil {
		return authn.AuthConfig{}, fmt.Errorf("auth: credentials for %s: %w", t.host, err)
	}
	return login, nil
}

// fallBack logs, once, that the registry is used anonymously.
func (t *registryTransport) fallBack(cause error) {
	if !t.fellBack.Swap(true) {
		t.log.Warn("registry credentials unavailable or refused: pulling anonymously (lower rate limits)",
			"host", t.host, "error", cause)
	}
}

// withCredential returns a clone of req carrying cred, or req itself when
// cred is zero.
func withCredential(req *http.Request, cred credential) *http.Request {
	if cred.isZero() {
		return req
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", cred.value())
	return r
}

// replayable reports whether req can be sent again.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// closeRequestBody closes req's body, as RoundTrip must even when it fails.
func closeRequestBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
