package main

import (
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/tlsreload/tlstest"
)

// loopback is a listener address on every interface (PULL_THROUGHS'
// prefix:port listens so) as a client on this machine reaches it.
func loopback(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// aws-ecr-http-proxy's PULL_THROUGHS=<prefix>:<port> opens a listener
// whose repositories are those under <prefix>/ in ECR: the client pulls
// library/app and the mirror asks ECR for docker-hub/library/app. The
// content is the one the ECR name serves on LISTEN_ADDR, downloaded once.
func TestPrefixListenerServesPullThroughRepository(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(32<<10, 2)
	manifest, blobs := putImage(t, fake, "docker-hub/library/app", "v1", img)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "docker.io=docker-hub,docker-hub:0"}})
	if len(m.Extra) != 1 {
		t.Fatalf("want one prefix listener, got %v", m.Extra)
	}
	hub := m.listener(0)
	hub.Host = loopback(t, hub.Host)
	hub.URL = "http://" + hub.Host
	got, err := pullImage(t, hub, "library/app:v1")
	if err != nil {
		t.Fatalf("pull library/app:v1 from the docker-hub:PORT listener: %v", err)
	}
	if d, _ := got.Digest(); d.String() != manifest.String() {
		t.Fatalf("digest %s, want %s", d, manifest)
	}
	var sawPrefixed bool
	for _, r := range fake.Counters().Requests {
		if strings.HasPrefix(r.Path, "/v2/library/") {
			t.Errorf("upstream was asked for the unprefixed name: %s %s", r.Method, r.Path)
		}
		sawPrefixed = sawPrefixed || strings.HasPrefix(r.Path, "/v2/docker-hub/library/app/")
	}
	if !sawPrefixed {
		t.Error("upstream never saw docker-hub/library/app")
	}
	if _, err := pullImage(t, m, "docker-hub/library/app:v1"); err != nil {
		t.Fatalf("pull by the ECR name on LISTEN_ADDR: %v", err)
	}
	for _, b := range blobs {
		if n := fake.Counters().S3Get[b]; n != 1 {
			t.Errorf("blob %s downloaded %d times through two listeners, want 1", b, n)
		}
	}
	// A request that names its registry is resolved as on any listener.
	for ns, want := range map[string]int{"docker.io": 200, "quay.io": 404} {
		resp, body, err := get(t, "GET", hub.URL+"/v2/library/app/manifests/v1?ns="+ns, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != want {
			code, _, _ := registry.ParseErrorBody(body)
			t.Errorf("ns=%s: %d %s, want %d", ns, resp.StatusCode, code, want)
		}
	}
}

// A deployment written for the seed proxies serves a pull as it is:
// aws_ecr_proxy's LISTEN_HOST and LISTEN_PORT, aws-ecr-http-proxy's
// ENABLE_SSL with its REGISTRY_HTTP_TLS_* files, ecr_reverse_proxy's
// REGION, and upper-case LOG_LEVEL; each is logged once, naming ours.
func TestSeedSettingsServeAPull(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(32<<10, 2)
	manifest, _ := putImage(t, fake, "team/app", "v1", img)
	ca := tlstest.NewCA(t)
	certFile, keyFile := ca.IssueFiles(t, t.TempDir(), "localhost", "127.0.0.1")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"LISTEN_ADDR": "", "AWS_REGION": "", "LOG_LEVEL": "DEBUG",
		"LISTEN_HOST": "127.0.0.1", "LISTEN_PORT": "0",
		"ENABLE_SSL": "true", "REGISTRY_HTTP_TLS_CERTIFICATE": certFile, "REGISTRY_HTTP_TLS_KEY": keyFile,
		"REGION": "eu-west-1", "RESOLVER": "169.254.169.253",
	}})
	pullOverTLS(t, m.Host, "team/app:v1", ca.Pool(), manifest)
	logs := m.Logs.String()
	for _, want := range []string{`variable="LISTEN_HOST, LISTEN_PORT"`, "variable=REGISTRY_HTTP_TLS_CERTIFICATE", "variable=REGISTRY_HTTP_TLS_KEY",
		"variable=REGION", "variable=ENABLE_SSL", "variable=RESOLVER"} {
		if n := strings.Count(logs, want+" "); n != 1 {
			t.Errorf("%s logged %d times, want once", want, n)
		}
	}
	if !strings.Contains(logs, "setting=LISTEN_ADDR") || !strings.Contains(logs, "setting=TLS_CERTIFICATE") {
		t.Errorf("the log does not name the settings the seed variables give:\n%s", logs)
	}
}

// aws-ecr-http-proxy's ecr-public:<port> serves Docker's official images
// (library/...) from ECR Public's docker/ (ECR's
// ecr-public/docker/library/alpine), other names from under ecr-public/;
// its ecr-public-docker:<port> serves every name from ecr-public/docker/.
func TestECRPublicPrefixListenerFindsOfficialImagesUnderDocker(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, _ := random.Image(1024, 1)
	alpine, _ := putImage(t, fake, "ecr-public/docker/library/alpine", "3", img)
	other, _ := random.Image(1024, 1)
	tool, _ := putImage(t, fake, "ecr-public/acme/tool", "1", other)
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PULL_THROUGHS": "ecr-public:0,ecr-public-docker:0"}})
	if len(m.Extra) != 2 {
		t.Fatalf("want two prefix listeners, got %v", m.Extra)
	}
	public, docker := "http://"+loopback(t, m.Extra[0]), "http://"+loopback(t, m.Extra[1])
	for _, tt := range []struct {
		url  string
		want string
	}{
		{public + "/v2/library/alpine/manifests/3", alpine.String()},
		{public + "/v2/acme/tool/manifests/1", tool.String()},
		{docker + "/v2/library/alpine/manifests/3", alpine.String()},
	} {
		resp, body, err := get(t, "GET", tt.url, http.Header{"Accept": {"application/vnd.docker.distribution.manifest.v2+json"}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != tt.want {
			code, msg, _ := registry.ParseErrorBody(body)
			t.Errorf("GET %s: %d %s %s, want %s", tt.url, resp.StatusCode, code, msg, tt.want)
		}
	}
}

// "config check" shows the values seed variables gave under our names,
// each with the variable it came from; a seed variable that disagrees
// with ours is refused naming both.
func TestConfigCheckShowsSeedVariables(t *testing.T) {
	t.Parallel()
	env := map[string]string{"ECR_REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "PORT": "8080", "PULL_THROUGH_MIRROR": "docker-hub:5001"}
	code, out, errOut := cli(t, env, "config", "check")
	if code != exitOK {
		t.Fatalf("config check: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{
		"# from $ECR_REGISTRY, read as UPSTREAM\nupstream:\n  - 123456789012.dkr.ecr.eu-west-1.amazonaws.com\n",
		"# from $PORT, read as LISTEN_ADDR\nlisten_addr: :8080\n",
		"# from $PULL_THROUGH_MIRROR, read as PULL_THROUGHS\npull_throughs: docker-hub:5001\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	env["LISTEN_ADDR"] = ":5000"
	code, _, errOut = cli(t, env, "config", "check")
	if code != exitFail || !strings.Contains(errOut, `LISTEN_ADDR and PORT disagree (":5000" and ":8080")`) {
		t.Fatalf("PORT against LISTEN_ADDR: exit %d, stderr:\n%s", code, errOut)
	}
}
