package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
)

// Token is an ECR registry credential: the base64 "AWS:<password>" string
// exactly as GetAuthorizationToken returns it, and its expiry.
//
// Its String, GoString, Format and LogValue methods never print the secret.
// The secret sits behind a *string so that even fmt's reflection over a
// struct holding a Token in an unexported field (where Format cannot be
// called) prints an address, not the credential; fmt dereferences pointers
// to structs, slices and maps, but not to strings. Compare tokens with
// Equal, not ==.
type Token struct {
	secret *string
	// ExpiresAt is when ECR stops accepting the token.
	ExpiresAt time.Time
}

// NewToken returns a Token for basic, the value sent after "Basic " in the
// Authorization header, expiring at expiresAt.
func NewToken(basic string, expiresAt time.Time) Token {
	if basic == "" {
		return Token{ExpiresAt: expiresAt}
	}
	return Token{secret: &basic, ExpiresAt: expiresAt}
}

// Basic returns the Authorization header value after "Basic ". It is the
// only way to read the secret; never log what it returns.
func (t Token) Basic() string {
	if t.secret == nil {
		return ""
	}
	return *t.secret
}

// IsZero reports whether t holds no credential.
func (t Token) IsZero() bool { return t.Basic() == "" }

// Equal reports whether t and u carry the same credential.
func (t Token) Equal(u Token) bool { return t.Basic() == u.Basic() }

// Valid reports whether t holds a credential that has not expired at now.
func (t Token) Valid(now time.Time) bool {
	return !t.IsZero() && now.Before(t.ExpiresAt)
}

// String describes t without the secret, e.g. "ecr-token(expires 2026-01-02T15:04:05Z)".
func (t Token) String() string {
	if t.IsZero() {
		return "ecr-token(none)"
	}
	return "ecr-token(expires " + t.ExpiresAt.UTC().Format(time.RFC3339) + ")"
}

// GoString implements fmt.GoStringer (%#v) without the secret.
func (t Token) GoString() string { return "auth.Token(" + t.String() + ")" }

// Format implements fmt.Formatter so that every verb (%v, %+v, %s, %q, %x,
// %d, …) prints String and never the secret.
func (t Token) Format(f fmt.State, verb rune) {
	s := t.String()
	switch {
	case verb == 'v' && f.Flag('#'):
		s = t.GoString()
	case verb == 'q':
		s = `"` + s + `"`
	}
	_, _ = io.WriteString(f, s)
}

// LogValue implements slog.LogValuer: logs show the expiry, never the secret.
func (t Token) LogValue() slog.Value { return slog.StringValue(t.String()) }

// FetchFunc gets a fresh token. It is injected into a Source so that tests
// never reach AWS; ECRFetcher returns the production one.
type FetchFunc func(ctx context.Context) (Token, error)

// ECRFetcher returns a FetchFunc that calls ECR GetAuthorizationToken with
// client for the caller's default registry. It rejects a response with no
// authorizationData, a missing token or expiry, or a token that is not
// base64 of "AWS:<password>"; its errors never contain the token.
func ECRFetcher(client *ecr.Client) FetchFunc {
	return func(ctx context.Context) (Token, error) {
		if client == nil {
			return Token{}, errors.New("ecr GetAuthorizationToken: no ECR client configured")
		}
		out, err := client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
		if err != nil {
			return Token{}, fmt.Errorf("ecr GetAuthorizationToken: %w", err)
		}
		if out == nil || len(out.AuthorizationData) == 0 {
			return Token{}, errors.New("ecr GetAuthorizationToken: response has no authorizationData")
		}
		data := out.AuthorizationData[0]
		if data.AuthorizationToken == nil || *data.AuthorizationToken == "" {
			return Token{}, errors.New("ecr GetAuthorizationToken: response has no authorizationToken")
		}
		if data.ExpiresAt == nil || data.ExpiresAt.IsZero() {
			return Token{}, errors.New("ecr GetAuthorizationToken: response has no expiresAt")
		}
		if err := checkBasic(*data.AuthorizationToken); err != nil {
			return Token{}, fmt.Errorf("ecr GetAuthorizationToken: %w", err)
		}
		return NewToken(*data.AuthorizationToken, *data.ExpiresAt), nil
	}
}

// checkBasic verifies that basic is base64 of "AWS:<non-empty password>".
// Its errors describe the shape only: the decoding error of encoding/base64
// names a byte offset, never content.
func checkBasic(basic string) error {
	raw, err := base64.StdEncoding.DecodeString(basic)
	if err != nil {
		return fmt.Errorf("authorizationToken is not valid base64 (%d bytes): %w", len(basic), err)
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || user != "AWS" || password == "" {
		return errors.New(`authorizationToken does not decode to "AWS:<password>"`)
	}
	return nil
}

// NewECRClient loads the AWS SDK default configuration (environment keys,
// shared profile and SSO, web identity/IRSA, container credentials/EKS Pod
// Identity, EC2 IMDS) for region and builds an ecr.Client.
//
// An empty region leaves it to the SDK (AWS_REGION, AWS_DEFAULT_REGION,
// shared config); it is an error if none is found. The SDK itself honours
// AWS_ENDPOINT_URL_ECR and AWS_ENDPOINT_URL; a non-empty endpoint (an
// absolute http or https URL) overrides them through ecr.Options.BaseEndpoint.
// Credentials are resolved lazily, on the first API call. opts (such as
// WithUserAgent) apply after the region.
func NewECRClient(ctx context.Context, region, endpoint string, opts ...ClientOption) (*ecr.Client, error) {
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("auth: ECR endpoint %q is not an absolute http(s) URL", endpoint)
		}
	}
	var load []ClientOption
	if region != "" {
		load = append(load, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, append(load, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("auth: load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return nil, errors.New("auth: no AWS region: pass one or set AWS_REGION")
	}
	client := ecr.NewFromConfig(cfg, func(o *ecr.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
	return client, nil
}
