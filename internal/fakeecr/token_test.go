package fakeecr

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestTokenAPI(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := Start(t, Options{Now: clk.Now, TokenTTL: time.Hour, TokenPasswordLen: 6000})
	c := newClient(t)

	post := func(headers ...string) response {
		return do(t, c, http.MethodPost, f.TokenURL()+"/", headers...)
	}
	target := "X-Amz-Target: " + targetGetAuthorizationToken

	for _, tc := range []struct {
		name     string
		headers  []string
		wantType string
	}{
		{"unsigned", []string{target}, "MissingAuthenticationTokenException"},
		{"basic auth is not SigV4", []string{target, "Authorization: Basic QVdTOng="}, "MissingAuthenticationTokenException"},
		{"unknown operation", []string{"X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.ListImages", "Authorization: " + sigV4}, "UnknownOperationException"},
		{"no target", []string{"Authorization: " + sigV4}, "UnknownOperationException"},
	} {
		r := post(tc.headers...)
		var e awsError
		if err := json.Unmarshal(r.body, &e); err != nil || r.StatusCode != http.StatusBadRequest || e.Type != tc.wantType || e.Message == "" {
			t.Errorf("%s: status %d body %q, want 400 %s", tc.name, r.StatusCode, r.body, tc.wantType)
		}
	}

	r := post(target, "Authorization: "+sigV4, "Content-Type: application/x-amz-json-1.1")
	if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		t.Fatalf("status %d, Content-Type %q: %s", r.StatusCode, r.Header.Get("Content-Type"), r.body)
	}
	var out struct {
		AuthorizationData []struct {
			AuthorizationToken string          `json:"authorizationToken"`
			ExpiresAt          json.RawMessage `json:"expiresAt"`
			ProxyEndpoint      string          `json:"proxyEndpoint"`
		} `json:"authorizationData"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || len(out.AuthorizationData) != 1 {
		t.Fatalf("body %q: %v", r.body, err)
	}
	ad := out.AuthorizationData[0]
	if ad.ProxyEndpoint != f.URL() {
		t.Errorf("proxyEndpoint %q, want %q", ad.ProxyEndpoint, f.URL())
	}
	var exp float64 // a JSON number of epoch seconds, not a string
	if err := json.Unmarshal(ad.ExpiresAt, &exp); err != nil {
		t.Fatalf("expiresAt %s is not a number: %v", ad.ExpiresAt, err)
	}
	if want := float64(clk.Now().Add(time.Hour).Unix()); math.Abs(exp-want) > 0.001 {
		t.Errorf("expiresAt %v, want %v", exp, want)
	}
	creds, err := base64.StdEncoding.DecodeString(ad.AuthorizationToken)
	if err != nil {
		t.Fatalf("token is not base64: %v", err)
	}
	password, ok := strings.CutPrefix(string(creds), "AWS:")
	if !ok || len(password) != 6000 {
		t.Fatalf("token decodes to %.20q... (%d bytes), want AWS:<6000-byte password>", creds, len(creds))
	}

	// A token over 4 KiB works against the registry as issued.
	if r := do(t, c, http.MethodGet, f.URL()+"/v2/", "Authorization: Basic "+ad.AuthorizationToken); r.StatusCode != http.StatusOK {
		t.Errorf("GET /v2/ with the issued token: %d %s", r.StatusCode, r.body)
	}
	if got := f.Counters(); got.TokenRequests != 5 || got.TokensIssued != 1 {
		t.Errorf("TokenRequests %d, TokensIssued %d; want 5, 1", got.TokenRequests, got.TokensIssued)
	}
}

func TestOptionsValidation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"negative TTL", Options{TokenTTL: -time.Second}},
		{"huge password", Options{TokenPasswordLen: 1 << 30}},
		{"negative password", Options{TokenPasswordLen: -1}},
		{"presign under a second", Options{PresignTTL: time.Millisecond}},
		{"presign over a week", Options{PresignTTL: 8 * 24 * time.Hour}},
		{"tags page too big", Options{TagsPageSize: 5000}},
		{"bad address", Options{RegistryAddr: "nope"}},
		{"bad S3 address", Options{S3Addr: "127.0.0.1:99999"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if f, err := New(tc.opts); err == nil {
				f.Close()
				t.Fatalf("New(%+v) succeeded", tc.opts)
			}
		})
	}
}
