package observe

import (
	"net/http"
	"net/http/pprof"
)

// OpsHandler serves METRICS_ADDR, the operator's port, for Prometheus
// and the orchestrator: metrics and probes, no registry API, not held to
// ALLOW_NETWORKS (a kubelet probes from the node's address).
func OpsHandler(probe, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			probe.ServeHTTP(w, r)
		case "/metrics":
			metrics.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
}

// BesideAPI serves a registry listener: the probes (/healthz, /readyz)
// and, unless metrics is nil (they have a port of their own), /metrics,
// beside the registry API api, which gets every other path.
func BesideAPI(api, probe, metrics http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
			probe.ServeHTTP(w, r)
		case r.URL.Path == "/metrics" && metrics != nil:
			metrics.ServeHTTP(w, r)
		default:
			api.ServeHTTP(w, r)
		}
	})
}

// PprofHandler serves Go's profiles, on a listener of their own.
func PprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
