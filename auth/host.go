package auth

import (
	"net"
	"strings"
)

// RegionFromHost reads the AWS region from an ECR registry host such as
// 123456789012.dkr.ecr.eu-west-1.amazonaws.com, with or without a :port.
// It accepts the dual-stack form (123456789012.dkr-ecr.eu-west-1.on.aws),
// the -fips variants, and the China, European Sovereign Cloud and isolated
// partitions' domains (the set amazon-ecr-credential-helper recognises);
// ok is false for anything else, including ECR Public (public.ecr.aws).
func RegionFromHost(host string) (region string, ok bool) {
	h := strings.ToLower(host)
	if strings.Contains(h, ":") {
		hostname, port, err := net.SplitHostPort(h)
		if err != nil || !allDigits(port) {
			return "", false
		}
		h = hostname
	}
	h = strings.TrimSuffix(h, ".")

	// Partition domains, longest first where one ends another.
	suffixes := [...]string{
		".on.amazonwebservices.com.cn",
		".amazonaws.com.cn",
		".amazonaws.com",
		".amazonaws.eu",
		".on.aws",
		".sc2s.sgov.gov",
		".csp.hci.ic.gov",
		".c2s.ic.gov",
		".cloud.adc-e.uk",
	}
	found := false
	for _, s := range suffixes {
		if rest, cut := strings.CutSuffix(h, s); cut {
			h, found = rest, true
			break
		}
	}
	if !found {
		return "", false
	}

	// What remains: <account>.dkr(.|-)ecr[-fips].<region>
	labels := strings.Split(h, ".")
	var account string
	switch {
	case len(labels) == 4 && labels[1] == "dkr" && (labels[2] == "ecr" || labels[2] == "ecr-fips"):
		account, region = labels[0], labels[3]
	case len(labels) == 3 && (labels[1] == "dkr-ecr" || labels[1] == "dkr-ecr-fips"):
		account, region = labels[0], labels[2]
	default:
		return "", false
	}
	if len(account) != 12 || !allDigits(account) || !isRegion(region) {
		return "", false
	}
	return region, true
}

// isRegion reports whether s looks like an AWS region name: lower-case
// letters, digits and hyphens, starting with a letter, ending with a digit,
// with at least one hyphen (eu-west-1, us-gov-west-1, eusc-de-east-1).
func isRegion(s string) bool {
	if len(s) < 4 || s[0] < 'a' || s[0] > 'z' || !strings.Contains(s, "-") ||
		s[len(s)-1] < '0' || s[len(s)-1] > '9' || strings.Contains(s, "--") {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
