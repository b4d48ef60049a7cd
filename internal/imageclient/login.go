package imageclient

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Login is a user name and password the client sends the registry as
// Basic credentials (a mirror with HTPASSWD_FILE asks for them).
type Login struct {
	Username, Password string
	// Source says where they came from, for messages: "--username",
	// "the Docker config". Never the password.
	Source string
}

// LoginError is a registry asking for a login (401) that the client has
// not got, or refusing the one it sent. Its text names the registry and,
// for a refused login, the user and where the login came from; never a
// password.
type LoginError struct {
	// Registry is the registry's URL, without credentials.
	Registry string
	// Login is the login refused; nil when there was none to send.
	Login *Login
	// Err is why the keychain gave no login, when it failed.
	Err error
}

func (e *LoginError) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("%s asks for a login, and reading one for it failed: %v", e.Registry, e.Err)
	case e.Login == nil:
		return fmt.Sprintf("%s asks for a login, and none is given for it", e.Registry)
	}
	return fmt.Sprintf("%s refused the login of user %q (from %s): wrong user name or password", e.Registry, e.Login.Username, e.Login.Source)
}

func (e *LoginError) Unwrap() error { return e.Err }

// Ping checks that the registry answers its API (GET /v2/), logging in
// when it asks: with Options.Login when set, else with the login
// Options.Keychain holds for its host, looked up only then (so a registry
// that asks for none never runs a credential helper). A login missing or
// refused is a *LoginError; every later request carries the login taken.
func (c *Client) Ping(ctx context.Context) error {
	err := c.ping(ctx)
	if !IsStatus(err, http.StatusUnauthorized) {
		return err
	}
	if l := c.login.Load(); l != nil {
		return &LoginError{Registry: c.base.String(), Login: l}
	}
	l, kerr := c.keychainLogin(ctx)
	switch {
	case kerr != nil:
		return &LoginError{Registry: c.base.String(), Err: kerr}
	case l == nil:
		return &LoginError{Registry: c.base.String()}
	}
	c.login.Store(l)
	if err := c.ping(ctx); IsStatus(err, http.StatusUnauthorized) {
		return &LoginError{Registry: c.base.String(), Login: l}
	} else if err != nil {
		return err
	}
	return nil
}

// ping GETs /v2/.
func (c *Client) ping(ctx context.Context) error {
	u := c.base.JoinPath("v2")
	u.Path += "/"
	resp, err := c.do(ctx, u, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError("/v2/", resp)
	}
	return nil
}

// keychainLogin is the keychain's login for the registry's host; nil
// when it has none (or the client no keychain).
func (c *Client) keychainLogin(ctx context.Context) (*Login, error) {
	if c.keychain == nil {
		return nil, nil
	}
	reg, err := name.NewRegistry(c.base.Host)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w", c.base.Host, err)
	}
	auth, err := authn.Resolve(ctx, c.keychain, reg)
	if err != nil {
		return nil, fmt.Errorf("the Docker config's login for %s: %w", c.base.Host, err)
	}
	if auth == authn.Anonymous {
		return nil, nil
	}
	cfg, err := authn.Authorization(ctx, auth)
	if err != nil {
		return nil, fmt.Errorf("the Docker config's login for %s: %w", c.base.Host, err)
	}
	return loginOf(cfg, c.base.Host)
}

// loginOf is the user name and password of a Docker config entry: its
// username and password, or its auth (base64 of user:password).
func loginOf(cfg *authn.AuthConfig, host string) (*Login, error) {
	l := &Login{Username: cfg.Username, Password: cfg.Password, Source: "the Docker config"}
	if l.Username == "" && cfg.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(cfg.Auth)
		if err != nil {
			return nil, fmt.Errorf("the Docker config's login for %s: its auth is not base64", host)
		}
		var ok bool
		if l.Username, l.Password, ok = strings.Cut(string(raw), ":"); !ok {
			return nil, fmt.Errorf("the Docker config's login for %s: its auth is not user:password", host)
		}
	}
	if l.Username == "" {
		if cfg.IdentityToken != "" || cfg.RegistryToken != "" {
			return nil, fmt.Errorf("the Docker config's login for %s is a token; the mirror takes a user name and password", host)
		}
		return nil, nil
	}
	return l, nil
}

// loginTransport adds the client's login, once it has one, to every
// request to the registry's own scheme and host: never to another host
// (a redirect) nor over plain HTTP when the registry is HTTPS.
type loginTransport struct {
	next http.RoundTripper
	c    *Client
}

func (t *loginTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	l := t.c.login.Load()
	if l == nil || req.URL.Host != t.c.base.Host || req.URL.Scheme != t.c.base.Scheme || req.Header.Get("Authorization") != "" {
		return t.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.SetBasicAuth(l.Username, l.Password)
	return t.next.RoundTrip(req)
}

// withLogin is client with its requests sent through a loginTransport
// for c.
func withLogin(client *http.Client, c *Client) *http.Client {
	out := *client
	next := client.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	out.Transport = &loginTransport{next: next, c: c}
	return &out
}
