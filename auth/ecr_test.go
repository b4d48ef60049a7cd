package auth_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/smithy-go"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

const getAuthTokenTarget = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"

// fakeECR speaks the ECR token API (AWS JSON 1.1) and records what it got.
type fakeECR struct {
	status int    // 0 means 200
	body   string // the JSON answer
	target string // the X-Amz-Target served; "" means ECR's GetAuthorizationToken

	mu       sync.Mutex
	calls    int
	requests []recordedRequest
}

type recordedRequest struct {
	method, path, target, contentType, authorization, body string
}

func (f *fakeECR) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.calls++
	f.requests = append(f.requests, recordedRequest{
		method:        r.Method,
		path:          r.URL.Path,
		target:        r.Header.Get("X-Amz-Target"),
		contentType:   r.Header.Get("Content-Type"),
		authorization: r.Header.Get("Authorization"),
		body:          string(b),
	})
	f.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/" || r.Header.Get("X-Amz-Target") != cmpOr(f.target, getAuthTokenTarget) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"__type":"UnknownOperationException","message":"unexpected request"}`)
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	if f.status != 0 {
		w.WriteHeader(f.status)
	}
	_, _ = io.WriteString(w, f.body)
}

func (f *fakeECR) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls, f.requests = 0, nil
}

func (f *fakeECR) recorded() []recordedRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedRequest(nil), f.requests...)
}

// tokenAnswer is a GetAuthorizationToken answer for basic expiring at expiresAt (epoch seconds).
func tokenAnswer(basic string, expiresAt float64) string {
	return fmt.Sprintf(`{"authorizationData":[{"authorizationToken":%q,"expiresAt":%s,"proxyEndpoint":"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"}]}`,
		basic, json.Number(fmt.Sprintf("%.3f", expiresAt)))
}

// isolateAWSEnv gives the SDK static fake keys and nothing else from the
// machine: no profiles, no IMDS, no endpoint overrides, one attempt per call.
func isolateAWSEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIDFAKEFORTESTS",
		"AWS_SECRET_ACCESS_KEY":       "fake-secret-for-tests",
		"AWS_SESSION_TOKEN":           "",
		"AWS_PROFILE":                 "",
		"AWS_DEFAULT_PROFILE":         "",
		"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
		"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_ENDPOINT_URL":            "",
		"AWS_ENDPOINT_URL_ECR":        "",
		"AWS_ENDPOINT_URL_ECR_PUBLIC": "",
		"AWS_MAX_ATTEMPTS":            "1",
		"AWS_REGION":                  "",
		"AWS_DEFAULT_REGION":          "",
		"AWS_ROLE_ARN":                "",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "",
	} {
		t.Setenv(k, v)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// TestECRFetcher calls the real SDK against a local ECR token API. It uses
// t.Setenv, so it cannot run in parallel.
func TestECRFetcher(t *testing.T) {
	isolateAWSEnv(t)
	const expires = 1893456000.241 // 2030-01-01T00:00:00.241Z
	wantExpiry := time.Unix(1893456000, 241e6)
	longBasic := b64("AWS:" + strings.Repeat("p", 6<<10))
	goodBasic := b64("AWS:s3cr3t-password")

	tests := []struct {
		name      string
		status    int
		body      string
		wantBasic string
		wantErr   []string // substrings of the error
		wantCode  string   // smithy API error code, if any
	}{
		{name: "ok", body: tokenAnswer(goodBasic, expires), wantBasic: goodBasic},
		{name: "token longer than 4 KiB", body: tokenAnswer(longBasic, expires), wantBasic: longBasic},
		{name: "empty authorizationData", body: `{"authorizationData":[]}`, wantErr: []string{"no authorizationData"}},
		{name: "no authorizationData", body: `{}`, wantErr: []string{"no authorizationData"}},
		{name: "null token", body: `{"authorizationData":[{"expiresAt":1893456000}]}`, wantErr: []string{"no authorizationToken"}},
		{name: "no expiresAt", body: `{"authorizationData":[{"authorizationToken":"` + goodBasic + `"}]}`, wantErr: []string{"no expiresAt"}},
		{name: "not base64", body: tokenAnswer("AWS:not-base64!!", expires), wantErr: []string{"not valid base64"}},
		{name: "not AWS user", body: tokenAnswer(b64("admin:pw"), expires), wantErr: []string{`"AWS:<password>"`}},
		{name: "empty password", body: tokenAnswer(b64("AWS:"), expires), wantErr: []string{`"AWS:<password>"`}},
		{
			name: "throttled", status: http.StatusBadRequest,
			body:    `{"__type":"ThrottlingException","message":"Rate exceeded"}`,
			wantErr: []string{"GetAuthorizationToken", "ThrottlingException", "Rate exceeded"}, wantCode: "ThrottlingException",
		},
		{
			name: "invalid parameter", status: http.StatusBadRequest,
			body:    `{"__type":"InvalidParameterException","message":"bad registry id"}`,
			wantErr: []string{"InvalidParameterException"}, wantCode: "InvalidParameterException",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeECR{status: tt.status, body: tt.body}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			ctx := t.Context()

			client, err := auth.NewECRClient(ctx, "eu-west-1", srv.URL)
			if err != nil {
				t.Fatalf("NewECRClient: %v", err)
			}
			tok, err := auth.ECRFetcher(client)(ctx)
			if err != nil && strings.Contains(err.Error(), "use of closed network connection") {
				// Seen once in many -race runs: the SDK's client lost its
				// connection while reading the answer (the mirror's Source
				// retries fetches the same way). Ask once more.
				fake.reset()
				tok, err = auth.ECRFetcher(client)(ctx)
			}

			reqs := fake.recorded()
			if len(reqs) != 1 {
				t.Fatalf("fake ECR got %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.method != http.MethodPost || r.path != "/" {
				t.Errorf("request = %s %s, want POST /", r.method, r.path)
			}
			if r.target != getAuthTokenTarget {
				t.Errorf("X-Amz-Target = %q, want %q", r.target, getAuthTokenTarget)
			}
			if r.contentType != "application/x-amz-json-1.1" {
				t.Errorf("Content-Type = %q", r.contentType)
			}
			if !strings.HasPrefix(r.authorization, "AWS4-HMAC-SHA256 ") ||
				!strings.Contains(r.authorization, "Credential=AKIDFAKEFORTESTS/") ||
				!strings.Contains(r.authorization, "/eu-west-1/ecr/aws4_request") {
				t.Errorf("request not SigV4-signed for eu-west-1/ecr: Authorization = %q", r.authorization)
			}

			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ECRFetcher: got token %v, want error", tok)
				}
				for _, s := range tt.wantErr {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not contain %q", err, s)
					}
				}
				if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "not-base64!!") {
					t.Errorf("error leaks the token: %q", err)
				}
				if tt.wantCode != "" {
					var apiErr smithy.APIError
					if !errors.As(err, &apiErr) || apiErr.ErrorCode() != tt.wantCode {
						t.Errorf("error %v: want smithy.APIError with code %s", err, tt.wantCode)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ECRFetcher: %v", err)
			}
			if tok.Basic() != tt.wantBasic {
				t.Errorf("Basic() = %d bytes, want the %d-byte token as returned", len(tok.Basic()), len(tt.wantBasic))
			}
			if d := tok.ExpiresAt.Sub(wantExpiry).Abs(); d > time.Millisecond {
				t.Errorf("ExpiresAt = %v, want %v", tok.ExpiresAt, wantExpiry)
			}
		})
	}
}

// TestNewECRClientEndpointFromEnv checks that with endpoint "" the SDK's own
// AWS_ENDPOINT_URL_ECR (and AWS_ENDPOINT_URL) are honoured, and that an
// explicit endpoint wins over them.
func TestNewECRClientEndpointFromEnv(t *testing.T) {
	tests := []struct {
		name     string
		env      string // variable pointed at the target server
		explicit bool   // pass the target as endpoint, point env at a decoy
	}{
		{name: "AWS_ENDPOINT_URL_ECR", env: "AWS_ENDPOINT_URL_ECR"},
		{name: "AWS_ENDPOINT_URL", env: "AWS_ENDPOINT_URL"},
		{name: "explicit endpoint beats env", env: "AWS_ENDPOINT_URL_ECR", explicit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateAWSEnv(t)
			basic := b64("AWS:pw")
			target := &fakeECR{body: tokenAnswer(basic, 1893456000)}
			decoy := &fakeECR{body: tokenAnswer(basic, 1893456000)}
			targetSrv, decoySrv := httptest.NewServer(target), httptest.NewServer(decoy)
			defer targetSrv.Close()
			defer decoySrv.Close()

			endpoint := ""
			if tt.explicit {
				t.Setenv(tt.env, decoySrv.URL)
				endpoint = targetSrv.URL
			} else {
				t.Setenv(tt.env, targetSrv.URL)
			}
			client, err := auth.NewECRClient(t.Context(), "eu-west-1", endpoint)
			if err != nil {
				t.Fatalf("NewECRClient: %v", err)
			}
			tok, err := auth.ECRFetcher(client)(t.Context())
			if err != nil {
				t.Fatalf("fetch: %v", err)
			}
			if tok.Basic() != basic {
				t.Errorf("got a different token than the server sent")
			}
			if n := len(target.recorded()); n != 1 {
				t.Errorf("target server got %d calls, want 1", n)
			}
			if n := len(decoy.recorded()); n != 0 {
				t.Errorf("decoy server got %d calls, want 0", n)
			}
		})
	}
}

func TestNewECRClientErrors(t *testing.T) {
	isolateAWSEnv(t)
	tests := []struct {
		name, region, endpoint, wantErr string
	}{
		{name: "no region anywhere", wantErr: "no AWS region"},
		{name: "endpoint without scheme", region: "eu-west-1", endpoint: "localhost:4566", wantErr: "not an absolute http(s) URL"},
		{name: "endpoint with other scheme", region: "eu-west-1", endpoint: "ftp://x", wantErr: "not an absolute http(s) URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewECRClient(t.Context(), tt.region, tt.endpoint)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewECRClient(%q, %q) error = %v, want one containing %q", tt.region, tt.endpoint, err, tt.wantErr)
			}
		})
	}

	t.Run("region from AWS_REGION", func(t *testing.T) {
		t.Setenv("AWS_REGION", "ap-southeast-2")
		c, err := auth.NewECRClient(t.Context(), "", "")
		if err != nil {
			t.Fatalf("NewECRClient: %v", err)
		}
		if got := c.Options().Region; got != "ap-southeast-2" {
			t.Errorf("region = %q", got)
		}
	})
}

func TestECRFetcherNilClient(t *testing.T) {
	t.Parallel()
	_, err := auth.ECRFetcher(nil)(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no ECR client") {
		t.Fatalf("error = %v, want 'no ECR client'", err)
	}
}
