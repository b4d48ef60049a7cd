package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

const (
	deniedExpired = `{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}`
	deniedIAM     = `{"errors":[{"code":"DENIED","message":"User: arn:aws:sts::123456789012:assumed-role/mirror/x is not authorized to perform: ecr:BatchGetImage on resource: arn:aws:ecr:eu-west-1:123456789012:repository/app"}]}`
	// tokenMarker is base64 of "AWS:pw", the start of every fake token.
	tokenMarker = "QVdTOnB3"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fakeRegistry accepts "Basic <b64 AWS:pw-N>" for N >= minValid and
// answers rejectStatus/rejectBody otherwise. Blob GETs redirect to s3.
type fakeRegistry struct {
	t            *testing.T
	minValid     int
	rejectStatus int
	rejectBody   string
	s3URL        string

	mu     sync.Mutex
	auths  []string // Authorization of each request
	bodies []string // request bodies
}

func (r *fakeRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	a := req.Header.Get("Authorization")
	r.mu.Lock()
	r.auths = append(r.auths, a)
	r.bodies = append(r.bodies, string(body))
	r.mu.Unlock()

	if n, ok := tokenNumber(a); !ok || n < r.minValid {
		if r.rejectStatus == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Basic realm="https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/",service="ecr.amazonaws.com"`)
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(r.rejectStatus)
		_, _ = io.WriteString(w, r.rejectBody)
		return
	}
	switch {
	case strings.Contains(req.URL.Path, "/blobs/"):
		http.Redirect(w, req, r.s3URL+"/starport-layer-bucket/layer?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc", http.StatusTemporaryRedirect)
	case req.Method == http.MethodPost:
		_, _ = w.Write(body)
	default:
		_, _ = io.WriteString(w, "registry-ok")
	}
}

func (r *fakeRegistry) seen() (auths, bodies []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.auths...), append([]string(nil), r.bodies...)
}

// tokenNumber extracts N from "Basic <b64 AWS:pw-N>".
func tokenNumber(header string) (int, bool) {
	b, ok := strings.CutPrefix(header, "Basic ")
	if !ok {
		return 0, false
	}
	raw, err := base64.StdEncoding.DecodeString(b)
	if err != nil {
		return 0, false
	}
	n, ok := strings.CutPrefix(string(raw), "AWS:pw-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(n)
	return i, err == nil
}

// fakeS3 fails the test if a request carries Authorization, as S3 does
// for presigned URLs ("Only one auth mechanism allowed").
func fakeS3(t *testing.T) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			t.Errorf("S3 got Authorization %q on %s", a, r.URL)
			http.Error(w, "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>", http.StatusBadRequest)
			return
		}
		if r.URL.Query().Get("X-Amz-Signature") == "" {
			http.Error(w, "not presigned", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "layer-bytes")
	}))
}

type transportEnv struct {
	reg    *fakeRegistry
	regSrv *httptest.Server
	s3     *httptest.Server
	fetch  *fakeFetcher
	src    *auth.Source
	logs   *lockedBuffer
	client *http.Client
}

func newTransportEnv(t *testing.T, minValid, rejectStatus int, rejectBody string) *transportEnv {
	t.Helper()
	e := &transportEnv{logs: &lockedBuffer{}}
	e.s3 = fakeS3(t)
	t.Cleanup(e.s3.Close)
	e.reg = &fakeRegistry{t: t, minValid: minValid, rejectStatus: rejectStatus, rejectBody: rejectBody, s3URL: e.s3.URL}
	e.regSrv = httptest.NewServer(e.reg)
	t.Cleanup(e.regSrv.Close)
	e.fetch = &fakeFetcher{now: time.Now, lifetime: 12 * time.Hour}
	logger := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.src = auth.NewSource(e.fetch.Fetch, auth.Options{Logger: logger})
	regHost := strings.TrimPrefix(e.regSrv.URL, "http://")
	// A transport of its own: http.DefaultTransport's idle connections
	// are closed by every parallel test's httptest.Server.Close, which
	// would break a retried POST that reuses one.
	base := &http.Transport{}
	t.Cleanup(base.CloseIdleConnections)
	e.client = &http.Client{Transport: e.src.Transport(regHost, base)}
	t.Cleanup(func() {
		if out := e.logs.String(); strings.Contains(out, tokenMarker) || strings.Contains(out, "pw-") {
			t.Errorf("log output contains a token:\n%s", out)
		}
	})
	return e
}

func TestTransportRejections(t *testing.T) {
	t.Parallel()
	large := `{"errors":[{"code":"DENIED","message":"` + strings.Repeat("x", 100<<10) + `"}]}`
	tests := []struct {
		name         string
		minValid     int // first token the registry accepts
		rejectStatus int
		rejectBody   string
		method, body string
		noGetBody    bool // send a body the transport cannot replay

		wantStatus  int
		wantBody    string
		wantHits    int
		wantFetches int64
		wantTokens  []int // token number of each request; default 1, 2, ...
	}{
		{name: "valid token", minValid: 1, wantStatus: 200, wantBody: "registry-ok", wantHits: 1, wantFetches: 1},
		{name: "401 then refresh and retry", minValid: 2, rejectStatus: 401, rejectBody: `{"errors":[{"code":"UNAUTHORIZED"}]}`,
			wantStatus: 200, wantBody: "registry-ok", wantHits: 2, wantFetches: 2},
		{name: "403 DENIED expired then refresh and retry", minValid: 2, rejectStatus: 403, rejectBody: deniedExpired,
			wantStatus: 200, wantBody: "registry-ok", wantHits: 2, wantFetches: 2},
		{name: "second 401 returned as is", minValid: 99, rejectStatus: 401, rejectBody: "nope",
			wantStatus: 401, wantBody: "nope", wantHits: 2, wantFetches: 2},
		{name: "second 403 DENIED returned as is", minValid: 99, rejectStatus: 403, rejectBody: deniedExpired,
			wantStatus: 403, wantBody: deniedExpired, wantHits: 2, wantFetches: 2},
		{name: "403 IAM denial is not a token problem", minValid: 99, rejectStatus: 403, rejectBody: deniedIAM,
			wantStatus: 403, wantBody: deniedIAM, wantHits: 1, wantFetches: 1},
		{name: "403 without ECR error body", minValid: 99, rejectStatus: 403, rejectBody: "<html>forbidden</html>",
			wantStatus: 403, wantBody: "<html>forbidden</html>", wantHits: 1, wantFetches: 1},
		{name: "403 body over 64 KiB is returned whole", minValid: 99, rejectStatus: 403, rejectBody: large,
			wantStatus: 403, wantBody: large, wantHits: 1, wantFetches: 1},
		{name: "HEAD 403 asks with GET, which says expired: refresh and retry", minValid: 2, rejectStatus: 403, rejectBody: deniedExpired,
			method: http.MethodHead, wantStatus: 200, wantHits: 3, wantFetches: 2, wantTokens: []int{1, 1, 2}},
		{name: "HEAD 403 asks with GET, which says IAM denial: no refresh", minValid: 99, rejectStatus: 403, rejectBody: deniedIAM,
			method: http.MethodHead, wantStatus: 403, wantHits: 2, wantFetches: 1, wantTokens: []int{1, 1}},
		{name: "POST with GetBody is retried with the same body", minValid: 2, rejectStatus: 401,
			method: http.MethodPost, body: "payload", wantStatus: 200, wantBody: "payload", wantHits: 2, wantFetches: 2},
		{name: "POST without GetBody gets the 401, still refreshes", minValid: 2, rejectStatus: 401, rejectBody: "nope",
			method: http.MethodPost, body: "payload", noGetBody: true, wantStatus: 401, wantBody: "nope", wantHits: 1, wantFetches: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTransportEnv(t, tt.minValid, tt.rejectStatus, tt.rejectBody)
			method := cmpOr(tt.method, http.MethodGet)
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
				if tt.noGetBody {
					body = io.NopCloser(body) // hides the type http.NewRequest knows how to replay
				}
			}
			req, err := http.NewRequestWithContext(t.Context(), method, e.regSrv.URL+"/v2/", body)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			got, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if err != nil {
				t.Fatalf("read body: %v", err)
			}
			if resp.StatusCode != tt.wantStatus || string(got) != tt.wantBody {
				t.Errorf("got %d %.80q, want %d %.80q", resp.StatusCode, got, tt.wantStatus, tt.wantBody)
			}
			auths, bodies := e.reg.seen()
			if len(auths) != tt.wantHits {
				t.Errorf("registry hits = %d, want %d", len(auths), tt.wantHits)
			}
			for i, a := range auths {
				want := i + 1
				if tt.wantTokens != nil {
					want = tt.wantTokens[i]
				}
				if n, ok := tokenNumber(a); !ok || n != want {
					t.Errorf("request %d carried %q, want token %d", i, a, want)
				}
			}
			for i, b := range bodies {
				if b != tt.body {
					t.Errorf("request %d body = %q, want %q", i, b, tt.body)
				}
			}
			if n := e.fetch.calls.Load(); n != tt.wantFetches {
				t.Errorf("fetches = %d, want %d", n, tt.wantFetches)
			}
			if req.Header.Get("Authorization") != "" {
				t.Error("the caller's request was modified")
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func TestTransportRedirectToS3HasNoAuthorization(t *testing.T) {
	t.Parallel()
	e := newTransportEnv(t, 1, 401, "")
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req, err := http.NewRequestWithContext(t.Context(), method, e.regSrv.URL+"/v2/app/blobs/sha256:0123", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := e.client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		got, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d (%s), want 200 from S3", method, resp.StatusCode, got)
		}
		if method == http.MethodGet && string(got) != "layer-bytes" {
			t.Errorf("GET body = %q, want the S3 object", got)
		}
		if resp.Request.URL.Host == e.regSrv.Listener.Addr().String() {
			t.Errorf("%s: final request went to the registry, want S3", method)
		}
	}
	if auths, _ := e.reg.seen(); len(auths) != 2 || auths[0] == "" {
		t.Errorf("registry saw %d requests (%q), want 2 with a token", len(auths), auths)
	}
}

// recordingRT answers 200 and records the Authorization of each request.
type recordingRT struct {
	mu    sync.Mutex
	auths map[string]string // URL -> Authorization
}

func (r *recordingRT) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.auths[req.URL.String()] = req.Header.Get("Authorization")
	r.mu.Unlock()
	return &http.Response{StatusCode: 200, Body: http.NoBody, Request: req, Header: http.Header{}}, nil
}

func TestTransportAddsHeaderOnlyForRegistryHost(t *testing.T) {
	t.Parallel()
	const reg = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		name         string
		registryHost string
		url          string
		want         bool
	}{
		{"same host", reg, "https://" + reg + "/v2/", true},
		{"host differs in case", reg, "https://123456789012.DKR.ECR.eu-west-1.amazonaws.com/v2/", true},
		{"registry given in upper case", strings.ToUpper(reg), "https://" + reg + "/v2/", true},
		{"registry given as URL", "https://" + reg, "https://" + reg + "/v2/", true},
		{"same host and port", "localhost:5000", "http://localhost:5000/v2/", true},
		{"other port", "localhost:5000", "http://localhost:5001/v2/", false},
		{"explicit port is another host string", reg, "https://" + reg + ":443/v2/", false},
		{"S3 presigned URL", reg, "https://prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com/x?X-Amz-Signature=a", false},
		{"suffix of the registry host", reg, "https://evil" + reg + "/v2/", false},
		{"registry host as a subdomain", reg, "https://" + reg + ".evil.example/v2/", false},
		{"registry host in the userinfo", reg, "https://" + reg + "@evil.example/v2/", false},
		{"empty registry host", "", "https://" + reg + "/v2/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeFetcher{now: time.Now, lifetime: time.Hour}
			rec := &recordingRT{auths: map[string]string{}}
			rt := auth.NewSource(f.Fetch, auth.Options{}).Transport(tt.registryHost, rec)
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := rt.RoundTrip(req)
			if err != nil {
				t.Fatalf("RoundTrip: %v", err)
			}
			_ = resp.Body.Close()
			got := rec.auths[tt.url]
			if (got != "") != tt.want {
				t.Errorf("Authorization = %q, want present=%v", got, tt.want)
			}
			if tt.want {
				if n, ok := tokenNumber(got); !ok || n != 1 {
					t.Errorf("Authorization = %q, want Basic with token 1", got)
				}
			} else if f.calls.Load() != 0 {
				t.Errorf("fetched a token for a foreign host")
			}
			if req.Header.Get("Authorization") != "" {
				t.Error("the caller's request was modified")
			}
		})
	}
}

func TestTransportCredentialFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		firstOK   bool // the first fetch works (and is rejected), later ones fail
		wantFetch int64
	}{
		{name: "no token at all", wantFetch: 1},
		{name: "refresh after rejection fails", firstOK: true, wantFetch: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newTransportEnv(t, 99, http.StatusUnauthorized, "")
			var calls atomic.Int64
			errNo := errors.New("ECR said no")
			fetch := func(context.Context) (auth.Token, error) {
				if n := calls.Add(1); tt.firstOK && n == 1 {
					return auth.NewToken(b64("AWS:pw-1"), time.Now().Add(time.Hour)), nil
				}
				return auth.Token{}, errNo
			}
			src := auth.NewSource(fetch, auth.Options{Logger: slog.New(slog.NewTextHandler(e.logs, nil))})
			regHost := e.regSrv.Listener.Addr().String()
			client := &http.Client{Transport: src.Transport(regHost, nil)}

			resp, err := client.Get(e.regSrv.URL + "/v2/")
			if err == nil {
				_ = resp.Body.Close()
				t.Fatalf("got %d, want an error", resp.StatusCode)
			}
			var ce *auth.CredentialsError
			if !errors.As(err, &ce) || ce.Host != regHost {
				t.Fatalf("error %v (%T), want *auth.CredentialsError for the registry", err, err)
			}
			if !errors.Is(err, errNo) {
				t.Errorf("error %v does not wrap the fetch error", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "could not obtain credentials for") || !strings.Contains(msg, "ECR said no") {
				t.Errorf("error %q should say the mirror could not obtain ECR credentials and why", msg)
			}
			if strings.Contains(msg, tokenMarker) || strings.Contains(msg, "pw-") {
				t.Errorf("error leaks a token: %q", msg)
			}
			if n := calls.Load(); n != tt.wantFetch {
				t.Errorf("fetches = %d, want %d", n, tt.wantFetch)
			}
			if !strings.Contains(e.logs.String(), "level=WARN") {
				t.Errorf("fetch failure not logged at warn:\n%s", e.logs.String())
			}
		})
	}
}

type closeRecorder struct {
	recordingRT
	closed atomic.Bool
}

func (c *closeRecorder) CloseIdleConnections() { c.closed.Store(true) }

func TestTransportCloseIdleConnections(t *testing.T) {
	t.Parallel()
	base := &closeRecorder{recordingRT: recordingRT{auths: map[string]string{}}}
	f := &fakeFetcher{now: time.Now, lifetime: time.Hour}
	client := &http.Client{Transport: auth.NewSource(f.Fetch, auth.Options{}).Transport("registry", base)}
	client.CloseIdleConnections()
	if !base.closed.Load() {
		t.Error("CloseIdleConnections did not reach the base transport")
	}
}
