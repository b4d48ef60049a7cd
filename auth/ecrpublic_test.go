package auth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

const getPublicTokenTarget = "SpencerFrontendService.GetAuthorizationToken"

// publicTokenAnswer is ECR Public's GetAuthorizationToken answer: one
// authorizationData object, not a list as ECR's.
func publicTokenAnswer(basic string, expiresAt int64) string {
	return fmt.Sprintf(`{"authorizationData":{"authorizationToken":%q,"expiresAt":%d}}`, basic, expiresAt)
}

// TestECRPublicFetcher calls the real SDK against a local ECR Public
// token API (t.Setenv: not in parallel).
func TestECRPublicFetcher(t *testing.T) {
	isolateAWSEnv(t)
	good := b64("AWS:public-s3cret")
	for _, tc := range []struct {
		name, body string
		status     int
		wantErr    string
	}{
		{name: "ok", body: publicTokenAnswer(good, 1893456000)},
		{name: "no authorizationData", body: `{}`, wantErr: "no authorizationData"},
		{name: "no token", body: `{"authorizationData":{"expiresAt":1893456000}}`, wantErr: "no authorizationToken"},
		{name: "no expiry", body: `{"authorizationData":{"authorizationToken":"` + good + `"}}`, wantErr: "no expiresAt"},
		{name: "not user:password", body: publicTokenAnswer(b64("public-s3cret"), 1893456000), wantErr: `"<user>:<password>"`},
		{name: "denied", status: http.StatusBadRequest, body: `{"__type":"AccessDeniedException","message":"not allowed"}`, wantErr: "AccessDeniedException"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeECR{status: tc.status, body: tc.body, target: getPublicTokenTarget}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			client, err := auth.NewECRPublicClient(t.Context(), srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := auth.ECRPublicFetcher(client)(t.Context())
			reqs := fake.recorded()
			if len(reqs) != 1 || reqs[0].target != getPublicTokenTarget ||
				!strings.Contains(reqs[0].authorization, "/us-east-1/ecr-public/aws4_request") {
				t.Fatalf("fake ECR Public saw %+v, want one GetAuthorizationToken signed for us-east-1/ecr-public", reqs)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), "s3cret") {
					t.Fatalf("error %v, want one saying %q without the token", err, tc.wantErr)
				}
				return
			}
			if err != nil || tok.Basic() != good || !tok.ExpiresAt.Equal(time.Unix(1893456000, 0)) {
				t.Fatalf("token %v, %v; want the answer's token and expiry", tok, err)
			}
		})
	}
}

// TestECRPublicLoginFallsBackToAnonymous pulls through a Bearer registry
// standing for public.ecr.aws with an ECR Public Source as login
// (t.Setenv: not in parallel).
func TestECRPublicLoginFallsBackToAnonymous(t *testing.T) {
	awsLogin := "Basic " + b64("AWS:public-s3cret")
	for _, tc := range []struct {
		name        string
		noKeys      bool
		apiStatus   int
		apiBody     string
		realmUsers  map[string]string
		wantRealm   []string // Authorization of each realm request
		wantWarning bool
	}{
		{name: "authenticated", realmUsers: map[string]string{"AWS": "public-s3cret"},
			wantRealm: []string{awsLogin, awsLogin, awsLogin}},
		{name: "no AWS credentials", noKeys: true, wantRealm: []string{"", "", ""}, wantWarning: true},
		{name: "GetAuthorizationToken refused", apiStatus: http.StatusBadRequest,
			apiBody:   `{"__type":"AccessDeniedException","message":"not allowed"}`,
			wantRealm: []string{"", "", ""}, wantWarning: true},
		{name: "realm refuses the token", realmUsers: map[string]string{},
			wantRealm: []string{awsLogin, "", "", ""}, wantWarning: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolateAWSEnv(t)
			if tc.noKeys {
				t.Setenv("AWS_ACCESS_KEY_ID", "")
				t.Setenv("AWS_SECRET_ACCESS_KEY", "")
			}
			clock := newFakeClock()
			api := &fakeECR{status: tc.apiStatus, target: getPublicTokenTarget,
				body: cmpOr(tc.apiBody, publicTokenAnswer(b64("AWS:public-s3cret"), clock.Now().Add(12*time.Hour).Unix()))}
			apiSrv := httptest.NewServer(api)
			defer apiSrv.Close()
			client, err := auth.NewECRPublicClient(t.Context(), apiSrv.URL)
			if err != nil {
				t.Fatal(err)
			}
			src := auth.NewSource(auth.ECRPublicFetcher(client), auth.Options{Now: clock.Now})
			log, logs := secretFreeLogs(t, "public-s3cret", b64("AWS:public-s3cret"))
			realm := newTokenServer(t, tc.realmUsers)
			reg := newTestRegistry(t, realm, "", "")
			rt := auth.NewRegistryTransport(reg.host(), ownTransport(t), auth.RegistryOptions{
				Login: auth.SourceLogin(src), AnonymousFallback: true, Logger: log, Now: clock.Now})
			httpClient := &http.Client{Transport: rt}
			for _, repo := range []string{"a", "b", "c"} {
				if status, body := get(t, httpClient, reg.URL+"/v2/"+repo+"/manifests/latest"); status != http.StatusOK {
					t.Fatalf("GET %s = %d %s, want 200 (anonymous at worst)", repo, status, body)
				}
			}
			var got []string
			for _, r := range realm.seen() {
				got = append(got, r.authorization)
			}
			if strings.Join(got, "|") != strings.Join(tc.wantRealm, "|") {
				t.Errorf("realm saw Authorization %q, want %q", got, tc.wantRealm)
			}
			if n := strings.Count(logs.String(), "pulling anonymously"); n != btoi(tc.wantWarning) {
				t.Errorf("anonymous fallback logged %d times, want %d:\n%s", n, btoi(tc.wantWarning), logs.String())
			}
			if n := len(api.recorded()); n > 1 {
				t.Errorf("GetAuthorizationToken was asked %d times for three pulls within a minute, want at most once", n)
			}
		})
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
