// Package access decides which clients may pull (and push) through the
// mirror: an http middleware in front of the registry API.
//
// A request to /v2/... passes three checks, in this order:
//
//  1. Network: when Config.AllowNetworks is set, the client address
//     (r.RemoteAddr) must lie in one of them; otherwise 403 DENIED.
//  2. Authentication: when Config.HtpasswdFile is set, the request must
//     carry "Authorization: Basic" credentials of a user in that file;
//     otherwise 401 UNAUTHORIZED with `WWW-Authenticate: Basic
//     realm="ecr-mirror"`, which makes docker, containerd, podman and skopeo
//     ask for (or send) the login they hold for the mirror. Only bcrypt
//     entries are accepted (htpasswd -B); the file is re-read when it
//     changes on disk, so users can be added without a restart.
//  3. Rules: when Config.Rules is set, some rule naming the client (its user
//     name, a network holding its address, or "*") must grant the
//     repository at the level the request needs; otherwise 403 DENIED.
//
// /v2/ itself (the login probe) needs only the first two checks. Paths
// outside /v2/ (probes, metrics, anything else) need only the first: a
// network that may not use the registry may not read its metrics or probe
// it either. (The orchestrator's probes come from the node's address; the
// mirror also serves them on its metrics listener, which is not held to
// AllowNetworks.)
//
// # Changing the configuration
//
// Policy.Update puts another Config in force while requests go on (the
// server does so when its config file changes); each request is judged by
// the Config in force when it arrived. An htpasswd file of the same path
// is kept as loaded, and the login throttle (failure counts and blocked
// addresses, see Login storms) survives every Update.
//
// # Levels
//
// GET and HEAD requests need pull. Every other method, and anything under
// /blobs/uploads/, needs push; a push rule also grants pull. A
// cross-repository mount (POST .../blobs/uploads/?mount=<digest>&from=<repo>)
// also reads its source, so it needs pull on from, matched by the name the
// client wrote like any pull; without it (or without a from at all) the
// mount is dropped and the POST goes on as a plain upload, which the
// distribution spec has clients fall back to, so the client uploads the
// blob itself and learns nothing about the source. With no rules
// at all, every client that passed checks 1 and 2 may pull and push (pushes
// still need the mirror's PUSH setting): with an htpasswd file that means
// any authenticated user may push. Write rules to narrow that down.
//
// # Rule syntax
//
// Rules are written as level:subjects:repositories, separated by ";" or
// newlines (so the same text fits an environment variable or a file; "#"
// starts a comment that runs to the end of the line):
//
//	level         pull or push
//	subjects      comma-separated: user names from the htpasswd file,
//	              CIDRs (10.0.0.0/8, fd00::/8) or single IPs, or * (everyone)
//	repositories  comma-separated repository name prefixes, or * (all);
//	              a prefix matches whole path components: team matches
//	              team and team/app, not teamx/app (a trailing / is optional)
//
// For example
//
//	ACCESS_RULES="pull:*:*; push:ci-bot,release:team/,infra/; pull:10.0.0.0/8:docker-hub/"
//
// lets every client pull everything, lets users ci-bot and release push to
// team/... and infra/..., and (redundantly here) lets 10.0.0.0/8 pull
// docker-hub/.... Rules only ever grant; a request is allowed when any one
// rule allows it. IPv6 subjects may contain ":" since the level is the text
// before the first ":" and the repositories the text after the last.
//
// # Which name rules see
//
// Rules match the repository name as the client wrote it in the path, before
// the mirror maps registries to ECR pull-through prefixes: containerd's
// ?ns=docker.io and a listener's default namespace make no difference. A
// client may also name an ECR repository directly (docker-hub/library/nginx
// rather than library/nginx), so a rule that should cover both spellings
// must list both prefixes.
//
// # Secrets
//
// Passwords and Authorization headers never reach a log line; the header is
// removed from the request before it is passed on. Successful bcrypt
// verifications are remembered in memory (keyed by an HMAC of user, hash and
// password under a per-process random key, at most 1024 entries) so that a
// parallel pull pays for bcrypt once, not once per layer. Failed ones are
// remembered the same way (at most 4096), so a client retrying a wrong
// password costs no bcrypt run either; a remembered pair names the hash it
// failed against, so a changed htpasswd entry is checked afresh.
//
// # Login storms
//
// bcrypt is slow on purpose, so wrong logins are a cheap way to take the
// CPU from everyone. Three bounds keep a storm of them away from clients
// already logged in:
//
//   - Credentials verified before are accepted from memory and never wait
//     for bcrypt, whatever else is going on.
//   - At most max(1, GOMAXPROCS/2) bcrypt runs go at once. A login that
//     finds them all busy is not queued but answered 429 TOOMANYREQUESTS
//     with Retry-After: 1: clients retry it, and unlike a 401 it does not
//     tell the client its password is wrong. Queuing would let a storm
//     hold every request (and its connection) open behind it.
//   - A client address (an IPv6 /64) with 10 failed logins within a minute
//     is blocked for a minute: its logins are answered 429 with
//     Retry-After until then, without bcrypt, unless the credentials were
//     verified before. Only failures that cost a bcrypt run count, so a
//     client stuck on one stale password does not block its neighbours at
//     the same address. The block is logged once at warn; the refusals
//     after it, and repeated wrong passwords, at debug, so a storm cannot
//     flood the log either. At most 4096 addresses are tracked.
package access
