// Command ecr-mirror is a caching pull-through mirror for AWS ECR.
//
// Run with no arguments (or "serve") it serves the registry API; see
// README.md for its settings. "ecr-mirror help" lists the other commands
// (cli.go): warm, export, import, cache (ls, verify, pin, unpin, purge),
// healthcheck, version and config check (configcmd.go), which prints the
// configuration in effect. Each command's --help text is a file in help/,
// embedded (help.go).
//
// Where the server's concerns live:
//
//   - internal/settings: every setting, bound once to its field of
//     settings.Config with its flag, variable, default, -h text, README.md
//     row and parser; settings.Parse reads them all and reports every bad
//     one before anything is built. The README table is generated from
//     that list: go generate ./cmd/ecr-mirror.
//   - internal/configreload: a running server's CONFIG_FILE watcher
//     (settings.Watcher) and what it applies without a restart:
//     access.Policy.Update and tlsreload.Reloader.SetFiles.
//   - main.go: run, which wires the store, the proxies, the handlers and
//     the listeners by hand (LISTEN_ADDR, NAMESPACE_LISTENERS, then
//     PULL_THROUGHS' prefix:port ones), and logs the seed proxies'
//     variables the configuration was read with; the metrics, /healthz, /readyz and ECR's
//     reachability come from package observe, the client limits
//     (CLIENT_STALL_TIMEOUT, MAX_CLIENT_CONNECTIONS) from clientconn.
//   - internal/upstreams: the upstream side, one proxy per UPSTREAM entry
//     over the one store (the default first; the others' backends by host
//     for registry.WithUpstreams), with the credentials of its kind: one
//     ECR token source per region, ECR Public's token, the logins of
//     UPSTREAM_DOCKER_CONFIG; the shared tier and the peers (PEERS) every
//     proxy asks, whose peer API main.go serves on PEER_ADDR, outside the
//     client access policy (package peers signs and checks each request).
//   - forwardproxy.go: FORWARD_PROXY_ADDR's listener (the forward-proxy
//     mode, package internal/forwardproxy): the CA loaded or generated at
//     start, each intercepted host (every UPSTREAM host and
//     FORWARD_PROXY_REGISTRIES) given the front handler a
//     NAMESPACE_LISTENERS listener for it would have, the access policy
//     as its gate, /ca.crt beside the registry API, its listener served
//     over TLS (HTTP/1.1 only) when the registry listeners are, and its
//     tunnels shut down with the servers.
//   - internal/servergroup: the lifecycle, the TCP listeners opened, an
//     errgroup with one goroutine per server and one that shuts them down
//     (the admin socket last) within SHUTDOWN_GRACE.
//   - warm.go, export.go, cachecmd.go: the image commands' flags and
//     output; the images themselves are read with internal/imageclient
//     (Client.Warm, Client.Export),
//     and progress bars and lines come from internal/progress. login.go:
//     the flags with which warm and export log in to a mirror with
//     HTPASSWD_FILE (--username/--password-stdin, a URL's userinfo, else
//     the Docker config through authn.DefaultKeychain), resolved by
//     imageclient.LoginRequest.
//     The cache commands reach a running mirror, or a stopped one's
//     store, with admin.Open, and run their operations on admin.Cache.
//   - healthcheck.go: the container's HEALTHCHECK, its flags and exit
//     codes; internal/healthcheck asks /healthz where the same settings
//     say the server listens. versioncmd.go: the
//     build from internal/buildinfo, which also names it in
//     ecr_mirror_build_info, the startup log and the upstream User-Agent.
package main

// README.md's settings table is rendered from internal/settings.
//go:generate go test -count=1 -run TestREADMESettingsTableMatchesSettings ../../internal/settings -args -update-readme
