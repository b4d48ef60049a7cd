package settings

import (
	"io"
	"strings"
	"testing"
)

func TestUpstreamKindsAreInferredFromHosts(t *testing.T) {
	t.Parallel()
	const (
		euWest  = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
		usEast  = "https://210987654321.dkr.ecr.us-east-1.amazonaws.com"
		fips    = "https://123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"
		dual    = "https://123456789012.dkr-ecr.ap-south-1.on.aws"
		public  = "https://public.ecr.aws"
		ghcr    = "https://ghcr.io"
		loop    = "http://127.0.0.1:5100"
		loopTwo = "http://127.0.0.1:5200"
	)
	type want struct{ kind, host, region string }
	tests := []struct {
		name   string
		env    map[string]string
		want   []want
		region string // Config.Region
	}{
		{name: "one ECR host", env: map[string]string{"UPSTREAM": euWest},
			want: []want{{KindECR, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"}}, region: "eu-west-1"},
		{name: "one loopback entry without kind stays ecr", env: map[string]string{"UPSTREAM": loop, "AWS_REGION": "us-east-1"},
			want: []want{{KindECR, "127.0.0.1:5100", "us-east-1"}}, region: "us-east-1"},
		{name: "one plain host without kind stays ecr", env: map[string]string{"UPSTREAM": ghcr, "AWS_REGION": "us-east-1"},
			want: []want{{KindECR, "ghcr.io", "us-east-1"}}, region: "us-east-1"},
		{name: "one entry with kind", env: map[string]string{"UPSTREAM": "oci:" + loop},
			want: []want{{KindOCI, "127.0.0.1:5100", ""}}},
		{name: "two regions, fips, dual-stack, public, plain",
			env: map[string]string{"UPSTREAM": strings.Join([]string{euWest, usEast, fips, dual, public, ghcr}, ", ")},
			want: []want{
				{KindECR, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"},
				{KindECR, "210987654321.dkr.ecr.us-east-1.amazonaws.com", "us-east-1"},
				{KindECR, "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "us-gov-west-1"},
				{KindECR, "123456789012.dkr-ecr.ap-south-1.on.aws", "ap-south-1"},
				{KindECRPublic, "public.ecr.aws", ""},
				{KindOCI, "ghcr.io", ""},
			}, region: "eu-west-1"},
		{name: "AWS_REGION for ecr hosts naming none, not for those that do",
			env: map[string]string{"UPSTREAM": "ecr:" + loop + ",oci:" + loopTwo + "," + usEast, "AWS_REGION": "eu-central-1"},
			want: []want{{KindECR, "127.0.0.1:5100", "eu-central-1"}, {KindOCI, "127.0.0.1:5200", ""},
				{KindECR, "210987654321.dkr.ecr.us-east-1.amazonaws.com", "us-east-1"}},
			region: "eu-central-1"},
		{name: "kinds in any case, hosts without scheme",
			env:  map[string]string{"UPSTREAM": "OCI:localhost:5000,ECR-Public:public.ecr.aws,localhost:6000"},
			want: []want{{KindOCI, "localhost:5000", ""}, {KindECRPublic, "public.ecr.aws", ""}, {KindOCI, "localhost:6000", ""}}},
		{name: "Docker Hub's API host as clients name it",
			env:    map[string]string{"UPSTREAM": euWest + ",oci:https://registry-1.docker.io"},
			want:   []want{{KindECR, "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"}, {KindOCI, "docker.io", ""}},
			region: "eu-west-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse(nil, func(k string) string { return tt.env[k] }, io.Discard)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			var got []want
			for _, up := range cfg.Upstreams {
				got = append(got, want{up.Kind, up.Host, up.Region})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("upstreams = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("upstream %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if cfg.Upstream != cfg.Upstreams[0].URL {
				t.Errorf("Upstream = %v, want the first entry %v", cfg.Upstream, cfg.Upstreams[0].URL)
			}
			if cfg.Region != tt.region {
				t.Errorf("Region = %q, want %q", cfg.Region, tt.region)
			}
		})
	}
}

func TestBadUpstreamListsAreRefusedNamingTheEntry(t *testing.T) {
	t.Parallel()
	const ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"
	tests := []struct {
		name    string
		env     map[string]string
		wantErr []string
	}{
		{name: "unknown kind", env: map[string]string{"UPSTREAM": ecr + ",docker:https://ghcr.io"},
			wantErr: []string{`UPSTREAM: entry "docker:https://ghcr.io": kind "docker" is not one of ecr, ecr-public or oci`}},
		{name: "same host twice", env: map[string]string{"UPSTREAM": ecr + ",oci:" + ecr},
			wantErr: []string{`UPSTREAM: entry "oci:` + ecr + `": registry 123456789012.dkr.ecr.eu-west-1.amazonaws.com is listed twice`}},
		{name: "same host in another case", env: map[string]string{"UPSTREAM": "oci:https://Ghcr.io,oci:ghcr.io"},
			wantErr: []string{"registry ghcr.io is listed twice"}},
		{name: "Docker Hub under two names", env: map[string]string{"UPSTREAM": "oci:docker.io,oci:registry-1.docker.io"},
			wantErr: []string{"registry docker.io is listed twice"}},
		{name: "bad URLs, each named", env: map[string]string{"UPSTREAM": ecr + ",ftp://x,oci:https://u:p@ghcr.io,oci:"},
			wantErr: []string{`entry "ftp://x"`, "scheme must be https", `entry "oci:https://u:p@ghcr.io"`, "credentials", `entry "oci:"`, "is required"}},
		{name: "path", env: map[string]string{"UPSTREAM": ecr + ",https://quay.io/v2"}, wantErr: []string{`entry "https://quay.io/v2"`, "must not have a path"}},
		{name: "ecr host without region and no AWS_REGION", env: map[string]string{"UPSTREAM": ecr + ",ecr:http://127.0.0.1:5100"},
			wantErr: []string{`AWS_REGION: not set, and the UPSTREAM host "127.0.0.1:5100" does not name a region`}},
		{name: "empty list", env: map[string]string{"UPSTREAM": " , "}, wantErr: []string{"UPSTREAM: is required"}},
		{name: "also a pull-through", env: map[string]string{"UPSTREAM": ecr + ",public.ecr.aws", "PULL_THROUGHS": "public.ecr.aws=ecr-public"},
			wantErr: []string{"PULL_THROUGHS: registry public.ecr.aws is also an UPSTREAM entry"}},
		{name: "listener for an unknown registry", env: map[string]string{"UPSTREAM": ecr + ",ghcr.io", "NAMESPACE_LISTENERS": ":5001=quay.io"},
			wantErr: []string{`NAMESPACE_LISTENERS: registry "quay.io" is not mapped in PULL_THROUGHS, nor an UPSTREAM entry`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(nil, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil {
				t.Fatal("Parse accepted the configuration")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestUpstreamHostsServeNamespaceListeners(t *testing.T) {
	t.Parallel()
	env := map[string]string{"UPSTREAM": "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com,oci:https://Ghcr.io",
		"NAMESPACE_LISTENERS": ":5001=ghcr.io", "DEFAULT_NAMESPACE": "GHCR.io"}
	cfg, err := Parse(nil, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(cfg.NamespaceListeners) != 1 || cfg.NamespaceListeners[0].Namespace != "ghcr.io" || cfg.DefaultNamespace != "ghcr.io" {
		t.Fatalf("listeners %+v, default namespace %q; want ghcr.io for both", cfg.NamespaceListeners, cfg.DefaultNamespace)
	}
}

func FuzzParseUpstreams(f *testing.F) {
	for _, s := range []string{"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", "oci:localhost:5000,public.ecr.aws",
		"ecr:http://127.0.0.1:1,oci:http://127.0.0.1:1", "x:y:z", "oci:", ",", "docker:https://a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ups, err := ParseUpstreams(s)
		if err != nil {
			return
		}
		hosts := map[string]bool{}
		for _, u := range ups {
			if u.Kind != KindECR && u.Kind != KindECRPublic && u.Kind != KindOCI || u.Host == "" || hosts[u.Host] {
				t.Fatalf("ParseUpstreams(%q) accepted %+v", s, ups)
			}
			hosts[u.Host] = true
		}
	})
}
