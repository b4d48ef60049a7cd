// Package peers lets the replicas of one mirror share their downloads:
// each digest has one owner among them, and a replica missing a digest
// that the shared tier lacks asks that owner rather than ECR, so the
// cluster downloads each digest from ECR once.
//
// Members (members.go) are the peer listeners' addresses, from PEERS: a
// static list, or dns:HOST:PORT re-resolved every PEER_REFRESH (a
// Kubernetes headless Service); a failed resolution keeps the last
// members. The member whose port is PEER_ADDR's and whose IP is one of
// this host's is this replica. A digest's owner is chosen by rendezvous
// (highest-random-weight) hashing: every member scores the digest, the
// highest score owns it, so a member joining or leaving moves only the
// digests it gains or held. A member that failed to answer (refused,
// timed out), or whose body stalled until the asking proxy gave up on
// it, is skipped for a cool-off (ended when it leaves the members):
// the asking replica goes to the shared tier and ECR itself meanwhile.
//
// Every peer request is signed (sign.go): an HMAC-SHA256 with
// PEER_SECRET over the method, the path and query and a timestamp,
// accepted within a window, so the secret never crosses the wire. The
// Server (server.go) answers GET and HEAD of /peer/v1/ through the proxy
// of the upstream named, exactly as a client request (the repository
// must hold the digest: links and confirmation upstream apply), but
// marked as a peer's (proxy.WithPeerRequest), so its download never asks
// another peer. The Client (client.go) is the asking side: it implements
// proxy.Peers, and the proxy streams its answer into the same verified
// cache.Writer as a download from ECR.
//
// The package is at the top level, beside sharedstore, rather than in
// internal/: it is a protocol between replicas that the proxy is written
// against (proxy.Peers), not a helper of the command.
package peers
