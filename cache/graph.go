package cache

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/opencontainers/go-digest"
)

// graph is the store's in-memory view of its entries: what is stored and
// its bytes, what references what, the eviction order and the pinned
// content. It touches no file and no index record; the Store persists
// what changes, and guards the graph with its mutex (no method here is
// safe for concurrent use on its own).
//
// parents[c] lists the stored manifests that reference c, whether or not
// c itself is stored: a manifest links its children when it is inserted,
// so content arriving after its manifest (the normal pull order) is
// linked as it lands. An entry with no stored parent is a candidate for
// eviction and lives in lru in recency order: a root image (a manifest no
// stored index references, or an index) or loose content. An entry with a
// stored parent is not in lru: it is evicted only with its roots, so it
// never goes before a manifest that needs it.
//
// Pinned content (pinned) is never evicted: a pinned root is not in lru,
// and a unit never takes pinned content. Content reachable from a pinned
// root has a stored parent, so it is not in lru either. check verifies
// these invariants.
type graph struct {
	items   map[digest.Digest]*entry
	lru     *simplelru.LRU[digest.Digest, *entry]
	parents map[digest.Digest][]digest.Digest
	// pins holds the pin records by root digest, whether or not the root
	// is stored. pinned is every stored entry reachable from a stored
	// pinned root through stored manifests; pinnedBytes is its bytes.
	pins        map[digest.Digest]*pinRecord
	pinned      map[digest.Digest]struct{}
	pinnedBytes int64
	// bytes and entries are the size and number of the entries in items.
	bytes, entries int64
	// dirty holds the entries whose access time changed since the last
	// takeDirty.
	dirty map[digest.Digest]struct{}
	// lastNano is the last access time handed out, to keep them
	// increasing.
	lastNano int64
}

func newGraph() *graph {
	// Entries are bounded by bytes, not count, so the LRU's own limit is
	// never reached; NewLRU fails only for a non-positive size.
	lru, _ := simplelru.NewLRU[digest.Digest, *entry](math.MaxInt, nil)
	return &graph{
		items:   make(map[digest.Digest]*entry),
		lru:     lru,
		parents: make(map[digest.Digest][]digest.Digest),
		pins:    make(map[digest.Digest]*pinRecord),
		pinned:  make(map[digest.Digest]struct{}),
		dirty:   make(map[digest.Digest]struct{}),
	}
}

// lookup returns the stored entry of dgst.
func (g *graph) lookup(dgst digest.Digest) (*entry, bool) {
	e, ok := g.items[dgst]
	return e, ok
}

// has reports whether dgst is stored.
func (g *graph) has(dgst digest.Digest) bool {
	_, ok := g.items[dgst]
	return ok
}

// referenced reports whether dgst is stored or a stored manifest
// references it.
func (g *graph) referenced(dgst digest.Digest) bool {
	return g.has(dgst) || len(g.parents[dgst]) > 0
}

// isRoot reports whether no stored manifest references dgst.
func (g *graph) isRoot(dgst digest.Digest) bool {
	return len(g.parents[dgst]) == 0
}

// isPinned reports whether dgst is pinned content.
func (g *graph) isPinned(dgst digest.Digest) bool {
	_, ok := g.pinned[dgst]
	return ok
}

// isPinRoot reports whether dgst has a pin record.
func (g *graph) isPinRoot(dgst digest.Digest) bool {
	_, ok := g.pins[dgst]
	return ok
}

// now returns the current time in unix nanoseconds, strictly greater
// than any value it returned before (and than any loaded access time),
// so that the LRU order rebuilt at Open has no ties.
func (g *graph) now() int64 {
	n := time.Now().UnixNano()
	if n <= g.lastNano {
		n = g.lastNano + 1
	}
	g.lastNano = n
	return n
}

// info returns the Info of a stored entry.
func (g *graph) info(dgst digest.Digest, e *entry) Info {
	info := e.info(dgst)
	info.Pinned = g.isPinned(dgst)
	return info
}

// infos returns the Info of every stored entry, in no order.
func (g *graph) infos() []Info {
	out := make([]Info, 0, len(g.items))
	for d, e := range g.items {
		out = append(out, g.info(d, e))
	}
	return out
}

// candidates returns the eviction candidates, least recently used first.
func (g *graph) candidates() []digest.Digest {
	return g.lru.Keys()
}

// load fills an empty graph with the entries found at Open, ordered
// oldest first, and the pin records: the most recently used entry ends
// at the LRU front, and pinned roots stay out of it.
func (g *graph) load(recs []indexRecord, pins map[digest.Digest]*pinRecord) {
	for _, r := range recs {
		g.items[r.dgst] = r.e
		g.bytes += r.e.size
		g.entries++
		g.lastNano = max(g.lastNano, r.e.lastAccess)
		for _, c := range r.e.refs {
			g.parents[c] = append(g.parents[c], r.dgst)
		}
	}
	g.pins = pins
	for _, r := range recs {
		if !g.isPinRoot(r.dgst) && g.isRoot(r.dgst) {
			g.lru.Add(r.dgst, r.e)
		}
	}
	g.recomputePinned()
}

// insert adds an entry to the graph and the eviction order. A referenced
// entry counts as a use of its image. An entry that is a pinned root, or
// that a pinned manifest references, is pinned as it lands, with what it
// references.
func (g *graph) insert(dgst digest.Digest, e *entry) {
	g.items[dgst] = e
	g.bytes += e.size
	g.entries++
	for _, c := range e.refs {
		if g.isRoot(c) {
			// c is referenced from now on: out of the eviction order.
			g.lru.Remove(c)
		}
		g.parents[c] = append(g.parents[c], dgst)
	}
	pinRoot := g.isPinRoot(dgst)
	switch {
	case !g.isRoot(dgst):
		g.touch(dgst, e)
	case !pinRoot: // a pinned root is never an eviction candidate
		g.lru.Add(dgst, e)
	}
	if pinRoot || slices.ContainsFunc(g.parents[dgst], g.isPinned) {
		g.addPinned(dgst)
	}
}

// drop removes stored entries from the graph, the eviction order and the
// accounting, and returns the digests now neither stored nor referenced
// by a stored manifest: dgsts and what only they referenced. Content they
// referenced that nothing else stored references becomes loose: a
// candidate again, placed as most recently used (until the next Open
// orders it by its access time). This happens only after Delete or a
// damaged manifest; eviction takes such content with it.
//
// Dropping pinned content (Delete) may cut other content off its pin, so
// the pinned set is then computed again.
func (g *graph) drop(dgsts ...digest.Digest) (unlinked []digest.Digest) {
	gone := make([]*entry, len(dgsts))
	wasPinned := false
	for i, d := range dgsts {
		e := g.items[d]
		gone[i] = e
		wasPinned = wasPinned || g.isPinned(d)
		delete(g.items, d)
		delete(g.dirty, d)
		g.lru.Remove(d)
		g.bytes -= e.size
		g.entries--
	}
	unlinked = slices.Clone(dgsts)
	for i, d := range dgsts {
		for _, c := range gone[i].refs {
			ps := g.parents[c]
			if j := slices.Index(ps, d); j >= 0 {
				ps[j] = ps[len(ps)-1]
				ps = ps[:len(ps)-1]
			}
			if len(ps) > 0 {
				g.parents[c] = ps
				continue
			}
			delete(g.parents, c)
			ce, stored := g.items[c]
			if !stored {
				unlinked = append(unlinked, c) // referenced by nothing stored
			}
			if stored && !g.isPinRoot(c) { // a pinned root stays out of the eviction order
				g.lru.Add(c, ce)
			}
		}
	}
	if wasPinned {
		g.recomputePinned()
	}
	return unlinked
}

// unit returns the image rooted at root as a unit of eviction: root, and
// everything it references, transitively, that no stored manifest
// outside the unit references and that is not pinned (a pinned manifest
// under root stays, and with it what it references). root may be any
// stored entry; the caller makes sure it is not pinned. Content
// addressing rules out cycles; the membership check makes the walk
// terminate regardless.
func (g *graph) unit(root digest.Digest) []digest.Digest {
	unit := []digest.Digest{root}
	in := map[digest.Digest]bool{root: true}
	remaining := map[digest.Digest]int{} // stored parents not yet in the unit
	for i := 0; i < len(unit); i++ {
		for _, c := range g.items[unit[i]].refs {
			if in[c] || !g.has(c) || g.isPinned(c) {
				continue
			}
			n, ok := remaining[c]
			if !ok {
				n = len(g.parents[c])
			}
			if n--; n > 0 {
				remaining[c] = n
				continue
			}
			in[c] = true
			unit = append(unit, c)
		}
	}
	return unit
}

// oldestUnit returns the least recently used image (or loose entry) as
// a unit, or nothing when nothing but pinned content is stored. The
// caller drops it.
func (g *graph) oldestUnit() []digest.Digest {
	root, _, ok := g.lru.GetOldest()
	if !ok {
		if len(g.items) == len(g.pinned) {
			return nil
		}
		// Cannot happen: every unpinned entry has a root in lru unless
		// references form a cycle, which content addressing rules out.
		// Keep MaxSize a hard bound anyway.
		for d := range g.items {
			if !g.isPinned(d) {
				root = d
				break
			}
		}
	}
	return g.unit(root)
}

// bytesOf returns the bytes of the stored entries among dgsts.
func (g *graph) bytesOf(dgsts []digest.Digest) int64 {
	var n int64
	for _, d := range dgsts {
		if e, ok := g.items[d]; ok {
			n += e.size
		}
	}
	return n
}

// closure returns the stored entry root and everything it references,
// transitively, that is stored (members, root first), and the digests
// it references that are not (missing, sorted). What a missing manifest
// references is unknown, so it is in neither.
func (g *graph) closure(root digest.Digest) (members, missing []digest.Digest) {
	seen := map[digest.Digest]bool{root: true}
	members = []digest.Digest{root}
	for i := 0; i < len(members); i++ {
		for _, c := range g.items[members[i]].refs {
			if seen[c] {
				continue
			}
			seen[c] = true
			if g.has(c) {
				members = append(members, c)
			} else {
				missing = append(missing, c)
			}
		}
	}
	slices.Sort(missing)
	return members, missing
}

// maxRootWalk bounds the ancestors visited to find an entry's root.
const maxRootWalk = 64

// soleRoot returns the one root that transitively references the
// referenced entry dgst. It reports false when dgst is itself a root, or
// when several roots reference it (content shared between images), or
// the walk is unusually long.
func (g *graph) soleRoot(dgst digest.Digest) (digest.Digest, bool) {
	var root digest.Digest
	seen := map[digest.Digest]bool{dgst: true}
	// walk visits the ancestors of d depth first; it stops at the second
	// root, so a base layer with a thousand parents costs two steps.
	var walk func(d digest.Digest) bool
	walk = func(d digest.Digest) bool {
		for _, p := range g.parents[d] {
			if seen[p] {
				continue
			}
			if seen[p] = true; len(seen) > maxRootWalk {
				return false
			}
			if len(g.parents[p]) > 0 {
				if !walk(p) {
					return false
				}
				continue
			}
			if root != "" {
				return false
			}
			root = p
		}
		return true
	}
	if !walk(dgst) {
		return "", false
	}
	return root, root != ""
}

// touch marks a stored entry used now. Using content of exactly one
// image is using that image: its root moves to the front too, so an
// image being pulled is not the next to go. Content shared by several
// images moves none of them, since the store cannot tell which is being
// pulled: a base layer would otherwise refresh every image built on it
// at once.
func (g *graph) touch(dgst digest.Digest, e *entry) {
	e.lastAccess = g.now()
	g.dirty[dgst] = struct{}{}
	if g.isRoot(dgst) {
		g.lru.Get(dgst) // to the front
		return
	}
	g.touchRoot(dgst)
}

// touchRoot marks the sole root of dgst, if it has one, used now. dgst
// itself need not be stored.
func (g *graph) touchRoot(dgst digest.Digest) {
	if g.isRoot(dgst) {
		return
	}
	if root, ok := g.soleRoot(dgst); ok {
		if re, ok := g.items[root]; ok {
			g.lru.Get(root) // to the front, unless pinned (not in lru)
			re.lastAccess = g.now()
			g.dirty[root] = struct{}{}
		}
	}
}

// takeDirty returns copies of the stored entries whose access time
// changed since the last call, and forgets them; markDirty gives back
// those that could not be written.
func (g *graph) takeDirty() []indexRecord {
	recs := make([]indexRecord, 0, len(g.dirty))
	for d := range g.dirty {
		if e, ok := g.items[d]; ok {
			cp := *e
			recs = append(recs, indexRecord{dgst: d, e: &cp})
		}
	}
	clear(g.dirty)
	return recs
}

// markDirty marks the access times of recs as not yet written, for
// those still stored.
func (g *graph) markDirty(recs []indexRecord) {
	for _, r := range recs {
		if g.has(r.dgst) {
			g.dirty[r.dgst] = struct{}{}
		}
	}
}

// pinCost returns the bytes that pinning the stored entry root would add
// to the pinned content, and the digests its image lacks.
func (g *graph) pinCost(root digest.Digest) (add int64, missing []digest.Digest) {
	members, missing := g.closure(root)
	for _, d := range members {
		if !g.isPinned(d) {
			add += g.items[d].size
		}
	}
	return add, missing
}

// pin records rec as the pin of root: root leaves the eviction order and
// what it holds, if stored, becomes pinned content.
func (g *graph) pin(root digest.Digest, rec *pinRecord) {
	g.pins[root] = rec
	g.lru.Remove(root) // no longer an eviction candidate
	g.addPinned(root)
}

// unpin removes the pin of root: a stored root becomes an eviction
// candidate again, as the most recently used one, and the pinned content
// is computed again.
func (g *graph) unpin(root digest.Digest) {
	delete(g.pins, root)
	if e, ok := g.items[root]; ok && g.isRoot(root) {
		g.lru.Add(root, e)
	}
	g.recomputePinned()
}

// imageBytes is the size of the image rooted at root as stored now: its
// root and what it references, transitively, each entry once; 0 when
// root is not stored.
func (g *graph) imageBytes(root digest.Digest) int64 {
	if !g.has(root) {
		return 0
	}
	members, _ := g.closure(root)
	return g.bytesOf(members)
}

// addPinned adds the stored entry d, and what it references that is
// stored, transitively, to the pinned content. The walk stops at content
// already pinned: the pinned set is closed under references.
func (g *graph) addPinned(d digest.Digest) {
	if !g.has(d) || g.isPinned(d) {
		return
	}
	stack := []digest.Digest{d}
	g.pinned[d] = struct{}{}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		e := g.items[d]
		g.pinnedBytes += e.size
		for _, c := range e.refs {
			if g.has(c) && !g.isPinned(c) {
				g.pinned[c] = struct{}{}
				stack = append(stack, c)
			}
		}
	}
}

// recomputePinned computes the pinned content from the pins. It runs
// when content may have left it: at Open, on Unpin, and when pinned
// content is dropped.
func (g *graph) recomputePinned() {
	clear(g.pinned)
	g.pinnedBytes = 0
	for d := range g.pins {
		g.addPinned(d)
	}
}

// pinRootsOf returns the pinned roots that hold dgst, sorted: dgst itself
// if it is one, and its pinned ancestors that are.
func (g *graph) pinRootsOf(dgst digest.Digest) []digest.Digest {
	var roots []digest.Digest
	seen := map[digest.Digest]bool{dgst: true}
	stack := []digest.Digest{dgst}
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if g.isPinRoot(d) {
			roots = append(roots, d)
		}
		for _, p := range g.parents[d] {
			if !seen[p] && g.isPinned(p) {
				seen[p] = true
				stack = append(stack, p)
			}
		}
	}
	slices.Sort(roots)
	return roots
}

// check verifies the graph's invariants: the accounting matches the
// entries, the eviction order holds exactly the stored entries no stored
// manifest references that are not pinned roots, the reverse links
// mirror the stored manifests' references, and the pinned set and its
// bytes are what a fresh walk from the pins makes them.
func (g *graph) check() error {
	var total int64
	for _, e := range g.items {
		total += e.size
	}
	if total != g.bytes || int64(len(g.items)) != g.entries {
		return fmt.Errorf("accounting: %d entries of %d bytes, counted %d entries of %d bytes", len(g.items), total, g.entries, g.bytes)
	}
	links, err := g.checkRefs()
	if err != nil {
		return err
	}
	if n, err := g.checkParents(); err != nil {
		return err
	} else if n != links {
		return fmt.Errorf("%d parent links, %d references", n, links)
	}
	for _, d := range g.lru.Keys() {
		if !g.has(d) {
			return fmt.Errorf("%s is in the eviction order but not stored", d)
		}
	}
	return g.checkPinned()
}

// checkRefs checks that every reference of a stored entry has its
// parent link and that exactly the unpinned roots are in the eviction
// order; it returns the number of references.
func (g *graph) checkRefs() (links int, err error) {
	for d, e := range g.items {
		for _, c := range e.refs {
			if !slices.Contains(g.parents[c], d) {
				return 0, fmt.Errorf("%s references %s but is not among its parents %v", d, c, g.parents[c])
			}
			links++
		}
		pinRoot := g.isPinRoot(d)
		if root, inLRU := g.isRoot(d), g.lru.Contains(d); (root && !pinRoot) != inLRU {
			return 0, fmt.Errorf("%s: root %v, pinned root %v, but in the eviction order %v", d, root, pinRoot, inLRU)
		}
	}
	return links, nil
}

// checkParents checks that every parent link is a reference of a stored
// entry, listed once; it returns the number of parent links.
func (g *graph) checkParents() (n int, err error) {
	for c, ps := range g.parents {
		if len(ps) == 0 {
			return 0, fmt.Errorf("empty parent list kept for %s", c)
		}
		for i, p := range ps {
			e, ok := g.items[p]
			if !ok || !slices.Contains(e.refs, c) || slices.Index(ps, p) != i {
				return 0, fmt.Errorf("parent link %s → %s: stored %v, duplicate %v", p, c, ok, slices.Index(ps, p) != i)
			}
			n++
		}
	}
	return n, nil
}

// checkPinned checks the pinned set kept up to date incrementally
// against a fresh walk from the pins.
func (g *graph) checkPinned() error {
	want := map[digest.Digest]bool{}
	var wantBytes int64
	for p := range g.pins {
		if !g.has(p) {
			continue
		}
		members, _ := g.closure(p)
		for _, m := range members {
			if !want[m] {
				want[m] = true
				wantBytes += g.items[m].size
			}
		}
	}
	if len(want) != len(g.pinned) || wantBytes != g.pinnedBytes {
		return fmt.Errorf("pinned set has %d entries of %d bytes, the pins make %d of %d bytes", len(g.pinned), g.pinnedBytes, len(want), wantBytes)
	}
	var errs []error
	for d := range g.pinned {
		if !want[d] {
			errs = append(errs, fmt.Errorf("%s is in the pinned set but no pin reaches it", d))
		}
	}
	return errors.Join(errs...)
}
