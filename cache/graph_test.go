package cache

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The graph tests run on the graph alone: no files, no Badger. Content
// is named; gdgst turns a name into its digest.

// testImages is the content the graph tests insert: images A and B share
// layer S, index I holds both, L is a loose blob.
var testImages = map[string]struct {
	size int64
	kind refKind
	refs []string
}{
	"S":  {size: 300},
	"cA": {size: 10},
	"lA": {size: 100},
	"cB": {size: 20},
	"lB": {size: 200},
	"L":  {size: 50},
	"A":  {size: 5, kind: kindManifest, refs: []string{"cA", "S", "lA"}},
	"B":  {size: 6, kind: kindManifest, refs: []string{"cB", "S", "lB"}},
	"I":  {size: 7, kind: kindIndex, refs: []string{"A", "B"}},
}

func gdgst(name string) digest.Digest { return digest.FromString(name) }

// gnames maps digests back to the names of testImages, sorted.
func gnames(ds []digest.Digest) []string {
	byDigest := map[digest.Digest]string{}
	for n := range testImages {
		byDigest[gdgst(n)] = n
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = byDigest[d]
		if out[i] == "" {
			out[i] = d.String()
		}
	}
	slices.Sort(out)
	return out
}

func testEntry(name string) *entry {
	spec, ok := testImages[name]
	if !ok {
		panic("no test content " + name)
	}
	e := &entry{size: spec.size, kind: spec.kind, classified: true}
	for _, r := range spec.refs {
		e.refs = append(e.refs, gdgst(r))
	}
	slices.Sort(e.refs)
	return e
}

// apply runs steps on g, checking its invariants after each: "+X"
// inserts X, "-X" drops it, "pin X", "unpin X" and "touch X" do what
// they say.
func apply(t *testing.T, g *graph, steps ...string) {
	t.Helper()
	for _, step := range steps {
		switch op, name, _ := strings.Cut(step, " "); {
		case strings.HasPrefix(step, "+"):
			g.insert(gdgst(step[1:]), testEntry(step[1:]))
		case strings.HasPrefix(step, "-"):
			g.drop(gdgst(step[1:]))
		case op == "pin":
			g.pin(gdgst(name), &pinRecord{names: []string{name}})
		case op == "unpin":
			g.unpin(gdgst(name))
		case op == "touch":
			e, ok := g.lookup(gdgst(name))
			if !ok {
				t.Fatalf("touch %s: not stored", name)
			}
			g.touch(gdgst(name), e)
		default:
			t.Fatalf("unknown step %q", step)
		}
		if err := g.check(); err != nil {
			t.Fatalf("after %q: %v", step, err)
		}
	}
}

// pullA and pullB insert whole images in pull order: manifest, then
// what it references; pullB after pullA, so S is stored already.
var (
	pullA = []string{"+A", "+cA", "+S", "+lA"}
	pullB = []string{"+B", "+cB", "+lB"}
)

func TestGraphOldestUnit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []string
		want  []string // the unit eviction takes next
	}{
		{"empty graph", nil, nil},
		{"image with its config and layers", pullA, []string{"A", "S", "cA", "lA"}},
		{"shared layer stays with the other image", slices.Concat(pullA, pullB), []string{"A", "cA", "lA"}},
		{"content before its manifest", []string{"+lA", "+cA", "+S", "+A"}, []string{"A", "S", "cA", "lA"}},
		{"loose blob first in line", slices.Concat([]string{"+L"}, pullA), []string{"L"}},
		{"touched image is not next", slices.Concat(pullA, pullB, []string{"touch lA"}), []string{"B", "cB", "lB"}},
		{"shared layer moves no image", slices.Concat(pullA, pullB, []string{"touch S"}), []string{"A", "cA", "lA"}},
		{"index takes what only it holds", slices.Concat([]string{"+I"}, pullA, pullB), []string{"A", "B", "I", "S", "cA", "cB", "lA", "lB"}},
		{"pinned root is no candidate", slices.Concat(pullA, []string{"pin A", "+L"}), []string{"L"}},
		{"pinned manifest under an index stays", slices.Concat([]string{"+I"}, pullA, pullB, []string{"pin A"}), []string{"B", "I", "cB", "lB"}},
		{"nothing but pinned content", slices.Concat(pullA, []string{"pin A"}), nil},
		{"unpinned image is evictable again", slices.Concat(pullA, []string{"pin A", "+L", "unpin A"}), []string{"L"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, tc.steps...)
			unit := g.oldestUnit()
			if got := gnames(unit); !slices.Equal(got, tc.want) && len(got)+len(tc.want) > 0 {
				t.Fatalf("oldest unit %v, want %v", got, tc.want)
			}
			for _, d := range unit {
				if g.isPinned(d) {
					t.Fatalf("unit %v takes pinned %s", gnames(unit), gnames([]digest.Digest{d}))
				}
			}
			g.drop(unit...)
			if err := g.check(); err != nil {
				t.Fatalf("after dropping the unit: %v", err)
			}
		})
	}
}

func TestGraphDropReportsUnlinked(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []string
		drop  []string
		want  []string // neither stored nor referenced afterwards
		loose []string // the eviction candidates afterwards
	}{
		{"manifest before its content", []string{"+A"}, []string{"A"}, []string{"A", "S", "cA", "lA"}, nil},
		{"whole image", pullA, []string{"A", "cA", "S", "lA"}, []string{"A", "S", "cA", "lA"}, nil},
		{"manifest leaves its content loose", pullA, []string{"A"}, []string{"A"}, []string{"S", "cA", "lA"}},
		{"content still referenced", slices.Concat(pullA, []string{"+B"}), []string{"A"}, []string{"A"}, []string{"B", "cA", "lA"}},
		{"referenced blob", pullA, []string{"lA"}, []string{"lA"}, []string{"A"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, tc.steps...)
			ds := make([]digest.Digest, len(tc.drop))
			for i, n := range tc.drop {
				ds[i] = gdgst(n)
			}
			got := gnames(g.drop(ds...))
			got = slices.Compact(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("unlinked %v, want %v", got, tc.want)
			}
			if got := gnames(g.candidates()); !slices.Equal(got, tc.loose) && len(got)+len(tc.loose) > 0 {
				t.Fatalf("candidates %v, want %v", got, tc.loose)
			}
			if err := g.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestGraphPins(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		steps       []string
		wantPinned  []string
		wantBytes   int64
		wantRootsOf map[string][]string
	}{
		{"whole image", slices.Concat(pullA, []string{"pin A"}), []string{"A", "S", "cA", "lA"}, 415,
			map[string][]string{"S": {"A"}, "A": {"A"}}},
		{"content pinned as it lands", []string{"+A", "pin A", "+S", "+lA"}, []string{"A", "S", "lA"}, 405, nil},
		{"pin of a missing root", []string{"pin A", "+cA"}, nil, 0, nil},
		{"root landing under its pin", []string{"pin A", "+cA", "+A"}, []string{"A", "cA"}, 15, nil},
		{"two pins share a layer", slices.Concat(pullA, pullB, []string{"pin A", "pin B"}), []string{"A", "B", "S", "cA", "cB", "lA", "lB"}, 641,
			map[string][]string{"S": {"A", "B"}, "lB": {"B"}}},
		{"unpin keeps what another pin holds", slices.Concat(pullA, pullB, []string{"pin A", "pin B", "unpin A"}), []string{"B", "S", "cB", "lB"}, 526, nil},
		{"deleting pinned content recomputes the set", slices.Concat([]string{"+I"}, pullA, []string{"pin I", "-A"}), []string{"I"}, 7, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, tc.steps...)
			if got := gnames(slices.Collect(maps.Keys(g.pinned))); !slices.Equal(got, tc.wantPinned) && len(got)+len(tc.wantPinned) > 0 {
				t.Fatalf("pinned %v, want %v", got, tc.wantPinned)
			}
			if g.pinnedBytes != tc.wantBytes {
				t.Fatalf("pinned bytes %d, want %d", g.pinnedBytes, tc.wantBytes)
			}
			for n, want := range tc.wantRootsOf {
				if got := gnames(g.pinRootsOf(gdgst(n))); !slices.Equal(got, want) {
					t.Fatalf("pin roots of %s: %v, want %v", n, got, want)
				}
			}
		})
	}
}

func TestGraphPinCost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		steps       []string
		root        string
		wantAdd     int64
		wantMissing []string
	}{
		{"whole image", pullA, "A", 415, nil},
		{"incomplete image", []string{"+A", "+cA"}, "A", 15, []string{"S", "lA"}},
		{"shared layer already pinned", slices.Concat(pullA, pullB, []string{"pin A"}), "B", 226, nil},
		{"already pinned", slices.Concat(pullA, []string{"pin A"}), "A", 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, tc.steps...)
			add, missing := g.pinCost(gdgst(tc.root))
			if got := gnames(missing); add != tc.wantAdd || !slices.Equal(got, tc.wantMissing) && len(got)+len(tc.wantMissing) > 0 {
				t.Fatalf("pin cost of %s: %d bytes, missing %v; want %d, %v", tc.root, add, got, tc.wantAdd, tc.wantMissing)
			}
		})
	}
}

func TestGraphTouchOrdersCandidates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		steps []string
		want  []string // candidates, least recently used first
	}{
		{"insertion order", []string{"+L", "+A", "+B"}, []string{"L", "A", "B"}},
		{"touched root to the front", []string{"+L", "+A", "+B", "touch L"}, []string{"A", "B", "L"}},
		{"content of one image moves it", slices.Concat([]string{"+L"}, pullA, []string{"+B", "touch cA"}), []string{"L", "B", "A"}},
		{"shared content moves none", slices.Concat([]string{"+L"}, pullA, []string{"+B", "touch S"}), []string{"L", "A", "B"}},
		{"pinned root out of the order", []string{"+L", "+A", "pin A", "+B"}, []string{"L", "B"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, tc.steps...)
			var got []string
			for _, d := range g.candidates() {
				got = append(got, gnames([]digest.Digest{d})[0])
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("candidates %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGraphDirtyAccessTimes(t *testing.T) {
	t.Parallel()
	g := newGraph()
	apply(t, g, slices.Concat(pullA, []string{"+L", "touch L", "touch lA"})...)
	recs := g.takeDirty()
	var got []digest.Digest
	for _, r := range recs {
		got = append(got, r.dgst)
	}
	// Inserting referenced content touches it and its image; touching
	// content of one image touches the image too.
	if want := []string{"A", "L", "S", "cA", "lA"}; !slices.Equal(gnames(got), want) {
		t.Fatalf("dirty %v, want %v", gnames(got), want)
	}
	if again := g.takeDirty(); len(again) != 0 {
		t.Fatalf("second takeDirty returned %d records", len(again))
	}
	apply(t, g, "-L")
	g.markDirty(recs)
	if n := len(g.takeDirty()); n != len(recs)-1 {
		t.Fatalf("after markDirty: %d dirty, want %d (L is gone)", n, len(recs)-1)
	}
}

func TestGraphCheckFindsBrokenInvariants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		corrupt func(g *graph)
		want    []string // the error names one of these
	}{
		{"bytes off", func(g *graph) { g.bytes++ }, []string{"accounting"}},
		{"entries off", func(g *graph) { g.entries-- }, []string{"accounting"}},
		// lA is then also a root missing from the eviction order;
		// which of the two check finds first depends on map order.
		{"parent link missing", func(g *graph) { delete(g.parents, gdgst("lA")) },
			[]string{"is not among its parents", "in the eviction order false"}},
		{"stray parent link", func(g *graph) { g.parents[gdgst("unstored")] = []digest.Digest{gdgst("A")} }, []string{"parent link"}},
		{"duplicate parent link", func(g *graph) { g.parents[gdgst("lA")] = append(g.parents[gdgst("lA")], gdgst("A")) },
			[]string{"duplicate true"}},
		{"root out of the eviction order", func(g *graph) { g.lru.Remove(gdgst("L")) }, []string{"in the eviction order false"}},
		{"referenced entry in the eviction order", func(g *graph) { g.lru.Add(gdgst("lA"), g.items[gdgst("lA")]) },
			[]string{"in the eviction order true"}},
		{"unstored entry in the eviction order", func(g *graph) { g.lru.Add(gdgst("unstored"), &entry{}) }, []string{"but not stored"}},
		{"pinned set short", func(g *graph) { delete(g.pinned, gdgst("S")) }, []string{"pinned set"}},
		{"pinned set too long", func(g *graph) { g.pinned[gdgst("L")] = struct{}{}; g.pinnedBytes += 50 }, []string{"pinned set"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			g := newGraph()
			apply(t, g, slices.Concat(pullA, []string{"+L", "pin A"})...)
			tc.corrupt(g)
			err := g.check()
			if err == nil || !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(err.Error(), w) }) {
				t.Fatalf("check() = %v, want an error naming one of %q", err, tc.want)
			}
		})
	}
}

// TestGraphEvictionProperty drives random inserts of whole images (in
// random order) and loose blobs, touches, deletes, pins and unpins on a
// graph with a byte budget, evicting the oldest unit as a commit does,
// and checks after every step: the invariants (check), that an eviction
// never takes pinned content nor leaves a manifest that was whole
// incomplete, that a stored pinned image stays whole unless something
// of it was deleted, and that only pinned content may exceed the budget.
func TestGraphEvictionProperty(t *testing.T) {
	t.Parallel()
	steps := 2000
	if testing.Short() {
		steps = 300
	}
	for _, seed := range []uint64{1, 2, 3, 20250101, 0xdecafbad} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 0x9a4f))
			pool := newImagePool(rng, seed)
			const maxBytes = 12_000
			g := newGraph()
			gp := &graphProperty{t: t, g: g, maxBytes: maxBytes}
			for step := range steps {
				gp.step = step
				switch op := rng.IntN(100); {
				case op < 40:
					r := pool.roots[rng.IntN(len(pool.roots))]
					members := closure(r)
					rng.Shuffle(len(members), func(i, j int) { members[i], members[j] = members[j], members[i] })
					for _, n := range members {
						gp.admit(n)
					}
				case op < 55:
					gp.admit(pool.loose[rng.IntN(len(pool.loose))])
				case op < 75:
					n := pool.all[rng.IntN(len(pool.all))]
					if e, ok := g.lookup(n.dgst); ok {
						g.touch(n.dgst, e)
					}
				case op < 80:
					n := pool.all[rng.IntN(len(pool.all))]
					if g.has(n.dgst) {
						g.drop(n.dgst)
						gp.deleted = true
					}
				case op < 90:
					r := pool.roots[rng.IntN(len(pool.roots))]
					if !g.has(r.dgst) {
						break
					}
					if add, missing := g.pinCost(r.dgst); len(missing) == 0 && g.pinnedBytes+add <= maxBytes {
						g.pin(r.dgst, &pinRecord{names: []string{r.name}})
						gp.pins++
					}
				default:
					if pins := slices.Collect(maps.Keys(g.pins)); len(pins) > 0 {
						slices.Sort(pins)
						g.unpin(pins[rng.IntN(len(pins))])
						gp.unpins++
					}
				}
				gp.checkStep()
			}
			if gp.evictions == 0 || gp.pins == 0 || gp.unpins == 0 {
				t.Fatalf("the run evicted %d units, pinned %d and unpinned %d times: it tests too little", gp.evictions, gp.pins, gp.unpins)
			}
		})
	}
}

// graphProperty is the state of one run of TestGraphEvictionProperty.
type graphProperty struct {
	t        *testing.T
	g        *graph
	maxBytes int64
	step     int
	// deleted says content was dropped explicitly (Delete), which may
	// leave a pinned image incomplete; eviction never may.
	deleted bool
	// evictions, pins and unpins count what the run did.
	evictions, pins, unpins int
}

// admit inserts n as Store.admit does: refused when it does not fit
// beside the pins, else after evicting the oldest units until it fits.
func (gp *graphProperty) admit(n *node) {
	g := gp.g
	if g.has(n.dgst) || n.size() > gp.maxBytes-g.pinnedBytes {
		return
	}
	for g.bytes+n.size() > gp.maxBytes {
		unit := g.oldestUnit()
		if len(unit) == 0 {
			gp.t.Fatalf("step %d: no unit to evict with %d bytes stored, %d pinned", gp.step, g.bytes, g.pinnedBytes)
		}
		whole := gp.wholeManifests()
		for _, d := range unit {
			if g.isPinned(d) {
				gp.t.Fatalf("step %d: eviction takes pinned %s", gp.step, d)
			}
		}
		g.drop(unit...)
		gp.evictions++
		for _, m := range whole {
			if !g.has(m) {
				continue
			}
			if _, missing := g.closure(m); len(missing) > 0 {
				gp.t.Fatalf("step %d: evicting %d entries left the whole manifest %s without %v", gp.step, len(unit), m, missing)
			}
		}
	}
	e := &entry{size: n.size(), kind: n.kind, classified: true}
	for _, c := range n.refs {
		e.refs = append(e.refs, c.dgst)
	}
	slices.Sort(e.refs)
	e.refs = slices.Compact(e.refs)
	g.insert(n.dgst, e)
}

// wholeManifests returns the stored entries that reference something
// and have all of it stored, transitively.
func (gp *graphProperty) wholeManifests() []digest.Digest {
	var out []digest.Digest
	for d, e := range gp.g.items {
		if _, missing := gp.g.closure(d); len(e.refs) > 0 && len(missing) == 0 {
			out = append(out, d)
		}
	}
	return out
}

func (gp *graphProperty) checkStep() {
	g, t := gp.g, gp.t
	t.Helper()
	if err := g.check(); err != nil {
		t.Fatalf("step %d: %v", gp.step, err)
	}
	if g.bytes > gp.maxBytes {
		t.Fatalf("step %d: %d bytes stored, over the budget %d", gp.step, g.bytes, gp.maxBytes)
	}
	if gp.deleted {
		return
	}
	for p := range g.pins {
		if !g.has(p) {
			continue
		}
		if _, missing := g.closure(p); len(missing) > 0 {
			t.Fatalf("step %d: pinned image %s lacks %v", gp.step, p, missing)
		}
	}
}
