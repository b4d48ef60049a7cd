package sharedstore

import (
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// inv builds an Inventory from names: d("x") is the digest of "x".
type inv struct{ Inventory }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is t0 plus h hours.
func at(h int) time.Time { return t0.Add(time.Duration(h) * time.Hour) }

// cutoff is the grace period's edge in every case: objects at hour 100
// and later are young.
var cutoff = at(99)

func d(name string) digest.Digest { return digest.FromString(name) }

func newInv() *inv {
	return &inv{Inventory{Blobs: map[digest.Digest]Listed{}, Refs: map[digest.Digest][]digest.Digest{},
		Used: map[digest.Digest]time.Time{}, Pins: map[digest.Digest]bool{}}}
}

// blob adds a blob of size bytes written at hour h.
func (v *inv) blob(name string, size int64, h int) *inv {
	v.Blobs[d(name)] = Listed{Size: size, Modified: at(h)}
	return v
}

// manifest adds a manifest of 1 byte written at hour h referencing refs.
func (v *inv) manifest(name string, h int, refs ...string) *inv {
	v.blob(name, 1, h)
	for _, r := range refs {
		v.Refs[d(name)] = append(v.Refs[d(name)], d(r))
	}
	if v.Refs[d(name)] == nil {
		v.Refs[d(name)] = []digest.Digest{}
	}
	return v
}

func (v *inv) used(name string, h int) *inv { v.Used[d(name)] = at(h); return v }
func (v *inv) pin(name string) *inv         { v.Pins[d(name)] = true; return v }

// image adds manifest name (hour h) with its config and layers of 100
// bytes each (hour h), named name+"/"+layer.
func (v *inv) image(name string, h int, layers ...string) *inv {
	refs := []string{name + "/config"}
	v.blob(name+"/config", 100, h)
	for _, l := range layers {
		refs = append(refs, l)
		if _, ok := v.Blobs[d(l)]; !ok {
			v.blob(l, 100, h)
		}
	}
	return v.manifest(name, h, refs...)
}

func names(ds []digest.Digest, all ...string) []string {
	byDigest := map[digest.Digest]string{}
	for _, n := range all {
		byDigest[d(n)] = n
	}
	var out []string
	for _, x := range ds {
		out = append(out, byDigest[x])
	}
	slices.Sort(out)
	return out
}

func TestSweepPlan(t *testing.T) {
	t.Parallel()
	// Every name a case uses, so that failures print names, not digests.
	all := []string{"a", "a/config", "b", "b/config", "c", "c/config", "idx", "la", "lb", "lc", "shared", "o1", "o2", "young", "gone"}
	for _, tc := range []struct {
		name    string
		inv     *inv
		max     int64
		delete  []string // sorted
		records []string // sorted
		images  int
	}{
		{name: "under the bound: nothing", max: 1000,
			inv: newInv().image("a", 1, "la").image("b", 2, "lb")},
		{name: "least recently used image first, whole", max: 250,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").used("a", 10).used("b", 20),
			delete: []string{"a", "a/config", "la"}, records: []string{"a"}, images: 1},
		{name: "use record newer than the other image's makes it last", max: 250,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").used("a", 30).used("b", 20),
			delete: []string{"b", "b/config", "lb"}, records: []string{"b"}, images: 1},
		{name: "manifest rewritten after the other's record counts as a use", max: 250,
			inv:    newInv().image("a", 40, "la").image("b", 2, "lb").used("b", 20),
			delete: []string{"b", "b/config", "lb"}, records: []string{"b"}, images: 1},
		{name: "blobs shared with a kept image stay", max: 350,
			inv:    newInv().image("a", 1, "la", "shared").image("b", 2, "lb", "shared").used("a", 10).used("b", 20),
			delete: []string{"a", "a/config", "la"}, records: []string{"a"}, images: 1},
		{name: "several images until under the bound", max: 250,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").image("c", 3, "lc"),
			delete: []string{"a", "a/config", "b", "b/config", "la", "lb"}, images: 2},
		{name: "a pinned image is never swept, even the oldest", max: 250,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").pin("a"),
			delete: []string{"b", "b/config", "lb"}, images: 1},
		{name: "pins hold everything an index references", max: 10,
			inv: newInv().image("a", 1, "la").image("b", 2, "lb").manifest("idx", 3, "a", "b").pin("idx")},
		{name: "an index is one image: its children's use counts", max: 450,
			inv: newInv().image("a", 1, "la").image("b", 2, "lb").manifest("idx", 3, "a", "b").image("c", 4, "lc").
				used("idx", 5).used("a", 50).used("c", 20),
			delete: []string{"c", "c/config", "lc"}, records: []string{"c"}, images: 1},
		{name: "young objects stay, the rest of their image goes", max: 100,
			inv:    newInv().image("a", 1, "la").blob("young", 100, 100).manifest("b", 1, "young"),
			delete: []string{"a", "a/config", "b", "la"}, images: 2},
		{name: "an image whose manifest is young keeps all it references", max: 100,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").manifest("young", 100, "b"),
			delete: []string{"a", "a/config", "la"}, images: 1},
		{name: "orphans first, oldest first, only as many as needed", max: 550,
			inv:    newInv().image("a", 1, "la").image("b", 2, "lb").blob("o1", 100, 5).blob("o2", 100, 3),
			delete: []string{"o2"}},
		{name: "young orphans stay", max: 50,
			inv:    newInv().blob("o1", 100, 100).blob("o2", 100, 3),
			delete: []string{"o2"}},
		{name: "records of manifests gone and old are dropped, young ones kept", max: 1000,
			inv:     newInv().image("a", 1, "la").used("gone", 5).used("young", 100),
			records: []string{"gone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := plan(tc.inv.Inventory, tc.max, cutoff)
			if got := names(p.Delete, all...); !slices.Equal(got, tc.delete) {
				t.Errorf("deletes %v, want %v", got, tc.delete)
			}
			if got := names(p.Records, all...); !slices.Equal(got, tc.records) {
				t.Errorf("deletes records %v, want %v", got, tc.records)
			}
			if p.Images != tc.images {
				t.Errorf("sweeps %d images, want %d", p.Images, tc.images)
			}
			var freed int64
			for _, x := range p.Delete {
				freed += tc.inv.Blobs[x].Size
			}
			if p.Freed != freed {
				t.Errorf("Freed %d, the deletes free %d", p.Freed, freed)
			}
		})
	}
}

func TestParseManifest(t *testing.T) {
	t.Parallel()
	a, b := d("a"), d("b")
	for _, tc := range []struct {
		name string
		doc  string
		is   bool
		refs []digest.Digest
	}{
		{name: "OCI manifest", is: true, refs: sortedDigests(a, b),
			doc: `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"` + a.String() + `"},"layers":[{"digest":"` + b.String() + `"}]}`},
		{name: "no mediaType but a config", is: true, refs: []digest.Digest{a},
			doc: `{"schemaVersion":2,"config":{"digest":"` + a.String() + `"},"layers":[]}`},
		{name: "index", is: true, refs: sortedDigests(a, b),
			doc: `{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"` + a.String() + `"},{"digest":"` + b.String() + `"}]}`},
		{name: "Docker manifest list", is: true, refs: []digest.Digest{a},
			doc: `{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{"digest":"` + a.String() + `"}]}`},
		{name: "a referrer's subject is not a reference", is: true, refs: []digest.Digest{a},
			doc: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"` + a.String() + `"},"layers":[],"subject":{"digest":"` + b.String() + `"}}`},
		{name: "OCI artifact manifest: its blobs", is: true, refs: sortedDigests(a, b),
			doc: `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/vnd.example.sbom","blobs":[{"digest":"` + a.String() + `"},{"digest":"` + b.String() + `"}]}`},
		{name: "bad digests skipped", is: true,
			doc: `{"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:nothex"},"layers":[{"digest":"md5:x"}]}`},
		{name: "an image config is not a manifest", doc: `{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"}}`},
		{name: "another mediaType", doc: `{"mediaType":"application/vnd.example+json","config":{"digest":"` + a.String() + `"}}`},
		{name: "not JSON", doc: `{"mediaType":`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := parseManifest([]byte(tc.doc))
			if m.is != tc.is || !slices.Equal(m.refs, tc.refs) {
				t.Errorf("parseManifest = %v %v, want %v %v", m.is, m.refs, tc.is, tc.refs)
			}
		})
	}
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}
