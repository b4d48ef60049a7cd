package auth

import (
	"net/http"
	"slices"
	"strings"
)

// requestScope is the token scope a registry request needs: for
// /v2/<name>/{manifests,blobs,tags,referrers}/…, "repository:<name>:pull",
// or "repository:<name>:pull,push" for a request that writes (any method
// but GET and HEAD). Other paths (/v2/, /v2/_catalog) need no repository
// scope: "" leaves it to the registry's challenge.
func requestScope(req *http.Request) string {
	name, ok := repositoryOf(req.URL.Path)
	if !ok {
		return ""
	}
	actions := "pull"
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		actions = "pull,push"
	}
	return "repository:" + name + ":" + actions
}

// repositoryOf reads the repository name from a registry API path. The
// name may contain slashes, so the last API segment marks its end.
func repositoryOf(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return "", false
	}
	end := -1
	for _, seg := range [...]string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, seg); i > end {
			end = i
		}
	}
	if end <= 0 {
		return "", false
	}
	return rest[:end], true
}

// scopesOf merges the request's scope with those a challenge names
// (space-separated), without repeats, the request's first.
func scopesOf(own, challenged string) []string {
	var out []string
	for _, s := range append([]string{own}, strings.Fields(challenged)...) {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
