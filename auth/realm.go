package auth

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
)

const (
	// maxTokenBody caps a token realm's answer (tokens are a few KiB).
	maxTokenBody = 1 << 20
	// defaultTokenLifetime applies when the realm gives no expires_in, as
	// the distribution token spec says.
	defaultTokenLifetime = 60 * time.Second
	// maxTokenMargin is the most a token is renewed ahead of its expiry;
	// shorter lives are renewed a tenth of their lifetime early.
	maxTokenMargin = 30 * time.Second
)

// RefusedError says a token realm refused the credentials presented (or
// an anonymous request): it answered 401 or 403.
type RefusedError struct {
	// Realm is the realm's scheme, host and path (never its query).
	Realm string
	// Status is the realm's HTTP status.
	Status int
	// WithLogin tells whether credentials were presented.
	WithLogin bool
}

// Error implements error.
func (e *RefusedError) Error() string {
	who := "an anonymous token request"
	if e.WithLogin {
		who = "the configured credentials"
	}
	return fmt.Sprintf("auth: token realm %s refused %s (%d)", e.Realm, who, e.Status)
}

// tokenRequest is one fetch of a registry token from a Bearer realm.
type tokenRequest struct {
	realm   *url.URL
	service string
	scopes  []string
	login   authn.AuthConfig // zero: anonymous
}

// parseRealm checks a challenge's realm: an absolute http or https URL.
func parseRealm(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("auth: the registry's token realm %q is not an absolute http(s) URL", raw)
	}
	return u, nil
}

// mayCarryLogin reports whether credentials may be sent to u: only over
// https, or to a loopback address (test servers).
func mayCarryLogin(u *url.URL) bool {
	if u.Scheme == "https" {
		return true
	}
	h := u.Hostname()
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.IsLoopback()
}

// hasLogin reports whether c carries anything to present.
func hasLogin(c authn.AuthConfig) bool {
	return c.Username != "" || c.Password != "" || c.Auth != "" || c.IdentityToken != "" || c.RegistryToken != ""
}

// requestToken asks tr.realm for a token and returns it as a Bearer
// credential renewed a margin before it expires. Redirects are not
// followed, so the login reaches the realm's host only. With an identity
// token the OAuth2 refresh-token grant is used (POST), otherwise a GET with
// Basic credentials or none.
func requestToken(ctx context.Context, rt http.RoundTripper, tr tokenRequest, now func() time.Time) (credential, error) {
	req, err := newTokenRequest(ctx, tr)
	if err != nil {
		return credential{}, err
	}
	where := tr.realm.Scheme + "://" + tr.realm.Host + tr.realm.Path
	resp, err := rt.RoundTrip(req)
	if err != nil {
		return credential{}, fmt.Errorf("auth: token realm %s: %w", where, err)
	}
	defer drain(resp)
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return credential{}, &RefusedError{Realm: where, Status: resp.StatusCode, WithLogin: hasLogin(tr.login)}
	case resp.StatusCode != http.StatusOK:
		return credential{}, fmt.Errorf("auth: token realm %s answered %d", where, resp.StatusCode)
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&body); err != nil {
		return credential{}, fmt.Errorf("auth: token realm %s answered no token JSON: %w", where, err)
	}
	tok := cmp.Or(body.Token, body.AccessToken)
	if tok == "" {
		return credential{}, fmt.Errorf("auth: token realm %s answered neither token nor access_token", where)
	}
	life := defaultTokenLifetime
	if body.ExpiresIn > 0 {
		life = time.Duration(min(body.ExpiresIn, int64(24*time.Hour/time.Second))) * time.Second
	}
	return newCredential("Bearer", tok, now().Add(life-min(life/10, maxTokenMargin))), nil
}

// newTokenRequest builds the realm request: service and scope parameters
// added to the realm's own query, the login attached as the token spec says.
func newTokenRequest(ctx context.Context, tr tokenRequest) (*http.Request, error) {
	u := *tr.realm
	q := u.Query()
	if tr.service != "" {
		q.Set("service", tr.service)
	}
	if tr.login.IdentityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.login.IdentityToken},
			"client_id": {"ecr-mirror"}, "service": {tr.service}, "scope": {strings.Join(tr.scopes, " ")}}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return nil, fmt.Errorf("auth: token request to %s: %w", u.Host, err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return req, nil
	}
	for _, s := range tr.scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("auth: token request to %s: %w", u.Host, err)
	}
	if user, pass, ok := basicLogin(tr.login); ok {
		req.SetBasicAuth(user, pass)
	}
	return req, nil
}

// basicLogin reads a username and password from c (decoding Auth when
// only it is set); ok is false when c has none.
func basicLogin(c authn.AuthConfig) (user, pass string, ok bool) {
	if c.Username != "" || c.Password != "" {
		return c.Username, c.Password, true
	}
	if c.Auth == "" {
		return "", "", false
	}
	raw, err := base64.StdEncoding.DecodeString(c.Auth)
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(raw), ":")
	return user, pass, ok
}

// basicHeader is the Basic credential for c; ok is false when c has no
// username and password.
func basicHeader(c authn.AuthConfig) (credential, bool) {
	user, pass, ok := basicLogin(c)
	if !ok {
		return credential{}, false
	}
	return newCredential("Basic", base64.StdEncoding.EncodeToString([]byte(user+":"+pass)), time.Time{}), true
}

// errNoLogin says a Basic challenge came and no credentials are configured.
var errNoLogin = errors.New("auth: the registry asks for credentials and none are configured")
