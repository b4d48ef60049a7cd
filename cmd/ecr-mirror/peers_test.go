package main

import (
	"encoding/json"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/peers"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// coldImage puts a cold image of n layers of size bytes each in a new
// fake ECR under team/app:v1; it returns the fake, the manifest's digest
// and its blobs' (layers, then config), and the image's bytes.
func coldImage(t *testing.T, size int64, n int) (*fakeecr.Server, digest.Digest, []digest.Digest) {
	t.Helper()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img, err := random.Image(size, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	manifest, blobs := putImage(t, fake, "team/app", "v1", img)
	return fake, manifest, blobs
}

// pullConcurrently has n clients pull ref at once, client i through
// mirrors[i%len(mirrors)]; it returns each pull's error and the time
// they took together.
func pullConcurrently(t *testing.T, mirrors []*mirror, ref string, n int) ([]error, time.Duration) {
	t.Helper()
	errs := make([]error, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = pullImage(t, mirrors[i%len(mirrors)], ref) })
	}
	wg.Wait()
	return errs, time.Since(start)
}

// testPeerSecret is the clusters' PEER_SECRET.
const testPeerSecret = "test-peer-secret-0123456789"

// cluster is mirrors that are each other's PEERS, each with its PEER_ADDR.
type cluster struct {
	mirrors   []*mirror
	peerAddrs []string
}

// freeAddrs returns n loopback addresses no one listened on a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// peerEnv is the settings of the i-th of the replicas whose peer
// listeners are addrs.
func peerEnv(addrs []string, i int) map[string]string {
	return map[string]string{"PEERS": strings.Join(addrs, ","), "PEER_ADDR": addrs[i], "PEER_SECRET": testPeerSecret}
}

// startCluster runs n in-process mirrors over fake, each with its own
// CACHE_DIR, over tier when it is not nil, PEERS naming them all.
func startCluster(t *testing.T, fake *fakeecr.Server, tier *sharedTier, n int) *cluster {
	t.Helper()
	c := &cluster{peerAddrs: freeAddrs(t, n)}
	for i := range n {
		var o mirrorOpts
		if tier != nil {
			o = tier.opts()
		}
		o.env = maps.Clone(o.env)
		if o.env == nil {
			o.env = map[string]string{}
		}
		maps.Copy(o.env, peerEnv(c.peerAddrs, i))
		c.mirrors = append(c.mirrors, startMirror(t, fake, o))
	}
	return c
}

// sum adds series up over the cluster's mirrors.
func (c *cluster) sum(t *testing.T, series string) float64 {
	t.Helper()
	var n float64
	for _, m := range c.mirrors {
		n += metric(t, m, series)
	}
	return n
}

// 24 clients spread over three replicas pull one cold image at once: ECR
// serves each blob and the manifest once for the whole cluster, the
// shared tier gets one write per digest, and every client verifies every
// digest. The figures (ECR bytes over the image's, and the wall time
// against one replica's) are logged.
func TestClusterDownloadsEachDigestFromECROnce(t *testing.T) {
	t.Parallel()
	fake, manifest, blobs := coldImage(t, 2<<20, 4)
	tier := startSharedTier(t)
	c := startCluster(t, fake, tier, 3)
	errs, took := pullConcurrently(t, c.mirrors, "team/app:v1", 24)
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d through replica %d: %v", i, i%3, err)
		}
	}
	counts := fake.Counters()
	if counts.BlobGet != int64(len(blobs)) {
		t.Errorf("ECR served %d blob GETs for %d blobs, want one each", counts.BlobGet, len(blobs))
	}
	if n := counts.ManifestGetByDigest + counts.ManifestGetByTag; n != 1 {
		t.Errorf("ECR served %d manifest GETs (%d by tag), want 1", n, counts.ManifestGetByTag)
	}
	var imageBytes, ecrBytes int64
	for _, b := range blobs {
		testwait.Until(t, "replica 0 to commit "+b.String(), func() bool { return c.mirrors[0].stored(b) })
		info, err := os.Stat(c.mirrors[0].blobPath(b))
		if err != nil {
			t.Fatal(err)
		}
		imageBytes += info.Size()
		ecrBytes += counts.S3BlobBytes[b]
	}
	want := append([]string{tier.key(manifest)}, keysOf(tier, blobs)...)
	slices.Sort(want)
	testwait.Until(t, "the cluster to write every digest to the shared tier", func() bool {
		return slices.Equal(tier.keys(t), want) && c.sum(t, sharedPutOK) >= float64(len(want))
	})
	if n := c.sum(t, sharedPutOK) + c.sum(t, `ecr_mirror_shared_store_requests_total{op="put",outcome="exists"}`); n != float64(len(want)) {
		t.Errorf("the cluster wrote %v objects, want one per digest: %d", n, len(want))
	}
	if n := c.sum(t, `ecr_mirror_peer_requests_total{outcome="ok"}`); n < 1 {
		t.Errorf("no replica was served by a peer (%v)", n)
	}
	if n := c.sum(t, `ecr_mirror_served_bytes_total{source="peer"}`); n <= 0 {
		t.Errorf("the cluster counted %v bytes served from peers", n)
	}

	// The same pull through one replica, for the figure.
	fake1, _, blobs1 := coldImage(t, 2<<20, 4)
	one := startMirror(t, fake1, startSharedTier(t).opts())
	errs1, took1 := pullConcurrently(t, []*mirror{one}, "team/app:v1", 24)
	for i, err := range errs1 {
		if err != nil {
			t.Errorf("client %d through the single replica: %v", i, err)
		}
	}
	if n := fake1.Counters().BlobGet; n != int64(len(blobs1)) {
		t.Errorf("ECR served the single replica %d blob GETs for %d blobs", n, len(blobs1))
	}
	t.Logf("24-client cold pull of %d bytes: ECR blob bytes / image size = %.2f; wall time through 3 replicas %v, through 1 replica %v",
		imageBytes, float64(ecrBytes)/float64(imageBytes), took.Round(time.Millisecond), took1.Round(time.Millisecond))
	if ecrBytes != imageBytes {
		t.Errorf("ECR sent %d blob bytes for an image of %d", ecrBytes, imageBytes)
	}
}

// keysOf is the shared tier's keys of dgsts.
func keysOf(tier *sharedTier, dgsts []digest.Digest) []string {
	var keys []string
	for _, d := range dgsts {
		keys = append(keys, tier.key(d))
	}
	return keys
}

// Peer requests without PEER_SECRET's signature get 401 UNAUTHORIZED and
// nothing else: the owner asks ECR nothing. Signed ones are served, and
// the secret never reaches a log line.
func TestPeerAPIRefusesUnsignedRequests(t *testing.T) {
	t.Parallel()
	fake, _, blobs := coldImage(t, 10_000, 1)
	c := startCluster(t, fake, nil, 2)
	up := registry.CanonicalRegistry(strings.TrimPrefix(fake.URL(), "http://"))
	path := peers.Path(proxy.PeerRequest{Registry: up, Repo: "team/app", Dgst: blobs[0]})
	for _, tt := range []struct {
		name   string
		signer *peers.Signer
	}{
		{name: "unsigned"},
		{name: "another secret", signer: peers.NewSigner("not-the-cluster-secret", nil)},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+c.peerAddrs[0]+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tt.signer != nil {
			tt.signer.Sign(req)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct{ Errors []struct{ Code string } }
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || err != nil || len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" {
			t.Errorf("%s: %d %+v (%v), want 401 UNAUTHORIZED", tt.name, resp.StatusCode, body, err)
		}
	}
	if got := fake.Counters(); got.BlobGet+got.BlobHead+got.ManifestHead+got.ManifestGetByDigest != 0 {
		t.Errorf("refused peer requests reached ECR: %+v", got)
	}
	// The client listener does not serve the peer API.
	if resp, _, err := get(t, http.MethodGet, c.mirrors[0].URL+path, nil); err != nil || resp.StatusCode == http.StatusOK {
		t.Errorf("the registry listener answered the peer API: %v %v", resp, err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.peerAddrs[0]+path, nil)
	peers.NewSigner(testPeerSecret, nil).Sign(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if err := readBlob(resp, blobs[0]); err != nil {
		t.Errorf("signed peer request: %v", err)
	}
	for i, m := range c.mirrors {
		if strings.Contains(m.Logs.String(), testPeerSecret) {
			t.Errorf("replica %d logged PEER_SECRET", i)
		}
	}
}

// With the shared tier down, pulls go on through the peers and ECR: no
// pull fails, ECR still serves each blob once, and /readyz says the
// mirror is degraded while it stays ready.
func TestClusterWithTheSharedTierDownPullsThroughPeersAndECR(t *testing.T) {
	t.Parallel()
	fake, _, blobs := coldImage(t, 200_000, 3)
	tier := startSharedTier(t)
	c := startCluster(t, fake, tier, 3)
	tier.srv.Stop()
	errs, _ := pullConcurrently(t, c.mirrors, "team/app:v1", 6)
	for i, err := range errs {
		if err != nil {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if n := fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR served %d blob GETs for %d blobs, want one each: the peers still share downloads", n, len(blobs))
	}
	// Each miss that finds the tier down starts its cool-off: /readyz
	// reports it while it lasts.
	unknown := digest.FromString("not in ECR")
	testwait.Until(t, "/readyz to report the shared tier down", func() bool {
		_ = fetchBlob(t, c.mirrors[0], "team/app", unknown)
		resp, body, err := get(t, http.MethodGet, c.mirrors[0].URL+"/readyz", nil)
		return err == nil && resp.StatusCode == http.StatusOK && strings.HasPrefix(string(body), "degraded") &&
			strings.Contains(string(body), "shared store: FAILING")
	})
}

// A replica that is not among its PEERS (a wrong PEER_ADDR, say) and
// whose peers cannot be reached is degraded, not unready, and pulls
// through ECR.
func TestReplicaWithoutReachablePeersIsDegradedAndPullsThroughECR(t *testing.T) {
	t.Parallel()
	fake, _, blobs := coldImage(t, 100_000, 2)
	addrs := freeAddrs(t, 3) // nobody listens on the first two
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{
		"PEERS": addrs[0] + "," + addrs[1], "PEER_ADDR": addrs[2], "PEER_SECRET": testPeerSecret}})
	if _, err := pullImage(t, m, "team/app:v1"); err != nil {
		t.Fatalf("pull with no peer reachable: %v", err)
	}
	if n := fake.Counters().BlobGet; n != int64(len(blobs)) {
		t.Errorf("ECR served %d blob GETs for %d blobs", n, len(blobs))
	}
	if n := metric(t, m, `ecr_mirror_peer_requests_total{outcome="unreachable"}`); n < 1 {
		t.Errorf("counted %v unreachable peers", n)
	}
	resp, body, err := get(t, http.MethodGet, m.URL+"/readyz", nil)
	if err != nil || resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "degraded") ||
		!strings.Contains(string(body), "peers: FAILING: 2 members, this replica NOT among them") {
		t.Errorf("/readyz: %v %v\n%s", resp.StatusCode, err, body)
	}
}

// startClusterProcesses runs n mirror processes over fake, each with
// its own CACHE_DIR, PEERS naming them all.
func startClusterProcesses(t *testing.T, fake *fakeecr.Server, n int) (procs []*process, mirrors []*mirror, peerAddrs []string) {
	t.Helper()
	bin := mirrorBinary(t)
	peerAddrs = freeAddrs(t, n)
	for i := range n {
		var extra []string
		for k, v := range peerEnv(peerAddrs, i) {
			extra = append(extra, k+"="+v)
		}
		dir := t.TempDir()
		p := startProcess(t, bin, fake, dir, extra...)
		procs = append(procs, p)
		mirrors = append(mirrors, &mirror{Dir: dir, URL: "http://" + p.addr, Host: p.addr})
	}
	return procs, mirrors, peerAddrs
}

// kill -9 the owner of a blob while the other replicas' clients stream
// it from the owner: every one of those clients completes with verified
// bytes, the rest coming from ECR by Range where the owner stopped.
func TestOwnerKilledMidDownloadCostsNoPull(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	const size, after = 8 << 20, 1 << 20
	layer := fake.PutBlob("team/app", testkit.RandomBytes(91, size))
	procs, mirrors, addrs := startClusterProcesses(t, fake, 3)
	owner := slices.Index(addrs, peers.Owner(addrs, layer))
	// The owner's download from ECR gets a first MiB, then waits.
	hold := make(chan struct{})
	fake.SetFault(layer, fakeecr.Fault{Mode: fakeecr.FaultStall, Times: 1, After: after, Hold: hold})
	var waits []func() []error
	var survivors []*mirror
	for i, m := range mirrors {
		if i != owner {
			survivors = append(survivors, m)
			waits = append(waits, startFetches(t, m, "team/app", layer, 4))
		}
	}
	for _, m := range survivors {
		testwait.Until(t, "a replica to stream the first bytes from the owner", func() bool {
			names := m.tempFiles(t)
			if len(names) != 1 {
				return false
			}
			info, err := os.Stat(filepath.Join(m.Dir, "tmp", names[0]))
			return err == nil && info.Size() >= after/2
		})
	}
	if n := fake.Counters().BlobGet; n != 1 {
		t.Fatalf("ECR saw %d blob GETs before the kill, want the owner's only", n)
	}
	if err := procs[owner].cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	<-procs[owner].done
	procs[owner].done <- nil // for the cleanup
	close(hold)
	for i, wait := range waits {
		for j, err := range wait() {
			if err != nil {
				t.Errorf("client %d of surviving replica %d: %v", j, i, err)
			}
		}
	}
	c := fake.Counters()
	if c.S3RangeGet[layer] < 1 {
		t.Errorf("no replica resumed from ECR by Range (%d ranged GETs)", c.S3RangeGet[layer])
	}
	t.Logf("owner killed after %d of %d bytes: ECR served %d GETs, %d ranged, %d blob bytes in all", after, size, c.BlobGet, c.S3RangeGet[layer], c.S3BlobBytes[layer])
	for _, m := range survivors {
		if err := fetchBlob(t, m, "team/app", layer); err != nil {
			t.Errorf("again from a surviving replica: %v", err)
		}
	}
}

// An owner slow to answer (its ECR request held) is given PEER_TIMEOUT:
// then the asking replica downloads from ECR itself and its client
// completes while the owner still waits.
func TestSlowOwnerIsPassedByAfterPeerTimeout(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	layer := fake.PutBlob("team/app", testkit.RandomBytes(92, 300_000))
	addrs := freeAddrs(t, 2)
	var ms []*mirror
	for i := range addrs {
		env := peerEnv(addrs, i)
		env["PEER_TIMEOUT"] = "1s" // fires whenever it does: nothing waits on it but the fallback
		ms = append(ms, startMirror(t, fake, mirrorOpts{env: env}))
	}
	owner := slices.Index(addrs, peers.Owner(addrs, layer))
	asker := ms[1-owner]
	hold := make(chan struct{})
	defer close(hold)
	fake.SetFault(layer, fakeecr.Fault{Mode: fakeecr.FaultDelay, Times: 1, Hold: hold})
	if err := fetchBlob(t, asker, "team/app", layer); err != nil {
		t.Fatalf("pull while the owner is held: %v", err)
	}
	if n := metric(t, asker, `ecr_mirror_peer_requests_total{outcome="unreachable"}`); n != 1 {
		t.Errorf("counted %v owners that did not answer, want 1", n)
	}
	if n := fake.Counters().BlobGet; n != 2 {
		t.Errorf("ECR saw %d blob GETs, want 2: the held owner's and the asker's own", n)
	}
}
