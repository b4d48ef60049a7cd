package fakeecr

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// sigV4 is an Authorization header shaped like aws-sdk-go-v2's; the fake
// does not check the signature.
const sigV4 = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/ecr/aws4_request, " +
	"SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0123456789abcdef"

// clock is a settable clock for Options.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// newClient returns a client that does not follow redirects and opens a new
// connection per request (so dropped connections are not retried silently).
func newClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// response is a finished exchange.
type response struct {
	*http.Response
	body []byte
	err  error // from reading the body
}

// do sends a request with the given headers ("Key: value" strings) and reads
// the whole answer. It fails the test only if the request cannot be sent.
func do(t *testing.T, c *http.Client, method, url string, headers ...string) response {
	t.Helper()
	resp, err := try(c, method, url, headers...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// try is do that returns the transport error instead of failing.
func try(c *http.Client, method, url string, headers ...string) (response, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return response{}, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{Response: resp, body: body, err: err}, nil
}

// token gets a token through the token API.
func token(t *testing.T, f *Server) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.TokenURL(), strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	req.Header.Set("X-Amz-Target", targetGetAuthorizationToken)
	req.Header.Set("Authorization", sigV4)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		AuthorizationData []struct {
			AuthorizationToken string `json:"authorizationToken"`
		} `json:"authorizationData"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || len(out.AuthorizationData) != 1 {
		t.Fatalf("token API: status %d, decode error %v, %d entries", resp.StatusCode, err, len(out.AuthorizationData))
	}
	return out.AuthorizationData[0].AuthorizationToken
}

// ociErrors decodes an OCI error body.
func ociErrors(t *testing.T, body []byte) []ociError {
	t.Helper()
	var out struct {
		Errors []ociError `json:"errors"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("not an OCI error body: %q: %v", body, err)
	}
	return out.Errors
}

// wantOCIError checks a registry error answer.
func wantOCIError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d (body %q)", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
	if errs := ociErrors(t, r.body); len(errs) != 1 || errs[0].Code != code {
		t.Fatalf("%s %s: errors %+v, want code %s", r.Request.Method, r.Request.URL, errs, code)
	}
}

// wantS3Error checks an S3 XML error answer and returns its message.
func wantS3Error(t *testing.T, r response, status int, code string) string {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d (body %q)", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/xml" {
		t.Errorf("Content-Type %q, want application/xml", ct)
	}
	var e s3Error
	if err := xml.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("not an S3 error body: %q: %v", r.body, err)
	}
	if e.Code != code {
		t.Fatalf("S3 error code %q (%s), want %q", e.Code, e.Message, code)
	}
	return e.Message
}
