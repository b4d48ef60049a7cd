package registry

import "net/http"

// serveWrite answers pushes: uploads, manifest PUTs and deletes.
func (h *Handler) serveWrite(w *recorder, r *http.Request, route Route) error {
	return Errorf(CodeUnsupported, "push is off: this mirror is pull-only (set PUSH=true to pass pushes through to ECR); %s %s refused", r.Method, truncate(r.URL.Path))
}
