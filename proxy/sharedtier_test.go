package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// A miss reads the shared tier before upstream; whatever the tier does
// (hold it, lack it, fail, hold corrupt bytes, refuse writes), the client
// never gets wrong bytes whole, a failure of the tier never fails the
// pull, and what upstream served is written to the tier after commit.
func TestSharedTierNeverFailsAPull(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(41, 200_000)
	dgst := digest.FromBytes(data)
	corrupt := bytes.Clone(data)
	corrupt[1000] ^= 1
	tests := []struct {
		name   string
		setup  func(*memShared)
		wantOK bool // the first GET gets the blob whole and right
		// ECR blob GETs and HEADs for the first GET, and what the tier
		// holds after every background write.
		blobGets, blobHeads int64
		hits, writes, fails int64
		deleted             bool
		tierHolds           bool
	}{
		{name: "absent: ECR, then written", setup: func(*memShared) {}, wantOK: true, blobGets: 1, writes: 1, tierHolds: true},
		{name: "held: from the tier, after ECR confirms the repository", setup: func(m *memShared) { m.objects[dgst] = data },
			wantOK: true, blobHeads: 1, hits: 1, tierHolds: true},
		{name: "unreachable: ECR", setup: func(m *memShared) {
			m.openErr, m.putErr = errors.New("dial tcp: refused"), errors.New("dial tcp: refused")
		},
			wantOK: true, blobGets: 1, fails: 1},
		{name: "refuses writes: ECR, failure counted", setup: func(m *memShared) { m.putErr = errors.New("403 AccessDenied") },
			wantOK: true, blobGets: 1, fails: 1},
		{name: "corrupt: never served whole, deleted, downloaded again and written", setup: func(m *memShared) { m.objects[dgst] = corrupt },
			wantOK: false, blobHeads: 1, blobGets: 1, writes: 1, deleted: true, tierHolds: true},
		{name: "corrupt and not deletable: downloaded again once, from ECR", setup: func(m *memShared) {
			m.objects[dgst], m.delErr = corrupt, errors.New("403 AccessDenied")
		}, wantOK: false, blobHeads: 1, blobGets: 1, writes: 1, deleted: true, tierHolds: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tier := newMemShared()
			tt.setup(tier)
			e := newEnv(t, envOptions{sharedStore: tier})
			e.fake.PutBlob("team/app", data)
			resp, body, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
			gotOK := err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, data)
			if gotOK != tt.wantOK {
				t.Fatalf("first GET whole and right: %v (err %v), want %v", gotOK, err, tt.wantOK)
			}
			if !tt.wantOK && err == nil && bytes.Equal(body, corrupt) {
				t.Fatal("the corrupt object was served whole")
			}
			e.proxy.Wait() // background writes and downloads included
			c := e.fake.Counters()
			if c.BlobGet != tt.blobGets || c.BlobHead != tt.blobHeads {
				t.Errorf("ECR saw %d blob GETs and %d HEADs, want %d and %d", c.BlobGet, c.BlobHead, tt.blobGets, tt.blobHeads)
			}
			s := e.proxy.Stats()
			if s.SharedHits.Load() != tt.hits || s.SharedWrites.Load() != tt.writes || s.SharedWriteFailures.Load() != tt.fails {
				t.Errorf("shared hits %d, writes %d, write failures %d; want %d, %d, %d",
					s.SharedHits.Load(), s.SharedWrites.Load(), s.SharedWriteFailures.Load(), tt.hits, tt.writes, tt.fails)
			}
			if got := len(tier.deletes) == 1 && tier.deletes[0] == dgst; got != tt.deleted {
				t.Errorf("deleted %v, want deleted: %v", tier.deletes, tt.deleted)
			}
			if got := bytes.Equal(tier.object(dgst), data); got != tt.tierHolds {
				t.Errorf("tier holds the right bytes: %v, want %v", got, tt.tierHolds)
			}
			if !tt.wantOK { // the retry: stored by the download that started again
				if resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
					t.Fatalf("retry: %d, %d bytes", resp.StatusCode, len(body))
				}
				e.proxy.Wait()
				if !bytes.Equal(tier.object(dgst), data) || e.fake.Counters().BlobGet != 1 {
					t.Errorf("after the retry the tier holds the right bytes: %v; ECR GETs %d, want 1", bytes.Equal(tier.object(dgst), data), e.fake.Counters().BlobGet)
				}
			}
		})
	}
}

// After a failed read the tier is skipped for sharedCoolOff, then asked
// again.
func TestSharedTierIsSkippedForACoolOffAfterAFailure(t *testing.T) {
	t.Parallel()
	tier := newMemShared()
	tier.openErr = errors.New("dial tcp: refused")
	clk := clockwork.NewFakeClock()
	e := newEnv(t, envOptions{sharedStore: tier, tagClock: clk})
	var dgsts []digest.Digest
	for i := range 3 {
		data := testkit.RandomBytes(uint64(50+i), 10_000)
		dgsts = append(dgsts, e.fake.PutBlob("team/app", data))
	}
	get := func(dgst digest.Digest) {
		t.Helper()
		if resp, _ := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", dgst, resp.StatusCode)
		}
	}
	get(dgsts[0])
	get(dgsts[1])
	if n := tier.opened(); n != 1 {
		t.Fatalf("the tier was asked %d times, want 1: the failure starts a cool-off", n)
	}
	clk.Advance(sharedCoolOff)
	tier.mu.Lock()
	tier.openErr = nil
	tier.mu.Unlock()
	get(dgsts[2])
	if n := tier.opened(); n != 2 {
		t.Errorf("after the cool-off the tier was asked %d times in all, want 2", n)
	}
}

// Every manifest answered, by tag or digest, from upstream or the store,
// GET or HEAD, is told to Options.UsedManifest (the shared tier's use
// records); a manifest not answered is not.
func TestManifestsAnsweredAreToldAsUsed(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var used []digest.Digest
	e := newEnv(t, envOptions{usedManifest: func(d digest.Digest) {
		mu.Lock()
		defer mu.Unlock()
		used = append(used, d)
	}})
	manifest := e.fake.PutManifest("team/app", "v1", ociManifest, testManifest(3))
	for _, tc := range []struct{ method, ref string }{
		{http.MethodGet, "v1"},                                 // by tag, downloaded
		{http.MethodGet, manifest.String()},                    // by digest, stored
		{http.MethodHead, "v1"},                                // by tag, HEAD
		{http.MethodHead, manifest.String()},                   // by digest, HEAD
		{http.MethodGet, "missing"},                            // not answered
		{http.MethodGet, digest.FromString("absent").String()}, // not answered
	} {
		e.mustDo(t, tc.method, "/v2/team/app/manifests/"+tc.ref, nil)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []digest.Digest{manifest, manifest, manifest, manifest}; !slices.Equal(used, want) {
		t.Errorf("told of %v, want the manifest four times", used)
	}
}

// A manifest in the shared tier over Options.ManifestLimit is never
// stored nor served whole, its size told or not (an object sent without
// Content-Length): the tier is held to the limit upstream is held to.
func TestSharedManifestOverLimitRefused(t *testing.T) {
	t.Parallel()
	for _, sizeUnknown := range []bool{false, true} {
		t.Run(fmt.Sprintf("size unknown %v", sizeUnknown), func(t *testing.T) {
			t.Parallel()
			tier := newMemShared()
			tier.sizeUnknown = sizeUnknown
			e := newEnv(t, envOptions{sharedStore: tier, manifestLimit: 64})
			raw := testManifest(4)
			if len(raw) <= 64 {
				t.Fatalf("test manifest is only %d bytes", len(raw))
			}
			dgst := e.fake.PutManifest("team/app", "big", ociManifest, raw)
			tier.mu.Lock()
			tier.objects[dgst], tier.putTypes[dgst] = raw, ociManifest
			tier.mu.Unlock()
			resp, body, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/manifests/"+dgst.String(), nil)
			if err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, raw) {
				t.Fatalf("a %d byte manifest over the 64 byte limit was served whole from the shared tier", len(raw))
			}
			e.proxy.Wait()
			e.assertNotStored(t, dgst)
		})
	}
}

// A manifest in the shared tier sent without its size, within the
// limit, is served from the tier whole, ECR asked for no body.
func TestSharedManifestOfUnknownSizeServedFromTheTier(t *testing.T) {
	t.Parallel()
	tier := newMemShared()
	tier.sizeUnknown = true
	e := newEnv(t, envOptions{sharedStore: tier})
	raw := testManifest(4)
	dgst := e.fake.PutManifest("team/app", "v1", ociManifest, raw)
	tier.mu.Lock()
	tier.objects[dgst], tier.putTypes[dgst] = raw, ociManifest
	tier.mu.Unlock()
	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/"+dgst.String(), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, raw) {
		t.Fatalf("GET: %d, %d bytes; want 200 and the %d byte manifest", resp.StatusCode, len(body), len(raw))
	}
	if c := e.fake.Counters(); c.ManifestGetByDigest != 0 || c.ManifestGetByTag != 0 {
		t.Errorf("ECR saw %d manifest GETs by digest, %d by tag; want none (the tier has it)", c.ManifestGetByDigest, c.ManifestGetByTag)
	}
	e.proxy.Wait()
	if info, err := e.store.Stat(dgst); err != nil || info.Size != int64(len(raw)) {
		t.Errorf("store.Stat = %+v, %v; want the manifest stored, %d bytes", info, err, len(raw))
	}
}
