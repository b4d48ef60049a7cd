package auth_test

import (
	"testing"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

func TestRegionFromHost(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host   string
		region string // "" means ok=false
	}{
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com", "eu-west-1"},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com:443", "eu-west-1"},
		{"123456789012.DKR.ECR.EU-WEST-1.AMAZONAWS.COM", "eu-west-1"},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com.", "eu-west-1"},
		{"123456789012.dkr.ecr.us-gov-west-1.amazonaws.com", "us-gov-west-1"},
		{"123456789012.dkr.ecr-fips.us-east-1.amazonaws.com", "us-east-1"},
		{"123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "cn-north-1"},
		{"123456789012.dkr.ecr.cn-northwest-1.amazonaws.com.cn:5000", "cn-northwest-1"},
		{"123456789012.dkr-ecr.eu-west-1.on.aws", "eu-west-1"},
		{"123456789012.dkr-ecr.eu-west-1.on.aws:443", "eu-west-1"},
		{"123456789012.dkr-ecr-fips.us-east-2.on.aws", "us-east-2"},
		{"123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn", "cn-north-1"},
		{"123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu", "eusc-de-east-1"},
		{"123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov", "us-iso-east-1"},
		{"123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov", "us-isob-east-1"},

		// Not private ECR registry hosts.
		{"", ""},
		{"public.ecr.aws", ""},
		{"registry-1.docker.io", ""},
		{"localhost:5000", ""},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com.evil.example", ""},
		{"evil.example/123456789012.dkr.ecr.eu-west-1.amazonaws.com", ""},
		{"x123456789012.dkr.ecr.eu-west-1.amazonaws.com", ""},
		{"12345678901.dkr.ecr.eu-west-1.amazonaws.com", ""},   // 11 digits
		{"1234567890123.dkr.ecr.eu-west-1.amazonaws.com", ""}, // 13 digits
		{"12345678901a.dkr.ecr.eu-west-1.amazonaws.com", ""},
		{"123456789012.dkr.ecr.amazonaws.com", ""},                    // no region
		{"123456789012.dkr.ecr.eu_west_1.amazonaws.com", ""},          // not a region
		{"123456789012.dkr.ecr.eu-west.amazonaws.com", ""},            // no region number
		{"123456789012.dkr.ecr.a.b.amazonaws.com", ""},                // extra label
		{"123456789012.ecr.eu-west-1.amazonaws.com", ""},              // not dkr
		{"123456789012.dkr.ecr.eu-west-1.on.aws", "eu-west-1"},        // accepted like the ECR helper does
		{"123456789012.dkr-ecr.eu-west-1.amazonaws.com", "eu-west-1"}, // accepted like the ECR helper does
		{"123456789012.api.ecr.eu-west-1.amazonaws.com", ""},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com:", ""},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com:https", ""},
		{"123456789012.dkr.ecr.eu-west-1.amazonaws.com:443:443", ""},
		{"[::1]:443", ""},
		{"https://123456789012.dkr.ecr.eu-west-1.amazonaws.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			region, ok := auth.RegionFromHost(tt.host)
			if ok != (tt.region != "") || region != tt.region {
				t.Errorf("RegionFromHost(%q) = %q, %v; want %q, %v", tt.host, region, ok, tt.region, tt.region != "")
			}
		})
	}
}

func FuzzRegionFromHost(f *testing.F) {
	f.Add("123456789012.dkr.ecr.eu-west-1.amazonaws.com:443")
	f.Add("123456789012.dkr-ecr.eu-west-1.on.aws")
	f.Fuzz(func(t *testing.T, host string) {
		region, ok := auth.RegionFromHost(host)
		if ok != (region != "") {
			t.Fatalf("RegionFromHost(%q) = %q, %v", host, region, ok)
		}
	})
}
