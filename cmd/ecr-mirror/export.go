package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

const exportUsage = `Usage: ecr-mirror export [flags] -o FILE.tar IMAGE... [-f FILE]

Writes the images, read through a running mirror (from its cache, misses
fetched from ECR), to an OCI image-layout archive: "skopeo copy
oci-archive:FILE.tar:REPO:TAG ..." reads it, "docker load -i FILE.tar" loads
it, and "ecr-mirror import FILE.tar" fills another mirror's cache with it.
Each image is named in the archive as the mirror names it
(org.opencontainers.image.ref.name: repo:tag) and with the mirror's host
(io.containerd.image.name: host/repo:tag). An index is kept whole unless
--platform picks one of its platforms. Every digest is verified; the file
appears only once complete.

Example:
  ecr-mirror export --mirror http://mirror.internal:5000 -o site-b.tar team/app:v1.4 base/debian:12
  # at the site: ecr-mirror import site-b.tar

Flags:
`

// exportSummary is "export --json".
type exportSummary struct {
	File   string          `json:"file"`
	Bytes  int64           `json:"bytes"`
	Images []exportedImage `json:"images"`
}

type exportedImage struct {
	Name      string        `json:"name"`
	Digest    digest.Digest `json:"digest"` // of the manifest index.json names
	MediaType string        `json:"mediaType"`
	// SourceDigest is ECR's manifest, when rewritten to OCI types.
	SourceDigest digest.Digest `json:"sourceDigest,omitempty"`
	Blobs        int           `json:"blobs"`
	Bytes        int64         `json:"bytes"`
}

// runExport is "ecr-mirror export".
func runExport(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, exportUsage); fs.PrintDefaults() }
	var pf pullFlags
	pf.register(fs)
	out := fs.String("o", "", "the archive to write (required)")
	quiet := fs.Bool("quiet", false, "no progress; only failures and the summary")
	asJSON := fs.Bool("json", false, "print a JSON summary on stdout")
	refs, code, ok := pf.parse(fs, args, "export", stderr)
	if !ok {
		return code
	}
	if *out == "" {
		fmt.Fprint(stderr, "ecr-mirror export: -o FILE.tar is required\n")
		return exitUsage
	}
	p, err := pf.puller()
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror export: %v\n", err)
		return exitUsage
	}
	prog := newProgress(ctx, stderr, chooseProgress(stderr, *quiet || *asJSON), "export")
	sum, err := p.export(ctx, *out, refs, prog)
	prog.wait()
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror export: %v\n", err)
		return exitFail
	}
	if *asJSON {
		return printJSON(stdout, stderr, "export", sum)
	}
	fmt.Fprintf(stderr, "wrote %s: %d images, %s\n", sum.File, len(sum.Images), humanBytes(sum.Bytes))
	return exitOK
}

// export writes the images to the archive path, through a temp file
// beside it that is renamed into place only when complete.
func (p *puller) export(ctx context.Context, path string, refs []registry.Reference, prog *progress) (*exportSummary, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.partial")
	if err != nil {
		return nil, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	buf := bufio.NewWriterSize(tmp, 1<<20)
	counted := &countingWriter{w: buf}
	aw := ocilayout.NewWriter(counted)
	sum := &exportSummary{File: path, Images: []exportedImage{}}
	for _, r := range refs {
		img, err := p.exportImage(ctx, aw, r, prog)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		sum.Images = append(sum.Images, *img)
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	if err := buf.Flush(); err != nil {
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	tmp = nil
	sum.Bytes = counted.n
	return sum, nil
}

// exportImage adds one image to the archive.
func (p *puller) exportImage(ctx context.Context, aw *ocilayout.Writer, r registry.Reference, prog *progress) (*exportedImage, error) {
	t := prog.task(r.String(), 0)
	img, err := p.resolve(ctx, r)
	if err == nil && len(p.platforms) > 0 && len(img.manifests) > 1 {
		// An index narrowed to one platform is exported as that
		// platform's manifest: the index itself would name content
		// the archive lacks.
		if len(img.images) != 1 {
			err = fmt.Errorf("--platform selects %d of its platforms: export keeps an index whole, or one platform of it", len(img.images))
		} else {
			img.top, img.manifests = img.images[0].desc, img.images
		}
	}
	if err != nil {
		t.finish(err, "")
		return nil, err
	}
	t.addTotal(img.size())
	for _, m := range img.manifests {
		if err := aw.AddBlob(m.desc.Digest, m.desc.Size, bytes.NewReader(m.body)); err != nil {
			t.finish(err, "")
			return nil, err
		}
		t.add(m.desc.Size, 0)
	}
	for _, b := range img.blobs {
		if aw.Has(b.Digest) {
			t.add(b.Size, 0) // shared with an image exported before
			continue
		}
		if err := p.exportBlob(ctx, aw, r.Name, b, t); err != nil {
			t.finish(err, "")
			return nil, err
		}
	}
	top, rewritten, err := ociForm(img)
	if err != nil {
		t.finish(err, "")
		return nil, err
	}
	// ECR's own manifests stay in the archive, unreferenced by
	// index.json, so that an import serves them by their digests.
	for _, a := range rewritten {
		if err := aw.AddBlob(a.desc.Digest, a.desc.Size, bytes.NewReader(a.body)); err != nil {
			t.finish(err, "")
			return nil, err
		}
	}
	name := r.String()
	full := p.base.Host + "/" + name
	annotations := map[string]string{ocilayout.AnnotationRefName: name, ocilayout.AnnotationImageName: full}
	if top.desc.Digest != img.top.Digest {
		annotations[admin.AnnotationSourceDigest] = img.top.Digest.String()
		annotations[admin.AnnotationSourceMediaType] = img.top.MediaType
	}
	aw.AddImage(ocilayout.Descriptor{MediaType: top.desc.MediaType, Digest: top.desc.Digest, Size: top.desc.Size}, annotations)
	// Docker's manifest.json names one image per entry: the only one, or
	// linux/amd64 (else the first) of an index.
	if dm := dockerImage(img); dm != nil {
		var layers []digest.Digest
		for _, l := range dm.doc.Layers {
			layers = append(layers, l.Digest)
		}
		var tags []string
		if r.Tag != "" {
			tags = []string{full}
		}
		if allDistributable(dm.doc) {
			aw.AddDockerManifest(dm.doc.Config.Digest, layers, tags)
		}
	}
	t.finish(nil, fmt.Sprintf("%d manifests, %d blobs", len(img.manifests), len(img.blobs)))
	out := &exportedImage{Name: name, Digest: top.desc.Digest, MediaType: top.desc.MediaType, Blobs: len(img.blobs), Bytes: img.size()}
	if top.desc.Digest != img.top.Digest {
		out.SourceDigest = img.top.Digest
	}
	return out, nil
}

// exportBlob streams a blob from the mirror into the archive, which
// checks its size and digest.
func (p *puller) exportBlob(ctx context.Context, aw *ocilayout.Writer, repo string, b descriptor, t *task) error {
	if b.Size <= 0 {
		return fmt.Errorf("blob %s: its manifest gives no size", b.Digest)
	}
	body, err := p.openBlob(ctx, repo, b)
	if err != nil {
		return err
	}
	defer body.Close()
	start := time.Now()
	if err := aw.AddBlob(b.Digest, b.Size, t.reader(body)); err != nil {
		return fmt.Errorf("blob %s after %s: %w", b.Digest, time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// dockerImage picks the image manifest Docker's manifest.json names.
func dockerImage(img *image) *fetchedManifest {
	if len(img.images) == 0 {
		return nil
	}
	top := img.manifests[0]
	if len(top.doc.Manifests) > 0 {
		for _, child := range top.doc.Manifests {
			if child.Platform != nil && child.Platform.OS == "linux" && child.Platform.Architecture == "amd64" {
				for i := range img.images {
					if img.images[i].desc.Digest == child.Digest {
						return &img.images[i]
					}
				}
			}
		}
	}
	return &img.images[0]
}

func allDistributable(m manifest) bool {
	for _, l := range m.Layers {
		if !distributable(l) {
			return false
		}
	}
	return m.Config != nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// printJSON writes v as indented JSON for --json.
func printJSON(stdout, stderr io.Writer, cmd string, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", cmd, err)
		return exitFail
	}
	return exitOK
}

// OCI equivalents of Docker schema2 media types.
var ociTypes = map[string]string{
	mtDockerManifest: mtOCIManifest,
	mtDockerList:     mtOCIIndex,
	"application/vnd.docker.container.image.v1+json":            "application/vnd.oci.image.config.v1+json",
	"application/vnd.docker.image.rootfs.diff.tar.gzip":         "application/vnd.oci.image.layer.v1.tar+gzip",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.docker.image.rootfs.diff.tar":              "application/vnd.oci.image.layer.v1.tar",
}

// archived is a manifest as the archive holds it.
type archived struct {
	desc descriptor
	body []byte
}

// ociForm returns img's top manifest in OCI types, with every manifest
// it rewrote to get there. OCI layouts hold OCI manifests (skopeo reads
// nothing else), while ECR serves many Docker schema2 ones: these are
// rewritten as skopeo does when it writes an OCI layout. Config and
// layers are the same bytes, so their digests stay; the rewritten
// manifests get digests of their own.
func ociForm(img *image) (top archived, rewritten []archived, err error) {
	conv := map[digest.Digest]archived{}
	for _, m := range img.images {
		if m.desc.MediaType != mtDockerManifest && m.doc.MediaType != mtDockerManifest {
			continue
		}
		doc := ociManifestDoc{SchemaVersion: 2, MediaType: mtOCIManifest, Config: retype(*m.doc.Config)}
		for _, l := range m.doc.Layers {
			doc.Layers = append(doc.Layers, retype(l))
		}
		a, err := archive(doc, mtOCIManifest)
		if err != nil {
			return archived{}, nil, err
		}
		conv[m.desc.Digest] = a
		rewritten = append(rewritten, a)
	}
	first := img.manifests[0]
	if first.desc.Digest != img.top.Digest { // narrowed to one platform
		first = img.images[0]
	}
	if len(first.doc.Manifests) == 0 {
		if a, ok := conv[first.desc.Digest]; ok {
			return a, rewritten, nil
		}
		return archived{desc: first.desc, body: first.body}, rewritten, nil
	}
	if len(conv) == 0 && first.desc.MediaType != mtDockerList && first.doc.MediaType != mtDockerList {
		return archived{desc: first.desc, body: first.body}, nil, nil
	}
	idx := ociIndexDoc{SchemaVersion: 2, MediaType: mtOCIIndex}
	for _, child := range first.doc.Manifests {
		if a, ok := conv[child.Digest]; ok {
			child.MediaType, child.Digest, child.Size = a.desc.MediaType, a.desc.Digest, a.desc.Size
		}
		idx.Manifests = append(idx.Manifests, child)
	}
	a, err := archive(idx, mtOCIIndex)
	if err != nil {
		return archived{}, nil, err
	}
	return a, append(rewritten, a), nil
}

// ociManifestDoc and ociIndexDoc are the OCI documents ociForm writes.
type ociManifestDoc struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type ociIndexDoc struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

func retype(d descriptor) descriptor {
	if t, ok := ociTypes[d.MediaType]; ok {
		d.MediaType = t
	}
	return d
}

func archive(doc any, mediaType string) (archived, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return archived{}, err
	}
	return archived{desc: descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}, body: body}, nil
}
