package sharedstore

import (
	"cmp"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// Inventory is what a sweep knows of the bucket.
type Inventory struct {
	// Blobs are the objects under blobs/.
	Blobs map[digest.Digest]Listed
	// Refs are the manifests and indexes among Blobs, each with what it
	// references (config and layers; an index's manifests). A blob
	// absent here is not a manifest.
	Refs map[digest.Digest][]digest.Digest
	// Used are the used/ records: when a replica last served each
	// manifest (by the bucket's clock).
	Used map[digest.Digest]time.Time
	// Pins are the images pinned (pins/ records).
	Pins map[digest.Digest]bool
}

// Plan is what a sweep deletes to bring the bucket under its bound.
type Plan struct {
	// Delete are the blobs to delete, in order: orphans oldest first,
	// then the images least recently used first.
	Delete []digest.Digest
	// Records are the used/ records to delete: those of the manifests
	// swept, and those older than the grace period whose manifest the
	// bucket no longer holds.
	Records []digest.Digest
	// Bytes is the bucket's size before the sweep; Freed what Delete frees.
	Bytes, Freed int64
	// Images and Orphans count the images and the unreferenced blobs swept.
	Images, Orphans int
}

// image is one image of the bucket: a manifest or index no other
// manifest references, and what it references, transitively.
type image struct {
	root    digest.Digest
	members []digest.Digest // root included
	lastUse time.Time
}

// plan decides what a sweep deletes so that the bucket's blobs total at
// most maxSize: first the blobs no manifest references (orphans), oldest
// first; then whole images, least recently used first (an image's last
// use is the newest of its manifests' used/ records and their objects'
// LastModified), each image's blobs that no image kept references. It
// never deletes an object modified after cutoff (one being written, or
// just written: its manifest may not have landed yet), nor a pinned
// image or anything it references, nor anything an image modified after
// cutoff references.
func plan(inv Inventory, maxSize int64, cutoff time.Time) Plan {
	var p Plan
	for _, o := range inv.Blobs {
		p.Bytes += o.Size
	}
	p.Records = staleRecords(inv, cutoff)
	if p.Bytes <= maxSize {
		return p
	}
	keep := kept(inv, cutoff)
	left := p.Bytes
	drop := func(d digest.Digest) bool {
		o, ok := inv.Blobs[d]
		if !ok || keep[d] {
			return false
		}
		p.Delete = append(p.Delete, d)
		p.Freed += o.Size
		left -= o.Size
		return true
	}
	for _, d := range orphans(inv) {
		if left <= maxSize {
			return p
		}
		if drop(d) {
			p.Orphans++
		}
	}
	images := imagesOf(inv)
	holders := make(map[digest.Digest]int) // how many images reference each digest
	for _, im := range images {
		for _, d := range im.members {
			holders[d]++
		}
	}
	for _, im := range images {
		if left <= maxSize {
			break
		}
		if keep[im.root] {
			continue
		}
		p.Images++
		for _, d := range im.members {
			if holders[d]--; holders[d] == 0 && drop(d) {
				if _, isManifest := inv.Refs[d]; isManifest {
					if _, ok := inv.Used[d]; ok {
						p.Records = append(p.Records, d)
					}
				}
			}
		}
	}
	return p
}

// kept is what no sweep deletes: what was modified after cutoff, and
// everything pinned images and images modified after cutoff reference.
func kept(inv Inventory, cutoff time.Time) map[digest.Digest]bool {
	keep := make(map[digest.Digest]bool)
	for d := range inv.Pins {
		closure(inv.Refs, d, keep)
	}
	for d, o := range inv.Blobs {
		if o.Modified.After(cutoff) {
			closure(inv.Refs, d, keep)
		}
	}
	return keep
}

// closure adds d and what it references, transitively, to into.
func closure(refs map[digest.Digest][]digest.Digest, d digest.Digest, into map[digest.Digest]bool) {
	if into[d] {
		return
	}
	into[d] = true
	for _, r := range refs[d] {
		closure(refs, r, into)
	}
}

// orphans are the blobs that are not manifests and that no manifest
// references, oldest first.
func orphans(inv Inventory) []digest.Digest {
	referenced := make(map[digest.Digest]bool)
	for _, refs := range inv.Refs {
		for _, r := range refs {
			referenced[r] = true
		}
	}
	var out []digest.Digest
	for d := range inv.Blobs {
		if _, isManifest := inv.Refs[d]; !isManifest && !referenced[d] {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b digest.Digest) int {
		return cmp.Or(inv.Blobs[a].Modified.Compare(inv.Blobs[b].Modified), cmp.Compare(a, b))
	})
	return out
}

// imagesOf are the bucket's images, least recently used first.
func imagesOf(inv Inventory) []image {
	child := make(map[digest.Digest]bool)
	for _, refs := range inv.Refs {
		for _, r := range refs {
			child[r] = true
		}
	}
	var out []image
	for root := range inv.Refs {
		if child[root] {
			continue
		}
		members := make(map[digest.Digest]bool)
		closure(inv.Refs, root, members)
		im := image{root: root}
		for d := range members {
			im.members = append(im.members, d)
			if _, isManifest := inv.Refs[d]; isManifest {
				im.lastUse = latest(im.lastUse, inv.Used[d], inv.Blobs[d].Modified)
			}
		}
		slices.Sort(im.members)
		out = append(out, im)
	}
	slices.SortFunc(out, func(a, b image) int {
		return cmp.Or(a.lastUse.Compare(b.lastUse), cmp.Compare(a.root, b.root))
	})
	return out
}

// latest is the latest of ts.
func latest(ts ...time.Time) time.Time {
	var out time.Time
	for _, t := range ts {
		if t.After(out) {
			out = t
		}
	}
	return out
}

// staleRecords are the used/ records of manifests the bucket does not
// hold, written before cutoff: the manifest was swept, or a replica
// served it from its own disk; a later use writes the record again.
func staleRecords(inv Inventory, cutoff time.Time) []digest.Digest {
	var out []digest.Digest
	for d, at := range inv.Used {
		if _, held := inv.Blobs[d]; !held && !at.After(cutoff) {
			out = append(out, d)
		}
	}
	slices.Sort(out)
	return out
}
