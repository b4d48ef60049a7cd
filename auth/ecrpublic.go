package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ecrpublic"
	"github.com/google/go-containerregistry/pkg/authn"
)

const (
	// ECRPublicHost is ECR Public's registry host.
	ECRPublicHost = "public.ecr.aws"
	// ECRPublicRegion is the one region ECR Public's API answers in.
	ECRPublicRegion = "us-east-1"

	// loginRetryMin and loginRetryMax space SourceLogin's attempts after a
	// failed token fetch: doubling from one to the other.
	loginRetryMin = time.Minute
	loginRetryMax = time.Hour
)

// NewECRPublicClient loads the AWS SDK default configuration in
// us-east-1 and builds an ecrpublic.Client. The SDK honours
// AWS_ENDPOINT_URL_ECR_PUBLIC and AWS_ENDPOINT_URL; a non-empty endpoint
// (an absolute http or https URL) overrides them. Credentials are resolved
// lazily, on the first call: missing ones fail that call, not this one.
// opts (such as WithUserAgent) apply after the region.
func NewECRPublicClient(ctx context.Context, endpoint string, opts ...ClientOption) (*ecrpublic.Client, error) {
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("auth: ECR Public endpoint %q is not an absolute http(s) URL", endpoint)
		}
	}
	cfg, err := config.LoadDefaultConfig(ctx, append([]ClientOption{config.WithRegion(ECRPublicRegion)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("auth: load AWS config for ECR Public: %w", err)
	}
	return ecrpublic.NewFromConfig(cfg, func(o *ecrpublic.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// ECRPublicFetcher returns a FetchFunc that calls ECR Public's
// GetAuthorizationToken with client. Its token is base64 of
// "<user>:<password>" (user AWS), a login for public.ecr.aws's token realm
// that raises the anonymous rate limits; give the Source to SourceLogin.
// Its errors never contain the token.
func ECRPublicFetcher(client *ecrpublic.Client) FetchFunc {
	return func(ctx context.Context) (Token, error) {
		if client == nil {
			return Token{}, errors.New("ecr-public GetAuthorizationToken: no ECR Public client configured")
		}
		out, err := client.GetAuthorizationToken(ctx, &ecrpublic.GetAuthorizationTokenInput{})
		if err != nil {
			return Token{}, fmt.Errorf("ecr-public GetAuthorizationToken: %w", err)
		}
		if out == nil || out.AuthorizationData == nil {
			return Token{}, errors.New("ecr-public GetAuthorizationToken: response has no authorizationData")
		}
		data := out.AuthorizationData
		if data.AuthorizationToken == nil || *data.AuthorizationToken == "" {
			return Token{}, errors.New("ecr-public GetAuthorizationToken: response has no authorizationToken")
		}
		if data.ExpiresAt == nil || data.ExpiresAt.IsZero() {
			return Token{}, errors.New("ecr-public GetAuthorizationToken: response has no expiresAt")
		}
		if _, _, err := decodeLogin(*data.AuthorizationToken); err != nil {
			return Token{}, fmt.Errorf("ecr-public GetAuthorizationToken: %w", err)
		}
		return NewToken(*data.AuthorizationToken, *data.ExpiresAt), nil
	}
}

// decodeLogin splits a base64 "<user>:<password>" token. Its errors
// describe the shape only.
func decodeLogin(basic string) (user, password string, err error) {
	raw, err := base64.StdEncoding.DecodeString(basic)
	if err != nil {
		return "", "", fmt.Errorf("authorizationToken is not valid base64 (%d bytes): %w", len(basic), err)
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok || user == "" || password == "" {
		return "", "", errors.New(`authorizationToken does not decode to "<user>:<password>"`)
	}
	return user, password, nil
}

// SourceLogin returns a Login presenting src's token (base64 of
// "<user>:<password>", as ECRPublicFetcher's) as a username and password.
// After a failed fetch it answers with that error, without asking src,
// for a minute, doubling to an hour while fetches keep failing, so a
// mirror with no AWS credentials does not probe for them on every token;
// give it to a RegistryTransport with AnonymousFallback, which then pulls
// anonymously and logs that once. Give src a quiet Logger (nil discards):
// its own warnings on each failed fetch would repeat that line, hourly.
// src need not Run: SourceLogin asks it on demand.
func SourceLogin(src *Source) Login {
	l := &sourceLogin{src: src}
	return l.login
}

type sourceLogin struct {
	src *Source

	mu      sync.Mutex
	retryAt time.Time
	wait    time.Duration
	lastErr error
}

func (l *sourceLogin) login(ctx context.Context) (authn.AuthConfig, error) {
	now := l.src.now()
	l.mu.Lock()
	if now.Before(l.retryAt) {
		err := l.lastErr
		l.mu.Unlock()
		return authn.AuthConfig{}, err
	}
	l.mu.Unlock()
	tok, err := l.src.Token(ctx)
	if err == nil {
		var user, pass string
		if user, pass, err = decodeLogin(tok.Basic()); err == nil {
			l.mu.Lock()
			l.wait, l.lastErr = 0, nil
			l.mu.Unlock()
			return authn.AuthConfig{Username: user, Password: pass}, nil
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wait = min(max(2*l.wait, loginRetryMin), loginRetryMax)
	l.retryAt, l.lastErr = now.Add(l.wait), err
	return authn.AuthConfig{}, err
}
