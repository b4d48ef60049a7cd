// Package observe is how a running mirror is watched from outside.
//
//   - metrics.go: Metrics, the Prometheus metrics in a registry of their
//     own, fed by the request and upstream observers and reading the
//     counters cache, proxy and auth keep themselves at scrape time
//     (summed over the proxies, one per upstream, and the token sources,
//     one per ECR region). Label values come only from small fixed sets,
//     but for ecr_mirror_build_info's (RegisterBuildInfo), one series
//     naming the running build's version, commit and Go release.
//   - probes.go: Probes, /healthz (alive) and /readyz (cache writable,
//     index open, ECR reachable with a valid token for every region an
//     ECR upstream is in, or degraded with STALE_IF_ERROR); with
//     WatchSharedStore and WatchPeers, a line for the shared tier and
//     one for PEERS, whose failure makes the mirror degraded, never
//     unready.
//   - reach.go: Reachability, whether the last attempt to reach each
//     upstream (a registry request; for ECR also its region's token
//     fetch) succeeded.
//   - handlers.go: OpsHandler, the operator's port (METRICS_ADDR: probes
//     and metrics), BesideAPI, the probes (and metrics without a port of
//     their own) on a registry listener, and PprofHandler, Go's profiles
//     (PPROF_ADDR).
//
// Series whose label values are known at start (served bytes by source,
// cache requests by outcome, peer and forward-proxy requests by outcome) exist at 0 from then, so the rules and the
// dashboard in deploy/monitoring have something to evaluate.
//
// cmd/ecr-mirror builds them and mounts their handlers.
package observe
