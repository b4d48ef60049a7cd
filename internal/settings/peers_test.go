package settings

import (
	"strings"
	"testing"
	"time"
)

// PEERS and its companions are checked at startup, each error naming
// the setting, never echoing PEER_SECRET; the secret is never printed by
// "config check".
func TestPeerSettings(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	const secret = "s3cr3t-peer-value-0123"
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
		check   func(*testing.T, *Config)
	}{
		{name: "static list, defaults", env: map[string]string{"PEERS": "a:5001,b:5001", "PEER_SECRET": secret},
			check: func(t *testing.T, c *Config) {
				if c.Peers != "a:5001,b:5001" || c.PeerAddr != ":5001" || c.PeerSecret != secret || c.PeerRefresh != 15*time.Second || c.PeerTimeout != 5*time.Second {
					t.Errorf("got %q %q %v %v", c.Peers, c.PeerAddr, c.PeerRefresh, c.PeerTimeout)
				}
			}},
		{name: "dns", env: map[string]string{"PEERS": "dns:mirrors.ns.svc:5001", "PEER_SECRET": secret, "PEER_ADDR": ":6001", "PEER_REFRESH": "1m", "PEER_TIMEOUT": "2s"},
			check: func(t *testing.T, c *Config) {
				if c.PeerAddr != ":6001" || c.PeerRefresh != time.Minute || c.PeerTimeout != 2*time.Second {
					t.Errorf("got %q %v %v", c.PeerAddr, c.PeerRefresh, c.PeerTimeout)
				}
			}},
		{name: "off", env: map[string]string{},
			check: func(t *testing.T, c *Config) {
				if c.Peers != "" || c.PeerAddr != "" {
					t.Errorf("got %q %q", c.Peers, c.PeerAddr)
				}
			}},
		{name: "no secret", env: map[string]string{"PEERS": "a:5001"}, wantErr: []string{"PEER_SECRET: is required with PEERS"}},
		{name: "short secret", env: map[string]string{"PEERS": "a:5001", "PEER_SECRET": "hunter2"}, wantErr: []string{"PEER_SECRET: is 7 characters long; it must have at least 16"}},
		{name: "bad entry", env: map[string]string{"PEERS": "a:5001,b", "PEER_SECRET": secret}, wantErr: []string{`PEERS: entry "b"`}},
		{name: "bad port", env: map[string]string{"PEERS": "a:0", "PEER_SECRET": secret}, wantErr: []string{`PEERS: entry "a:0"`, "1 to 65535"}},
		{name: "bad dns", env: map[string]string{"PEERS": "dns:mirrors", "PEER_SECRET": secret}, wantErr: []string{`PEERS: "dns:mirrors"`, "dns:HOST:PORT"}},
		{name: "bad addr", env: map[string]string{"PEERS": "a:5001", "PEER_SECRET": secret, "PEER_ADDR": "5001"}, wantErr: []string{"PEER_ADDR"}},
		{name: "bad durations", env: map[string]string{"PEERS": "a:5001", "PEER_SECRET": secret, "PEER_REFRESH": "0", "PEER_TIMEOUT": "soon"},
			wantErr: []string{`PEER_REFRESH: "0"`, `PEER_TIMEOUT: "soon"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := parseEnv(map[string]string{"UPSTREAM": ecr}, tt.env)
			if s := tt.env["PEER_SECRET"]; err != nil && s != "" && strings.Contains(err.Error(), s) {
				t.Errorf("error %q echoes PEER_SECRET", err)
			}
			if !parsedAsWanted(t, err, tt.wantErr) {
				return
			}
			tt.check(t, cfg)
		})
	}
	for _, s := range settings(&Config{}) {
		if s.env == "PEER_SECRET" && !s.secret {
			t.Error("PEER_SECRET is not a secret setting: config check would print it")
		}
	}
}
