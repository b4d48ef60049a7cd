package admin

import (
	"slices"
	"testing"

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
