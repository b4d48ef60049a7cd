package auth_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// TestRegistryTransportPullsFromFakeECRInBearerMode pulls blobs through the
// fake ECR's Bearer mode, whose S3 refuses any request with Authorization:
// one token per repository scope, the login at the realm only.
func TestRegistryTransportPullsFromFakeECRInBearerMode(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	f := fakeecr.Start(t, fakeecr.Options{Bearer: true, BearerLogin: "alice:s3cret", TokenTTL: 5 * time.Minute, Now: clock.Now})
	blobs := map[string][]byte{"team/app": []byte("app layer"), "team/lib": []byte("lib layer")}
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig(f.Host(), "alice", "s3cret")), nil)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := secretFreeLogs(t, "s3cret", "fakeecr-bearer-")
	client := &http.Client{Transport: auth.NewRegistryTransport(f.Host(), ownTransport(t),
		auth.RegistryOptions{Login: dc.Login(f.Host()), Logger: log, Now: clock.Now})}
	for range 3 {
		for repo, data := range blobs {
			dgst := f.PutBlob(repo, data)
			status, body := get(t, client, f.URL()+"/v2/"+repo+"/blobs/"+dgst.String())
			if status != http.StatusOK || body != string(data) {
				t.Fatalf("GET %s blob = %d %q, want its bytes", repo, status, body)
			}
		}
	}
	ctr := f.Counters()
	if ctr.TokensIssued != 2 || ctr.TokenRequests != 2 {
		t.Errorf("6 pulls of 2 repositories: %d token requests, %d issued; want 2 and 2", ctr.TokenRequests, ctr.TokensIssued)
	}
	if ctr.Unauthorized != 1 {
		t.Errorf("registry answered %d 401s, want 1 (the first challenge; the second repository's token is fetched ahead)", ctr.Unauthorized)
	}
	if ctr.S3AuthRejected != 0 {
		t.Errorf("S3 refused %d requests that carried Authorization", ctr.S3AuthRejected)
	}
	for _, r := range ctr.Requests {
		if r.Endpoint == fakeecr.EndpointS3 && r.Authorization {
			t.Errorf("S3 request %s %s carried Authorization", r.Method, r.Path)
		}
	}
}
