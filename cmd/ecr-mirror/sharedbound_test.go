package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// imageBytes is the bytes of img's manifest, config and layers.
func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	n := int64(len(raw) + len(cfg))
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		size, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		n += size
	}
	return n
}

// waitInTier waits until the tier holds every digest of ds.
func waitInTier(t *testing.T, tier *sharedTier, what string, ds ...digest.Digest) {
	t.Helper()
	testwait.Until(t, what+" in the shared tier", func() bool {
		keys := tier.keys(t)
		for _, d := range ds {
			if !slices.Contains(keys, tier.key(d)) {
				return false
			}
		}
		return true
	})
}

// usedKey is the key of the use record of manifest m.
func (s *sharedTier) usedKey(m digest.Digest) string { return s.prefix + "/used/" + m.Encoded() }

// boundImages are three images in a fake ECR, the second sharing the
// first one's first layer: manifests, blobs (layers, then config) and
// sizes (manifest, config and layers).
type boundImages struct {
	manifests  [3]digest.Digest
	blobs      [3][]digest.Digest
	sizes      [3]int64
	shared     digest.Digest // image 1's first layer, in image 2 too
	sharedSize int64
}

// all are image i's manifest and blobs.
func (b *boundImages) all(i int) []digest.Digest {
	return append([]digest.Digest{b.manifests[i]}, b.blobs[i]...)
}

// putBoundImages puts team/app:v1, v2 and v3 in fake.
func putBoundImages(t *testing.T, fake *fakeecr.Server) *boundImages {
	t.Helper()
	var imgs [3]v1.Image
	var err error
	for i := range imgs {
		if imgs[i], err = random.Image(64<<10, 2-int64(i%2)); err != nil {
			t.Fatal(err)
		}
	}
	layers1, err := imgs[0].Layers()
	if err != nil {
		t.Fatal(err)
	}
	if imgs[1], err = mutate.AppendLayers(imgs[1], layers1[0]); err != nil { // 1 layer of its own, 1 of image 1's
		t.Fatal(err)
	}
	b := &boundImages{}
	for i, img := range imgs {
		b.manifests[i], b.blobs[i] = putImage(t, fake, "team/app", fmt.Sprintf("v%d", i+1), img)
		b.sizes[i] = imageBytes(t, img)
	}
	b.shared = b.blobs[0][0]
	if !slices.Contains(b.blobs[1], b.shared) {
		t.Fatalf("image 2's blobs %v lack image 1's first layer %s", b.blobs[1], b.shared)
	}
	if b.sharedSize, err = layers1[0].Size(); err != nil {
		t.Fatal(err)
	}
	return b
}

// A replica with SHARED_STORE_MAX_SIZE records the use of each manifest
// it serves and sweeps the bucket down to the bound: of three images
// where only two fit, the least recently used unpinned one goes (its own
// blobs; a layer it shares with a kept image stays), the pinned one and
// the most recently used one stay whole. A replica then pulling the
// swept image gets it whole and verified: what the tier lost from ECR,
// the shared layer from the tier.
func TestSharedTierSweepDropsTheLeastRecentlyUsedUnpinnedImage(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	imgs := putBoundImages(t, fake)
	tier := startSharedTier(t)
	// The sweeps' clock is an hour ahead: nothing is in its grace
	// period, and a sweep runs when the test advances it.
	clk := clockwork.NewFakeClockAt(time.Now().Add(time.Hour))
	opts := tier.opts()
	opts.env["SHARED_STORE_MAX_SIZE"] = strconv.FormatInt(imgs.sizes[1]+imgs.sizes[2], 10) // over it by image 1's own blobs
	awsEdit := opts.edit
	opts.edit = func(c *settings.Config) { awsEdit(c); c.SharedStoreClock = clk }
	a := startMirror(t, fake, opts)
	pinUseThenUse(t, a, tier, imgs)

	sweep(t, a, clk)
	checkSwept(t, a, tier, imgs)

	// A replica with an empty disk pulls the swept image: the tier lost
	// its manifest, config and own layer (from ECR now), not the layer
	// image 2 shares.
	b := startMirror(t, fake, tier.opts())
	before := fake.Counters()
	if _, err := pullImage(t, b, "team/app:v1"); err != nil {
		t.Fatalf("pulling the swept image: %v", err)
	}
	if got, want := fake.Counters().BlobGet-before.BlobGet, int64(len(imgs.blobs[0])-1); got != want {
		t.Errorf("ECR served %d blob GETs for the swept image, want %d (all but the shared layer)", got, want)
	}
}

// pinUseThenUse has a pull and pin image 3 (its pin must reach the
// bucket), then pull image 1, then image 2 at least a second later by
// the bucket's clock, and waits for every image in the tier.
func pinUseThenUse(t *testing.T, a *mirror, tier *sharedTier, imgs *boundImages) {
	t.Helper()
	if _, err := pullImage(t, a, "team/app:v3"); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, map[string]string{"CACHE_DIR": a.Dir}, "cache", "pin", "team/app:v3"); code != exitOK {
		t.Fatalf("pin: exit %d\n%s", code, errOut)
	}
	if pins := tier.records(t, "pins"); !slices.Equal(pins, []string{tier.prefix + "/pins/" + imgs.manifests[2].Encoded()}) {
		t.Fatalf("the bucket's pins are %v, want image 3's", pins)
	}
	m1, m2 := imgs.manifests[0], imgs.manifests[1]
	if _, err := pullImage(t, a, "team/app:v1"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "image 1's use to be recorded", func() bool { return slices.Contains(tier.records(t, "used"), tier.usedKey(m1)) })
	// S3 stamps whole seconds, from a file system clock that may lag by
	// a tick: image 2's use must be stamped later than image 1's.
	used1 := tier.lastModified(t, tier.usedKey(m1))
	testwait.Until(t, "the clock to pass image 1's use by a second", func() bool { return time.Now().After(used1.Add(1100 * time.Millisecond)) })
	if _, err := pullImage(t, a, "team/app:v2"); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "image 2's use to be recorded", func() bool { return slices.Contains(tier.records(t, "used"), tier.usedKey(m2)) })
	if used2 := tier.lastModified(t, tier.usedKey(m2)); !used2.After(used1) {
		t.Fatalf("image 2's use stamped %v, not after image 1's %v", used2, used1)
	}
	for i := range 3 {
		waitInTier(t, tier, fmt.Sprintf("image %d", i+1), imgs.all(i)...)
	}
}

// checkSwept checks that a's sweep left images 2 and 3 whole, image 1's
// shared layer alone of its objects, and counted and logged it.
func checkSwept(t *testing.T, a *mirror, tier *sharedTier, imgs *boundImages) {
	t.Helper()
	keys := tier.keys(t)
	for i := 1; i < 3; i++ {
		for _, d := range imgs.all(i) {
			if !slices.Contains(keys, tier.key(d)) {
				t.Errorf("image %d's %s was swept", i+1, d)
			}
		}
	}
	for _, d := range imgs.all(0) {
		if in := slices.Contains(keys, tier.key(d)); in != (d == imgs.shared) {
			t.Errorf("image 1's %s in the tier after the sweep: %v, want %v (only the layer image 2 shares stays)", d, in, d == imgs.shared)
		}
	}
	if slices.Contains(tier.records(t, "used"), tier.usedKey(imgs.manifests[0])) {
		t.Error("image 1's use record outlived the image")
	}
	if got, want := metric(t, a, "ecr_mirror_shared_store_swept_bytes_total"), float64(imgs.sizes[0]-imgs.sharedSize); got != want {
		t.Errorf("swept_bytes_total %v, want image 1's own %v", got, want)
	}
	if got, want := metric(t, a, "ecr_mirror_shared_store_bytes"), float64(imgs.sizes[1]+imgs.sizes[2]); got != want {
		t.Errorf("shared_store_bytes %v, want %v", got, want)
	}
	if !strings.Contains(a.Logs.String(), "shared store swept") {
		t.Error("the sweep logged no summary")
	}
}

// sweep runs one sweep of m's shared tier: it advances the sweeps' clock
// by SHARED_STORE_SWEEP_INTERVAL once the sweeper waits on it, then waits
// for the sweep to be counted.
func sweep(t *testing.T, m *mirror, clk *clockwork.FakeClock) {
	t.Helper()
	before := metric(t, m, "ecr_mirror_shared_store_sweeps_total")
	ctx, cancel := context.WithTimeout(context.Background(), testwait.HangGuard)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatalf("the sweeper never waited for its interval: %v", err)
	}
	clk.Advance(5 * time.Minute)
	testwait.Until(t, "a sweep", func() bool {
		if metric(t, m, "ecr_mirror_shared_store_sweep_failures_total") > 0 {
			t.Fatalf("the sweep failed:\n%s", m.Logs.String())
		}
		return metric(t, m, "ecr_mirror_shared_store_sweeps_total") > before
	})
}

// Pins made before the mirror had SHARED_STORE (or while it was
// stopped) reach the bucket when it starts with it.
func TestLocalPinsReachTheBucketAtStart(t *testing.T) {
	t.Parallel()
	fake, manifest, _ := sharedImage(t)
	a := startMirror(t, fake, mirrorOpts{})
	if code, _, errOut := cli(t, map[string]string{"CACHE_DIR": a.Dir}, "cache", "pin", "team/app:v1"); code != exitOK {
		t.Fatalf("pin: exit %d\n%s", code, errOut)
	}
	a.Stop()
	tier := startSharedTier(t)
	opts := tier.opts()
	opts.dir = a.Dir
	startMirror(t, fake, opts)
	want := tier.prefix + "/pins/" + manifest.Encoded()
	testwait.Until(t, "the pin in the bucket", func() bool { return slices.Contains(tier.records(t, "pins"), want) })
}

// With peers, one replica sweeps: the owner of a fixed key by the
// members' rendezvous hashing. Three replicas, each with the bound, are
// each given a sweep interval: one sweeps, the others pass, and the
// bucket is swept.
func TestOnlyOneReplicaOfThePeersSweeps(t *testing.T) {
	t.Parallel()
	fake, manifest, blobs := sharedImage(t)
	tier := startSharedTier(t)
	addrs := freeAddrs(t, 3)
	var mirrors []*mirror
	var clocks []*clockwork.FakeClock
	for i := range addrs {
		clk := clockwork.NewFakeClockAt(time.Now().Add(time.Hour))
		o := tier.opts()
		maps.Copy(o.env, peerEnv(addrs, i))
		o.env["SHARED_STORE_MAX_SIZE"] = "1"
		awsEdit := o.edit
		o.edit = func(c *settings.Config) { awsEdit(c); c.SharedStoreClock = clk }
		mirrors, clocks = append(mirrors, startMirror(t, fake, o)), append(clocks, clk)
	}
	if _, err := pullImage(t, mirrors[0], "team/app:v1"); err != nil {
		t.Fatal(err)
	}
	waitInTier(t, tier, "the image", append([]digest.Digest{manifest}, blobs...)...)
	ctx, cancel := context.WithTimeout(context.Background(), testwait.HangGuard)
	defer cancel()
	for i, clk := range clocks {
		if err := clk.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("replica %d's sweeper never waited: %v", i, err)
		}
		clk.Advance(5 * time.Minute)
		// Back to waiting: the interval's turn is over, swept or passed.
		if err := clk.BlockUntilContext(ctx, 1); err != nil {
			t.Fatalf("replica %d's sweeper never came back: %v", i, err)
		}
	}
	var swept []int
	for i, m := range mirrors {
		if metric(t, m, "ecr_mirror_shared_store_sweeps_total") > 0 {
			swept = append(swept, i)
		}
	}
	if len(swept) != 1 {
		t.Fatalf("replicas %v swept, want exactly one", swept)
	}
	if keys := tier.keys(t); len(keys) != 0 {
		t.Errorf("the bucket holds %v after a sweep to 1 byte", keys)
	}
}
