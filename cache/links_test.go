package cache

import (
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// linkTestImage is an index of one manifest with a config and a layer.
func linkTestImage(seed uint64) (index, manifest, config, layer *node) {
	layer = blobNode("layer", seed, 4<<10, "application/octet-stream")
	config = configNode("config", 200)
	manifest = manifestNode("m", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, config, layer)
	index = indexNode("i", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, manifest)
	return index, manifest, config, layer
}

func assertLinked(t *testing.T, s *Store, r Repo, want bool, nodes ...*node) {
	t.Helper()
	for _, n := range nodes {
		if got := s.Linked(r, n.dgst); got != want {
			t.Errorf("Linked(%s, %s %s) = %v, want %v", r, n.name, n.dgst, got, want)
		}
	}
}

// Linking a stored index links what it references, transitively,
// including content not stored yet; nothing else is linked, and links
// are per registry and repository.
func TestLinkTakesTheImage(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<30)
	index, manifest, config, layer := linkTestImage(1)
	pull(t, s, index)
	other := blobNode("other", 99, 100, "application/octet-stream")
	pull(t, s, other)
	if err := s.Delete(layer.dgst); err != nil { // referenced, not stored
		t.Fatal(err)
	}
	b := Repo{Registry: "ecr.example", Name: "team-b/app"}
	if err := s.Link(b, index.dgst); err != nil {
		t.Fatal(err)
	}
	assertLinked(t, s, b, true, index, manifest, config, layer)
	assertLinked(t, s, b, false, other)
	assertLinked(t, s, Repo{Registry: "ecr.example", Name: "team-a/app"}, false, index, manifest, layer)
	assertLinked(t, s, Repo{Registry: "other.example", Name: "team-b/app"}, false, index, layer)
	assertLinked(t, s, Repo{Name: "team-b/app"}, false, index)
}

// LinkNew says which links a call added: the image's the first time,
// only those not there yet after, none when nothing is new.
func TestLinkNewReturnsOnlyTheLinksItAdded(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<30)
	index, manifest, config, layer := linkTestImage(2)
	pull(t, s, index)
	r := Repo{Registry: "ecr.example", Name: "team/app"}
	if added, err := s.LinkNew(r, layer.dgst); err != nil || len(added) != 1 || added[0] != layer.dgst {
		t.Fatalf("LinkNew(layer) = %v, %v; want [layer]", added, err)
	}
	added, err := s.LinkNew(r, index.dgst)
	if err != nil {
		t.Fatal(err)
	}
	want := map[digest.Digest]bool{index.dgst: true, manifest.dgst: true, config.dgst: true}
	if len(added) != len(want) {
		t.Fatalf("LinkNew(index) added %v, want the index, manifest and config (the layer was linked)", added)
	}
	for _, d := range added {
		if !want[d] {
			t.Errorf("LinkNew(index) added %s, not new", d)
		}
	}
	if added, err := s.LinkNew(r, index.dgst); err != nil || len(added) != 0 {
		t.Errorf("LinkNew again = %v, %v; want nothing new", added, err)
	}
}

// Links are durable, and dropped with their content: at eviction, at
// Delete and Purge, and at Open for content neither stored nor
// referenced by a stored manifest.
func TestLinksLifecycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<30)
	index, manifest, config, layer := linkTestImage(2)
	pull(t, s, index)
	r := Repo{Registry: "ecr.example", Name: "team/app"}
	if err := s.Link(r, index.dgst); err != nil {
		t.Fatal(err)
	}
	loose := digest.FromString("never stored, never referenced")
	if err := s.Link(r, loose); err != nil {
		t.Fatal(err)
	}
	if n := s.LinkCount(); n != 5 {
		t.Fatalf("LinkCount = %d, want 5", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir, 1<<30)
	assertLinked(t, s, r, true, index, manifest, config, layer)
	if s.Linked(r, loose) {
		t.Error("a link to content neither stored nor referenced survived Open")
	}
	if _, err := s.Purge(index.dgst); err != nil {
		t.Fatal(err)
	}
	assertLinked(t, s, r, false, index, manifest, config, layer)
	if n := s.LinkCount(); n != 0 {
		t.Errorf("LinkCount after purging the image = %d, want 0", n)
	}
	s.Close()
	s = openStore(t, dir, 1<<30)
	if n := s.LinkCount(); n != 0 {
		t.Errorf("LinkCount after a restart = %d, want 0: purged links came back", n)
	}
}

// Eviction drops the links of what it evicts; linking again after the
// content came back works (a pending removal never deletes a fresh link).
func TestLinksDroppedAtEviction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 12<<10)
	r := Repo{Name: "team/app"}
	a := blobNode("a", 1, 8<<10, "application/octet-stream")
	b := blobNode("b", 2, 8<<10, "application/octet-stream")
	pull(t, s, a)
	if err := s.Link(r, a.dgst); err != nil {
		t.Fatal(err)
	}
	pull(t, s, b) // evicts a
	if s.Linked(r, a.dgst) {
		t.Error("an evicted entry is still linked")
	}
	pull(t, s, a) // evicts b, a is back
	if err := s.Link(r, a.dgst); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, 12<<10)
	assertLinked(t, s, r, true, a)
}

// A store written by a version without links gets the links its tag
// records imply, once, under the main upstream (Registry "").
func TestLinksDerivedFromTagRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<30)
	index, manifest, _, layer := linkTestImage(3)
	pull(t, s, index)
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", AnyAccept, TagRecord{Digest: index.dgst, MediaType: oci.MediaTypeImageIndex, Size: index.size(), Checked: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// As an older version left it: no links, no marker.
	if err := writeIndexKeys(s.db, nil, [][]byte{linksMarkerKey}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, 1<<30)
	assertLinked(t, s, Repo{Name: "team/app"}, true, index, manifest, layer)
	assertLinked(t, s, Repo{Name: "team/other"}, false, index)
}

// A media type is only ever replaced by one that says more: a manifest
// type is never downgraded by a blob write of the same bytes.
func TestSetMediaType(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<30)
	data, dgst := blob(7, 64)
	tests := []struct {
		set, want string
		changed   bool
	}{
		{set: "application/octet-stream", want: "", changed: false}, // stored with "" below: both generic
		{set: "application/vnd.oci.image.layer.v1.tar", want: "application/vnd.oci.image.layer.v1.tar", changed: true},
		{set: "application/octet-stream", want: "application/vnd.oci.image.layer.v1.tar"},
		{set: oci.MediaTypeDockerManifest, want: oci.MediaTypeDockerManifest, changed: true},
		{set: "application/octet-stream", want: oci.MediaTypeDockerManifest},
		{set: "application/vnd.oci.image.layer.v1.tar", want: oci.MediaTypeDockerManifest},
		{set: oci.MediaTypeImageManifest, want: oci.MediaTypeDockerManifest}, // manifest for manifest: first stays
	}
	if err := s.Put(dgst, "", data); err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		changed, err := s.SetMediaType(dgst, tt.set)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := s.Stat(dgst)
		if changed != tt.changed || info.MediaType != tt.want {
			t.Errorf("step %d: SetMediaType(%q) = %v, type %q; want %v, %q", i, tt.set, changed, info.MediaType, tt.changed, tt.want)
		}
	}
	if _, err := s.SetMediaType(digest.FromString("absent"), oci.MediaTypeImageManifest); err == nil {
		t.Error("SetMediaType of an absent digest succeeded")
	}
}

func TestLinkKeys(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	tests := []struct {
		name string
		repo Repo
		ok   bool
	}{
		{"registry and nested name", Repo{Registry: "1.dkr.ecr.eu-west-1.amazonaws.com", Name: "a/b/c"}, true},
		{"main upstream", Repo{Name: "app"}, true},
		{"port", Repo{Registry: "127.0.0.1:5000", Name: "app"}, true},
		{"no name", Repo{Registry: "r"}, false},
		{"slash in registry", Repo{Registry: "r/x", Name: "app"}, false},
		{"long name", Repo{Name: strings.Repeat("a", maxRepoNameLen+1)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.repo.validate(); (err == nil) != tt.ok {
				t.Fatalf("validate(%+v) = %v, want ok %v", tt.repo, err, tt.ok)
			}
			if !tt.ok {
				return
			}
			gd, gr, ok := parseLinkKey(string(linkKey(d, tt.repo)))
			if !ok || gd != d || gr != tt.repo {
				t.Errorf("parseLinkKey(linkKey(%s, %+v)) = %s, %+v, %v", d, tt.repo, gd, gr, ok)
			}
		})
	}
	for _, bad := range []string{"link/", "link/sha256:zz/r/app", "link/" + d.String(), "link/" + d.String() + "/r", "tag/x"} {
		if _, _, ok := parseLinkKey(bad); ok {
			t.Errorf("parseLinkKey(%q) accepted a malformed key", bad)
		}
	}
}
