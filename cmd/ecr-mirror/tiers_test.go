package main

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// startTiers starts a regional mirror in front of the fake ECR and an
// edge mirror whose one upstream is the regional mirror, as a plain
// registry (oci:). Both serve stale tags for an hour.
func startTiers(t *testing.T, fake *fakeecr.Server) (regional, edge *mirror) {
	t.Helper()
	regional = startMirror(t, fake, mirrorOpts{env: edgeEnv("STALE_IF_ERROR", "1h"), stallClock: clockwork.NewFakeClock()})
	edge = startMirror(t, fake, mirrorOpts{env: edgeEnv("STALE_IF_ERROR", "1h", "UPSTREAM", "oci:"+regional.URL), stallClock: clockwork.NewFakeClock()})
	return regional, edge
}

// blobGETs sums the upstream blob GETs a mirror's metrics count.
func blobGETs(t *testing.T, m *mirror) float64 {
	t.Helper()
	var n float64
	for k, v := range scrape(t, m.URL+"/metrics") {
		if strings.HasPrefix(k, "ecr_mirror_upstream_requests_total{") && strings.Contains(k, `kind="blob"`) && strings.Contains(k, `method="GET"`) {
			n += v
		}
	}
	return n
}

// Clients of an edge mirror in front of a regional mirror in front of
// ECR share one download at each tier: however many ask the edge at
// once, the edge asks the regional mirror once and the regional mirror
// asks ECR once; both keep the blob.
func TestTiersDownloadEachDigestOncePerTier(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(71, 4<<20))
	hold := make(chan struct{})
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultStall, After: 1 << 20, Hold: hold, Times: 1})
	regional, edge := startTiers(t, fake)

	const clients = 12
	wait := startFetches(t, edge, "team/app", dgst, clients)
	close(hold)
	for i, err := range wait() {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if c := fake.Counters(); c.S3Get[dgst] != 1 || c.BlobGet != 1 {
		t.Errorf("ECR saw %d blob GETs and %d body downloads for %d clients, want 1 each", c.BlobGet, c.S3Get[dgst], clients)
	}
	if n := blobGETs(t, edge); n != 1 {
		t.Errorf("the edge sent %v blob GETs to the regional mirror, want 1", n)
	}
	if n := blobGETs(t, regional); n != 1 {
		t.Errorf("the regional mirror sent %v blob GETs to ECR, want 1", n)
	}
	testwait.Until(t, "the blob stored at both tiers", func() bool { return edge.stored(dgst) && regional.stored(dgst) })
}

// A download cut short between ECR and the regional mirror is resumed
// there; the edge, following the regional mirror's download, gets every
// byte verified, and nothing is downloaded twice at either tier.
func TestTiersResumeACutDownload(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	fake := fakeecr.Start(t, fakeecr.Options{})
	dgst := fake.PutBlob("team/app", testkit.RandomBytes(72, size))
	fake.SetFault(dgst, fakeecr.Fault{Mode: fakeecr.FaultTruncate, After: size / 4, Times: 1})
	regional, edge := startTiers(t, fake)

	for i, err := range fetchConcurrently(t, edge, "team/app", dgst, 4) {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if got := s3RangeStarts(t, fake, dgst, 1); !slices.Equal(got, []int64{size / 4}) {
		t.Errorf("Range requests to ECR from %v, want [%d]", got, size/4)
	}
	if c := fake.Counters(); c.S3Get[dgst] != 1 {
		t.Errorf("%d whole downloads from ECR, want 1", c.S3Get[dgst])
	}
	if n := blobGETs(t, edge); n != 1 {
		t.Errorf("the edge sent %v blob GETs to the regional mirror, want 1", n)
	}
	testwait.Until(t, "the blob stored at both tiers", func() bool { return edge.stored(dgst) && regional.stored(dgst) })
}

// With ECR down, the regional mirror answers the edge's tag lookups from
// its records, and the edge passes them on as stale (Warning 110), not
// recording them as fresh answers; with the regional mirror gone too,
// the edge answers from its own records. The image stays
// pullable by tag and by digest at the edge throughout.
func TestTiersServeStaleAcrossTheChain(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(73, nil)
	putRawImage(fake, "team/app", "v1", img)
	regional, edge := startTiers(t, fake)

	pullAtEdge(t, edge, img, "online", false)
	testwait.Until(t, "the image stored at both tiers", func() bool {
		for _, d := range []digest.Digest{img.Dgst, img.ConfigDgst, img.LayerDgst} {
			if !edge.stored(d) || !regional.stored(d) {
				return false
			}
		}
		return true
	})

	fake.SetDown(true)
	pullAtEdge(t, edge, img, "ECR down", true)
	if !strings.Contains(regional.Logs.String(), "serving a stale tag") {
		t.Errorf("the regional mirror did not answer from its record:\n%s", regional.Logs)
	}
	regional.Stop()
	pullAtEdge(t, edge, img, "ECR and the regional mirror down", true)
	if !strings.Contains(edge.Logs.String(), "serving a stale tag") {
		t.Errorf("the edge did not answer from its record:\n%s", edge.Logs)
	}
}

// A regional mirror that wants a login (HTPASSWD_FILE) is pulled from
// with the login the edge's UPSTREAM_DOCKER_CONFIG holds for its host.
func TestTiersLogInToTheRegionalMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(74, nil)
	putRawImage(fake, "team/app", "v1", img)
	regional := startMirror(t, fake, mirrorOpts{env: map[string]string{"HTPASSWD_FILE": writeHtpasswd(t, map[string]string{"edge": "edge-pw"})}})
	config := filepath.Join(t.TempDir(), "config.json")
	login := base64.StdEncoding.EncodeToString([]byte("edge:edge-pw"))
	if err := os.WriteFile(config, fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, regional.Host, login), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := startMirror(t, fake, mirrorOpts{env: map[string]string{"UPSTREAM": "oci:" + regional.URL, "UPSTREAM_DOCKER_CONFIG": config}})
	if resp, body := getManifest(t, edge.URL, "team/app/manifests/v1"); resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Dgst {
		t.Fatalf("GET team/app:v1 at the edge: %d %s", resp.StatusCode, body)
	}
	if err := fetchBlob(t, edge, "team/app", img.LayerDgst); err != nil {
		t.Fatal(err)
	}
	// Without the login the regional mirror refuses the edge.
	anonymous := startMirror(t, fake, mirrorOpts{env: map[string]string{"UPSTREAM": "oci:" + regional.URL}})
	if resp, body := getManifest(t, anonymous.URL, "team/app/manifests/v1"); resp.StatusCode == http.StatusOK {
		t.Fatalf("an edge without the login got team/app:v1: %s", body)
	}
}

// The chain with the regional mirror a process of its own (the binary):
// the edge pulls through it, each blob crossing each tier once, and once
// it has exited the edge serves the image from its cache and records.
func TestTiersWithTheRegionalMirrorAProcess(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := newRawImage(75, nil)
	putRawImage(fake, "team/app", "v1", img)
	regional := startProcess(t, mirrorBinary(t), fake, t.TempDir(), "STALE_IF_ERROR=1h")
	edge := startMirror(t, fake, mirrorOpts{env: map[string]string{"UPSTREAM": "oci:http://" + regional.addr, "STALE_IF_ERROR": "1h"}})
	for round, stale := range []bool{false, false, true} {
		if stale {
			if _, exited := regional.signal(t, syscall.SIGTERM, testwait.HangGuard); !exited {
				t.Fatal("the regional mirror did not exit on SIGTERM")
			}
		}
		pullAtEdge(t, edge, img, fmt.Sprint("round ", round), stale)
		if round == 0 {
			testwait.Until(t, "the image stored at the edge", func() bool { return edge.stored(img.ConfigDgst) && edge.stored(img.LayerDgst) })
		}
	}
	if c := fake.Counters(); c.BlobGet != 2 || c.S3Get[img.LayerDgst] != 1 {
		t.Errorf("ECR saw %d blob GETs and %d downloads of the layer, want 2 and 1", c.BlobGet, c.S3Get[img.LayerDgst])
	}
}

// pullAtEdge pulls team/app:v1 (img) through the edge mirror: the
// manifest by tag, with a stale answer's Warning exactly when stale is
// set, and both blobs, verified; stage names the step in failures.
func pullAtEdge(t *testing.T, edge *mirror, img rawImage, stage string, stale bool) {
	t.Helper()
	resp, body := getManifest(t, edge.URL, "team/app/manifests/v1")
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.Dgst {
		t.Fatalf("%s: GET team/app:v1 at the edge: %d %s", stage, resp.StatusCode, body)
	}
	if got := resp.Header.Get("Warning"); strings.HasPrefix(got, "110 ") != stale {
		t.Fatalf("%s: Warning %q at the edge, want a stale one: %v", stage, got, stale)
	}
	for _, d := range []digest.Digest{img.ConfigDgst, img.LayerDgst} {
		if err := fetchBlob(t, edge, "team/app", d); err != nil {
			t.Fatalf("%s: blob %s at the edge: %v", stage, d, err)
		}
	}
}
