package settings

import (
	"errors"
	"fmt"

	"github.com/ecr-mirror/ecr-mirror/peers"
)

// peerSettings are the settings of the replicas that share downloads
// (package peers). They come after SHARED_STORE's and are parsed in this
// order: PEER_ADDR and PEER_SECRET read PEERS.
func peerSettings(c *Config) []*setting {
	return []*setting{
		{env: "PEERS", arg: "dns:HOST:PORT|HOST:PORT,...",
			help:       "the replicas' peer listeners: dns:HOST:PORT (a headless Service, re-resolved every PEER_REFRESH) or HOST:PORT,HOST:PORT; each digest is downloaded from ECR by its owner among them only; unset: no peers",
			docDefault: "(none: no peers)", doc: "the peer listeners of the mirror's replicas, this one's included: `dns:HOST:PORT` (a Kubernetes headless Service, re-resolved every `PEER_REFRESH`) or a list `HOST:PORT,HOST:PORT`; a miss is asked of the digest's owner among them (see \"Several replicas: peers\")",
			parse: c.parsePeers},
		{env: "PEER_ADDR", arg: "ADDR",
			help:       "address of the peer listener (plain HTTP, peer API only, every request signed with PEER_SECRET; default :5001 with PEERS)",
			docDefault: "`:5001` with `PEERS`", doc: "where this replica serves the peer API: plain HTTP, signed requests only; its port names this replica among `PEERS`. Keep it off the public network",
			parse: c.parsePeerAddr},
		{env: "PEER_SECRET", arg: "SECRET", secret: true,
			help:       "shared secret that signs peer requests (at least 16 characters; required with PEERS; never printed or logged)",
			docDefault: "(required with `PEERS`)", doc: "the secret every replica signs its peer requests with (HMAC-SHA256; the secret itself is never sent), at least 16 characters; from a Kubernetes Secret through the environment",
			parse: c.parsePeerSecret},
		{env: "PEER_REFRESH", arg: "DURATION", def: "15s",
			help:  "how often PEERS=dns:HOST:PORT is resolved again",
			doc:   "how often `PEERS=dns:…` is resolved again; a failed resolution keeps the last members",
			parse: bindPositiveDuration(&c.PeerRefresh)},
		{env: "PEER_TIMEOUT", arg: "DURATION", def: "5s",
			help:  "how long a digest's owner gets to connect and answer before the replica reads the shared tier or ECR itself",
			doc:   "how long a digest's owner gets to connect and send its response headers; then (or on any failure) the replica reads the shared tier, then ECR, itself, and skips that owner for 10 s",
			parse: bindPositiveDuration(&c.PeerTimeout)},
	}
}

// parsePeers binds PEERS, checked by peers.ParseSpec.
func (c *Config) parsePeers(v string) error {
	c.Peers = v
	if v == "" {
		return nil
	}
	_, err := peers.ParseSpec(v)
	return err
}

// parsePeerAddr binds PEER_ADDR: :5001 when PEERS is set and it is not.
func (c *Config) parsePeerAddr(v string) error {
	if v == "" && c.Peers != "" {
		v = ":5001"
	}
	c.PeerAddr = v
	if v == "" {
		return nil
	}
	return checkListenAddr(v)
}

// parsePeerSecret binds PEER_SECRET, required with PEERS. Its errors
// never quote it.
func (c *Config) parsePeerSecret(v string) error {
	c.PeerSecret = v
	switch {
	case c.Peers == "":
		return nil
	case v == "":
		return errors.New("is required with PEERS: every replica signs its peer requests with it")
	case len(v) < peers.MinSecretLength:
		return fmt.Errorf("is %d characters long; it must have at least %d", len(v), peers.MinSecretLength)
	}
	return nil
}
