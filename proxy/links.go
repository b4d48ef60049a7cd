package proxy

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// The store is shared by every repository, but a repository may only be
// served content upstream holds in it: content by digest is served under
// a repository when the store links it there (cache.Store.Link), which
// happens whenever upstream answers for that repository (a download, a
// HEAD, a tag lookup, a push). A manifest links what it references. The
// store's content that is not linked is confirmed with one HEAD upstream
// first: the answer costs no body, and a refusal is passed on.

// repo is the store's name of an upstream repository.
func (p *Proxy) repo(name string) cache.Repo {
	return cache.Repo{Registry: p.host, Name: name}
}

// linked reports whether the store links dgst to repository name, under
// this upstream's host or, for the main upstream, without a host (links
// made where the host was not known: an import into a stopped mirror,
// tags recorded by an older version). Another upstream's links never
// count: the same name there is another repository.
func (p *Proxy) linked(name string, dgst digest.Digest) bool {
	return p.store.Linked(p.repo(name), dgst) || p.main && p.store.Linked(cache.Repo{Name: name}, dgst)
}

// link records that upstream holds dgst in repository name, and shares
// the links that are new with the shared tier (sharedmeta.go). A failure
// costs a HEAD later, so it is logged.
func (p *Proxy) link(name string, dgst digest.Digest) { p.linkFrom(name, dgst, true) }

// linkFrom links dgst to repository name; share says the links that
// are new go to the shared tier too (not those read from it).
func (p *Proxy) linkFrom(name string, dgst digest.Digest, share bool) {
	var added []digest.Digest
	var err error
	if lr, ok := p.store.(linkReporter); ok && share && p.meta() != nil {
		added, err = lr.LinkNew(p.repo(name), dgst)
	} else {
		err = p.store.Link(p.repo(name), dgst)
	}
	if err != nil {
		p.log.Warn("recording a link failed", "repository", name, "digest", dgst, "error", err)
	}
	p.shareLinks(name, added)
}

// retype records a manifest media type upstream declared for dgst, when
// the store holds it under a type that says less (cache.SetMediaType).
func (p *Proxy) retype(dgst digest.Digest, mediaType string) {
	if !cache.IsManifestType(mediaType) {
		return
	}
	if _, err := p.store.SetMediaType(dgst, mediaType); err != nil && !errors.Is(err, cache.ErrNotFound) {
		p.log.Warn("recording a media type failed", "digest", dgst, "media_type", mediaType, "error", err)
	}
}

// confirm asks upstream, with a HEAD, whether repository req.Name holds
// req.Dgst as a blob or a manifest (k), and links it when it does.
// For a manifest it returns the media type upstream declared. Upstream's
// refusal (404 BLOB_UNKNOWN or MANIFEST_UNKNOWN, 403 DENIED) is the
// client's answer; so is the failure to ask (502, 504), unless the
// shared tier links the content to the repository (a replica recorded
// ECR's answer there): nothing the repository is not known to hold is
// served.
func (p *Proxy) confirm(ctx context.Context, req *registry.Request, k kind) (string, error) {
	p.stats.Confirmations.Add(1)
	t := blobTarget(req.Name, req.Dgst)
	if k == kindManifest {
		t = manifestTarget(req.Name, req.Dgst.String(), confirmAccept(req.Accept))
	}
	c, err := p.head(ctx, t)
	if err != nil && p.sharedConfirms(ctx, req.Name, req.Dgst, err) {
		return "", nil
	}
	if err != nil {
		p.stats.Unconfirmed.Add(1)
		return "", err
	}
	if k != kindManifest {
		return "", nil
	}
	p.retype(req.Dgst, c.MediaType)
	return c.MediaType, nil
}

// confirmAccept is the Accept of a confirming manifest HEAD: every
// manifest type, so that upstream answers whatever the manifest is, and
// the client's own.
func confirmAccept(client []string) http.Header {
	types := append(oci.ManifestTypes(), oci.MediaTypeDockerSchema1Signed, oci.MediaTypeDockerSchema1, oci.MediaTypeArtifactManifest)
	for _, t := range client {
		if t != "" && !strings.ContainsAny(t, ",\r\n") {
			types = append(types, t)
		}
	}
	return http.Header{"Accept": {strings.Join(types, ", ")}}
}

// mayJoin lets req follow a download another request started, maybe
// through another upstream (Options.Shared): at once for the same
// repository of the same upstream (the download's own answer speaks for
// it) or a linked one, otherwise once upstream confirms the repository
// holds it.
func (p *Proxy) mayJoin(ctx context.Context, req *registry.Request, fl *flight, k kind) error {
	if fl.host == p.host && fl.name == req.Name || p.linked(req.Name, req.Dgst) {
		return nil
	}
	_, err := p.confirm(ctx, req, k)
	return err
}
