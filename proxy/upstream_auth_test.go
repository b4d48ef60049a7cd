package proxy

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// TestRegistryLoginThroughRedirectPolicy pulls through a proxy whose
// upstream wants another registry's token flow (the fake in Bearer mode,
// behind a login from a Docker config.json), with the auth transport
// wrapped by the redirect policy as main wires it: blobs come from S3
// with no Authorization, tokens come once per repository.
func TestRegistryLoginThroughRedirectPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{
		edge: edgeOptions{fake: fakeecr.Options{Bearer: true, BearerLogin: "alice:s3cret"}},
		upstreamAuth: func(fake *fakeecr.Server, host string, rt http.RoundTripper) http.RoundTripper {
			path := filepath.Join(t.TempDir(), "config.json")
			login := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
			if err := os.WriteFile(path, []byte(`{"auths":{"`+fake.Host()+`":{"auth":"`+login+`"}}}`), 0o600); err != nil {
				t.Fatal(err)
			}
			dc, err := auth.LoadDockerConfig(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			return dc.Transport(host, rt)
		},
	})

	for i, repo := range []string{"team/app", "team/lib"} {
		data := testkit.RandomBytes(uint64(i+1), 8192)
		dgst := e.fake.PutBlob(repo, data)
		resp, body := e.mustDo(t, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), nil)
		if resp.StatusCode != http.StatusOK || string(body) != string(data) {
			t.Fatalf("GET %s blob: %d with %d bytes, want 200 with the blob", repo, resp.StatusCode, len(body))
		}
	}
	ctr := e.fake.Counters()
	if ctr.TokensIssued != 2 || ctr.S3AuthRejected != 0 {
		t.Errorf("fake issued %d tokens (want 2, one per repository) and S3 refused %d requests with Authorization (want 0)",
			ctr.TokensIssued, ctr.S3AuthRejected)
	}
	if len(ctr.S3Get) != 2 {
		t.Errorf("S3 served %d blobs, want 2", len(ctr.S3Get))
	}
}
