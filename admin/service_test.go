package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

func TestOrphanReferrersAreThoseOfNoPinnedImage(t *testing.T) {
	t.Parallel()
	d := func(s string) digest.Digest { return digest.FromString(s) }
	pin := func(name string, names ...string) cache.PinInfo { return cache.PinInfo{Digest: d(name), Names: names} }
	tests := []struct {
		name string
		pins []cache.PinInfo
		want []digest.Digest
	}{
		{name: "the image is pinned: its referrers stay", pins: []cache.PinInfo{
			pin("app", "team/app:v1"), pin("sig", ReferrerPinName("team/app:v1"))}},
		{name: "the image is unpinned: its referrers go", pins: []cache.PinInfo{
			pin("sig", ReferrerPinName("team/app:v1")), pin("sbom", ReferrerPinName("team/app:v1"))},
			want: []digest.Digest{d("sig"), d("sbom")}},
		{name: "a referrer of two images stays while one is pinned", pins: []cache.PinInfo{
			pin("app", "team/app@sha256:1"), pin("sig", ReferrerPinName("team/app:v1"), ReferrerPinName("team/app@sha256:1"))}},
		{name: "a referrer of two images goes with the last", pins: []cache.PinInfo{
			pin("sig", ReferrerPinName("team/app:v1"), ReferrerPinName("team/app@sha256:1"))}, want: []digest.Digest{d("sig")}},
		{name: "a referrer also pinned for itself stays", pins: []cache.PinInfo{
			pin("sig", ReferrerPinName("team/app:v1"), "team/app:sig")}},
		{name: "a pin without names stays", pins: []cache.PinInfo{pin("blob")}},
		// A referrer pin names an image, not another referrer pin.
		{name: "the name of a referrer pin keeps no referrer", pins: []cache.PinInfo{
			pin("sig", ReferrerPinName("team/app:v1")), pin("sigsig", ReferrerPinName(ReferrerPinName("team/app:v1")))},
			want: []digest.Digest{d("sig"), d("sigsig")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := orphanReferrers(tt.pins); !slices.Equal(got, tt.want) {
				t.Errorf("orphanReferrers = %v, want %v", got, tt.want)
			}
		})
	}
}

// Tag records are listed with their upstream registry (the main
// upstream's for records without one), and purge resolves
// <registry>/<repo>:<tag> to that upstream's record only, forgetting only
// the records whose manifest went.
func TestTagsAreListedAndPurgedPerUpstream(t *testing.T) {
	t.Parallel()
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	manifest := func(seed int) digest.Digest {
		data := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","seed":%d}`, seed)
		d := digest.FromBytes(data)
		if err := store.Put(d, "application/vnd.oci.image.manifest.v1+json", data); err != nil {
			t.Fatal(err)
		}
		return d
	}
	now := time.Now()
	records := []struct {
		repo cache.Repo
		dgst digest.Digest
	}{
		{cache.Repo{Name: "team/app"}, manifest(1)},
		{cache.Repo{Registry: "ghcr.io", Name: "team/app"}, manifest(2)},
	}
	for _, r := range records {
		if err := store.PutTag(r.repo, "v1", cache.AnyAccept, cache.TagRecord{Digest: r.dgst, Checked: now}); err != nil {
			t.Fatal(err)
		}
	}
	svc := NewService(store, nil, "ecr.example")
	l, err := svc.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]digest.Digest{}
	for _, tag := range l.Tags {
		got[tag.Registry+"/"+tag.Repository+":"+tag.Tag] = tag.Digest
	}
	want := map[string]digest.Digest{"ecr.example/team/app:v1": records[0].dgst, "ghcr.io/team/app:v1": records[1].dgst}
	if len(got) != len(want) || got["ecr.example/team/app:v1"] != records[0].dgst || got["ghcr.io/team/app:v1"] != records[1].dgst {
		t.Fatalf("listed tags %v, want %v", got, want)
	}
	rep, err := svc.Purge(context.Background(), PurgeRequest{Image: "ghcr.io/team/app:v1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 1 || rep.Removed[0].Digest != records[1].dgst || rep.TagsForgotten != 1 {
		t.Fatalf("purge removed %+v and forgot %d tag records; want ghcr.io's manifest and its one record", rep.Removed, rep.TagsForgotten)
	}
	if _, err := store.GetTag(records[0].repo, "v1", cache.AnyAccept); err != nil {
		t.Fatalf("the main upstream's record went too: %v", err)
	}
	if _, err := store.Stat(records[0].dgst); err != nil {
		t.Fatalf("the main upstream's manifest went too: %v", err)
	}
}

// memPins is a shared tier's pins in memory; fail, when set, fails every
// call.
type memPins struct {
	pins map[digest.Digest][]string
	fail error
}

func (m *memPins) PutPin(_ context.Context, dgst digest.Digest, names []string) error {
	if m.fail != nil {
		return m.fail
	}
	m.pins[dgst] = names
	return nil
}

func (m *memPins) DeletePin(_ context.Context, dgst digest.Digest) error {
	if m.fail != nil {
		return m.fail
	}
	delete(m.pins, dgst)
	return nil
}

// With a shared tier, pin writes the image's pin there with its names,
// unpin removes it, and a failure there is an error that says the local
// pin holds.
func TestPinsReachTheSharedTier(t *testing.T) {
	t.Parallel()
	store, err := cache.Open(cache.Options{Dir: t.TempDir(), MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	img := putManifestImage(t, store, 1)
	shared := &memPins{pins: map[digest.Digest][]string{}}
	svc := NewService(store, nil, "")
	svc.shared = shared
	ctx := context.Background()
	image := "team/app@" + img.String()
	if _, err := svc.Pin(ctx, image, PinOptions{}); err != nil {
		t.Fatal(err)
	}
	if names, ok := shared.pins[img]; !ok || !slices.Equal(names, []string{image}) {
		t.Fatalf("shared pins %v, want %s named %s", shared.pins, img, image)
	}
	if _, err := svc.Unpin(ctx, image); err != nil {
		t.Fatal(err)
	}
	if len(shared.pins) != 0 {
		t.Fatalf("shared pins %v after unpin, want none", shared.pins)
	}

	shared.fail = errors.New("bucket unreachable")
	_, err = svc.Pin(ctx, image, PinOptions{})
	if err == nil || !strings.Contains(err.Error(), "pinned in this mirror's cache, but not in the shared store") {
		t.Fatalf("pin with the shared tier failing: %v", err)
	}
	if pins, _ := store.Pins(); len(pins) != 1 {
		t.Errorf("the local pin did not hold: %v", pins)
	}
	_, err = svc.Unpin(ctx, image)
	if err == nil || !strings.Contains(err.Error(), "still pinned in the shared store") {
		t.Fatalf("unpin with the shared tier failing: %v", err)
	}
}
