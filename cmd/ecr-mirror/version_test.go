package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
)

// "ecr-mirror version" and "ecr-mirror --version" print the build;
// neither runs the server.
func TestVersionCommandAndFlagPrintTheBuild(t *testing.T) {
	t.Parallel()
	info := buildinfo.Read()
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			t.Parallel()
			if _, serve := serverArgs(args); serve {
				t.Fatalf("%q would run the server", args)
			}
			code, out, errOut := cli(t, nil, args...)
			if code != exitOK {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			for _, want := range []string{"ecr-mirror " + info.Version + "\n", "commit:   " + info.Commit + "\n", "go:       " + info.GoVersion + "\n", "platform: " + info.Platform + "\n"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
	if _, out, _ := cli(t, nil, "help"); !strings.Contains(out, "\n  version     print") || !strings.Contains(out, "\n  healthcheck ask") {
		t.Errorf("help does not list version and healthcheck:\n%s", out)
	}
	if code, _, errOut := cli(t, nil, "version", "extra"); code != exitUsage || !strings.Contains(errOut, `"extra"`) {
		t.Errorf("version extra: exit %d %s, want %d naming the argument", code, errOut, exitUsage)
	}
}

// Every request the mirror sends upstream carries its User-Agent, never
// its client's: the ECR and ECR Public token APIs (the AWS SDK's agent
// with ecr-mirror/<version> added), the registry API of each upstream
// kind, the registries' token realms, and the S3 downloads ECR
// redirects blobs to.
func TestUpstreamRequestsCarryTheMirrorsUserAgent(t *testing.T) {
	t.Parallel()
	info := buildinfo.Read()
	ecr := fakeecr.Start(t, fakeecr.Options{})
	oci := fakeecr.Start(t, fakeecr.Options{Bearer: true})
	public := fakeecr.Start(t, fakeecr.Options{Bearer: true})
	// An image of its own on each, so that each blob is a miss.
	imgs := map[string]rawImage{"": newRawImage(71, nil), oci.Host(): newRawImage(72, nil), public.Host(): newRawImage(73, nil)}
	putRawImage(ecr, "team/app", "v1", imgs[""])
	putRawImage(oci, "team/app", "v1", imgs[oci.Host()])
	putRawImage(public, "team/app", "v1", imgs[public.Host()])
	m := startMirror(t, ecr, mirrorOpts{env: map[string]string{
		"UPSTREAM": "ecr:" + ecr.URL() + ",oci:" + oci.URL() + ",ecr-public:" + public.URL(),
		// Not ECR Public's API: its GetAuthorizationToken is refused,
		// but the call is made, and seen.
		"AWS_ENDPOINT_URL_ECR_PUBLIC": ecr.TokenURL(),
	}})
	for ns, img := range imgs {
		q := ""
		if ns != "" {
			q = "?ns=" + ns
		}
		hdr := http.Header{"Accept": {ociManifestType}, "User-Agent": {"the-client/9"}}
		for _, path := range []string{"team/app/manifests/v1" + q, "team/app/blobs/" + img.LayerDgst.String() + q} {
			resp, body, err := get(t, http.MethodGet, m.URL+"/v2/"+path, hdr)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s: %v %v %.200s", path, err, resp, body)
			}
			if strings.Contains(path, "/blobs/") && digest.FromBytes(body) != img.LayerDgst {
				t.Fatalf("GET %s: wrong bytes", path)
			}
		}
	}
	ua := info.UserAgent()
	sdk := "ecr-mirror/" + buildinfo.Token(info.Version)
	for _, up := range []struct {
		name string
		fake *fakeecr.Server
		want []fakeecr.Endpoint
	}{
		{"ecr (and ECR Public's token API)", ecr, []fakeecr.Endpoint{fakeecr.EndpointToken, fakeecr.EndpointRegistry, fakeecr.EndpointS3}},
		{"oci", oci, []fakeecr.Endpoint{fakeecr.EndpointToken, fakeecr.EndpointRegistry, fakeecr.EndpointS3}},
		{"ecr-public", public, []fakeecr.Endpoint{fakeecr.EndpointToken, fakeecr.EndpointRegistry, fakeecr.EndpointS3}},
	} {
		seen := map[fakeecr.Endpoint]int{}
		for _, r := range up.fake.Counters().Requests {
			seen[r.Endpoint]++
			where := fmt.Sprintf("%s: %s %s %s", up.name, r.Endpoint, r.Method, r.Path)
			switch {
			case r.Endpoint == fakeecr.EndpointToken && r.Method == http.MethodPost && r.Path == "/" && up.fake == ecr:
				// The AWS SDK's token API calls.
				if !strings.Contains(r.UserAgent, sdk) || !strings.Contains(r.UserAgent, "aws-sdk-go-v2") {
					t.Errorf("%s: User-Agent %q, want the SDK's with %s", where, r.UserAgent, sdk)
				}
			case r.UserAgent != ua:
				t.Errorf("%s: User-Agent %q, want %q", where, r.UserAgent, ua)
			}
		}
		for _, e := range up.want {
			if seen[e] == 0 {
				t.Errorf("%s: no %s request was seen (%v): the test did not reach it", up.name, e, seen)
			}
		}
	}
}

// /metrics names the running build, and so does the startup log line.
func TestBuildInfoIsInMetricsAndTheStartupLog(t *testing.T) {
	t.Parallel()
	info := buildinfo.Read()
	m := startMirror(t, fakeecr.Start(t, fakeecr.Options{}), mirrorOpts{})
	series := fmt.Sprintf(`ecr_mirror_build_info{commit=%q,goversion=%q,version=%q}`, info.Commit, info.GoVersion, info.Version)
	if got, ok := scrape(t, m.URL+"/metrics")[series]; !ok || got != 1 {
		t.Fatalf("/metrics: %s = %v (present: %v), want 1", series, got, ok)
	}
	want := fmt.Sprintf(`msg="ecr-mirror serving" version=%s commit=%s`, info.Version, info.Commit)
	if !strings.Contains(m.Logs.String(), want) {
		t.Fatalf("the startup log lacks %q:\n%s", want, m.Logs)
	}
}
