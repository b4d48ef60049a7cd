package upstreams

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/peers"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// startPeers builds PEERS' membership, refreshed until ctx ends, and the
// client every proxy asks owners with; nothing when PEERS is unset. Its
// requests feed up.Metrics.
func (up *Side) startPeers(ctx context.Context, cfg *settings.Config, log *slog.Logger) error {
	if cfg.Peers == "" {
		return nil
	}
	spec, err := peers.ParseSpec(cfg.Peers)
	if err != nil {
		return fmt.Errorf("PEERS: %w", err)
	}
	plog := log.With("component", "peers")
	members, err := peers.NewMembers(ctx, peers.MembersOptions{Spec: spec, Addr: cfg.PeerAddr, Refresh: cfg.PeerRefresh, Logger: plog})
	if err != nil {
		return fmt.Errorf("PEER_ADDR: %w", err)
	}
	go members.Run(ctx)
	up.Members = members
	up.peerSigner = peers.NewSigner(cfg.PeerSecret, nil)
	up.peerClient = peers.NewClient(peers.ClientOptions{Members: members, Signer: up.peerSigner, Timeout: cfg.PeerTimeout, Logger: plog,
		Observe: func(outcome string) {
			if up.Metrics != nil { // set once every proxy is built
				up.Metrics.ObservePeer(outcome)
			}
		}})
	return nil
}

// PeerServer is the peer API's handler, over every upstream's proxy;
// nil when PEERS is unset.
func (up *Side) PeerServer(log *slog.Logger) *peers.Server {
	if up.Members == nil {
		return nil
	}
	backends := map[string]registry.Backend{}
	for _, px := range up.Proxies {
		backends[px.Host()] = px
	}
	return peers.NewServer(up.peerSigner, backends, log.With("component", "peers"))
}

// peersOption is what proxy.Options.Peers gets: nil (not a nil
// *peers.Client) when PEERS is unset.
func (up *Side) peersOption() proxy.Peers {
	if up.peerClient == nil {
		return nil
	}
	return up.peerClient
}
