package access

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Query parameters of a cross-repository mount:
// POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repository>.
const (
	paramMount = "mount"
	paramFrom  = "from"
)

// vetMount checks the source of a cross-repository mount against the rules
// before the upload POST r goes on. A mount reads the source repository, so
// the client needs pull on ?from= (checked like any pull: by the name it
// wrote, whatever its ?ns=) as well as push on the target, which the caller
// has checked.
//
// A mount the client may not make is not refused but dropped: the returned
// request has neither mount nor from, so the upstream starts a plain upload
// session (202) and the client uploads the blob itself, as the distribution
// spec has clients do whenever a registry cannot mount. That keeps pushes
// working for clients that try a mount from a repository they merely saw
// the blob in, and answers exactly as a mount of a blob the source does
// not hold would, so it tells nothing about the source. A mount with no
// from (the spec lets a registry pick any source) is dropped the same way,
// since no rule can be checked for it.
//
// The returned request's query is re-encoded from what was checked, so the
// upstream sees the parameters the rules saw, whatever the client's
// encoding (a key written %6Dount, pairs after a ";"). A from that is not a
// valid repository name, or a repeated mount or from, is an error for the
// client (400).
func (p *Policy) vetMount(st *state, r *http.Request, user string, addr netip.Addr) (*http.Request, *registry.Error) {
	q, _ := url.ParseQuery(r.URL.RawQuery) // unparseable pairs are left out, here and upstream
	mounts, froms := q[paramMount], q[paramFrom]
	if len(mounts) > 1 {
		return nil, registry.Errorf(registry.CodeDigestInvalid, "more than one %s parameter: a mount names one blob", paramMount)
	}
	if len(froms) > 1 {
		return nil, registry.Errorf(registry.CodeNameInvalid, "more than one %s parameter: a mount names one source repository", paramFrom)
	}
	reason := ""
	switch {
	case len(froms) == 1:
		if err := registry.ValidateName(froms[0]); err != nil {
			e := registry.Errorf(registry.CodeNameInvalid, "mount source (from): %v", err)
			if errors.As(err, &e) {
				e.Message = "mount source (from): " + e.Message
			}
			return nil, e
		}
		if !st.allowed(user, addr, froms[0], Pull) {
			reason = "no rule grants pull of the mount source"
		}
	case len(mounts) == 1:
		reason = "a mount without from names no source the rules could check"
	}
	if reason != "" {
		q.Del(paramMount)
		q.Del(paramFrom)
		attrs := []slog.Attr{
			slog.String("client", r.RemoteAddr),
			slog.String("path", r.URL.Path),
			slog.String("reason", reason),
		}
		if len(froms) == 1 {
			attrs = append(attrs, slog.String("from", froms[0]))
		}
		if user != "" {
			attrs = append(attrs, slog.String("user", shorten(user)))
		}
		p.log.LogAttrs(r.Context(), slog.LevelWarn, "cross-repository mount dropped: starting a plain upload instead", attrs...)
	}
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	return r2, nil
}
