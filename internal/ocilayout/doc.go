// Package ocilayout writes and reads OCI image-layout archives: the plain
// tar files that `skopeo copy oci-archive:FILE.tar:REF` reads and writes,
// that `docker save` (Docker >= 25) writes and `docker load` loads. The
// mirror's export command writes them; its import command reads them back,
// or reads one made by skopeo or docker save.
//
// # Archive layout
//
// Paths are relative ("./" prefixes are accepted when reading):
//
//	oci-layout              {"imageLayoutVersion":"1.0.0"}
//	blobs/                  directory
//	blobs/sha256/           directory
//	blobs/sha256/<64 hex>   one regular file per blob, named by its digest
//	index.json              OCI image index: one descriptor per image, with
//	                        org.opencontainers.image.ref.name and
//	                        io.containerd.image.name annotations, and one
//	                        per referrer (Writer.AddReferrer): its
//	                        artifactType and annotations, no name
//	manifest.json           optional, Docker's list of images (Config,
//	                        RepoTags, Layers), for docker load before 25
//
// The [Writer] streams: each blob goes straight from its reader into the
// tar, hashed on the way. It writes oci-layout and the two directories
// before the first blob, and index.json and manifest.json last, when every
// blob is known. Every header carries mode 0644 (0755 for directories), the
// Unix epoch as modification time and no owner, so the same inputs in the
// same order give the same bytes. [WriteFile] (file.go) puts a Writer's
// archive at a path complete or not at all, through a temp file beside it.
//
// # What Read verifies
//
// [Read] makes one pass over a plain or gzip-compressed tar, holding at
// most one blob of up to 4 MiB in memory. It checks that
//
//   - every blob's content hashes to the digest its path names (smaller
//     blobs before they are handed on, larger ones as they are read);
//   - blob paths are blobs/sha256/<64 lowercase hex> regular files: other
//     algorithms, malformed names, symlinks, hard links and devices under
//     blobs/ are rejected;
//   - no entry name is absolute or contains "..", and no entry is a
//     sparse file (a tiny archive could otherwise make Read hash
//     terabytes of holes);
//   - oci-layout, when present, names version 1.0.0;
//   - index.json is present and parses as a schemaVersion 2 index;
//   - the tar is complete: it ends with its end-of-archive marker.
//
// Other top-level files (manifest.json, repositories, ...) are skipped.
// Read does not require the archive to be closed under references; it
// records what each manifest and index references so that
// [Layout.Missing] can list the blobs an import would lack, and the
// subject each names, so that [Layout.Referrers] finds an image's
// referrers (signatures, SBOMs) whether index.json lists them or not.
//
// Descriptors and media types are package oci's, shared with the rest of
// the project; the annotation keys of index.json entries live here
// (descriptor.go).
package ocilayout
