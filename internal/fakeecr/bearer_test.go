package fakeecr

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// bearerToken asks the fake's Bearer realm for scope, with extra headers,
// and returns the answer and its token.
func bearerToken(t *testing.T, c *http.Client, f *Server, scope string, headers ...string) (response, string) {
	t.Helper()
	r := do(t, c, http.MethodGet, f.URL()+"/token?service="+url.QueryEscape(f.Host())+"&scope="+url.QueryEscape(scope), headers...)
	var out struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if r.StatusCode == http.StatusOK {
		if err := json.Unmarshal(r.body, &out); err != nil || out.Token == "" || out.Token != out.AccessToken {
			t.Fatalf("token answer %q: %v", r.body, err)
		}
	}
	return r, out.Token
}

func TestBearerModeDemandsTheRegistryTokenFlow(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := Start(t, Options{Bearer: true, TokenTTL: 5 * time.Minute, Now: clk.Now})
	dgst := f.PutBlob("team/app", []byte("layer"))
	c := newClient(t)
	blobURL := f.URL() + "/v2/team/app/blobs/" + dgst.String()

	r := do(t, c, http.MethodGet, blobURL)
	wantOCIError(t, r, http.StatusUnauthorized, codeUnauthorized)
	want := `Bearer realm="` + f.URL() + `/token",service="` + f.Host() + `",scope="repository:team/app:pull"`
	if got := r.Header.Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge = %q, want %q", got, want)
	}
	if r := do(t, c, http.MethodGet, f.URL()+"/v2/", "Authorization: Basic "+token(t, f)); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("an ECR token was accepted in Bearer mode: %d", r.StatusCode)
	}

	r, tok := bearerToken(t, c, f, "repository:team/app:pull")
	if r.StatusCode != http.StatusOK || !strings.Contains(string(r.body), `"expires_in":300`) {
		t.Fatalf("token endpoint = %d %q, want a token with expires_in 300", r.StatusCode, r.body)
	}
	if r := do(t, c, http.MethodGet, blobURL, "Authorization: Bearer "+tok); r.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("blob GET with the token = %d, want 307 to S3", r.StatusCode)
	}
	wantOCIError(t, do(t, c, http.MethodGet, f.URL()+"/v2/team/other/manifests/latest", "Authorization: Bearer "+tok),
		http.StatusUnauthorized, codeUnauthorized) // another repository's scope
	wantOCIError(t, do(t, c, http.MethodPost, f.URL()+"/v2/team/app/blobs/uploads/", "Authorization: Bearer "+tok),
		http.StatusUnauthorized, codeUnauthorized) // a pull token does not push

	clk.Advance(5 * time.Minute)
	wantOCIError(t, do(t, c, http.MethodGet, blobURL, "Authorization: Bearer "+tok), http.StatusUnauthorized, codeUnauthorized)
	if ctr := f.Counters(); ctr.TokenRequests != 2 || ctr.TokensIssued != 2 {
		t.Errorf("counters: %d token requests, %d issued; want 2 and 2 (one ECR token, one Bearer)", ctr.TokenRequests, ctr.TokensIssued)
	}
}

func TestBearerModeLogin(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{Bearer: true, BearerLogin: "alice:s3cret"})
	c := newClient(t)
	basic := func(login string) string {
		return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(login))
	}
	for _, tc := range []struct {
		name    string
		headers []string
		want    int
	}{
		{name: "anonymous", want: http.StatusUnauthorized},
		{name: "wrong password", headers: []string{basic("alice:guess")}, want: http.StatusUnauthorized},
		{name: "login", headers: []string{basic("alice:s3cret")}, want: http.StatusOK},
	} {
		if r, _ := bearerToken(t, c, f, "repository:a:pull", tc.headers...); r.StatusCode != tc.want {
			t.Errorf("%s: token endpoint = %d, want %d", tc.name, r.StatusCode, tc.want)
		}
	}
	if _, err := New(Options{BearerLogin: "alice:s3cret"}); err == nil {
		t.Error("BearerLogin without Bearer was accepted")
	}
}
