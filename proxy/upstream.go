package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// errorBodyLimit caps how much of an upstream error body is read.
const errorBodyLimit = 64 << 10

// upstream sends requests to the ECR registry.
type upstream struct {
	base    *url.URL
	host    string // base's registry host, for UpstreamEvent
	client  *http.Client
	observe func(UpstreamEvent) // nil: none
}

// UpstreamEvent describes one request to ECR, for metrics.
type UpstreamEvent struct {
	Upstream string // the upstream's registry host
	Method   string
	Kind     string        // blob, manifest, tags
	Status   int           // 0 when no answer came
	Duration time.Duration // until the response headers
	// Failure says why no answer came: timeout, unreachable,
	// credentials or canceled; "" when one did.
	Failure string
}

// do sends a request for path (below /v2/) and returns the response when
// its status is one of ok. Any other answer, and any transport failure,
// becomes a *registry.Error for the client; k chooses the not-found
// code.
func (u *upstream) do(ctx context.Context, method, path string, hdr http.Header, k kind, ok ...int) (*http.Response, error) {
	target := *u.base
	target.Path = strings.TrimSuffix(u.base.Path, "/") + "/v2/" + path
	if p, q, found := strings.Cut(path, "?"); found {
		target.Path = strings.TrimSuffix(u.base.Path, "/") + "/v2/" + p
		target.RawQuery = q
	}
	req, err := http.NewRequestWithContext(ctx, method, target.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("building upstream request: %w", err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	start := time.Now()
	resp, err := u.client.Do(req)
	if u.observe != nil {
		ev := UpstreamEvent{Upstream: u.host, Method: method, Kind: string(k), Duration: time.Since(start)}
		if err != nil {
			ev.Failure = failure(err)
		} else {
			ev.Status = resp.StatusCode
		}
		u.observe(ev)
	}
	if err != nil {
		return nil, transportError(method, path, err)
	}
	for _, s := range ok {
		if resp.StatusCode == s {
			return resp, nil
		}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	return nil, statusError(method, path, k, resp, body)
}

// statusError maps an upstream error answer to what the client sees.
func statusError(method, path string, k kind, resp *http.Response, body []byte) *registry.Error {
	code, msg, parsed := registry.ParseErrorBody(body)
	where := fmt.Sprintf("upstream %s %s", method, path)
	switch s := resp.StatusCode; {
	case s == http.StatusNotFound:
		if !parsed {
			code, msg = notFoundCode(k), "not found upstream"
		}
		return &registry.Error{Status: s, Code: code, Message: msg}
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		// ECR's text may name the mirror's IAM role: logs only.
		return &registry.Error{Code: registry.CodeDenied,
			Message:  fmt.Sprintf("the upstream registry denied the mirror access to %s (%d)", path, s),
			Internal: orStatus(msg, s)}
	case s == http.StatusTooManyRequests:
		e := registry.Errorf(registry.CodeTooManyRequests, "the upstream registry is throttling the mirror: %s", orStatus(msg, s))
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			e.Header = http.Header{"Retry-After": {ra}}
		}
		return e
	case s >= 400 && s < 500 && parsed:
		return &registry.Error{Status: s, Code: code, Message: msg}
	default:
		return registry.Errorf(registry.CodeUnavailable, "%s answered %d: %s", where, s, orStatus(msg, s)).WithStatus(http.StatusBadGateway)
	}
}

func orStatus(msg string, status int) string {
	if msg != "" {
		return msg
	}
	return http.StatusText(status)
}

func notFoundCode(k kind) registry.Code {
	switch k {
	case kindBlob:
		return registry.CodeBlobUnknown
	case kindManifest:
		return registry.CodeManifestUnknown
	}
	return registry.CodeNameUnknown
}

// transportError explains a request that got no answer. What the client
// sees names the mirror's own request (method and path below /v2/) and
// never where upstream redirected it: the cause (with URLs shortened to
// scheme, host and path, since presigned S3 URLs carry credentials in
// their query) is Internal, for the logs only.
func transportError(method, path string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redactURL(ue.URL)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var ce *auth.CredentialsError
	if errors.As(err, &ce) {
		// The AWS SDK's account of its credential chain is for the logs.
		return &registry.Error{Status: http.StatusServiceUnavailable, Code: registry.CodeUnavailable,
			Message: "the mirror could not obtain credentials for the upstream registry", Internal: err.Error()}
	}
	status, what := http.StatusBadGateway, "unreachable"
	var ne net.Error
	var re *redirectError
	switch {
	case errors.As(err, &re):
		what = "redirected to a location the mirror does not follow"
	case errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded):
		status, what = http.StatusGatewayTimeout, "did not answer in time"
	}
	return &registry.Error{Status: status, Code: registry.CodeUnavailable,
		Message: fmt.Sprintf("the upstream registry %s (%s %s)", what, method, path), Internal: err.Error()}
}

// failure classifies a request that got no answer.
func failure(err error) string {
	var ce *auth.CredentialsError
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &ce):
		return "credentials"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "unreachable"
}

// redactURL drops the query and any user info of a URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	u.RawQuery, u.User, u.Fragment = "", nil, ""
	return u.String()
}
