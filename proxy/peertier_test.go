package proxy

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// A miss the shared tier lacks is asked of the digest's owner; whatever
// the owner does (serve, fail, not be there, cut its body, send wrong
// bytes), the client never gets wrong bytes whole, no pull fails for it,
// and ECR is asked only when the owner did not serve. What the owner
// served is linked and never written to the shared tier (the owner does
// that).
func TestPeerTierNeverFailsAPull(t *testing.T) {
	t.Parallel()
	data := testkit.RandomBytes(77, 300_000)
	dgst := digest.FromBytes(data)
	corrupt := bytes.Clone(data)
	corrupt[5000] ^= 1
	tests := []struct {
		name   string
		setup  func(*memPeers, *memShared)
		wantOK bool // the first GET gets the blob whole and right
		// ECR blob GETs and ranged S3 GETs for the first GET; the
		// shared tier's writes; the proxy's peer counters.
		blobGets, rangeGets  int64
		sharedWrites         int
		peerHits, peerFailed int64
	}{
		{name: "owner serves: no ECR request, nothing written to the shared tier",
			setup: func(m *memPeers, _ *memShared) { m.content[dgst] = data }, wantOK: true, peerHits: 1},
		{name: "this replica owns it: ECR, written to the shared tier",
			setup: func(m *memPeers, _ *memShared) { m.err = ErrNoPeer }, wantOK: true, blobGets: 1, sharedWrites: 1},
		{name: "owner unreachable: ECR, written to the shared tier",
			setup:  func(m *memPeers, _ *memShared) { m.err = errors.New("dial tcp 10.0.0.2:5001: connection refused") },
			wantOK: true, blobGets: 1, sharedWrites: 1, peerFailed: 1},
		{name: "owner answers 404: ECR",
			setup: func(*memPeers, *memShared) {}, wantOK: true, blobGets: 1, sharedWrites: 1, peerFailed: 1},
		{name: "owner cut mid-body: the rest from ECR by Range, written to the shared tier",
			setup:  func(m *memPeers, _ *memShared) { m.content[dgst], m.cutAt = data, len(data)/3 },
			wantOK: true, blobGets: 1, rangeGets: 1, sharedWrites: 1},
		{name: "owner fails after writing the shared tier: read from the tier again",
			setup: func(m *memPeers, s *memShared) {
				m.err = errors.New("peer answered 503")
				m.fetched = func() { s.mu.Lock(); s.objects[dgst] = data; s.mu.Unlock() }
			}, wantOK: true, peerFailed: 1},
		{name: "owner sends wrong bytes: never served whole, downloaded again from ECR",
			setup: func(m *memPeers, _ *memShared) { m.content[dgst] = corrupt }, wantOK: false, blobGets: 1, sharedWrites: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			peers, tier := newMemPeers(), newMemShared()
			tt.setup(peers, tier)
			e := newEnv(t, envOptions{sharedStore: tier, peers: peers, edge: edgeOptions{retries: 2}})
			e.fake.PutBlob("team/app", data)
			resp, body, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
			gotOK := err == nil && resp.StatusCode == http.StatusOK && bytes.Equal(body, data)
			if gotOK != tt.wantOK {
				t.Fatalf("first GET whole and right: %v (err %v), want %v", gotOK, err, tt.wantOK)
			}
			if err == nil && bytes.Equal(body, corrupt) {
				t.Fatal("the peer's wrong bytes were served whole")
			}
			e.proxy.Wait()
			if got := peers.requests(); len(got) != 1 || got[0] != (PeerRequest{Registry: e.proxy.host, Repo: "team/app", Dgst: dgst}) {
				t.Errorf("peers were asked %+v, want once for the blob", got)
			}
			c := e.fake.Counters()
			if c.BlobGet != tt.blobGets || c.S3RangeGet[dgst] != tt.rangeGets {
				t.Errorf("ECR saw %d blob GETs and %d ranged GETs, want %d and %d", c.BlobGet, c.S3RangeGet[dgst], tt.blobGets, tt.rangeGets)
			}
			s := e.proxy.Stats()
			if s.PeerHits.Load() != tt.peerHits || s.PeerFailures.Load() != tt.peerFailed {
				t.Errorf("peer hits %d, failures %d; want %d, %d", s.PeerHits.Load(), s.PeerFailures.Load(), tt.peerHits, tt.peerFailed)
			}
			tier.mu.Lock()
			puts := tier.puts
			tier.mu.Unlock()
			if puts != tt.sharedWrites {
				t.Errorf("%d writes to the shared tier, want %d", puts, tt.sharedWrites)
			}
			// Whatever happened, the store now holds the right bytes,
			// linked: the next GET is a hit that asks no one.
			before := e.fake.Counters()
			if resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("second GET: %d, %d bytes", resp.StatusCode, len(body))
			}
			if after := e.fake.Counters(); after.BlobGet != before.BlobGet || after.BlobHead != before.BlobHead {
				t.Errorf("the second GET asked ECR (%d GETs, %d HEADs): the content is not stored and linked",
					after.BlobGet-before.BlobGet, after.BlobHead-before.BlobHead)
			}
		})
	}
}

// A peer's request is answered from the store, the shared tier or ECR,
// never passed on to another peer: peers asking each other cannot loop.
func TestPeerRequestNeverAsksAnotherPeer(t *testing.T) {
	t.Parallel()
	peers := newMemPeers()
	e := newEnv(t, envOptions{peers: peers})
	data := testkit.RandomBytes(78, 50_000)
	dgst := e.fake.PutBlob("team/app", data)
	peers.content[dgst] = data
	c, err := e.proxy.Blob(WithPeerRequest(t.Context()), &registry.Request{Name: "team/app", Dgst: dgst})
	if err != nil {
		t.Fatal(err)
	}
	if err := readVerified(c, data); err != nil {
		t.Fatal(err)
	}
	if got := peers.requests(); len(got) != 0 {
		t.Errorf("a peer's request asked the peers %+v", got)
	}
	if n := e.fake.Counters().BlobGet; n != 1 {
		t.Errorf("ECR saw %d blob GETs, want 1", n)
	}
}

// A repository that does not hold the digest gets nothing through a
// peer's request either: the owner's proxy confirms it upstream.
func TestPeerRequestForARepositoryWithoutTheDigestIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{peers: newMemPeers()})
	data := testkit.RandomBytes(79, 20_000)
	dgst := e.fake.PutBlob("team/app", data)
	if resp, _ := e.mustDo(t, http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("priming GET: %d", resp.StatusCode)
	}
	_, err := e.proxy.Blob(WithPeerRequest(t.Context()), &registry.Request{Name: "team/other", Dgst: dgst})
	var rerr *registry.Error
	if !errors.As(err, &rerr) || rerr.HTTPStatus() != http.StatusNotFound {
		t.Fatalf("peer request for a repository without the blob: %v, want a 404", err)
	}
}

// With peers, a GET by tag whose manifest is not stored fetches it by
// the digest the HEAD named, from the owner: ECR sees the HEAD only.
func TestTagManifestComesFromThePeerByDigest(t *testing.T) {
	t.Parallel()
	peers := newMemPeers()
	e := newEnv(t, envOptions{peers: peers})
	manifest := []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + digest.FromString("c").Encoded() + `","size":1},"layers":[]}`)
	dgst := e.fake.PutManifest("team/app", "v1", oci.MediaTypeImageManifest, manifest)
	peers.content[dgst], peers.mediaType = manifest, oci.MediaTypeImageManifest
	resp, body := e.mustDo(t, http.MethodGet, "/v2/team/app/manifests/v1", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, manifest) || resp.Header.Get("Docker-Content-Digest") != dgst.String() {
		t.Fatalf("GET by tag: %d, %d bytes, digest %s", resp.StatusCode, len(body), resp.Header.Get("Docker-Content-Digest"))
	}
	if got := resp.Header.Get("Content-Type"); got != oci.MediaTypeImageManifest {
		t.Errorf("Content-Type %q, want %q", got, oci.MediaTypeImageManifest)
	}
	c := e.fake.Counters()
	if c.ManifestGetByTag != 0 || c.ManifestGetByDigest != 0 || c.ManifestHead != 1 {
		t.Errorf("ECR saw %d GETs by tag, %d by digest and %d HEADs; want 0, 0, 1", c.ManifestGetByTag, c.ManifestGetByDigest, c.ManifestHead)
	}
	if got := peers.requests(); len(got) != 1 || !got[0].Manifest || got[0].Dgst != dgst {
		t.Errorf("peers were asked %+v, want the manifest by digest once", got)
	}
	if !e.store.Linked(cache.Repo{Registry: e.proxy.host, Name: "team/app"}, dgst) {
		t.Error("the manifest is not linked to the repository")
	}
}

// readVerified reads c's body whole and compares it with want.
func readVerified(c *registry.Content, want []byte) error {
	defer c.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(c.Body); err != nil {
		return err
	}
	if !bytes.Equal(b.Bytes(), want) {
		return errors.New("wrong bytes")
	}
	return nil
}

// A peer's request does not join a download that is itself waiting on a
// peer: two replicas that each take the other for the digest's owner
// (members changing) would wait on each other. It is refused at once,
// and the asking replica goes to the shared tier or ECR.
func TestPeerRequestDoesNotJoinADownloadAskingAPeer(t *testing.T) {
	t.Parallel()
	peers := newMemPeers()
	peers.block = make(chan struct{})
	e := newEnv(t, envOptions{peers: peers})
	data := testkit.RandomBytes(80, 20_000)
	dgst := e.fake.PutBlob("team/app", data)
	peers.content[dgst] = data
	done := make(chan error, 1)
	go func() {
		_, body, err := e.do(t, t.Context(), http.MethodGet, "/v2/team/app/blobs/"+dgst.String(), nil)
		if err == nil && !bytes.Equal(body, data) {
			err = errors.New("wrong bytes")
		}
		done <- err
	}()
	testwait.Until(t, "the client's download to ask the peer", func() bool {
		fl := e.proxy.flight(dgst)
		return fl != nil && fl.askingPeer.Load()
	})
	ctx, cancel := context.WithTimeout(WithPeerRequest(t.Context()), testwait.HangGuard)
	defer cancel()
	_, err := e.proxy.Blob(ctx, &registry.Request{Name: "team/app", Dgst: dgst})
	var rerr *registry.Error
	if !errors.As(err, &rerr) || rerr.Code != registry.CodeUnavailable {
		t.Fatalf("a peer's request while the download asks a peer: %v, want 503 at once", err)
	}
	close(peers.block)
	if err := <-done; err != nil {
		t.Fatalf("the client's pull: %v", err)
	}
}
