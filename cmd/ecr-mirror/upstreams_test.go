package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// getManifest GETs a manifest through the mirror at base (path below
// /v2/, with its query) accepting OCI manifests.
func getManifest(t *testing.T, base, path string) (*http.Response, []byte) {
	t.Helper()
	resp, body, err := get(t, http.MethodGet, base+"/v2/"+path, http.Header{"Accept": {ociManifestType}})
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp, body
}

// Each upstream serves its own repositories: the default one for
// requests naming no registry or its own host, the plain registry for
// ns=<its host> and on its listener; a registry that is neither is 404
// NAME_UNKNOWN. The ECR token never reaches the plain registry, and the
// upstream metrics name each upstream.
func TestEachUpstreamServesItsOwnRepositories(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	imgA, imgB := newRawImage(1, nil), newRawImage(2, nil)
	putRawImage(ecr, "team/app", "v1", imgA)
	putRawImage(oci, "team/app", "v1", imgB) // the same name, another image
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, nil)})

	tests := []struct {
		name, base, path string
		want             digest.Digest
	}{
		{"no registry named", m.URL, "team/app/manifests/v1", imgA.Dgst},
		{"the default upstream's host", m.URL, "team/app/manifests/v1?ns=" + ecr.Host(), imgA.Dgst},
		{"the plain registry's host", m.URL, "team/app/manifests/v1?ns=" + oci.Host(), imgB.Dgst},
		{"the plain registry's listener", m.listener(0).URL, "team/app/manifests/v1", imgB.Dgst},
		{"its layer by ns", m.URL, "team/app/blobs/" + imgB.LayerDgst.String() + "?ns=" + oci.Host(), imgB.LayerDgst},
	}
	for _, tt := range tests {
		resp, body := getManifest(t, tt.base, tt.path)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != tt.want {
			t.Errorf("%s: GET %s: %d, body %s; want %s", tt.name, tt.path, resp.StatusCode, digest.FromBytes(body), tt.want)
		}
	}
	img, err := pullImage(t, m.listener(0), "team/app:v1")
	if err != nil {
		t.Fatalf("pulling the plain registry's image on its listener: %v", err)
	}
	if d, _ := img.Digest(); d.String() != imgB.Dgst.String() {
		t.Fatalf("pulled %s on the plain registry's listener, want %s", d, imgB.Dgst)
	}
	resp, body := getManifest(t, m.URL, "team/app/tags/list?ns="+oci.Host())
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"name":"team/app"`)) || !bytes.Contains(body, []byte(`"v1"`)) {
		t.Errorf("tags/list of the plain registry: %d %s", resp.StatusCode, body)
	}
	resp, body = getManifest(t, m.URL, "team/app/blobs/"+imgB.LayerDgst.String())
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the plain registry's layer asked of the default upstream: %d %s, want 404", resp.StatusCode, body)
	}
	resp, body = getManifest(t, m.URL, "team/app/manifests/v1?ns=quay.io")
	if resp.StatusCode != http.StatusNotFound || !bytes.Contains(body, []byte("NAME_UNKNOWN")) {
		t.Errorf("ns=quay.io: %d %s, want 404 NAME_UNKNOWN", resp.StatusCode, body)
	}

	for _, r := range oci.Counters().Requests {
		if r.Authorization {
			t.Errorf("the plain registry got %s %s with an Authorization header", r.Method, r.Path)
		}
	}
	if c := oci.Counters(); c.TokenRequests != 0 || len(c.Requests) == 0 {
		t.Errorf("the plain registry saw %d token requests and %d requests; want none and some", c.TokenRequests, len(c.Requests))
	}
	authorized := slices.ContainsFunc(ecr.Counters().Requests, func(r fakeecr.Request) bool {
		return r.Endpoint == fakeecr.EndpointRegistry && r.Authorization && r.Status == http.StatusOK
	})
	if !authorized {
		t.Error("the fake ECR answered no request carrying the token")
	}
	series := scrape(t, m.URL+"/metrics")
	for _, host := range []string{ecr.Host(), oci.Host()} {
		want := `kind="manifest",method="HEAD",upstream="` + host + `"`
		if !slices.ContainsFunc(keys(series), func(k string) bool {
			return strings.HasPrefix(k, "ecr_mirror_upstream_requests_total{") && strings.Contains(k, want)
		}) {
			t.Errorf("no ecr_mirror_upstream_requests_total series with %s", want)
		}
	}
}

func keys(m map[string]float64) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Through the plain registry too, any number of clients asking for an
// uncached blob share one download.
func TestSecondUpstreamDownloadsEachDigestOnce(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	dgst := oci.PutBlob("big/blob", testkit.RandomBytes(3, 4<<20))
	hold := make(chan struct{})
	oci.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Hold: hold, Times: 1})
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, nil)})

	const clients = 16
	wait := startFetches(t, m.listener(0), "big/blob", dgst, clients)
	close(hold)
	for _, err := range wait() {
		if err != nil {
			t.Error(err)
		}
	}
	if c := oci.Counters(); c.S3Get[dgst] != 1 || c.BlobGet != 1 {
		t.Fatalf("%d clients caused %d blob GETs and %d body downloads on the plain registry, want 1 each", clients, c.BlobGet, c.S3Get[dgst])
	}
	if c := ecr.Counters(); c.BlobGet+c.BlobHead != 0 {
		t.Fatalf("the default upstream saw %d blob requests, want none", c.BlobGet+c.BlobHead)
	}
	testwait.Until(t, "blob on disk", func() bool { return m.stored(dgst) })
}

// A download from the plain registry cut short is resumed where it
// stopped, each byte fetched about once.
func TestSecondUpstreamResumesCutDownloads(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	dgst := oci.PutBlob("team/app", testkit.RandomBytes(61, size))
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, edgeEnv()), stallClock: clockwork.NewFakeClock()})
	oci.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 4, Times: 1})

	for i, err := range fetchConcurrently(t, m.listener(0), "team/app", dgst, 4) {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if got := s3RangeStarts(t, oci, dgst, 1); !slices.Equal(got, []int64{size / 4}) {
		t.Errorf("Range requests from %v, want [%d]", got, size/4)
	}
	if c := oci.Counters(); c.S3Get[dgst] != 1 || c.S3BlobBytes[dgst] > size*11/10 {
		t.Errorf("%d whole downloads, %d bytes sent for a %d byte blob; want 1 and at most 1.1×", c.S3Get[dgst], c.S3BlobBytes[dgst], size)
	}
	testwait.Until(t, "the blob stored", func() bool { return m.stored(dgst) })
}

// The two upstreams' answers for the same repo:tag are recorded apart:
// with both unreachable, each serves its own last answer, stale.
func TestTagRecordsOfEachUpstreamAreKeptApart(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	imgA, imgB := newRawImage(11, nil), newRawImage(12, nil)
	putRawImage(ecr, "team/app", "v1", imgA)
	putRawImage(oci, "team/app", "v1", imgB)
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, map[string]string{"STALE_IF_ERROR": "1h"})})
	paths := map[string]digest.Digest{
		"team/app/manifests/v1":                  imgA.Dgst,
		"team/app/manifests/v1?ns=" + oci.Host(): imgB.Dgst,
	}
	for path, want := range paths {
		if resp, body := getManifest(t, m.URL, path); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != want {
			t.Fatalf("GET %s: %d; want %s", path, resp.StatusCode, want)
		}
	}
	ecr.SetDown(true)
	oci.SetDown(true)
	for path, want := range paths {
		resp, body := getManifest(t, m.URL, path)
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != want || resp.Header.Get("Warning") == "" {
			t.Errorf("GET %s with both upstreams down: %d, %s, Warning %q; want %s, stale", path, resp.StatusCode, digest.FromBytes(body), resp.Header.Get("Warning"), want)
		}
	}
}

// Content pulled through one upstream is not served under the other's
// repository of the same name until that upstream confirms it holds it
// (one HEAD, no body); then it is served from the cache.
func TestContentIsServedPerUpstreamOnlyWhereItIsHeld(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	data := testkit.RandomBytes(21, 300_000)
	dgst := ecr.PutBlob("team/app", data)
	oci.PutBlob("team/app", []byte("the repository exists"))
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, nil)})
	if err := fetchBlob(t, m, "team/app", dgst); err != nil {
		t.Fatal(err)
	}
	// A file lands on disk a moment before its index record.
	testwait.Until(t, "blob indexed", func() bool { return scrape(t, m.URL+"/metrics")["ecr_mirror_cache_entries"] == 1 })

	path := m.URL + "/v2/team/app/blobs/" + dgst.String() + "?ns=" + oci.Host()
	resp, body, err := get(t, http.MethodGet, path, nil)
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET through the plain registry, which lacks it: %v %d, %d bytes; want 404", err, statusOf(resp), len(body))
	}
	oci.PutBlob("team/app", data)
	resp, body, err = get(t, http.MethodGet, path, nil)
	if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET through the plain registry, which holds it now: %v %d; want the blob", err, statusOf(resp))
	}
	if c := oci.Counters(); c.BlobHead != 2 || c.BlobGet != 0 {
		t.Fatalf("the plain registry saw %d HEADs and %d GETs of the blob; want 2 HEADs (one per confirmation) and no download", c.BlobHead, c.BlobGet)
	}
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// With PUSH on, pushes reach the ECR upstream; the plain registry takes
// none: 405 UNSUPPORTED naming it.
func TestPushesGoOnlyToECRUpstreams(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, map[string]string{"PUSH": "true"})})
	resp, body, err := send(t, http.MethodPost, m.listener(0).URL+"/v2/team/app/blobs/uploads/", nil, nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed || !bytes.Contains(body, []byte("UNSUPPORTED")) || !bytes.Contains(body, []byte(oci.Host())) {
		t.Fatalf("push to the plain registry: %v %d %s; want 405 UNSUPPORTED naming it", err, statusOf(resp), body)
	}
	img := newRawImage(31, nil)
	pushRawImage(t, m, "team/app", "v1", img)
	if !ecr.HasManifest("team/app", img.Dgst) {
		t.Fatal("the push did not reach the ECR upstream")
	}
	if c := oci.PushCounters(); c.UploadsStarted+c.BlobPuts+c.ManifestPuts != 0 {
		t.Fatalf("the plain registry got pushes: %+v", c)
	}
}

// A plain registry as the default upstream takes no pushes either.
func TestDefaultPlainUpstreamTakesNoPushes(t *testing.T) {
	t.Parallel()
	oci := startOCIUpstream(t)
	m := startMirror(t, oci, mirrorOpts{env: map[string]string{"UPSTREAM": "oci:" + oci.URL(), "PUSH": "true"}})
	resp, body, err := send(t, http.MethodPost, m.URL+"/v2/team/app/blobs/uploads/", nil, nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed || !bytes.Contains(body, []byte("UNSUPPORTED")) {
		t.Fatalf("push to the default plain registry: %v %d %s; want 405 UNSUPPORTED", err, statusOf(resp), body)
	}
	if c := oci.PushCounters(); c.UploadsStarted != 0 {
		t.Fatalf("the plain registry got pushes: %+v", c)
	}
}

// ECR upstreams of one region share one token source (one
// GetAuthorizationToken serves every registry of the region); each
// region has its own. Pulls through both upstreams work either way, and
// /readyz waits for every region's token.
func TestOneTokenSourcePerECRRegion(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		regions []string
	}{
		{"one region", []string{"eu-west-1", "eu-west-1"}},
		{"two regions", []string{"eu-west-1", "us-east-1"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// One fake by two names: two ECR registries whose tokens
			// come from the same token API.
			fake := fakeecr.Start(t, fakeecr.Options{})
			other := strings.Replace(fake.URL(), "127.0.0.1", "localhost", 1)
			img := newRawImage(41, nil)
			putRawImage(fake, "team/app", "v1", img)
			m := startMirror(t, fake, mirrorOpts{
				env: map[string]string{"UPSTREAM": "ecr:" + fake.URL() + ",ecr:" + other},
				edit: func(c *settings.Config) {
					for i := range c.Upstreams {
						c.Upstreams[i].Region = tt.regions[i]
					}
				},
			})
			for _, path := range []string{"team/app/manifests/v1", "team/app/manifests/v1?ns=" + strings.TrimPrefix(other, "http://")} {
				if resp, body := getManifest(t, m.URL, path); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Dgst {
					t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
				}
			}
			want := int64(len(slices.Compact(slices.Clone(tt.regions))))
			testwait.Until(t, "each region's first token", func() bool { return fake.Counters().TokensIssued >= want })
			if got := fake.Counters().TokensIssued; got != want {
				t.Fatalf("%d tokens fetched for regions %v, want %d", got, tt.regions, want)
			}
			if resp, body, err := get(t, http.MethodGet, m.URL+"/readyz", nil); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("/readyz: %v %d %s", err, statusOf(resp), body)
			}
		})
	}
}

// A mirror whose only upstream is a plain registry needs no ECR token:
// it pulls anonymously and is ready.
func TestPlainRegistryAloneNeedsNoECR(t *testing.T) {
	t.Parallel()
	oci := startOCIUpstream(t)
	img := newRawImage(51, nil)
	putRawImage(oci, "team/app", "v1", img)
	m := startMirror(t, oci, mirrorOpts{env: map[string]string{"UPSTREAM": "oci:" + oci.URL()}})
	if resp, body := getManifest(t, m.URL, "team/app/manifests/v1"); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Dgst {
		t.Fatalf("GET team/app:v1: %d %s", resp.StatusCode, body)
	}
	if err := fetchBlob(t, m, "team/app", img.LayerDgst); err != nil {
		t.Fatal(err)
	}
	if resp, body, err := get(t, http.MethodGet, m.URL+"/readyz", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %v %d %s", err, statusOf(resp), body)
	}
	if c := oci.Counters(); c.TokenRequests != 0 || slices.ContainsFunc(c.Requests, func(r fakeecr.Request) bool { return r.Authorization }) {
		t.Fatalf("the plain registry saw %d token requests, or a request with credentials", c.TokenRequests)
	}
}

// A digest asked for through two upstreams while it downloads is
// downloaded once: the request through the second follows the download
// once that upstream confirms (one HEAD, no body) it holds the digest.
func TestOneDownloadPerDigestAcrossUpstreams(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	data := testkit.RandomBytes(71, 4<<20)
	dgst := ecr.PutBlob("team/app", data)
	oci.PutBlob("team/app", data)
	hold := make(chan struct{})
	ecr.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Hold: hold, Times: 1})
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, nil)})

	viaECR := startFetches(t, m, "team/app", dgst, 1)
	viaOCI := startFetches(t, m.listener(0), "team/app", dgst, 1)
	close(hold)
	for _, err := range append(viaECR(), viaOCI()...) {
		if err != nil {
			t.Error(err)
		}
	}
	if e, o := ecr.Counters(), oci.Counters(); e.S3Get[dgst] != 1 || o.S3Get[dgst]+o.BlobGet != 0 || o.BlobHead != 1 {
		t.Fatalf("body downloads: %d from ECR, %d from the plain registry (%d blob GETs, %d HEADs there); want 1, 0 (0 GETs, 1 HEAD)",
			e.S3Get[dgst], o.S3Get[dgst], o.BlobGet, o.BlobHead)
	}
}

// An oci upstream that demands its registry token flow with a login is
// pulled from with UPSTREAM_DOCKER_CONFIG's login for its host, one
// token per repository; without the login the client gets the refusal,
// and the ECR upstream beside it keeps working either way.
func TestOCIUpstreamLogsInWithTheDockerConfig(t *testing.T) {
	t.Parallel()
	ecr := fakeecr.Start(t, fakeecr.Options{})
	oci := fakeecr.Start(t, fakeecr.Options{Bearer: true, BearerLogin: "puller:s3cret"})
	imgA, imgB := newRawImage(61, nil), newRawImage(62, nil)
	putRawImage(ecr, "team/app", "v1", imgA)
	putRawImage(oci, "team/app", "v1", imgB)
	config := filepath.Join(t.TempDir(), "config.json")
	login := base64.StdEncoding.EncodeToString([]byte("puller:s3cret"))
	if err := os.WriteFile(config, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, oci.Host(), login), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		config string
		want   int
	}{
		{name: "with the login", config: config, want: http.StatusOK},
		{name: "anonymous", want: http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			env := withUpstreams(ecr, oci, nil)
			if tt.config != "" {
				env["UPSTREAM_DOCKER_CONFIG"] = tt.config
			}
			m := startMirror(t, ecr, mirrorOpts{env: env})
			issued := oci.Counters().TokensIssued
			resp, body := getManifest(t, m.URL, "team/app/manifests/v1?ns="+oci.Host())
			if resp.StatusCode != tt.want {
				t.Fatalf("GET the oci upstream's manifest: %d %s, want %d", resp.StatusCode, body, tt.want)
			}
			if tt.want == http.StatusOK {
				if digest.FromBytes(body) != imgB.Dgst {
					t.Fatalf("got %s, want %s", digest.FromBytes(body), imgB.Dgst)
				}
				if n := oci.Counters().TokensIssued - issued; n != 1 {
					t.Errorf("the oci upstream issued %d tokens, want 1", n)
				}
			} else if bytes.Contains(body, []byte("s3cret")) {
				t.Fatalf("the refusal quotes the login: %s", body)
			}
			if resp, body := getManifest(t, m.URL, "team/app/manifests/v1"); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != imgA.Dgst {
				t.Fatalf("the ECR upstream beside it: %d %s", resp.StatusCode, body)
			}
		})
	}
}

// A Docker config that cannot be read stops the mirror at start, naming
// the setting and the file.
func TestUnreadableDockerConfigStopsTheStart(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	bad := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(bad, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := withUpstreams(ecr, oci, map[string]string{"UPSTREAM_DOCKER_CONFIG": bad})
	err := run(t.Context(), mirrorConfig(t, ecr, mirrorOpts{env: env}), slog.New(slog.DiscardHandler), nil)
	if err == nil || !strings.Contains(err.Error(), "UPSTREAM_DOCKER_CONFIG") || !strings.Contains(err.Error(), bad) {
		t.Fatalf("start = %v, want an error naming UPSTREAM_DOCKER_CONFIG and %s", err, bad)
	}
}

// An ecr-public upstream whose ECR Public token cannot be had (the token
// API refuses) is pulled from anonymously through its registry token
// flow, by ns=<its host>, and logs that it pulls anonymously.
func TestECRPublicUpstreamPullsAnonymouslyWithoutAToken(t *testing.T) {
	t.Parallel()
	ecr := fakeecr.Start(t, fakeecr.Options{})
	public := fakeecr.Start(t, fakeecr.Options{Bearer: true})
	img := newRawImage(63, nil)
	putRawImage(public, "docker/library/nginx", "1.27", img)
	m := startMirror(t, ecr, mirrorOpts{env: map[string]string{
		"UPSTREAM": "ecr:" + ecr.URL() + ",ecr-public:" + public.URL(),
		// Not ECR Public's API: its GetAuthorizationToken is refused.
		"AWS_ENDPOINT_URL_ECR_PUBLIC": ecr.TokenURL(),
	}})
	resp, body := getManifest(t, m.URL, "docker/library/nginx/manifests/1.27?ns="+public.Host())
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Dgst {
		t.Fatalf("GET nginx:1.27 from the ecr-public upstream: %d %s", resp.StatusCode, body)
	}
	if err := fetchBlob(t, m, "docker/library/nginx", img.LayerDgst); err == nil {
		t.Fatal("a layer of the ecr-public upstream was served without ns=")
	}
	if c := public.Counters(); c.TokensIssued == 0 {
		t.Fatal("the ecr-public upstream issued no token: its token flow was not followed")
	}
	testwait.Until(t, "the anonymous fallback logged", func() bool { return strings.Contains(m.Logs.String(), "anonymous") })
}

// warm and export read an image of an upstream that is not the default
// with --namespace <its host>, as containerd would with ns=.
func TestToolsReadOtherUpstreamsWithNamespace(t *testing.T) {
	t.Parallel()
	ecr, oci := fakeecr.Start(t, fakeecr.Options{}), startOCIUpstream(t)
	img := newRawImage(64, nil)
	putRawImage(oci, "team/tool", "v2", img)
	m := startMirror(t, ecr, mirrorOpts{env: withUpstreams(ecr, oci, nil)})
	if code, _, errOut := cli(t, nil, "warm", "--quiet", "--mirror", m.URL, "team/tool:v2"); code == exitOK {
		t.Fatalf("warm without --namespace found the image on the default upstream:\n%s", errOut)
	}
	if code, _, errOut := cli(t, nil, "warm", "--quiet", "--mirror", m.URL, "--namespace", oci.Host(), "team/tool:v2"); code != exitOK {
		t.Fatalf("warm --namespace %s: exit %d\n%s", oci.Host(), code, errOut)
	}
	testwait.Until(t, "the image stored", func() bool { return m.stored(img.Dgst) && m.stored(img.LayerDgst) })
	archive := filepath.Join(t.TempDir(), "tool.tar")
	if code, _, errOut := cli(t, nil, "export", "--quiet", "--mirror", m.URL, "--namespace", oci.Host(), "-o", archive, "team/tool:v2"); code != exitOK {
		t.Fatalf("export --namespace: exit %d\n%s", code, errOut)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Size() == 0 {
		t.Fatalf("archive: %v", err)
	}
}
