package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// ReferrerList is one page of the referrers API.
type ReferrerList struct {
	Body []byte // the OCI index
	// FiltersApplied is the upstream's OCI-Filters-Applied header: the
	// query filters (artifactType) the list honours.
	FiltersApplied string
	// NextQuery, when non-empty, is the raw query of the next page.
	NextQuery string
	// Outcome says how the backend answered (upstream, stale), for logs.
	Outcome string
	// Warning, when set, is sent as the Warning header, as Content's.
	Warning string
}

// ReferrersLister is implemented by a Backend that serves the OCI 1.1
// referrers API; without it the endpoint is 404 UNSUPPORTED, which tells
// clients to fall back to the tag schema.
type ReferrersLister interface {
	// Referrers gets one page of the manifests whose subject is dgst in
	// repository name; rawQuery is the client's query, as sent.
	Referrers(ctx context.Context, name string, dgst digest.Digest, rawQuery string) (*ReferrerList, error)
}

// serveReferrers serves the referrers API from the backend, as serveTags
// does tags/list: the query goes to the backend as sent (less ns), the
// answer is checked to be an index, the next page's Link points at the
// mirror, and a stale answer carries its Warning.
func (h *Handler) serveReferrers(ctx context.Context, w *recorder, r *http.Request, b Backend, route Route, upstreamName string, outcome *string) error {
	lister, ok := b.(ReferrersLister)
	if !ok {
		return Errorf(CodeUnsupported, "the referrers API is not supported by this mirror").WithStatus(http.StatusNotFound)
	}
	rl, err := lister.Referrers(ctx, upstreamName, route.Dgst, dropParam(r.URL.RawQuery, "ns"))
	if err != nil {
		return err
	}
	*outcome = rl.Outcome
	body, err := clientReferrers(rl.Body)
	if err != nil {
		return err
	}
	hdr := w.Header()
	if rl.NextQuery != "" {
		hdr.Set("Link", h.nextLink(r, "/v2/"+route.Name+"/referrers/"+route.Dgst.String(), rl.NextQuery))
	}
	if rl.FiltersApplied != "" {
		hdr.Set("OCI-Filters-Applied", rl.FiltersApplied)
	}
	if rl.Warning != "" {
		hdr.Set("Warning", rl.Warning)
	}
	hdr.Set("Content-Type", oci.MediaTypeImageIndex)
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
	return nil
}

// clientReferrers checks that an upstream referrers answer is an OCI
// index and passes it on as it came, but for a missing or null manifests
// list, which the spec wants as an empty one.
func clientReferrers(upstream []byte) ([]byte, error) {
	var index map[string]json.RawMessage
	err := json.Unmarshal(upstream, &index)
	var manifests []json.RawMessage
	if err == nil && index["manifests"] != nil {
		err = json.Unmarshal(index["manifests"], &manifests)
	}
	if err != nil {
		return nil, &Error{Status: http.StatusBadGateway, Code: CodeUnavailable,
			Message: "upstream answered referrers with a body that is not an image index", Internal: err.Error()}
	}
	if manifests != nil {
		return upstream, nil
	}
	index["manifests"] = json.RawMessage("[]")
	if index["schemaVersion"] == nil {
		index["schemaVersion"] = json.RawMessage("2")
	}
	if index["mediaType"] == nil {
		index["mediaType"] = json.RawMessage(fmt.Sprintf("%q", oci.MediaTypeImageIndex))
	}
	return json.Marshal(index)
}
