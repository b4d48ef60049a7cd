package main

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The example names deploy/aws/iam-policy.json is written for (README.md,
// "Running several replicas": replace them with yours).
const (
	exampleRepos  = "arn:aws:ecr:eu-west-1:123456789012:repository/"
	exampleBucket = "ecr-mirror-shared"
	examplePrefix = "ecr-mirror"
	blobKey       = examplePrefix + "/blobs/sha256/2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
)

// The ARNs a call acts on.
var (
	repoARN   = exampleRepos + "docker-hub/library/alpine"
	objectARN = "arn:aws:s3:::" + exampleBucket + "/" + blobKey
	bucketARN = "arn:aws:s3:::" + exampleBucket
)

// awsCall is what one of the mirror's AWS requests needs from IAM: an
// action on a resource, in a request context (condition keys).
type awsCall struct {
	what, action, resource string
	context                map[string]string
}

// mirrorCalls are the AWS requests the mirror makes. Through the AWS SDK
// (the code calls that sdkActions maps, found by sdkCalls):
// auth/token.go ecr GetAuthorizationToken; auth/ecrpublic.go ecrpublic
// GetAuthorizationToken (ECR Public upstreams, for higher rate limits);
// sharedstore/store.go s3 GetObject, HeadObject, DeleteObject;
// sharedstore/put.go s3 PutObject, CreateMultipartUpload, UploadPart,
// CompleteMultipartUpload, AbortMultipartUpload. Through ECR's registry
// API (proxy, over HTTP with the token): manifests, blobs, tags/list, and
// the first pull through a pull-through-cache rule.
var mirrorCalls = []awsCall{
	{what: "ecr GetAuthorizationToken", action: "ecr:GetAuthorizationToken", resource: "*"},
	{what: "ecrpublic GetAuthorizationToken", action: "ecr-public:GetAuthorizationToken", resource: "*"},
	{what: "ecrpublic GetAuthorizationToken", action: "sts:GetServiceBearerToken", resource: "*"},
	{what: "GET and HEAD /v2/<repo>/manifests/<ref>", action: "ecr:BatchGetImage", resource: repoARN},
	{what: "GET /v2/<repo>/referrers/<digest>", action: "ecr:BatchGetImage", resource: repoARN},
	{what: "GET /v2/<repo>/blobs/<digest>", action: "ecr:GetDownloadUrlForLayer", resource: repoARN},
	{what: "HEAD /v2/<repo>/blobs/<digest>", action: "ecr:BatchCheckLayerAvailability", resource: repoARN},
	{what: "GET /v2/<repo>/tags/list", action: "ecr:ListImages", resource: repoARN},
	{what: "first pull through a pull-through-cache rule", action: "ecr:BatchImportUpstreamImage", resource: repoARN},
	{what: "first pull through a pull-through-cache rule", action: "ecr:CreateRepository", resource: repoARN},
	// S3 answers a missing object with 404 rather than 403 only when the
	// caller may list the bucket, evaluated with s3:prefix set to the
	// key: without it, every miss of the shared tier would be an error.
	{what: "s3 GetObject or HeadObject of a missing object", action: "s3:ListBucket", resource: bucketARN, context: map[string]string{"s3:prefix": blobKey}},
}

// sdkActions maps each AWS SDK operation the mirror's code may call
// (service and operation, as in &s3.GetObjectInput) to the IAM actions
// it needs; a new call fails TestIAMPolicyCoversTheCodesAWSCalls until it
// is added here, and the policy allows it.
var sdkActions = map[string][]string{
	"ecr GetAuthorizationToken":       {"ecr:GetAuthorizationToken"},
	"ecrpublic GetAuthorizationToken": {"ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"},
	"s3 GetObject":                    {"s3:GetObject"},
	"s3 HeadObject":                   {"s3:GetObject"},
	"s3 PutObject":                    {"s3:PutObject"},
	"s3 CreateMultipartUpload":        {"s3:PutObject"},
	"s3 UploadPart":                   {"s3:PutObject"},
	"s3 CompleteMultipartUpload":      {"s3:PutObject"},
	"s3 AbortMultipartUpload":         {"s3:AbortMultipartUpload"},
	"s3 ListParts":                    {"s3:ListMultipartUploadParts"},
	"s3 DeleteObject":                 {"s3:DeleteObject"},
	"s3 DeleteObjects":                {"s3:DeleteObject"},
	"s3 CopyObject":                   {"s3:GetObject", "s3:PutObject"},
	"s3 ListObjectsV2":                {"s3:ListBucket"},
	"s3 ListObjects":                  {"s3:ListBucket"},
}

// policy is an IAM policy document, as much of it as the checks read.
type policy struct {
	Version   string
	Statement []statement
}

type statement struct {
	Sid       string
	Effect    string
	Principal map[string]stringList
	Action    stringList
	Resource  stringList
	Condition map[string]map[string]stringList
}

// stringList is an IAM field that is a string or a list of strings.
type stringList []string

func (s *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stringList{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(s))
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readPolicy(t *testing.T, path string) policy {
	t.Helper()
	var p policy
	readJSON(t, path, &p)
	if p.Version != "2012-10-17" {
		t.Fatalf("%s: Version %q, want 2012-10-17 (older versions have no policy variables)", path, p.Version)
	}
	return p
}

// allows evaluates p for one call as IAM does for an identity policy: an
// explicit Deny wins, else some Allow must match action, resource and
// every condition.
func (p policy) allows(t *testing.T, c awsCall) bool {
	t.Helper()
	allowed := false
	for _, s := range p.Statement {
		if !matchAny(s.Action, c.action) || !matchAny(s.Resource, c.resource) || !conditionsHold(t, s, c.context) {
			continue
		}
		if s.Effect == "Deny" {
			return false
		}
		allowed = allowed || s.Effect == "Allow"
	}
	return allowed
}

// conditionsHold evaluates the operators the policy uses; a key the
// request lacks fails its condition, as in IAM.
func conditionsHold(t *testing.T, s statement, context map[string]string) bool {
	t.Helper()
	for op, keys := range s.Condition {
		for key, values := range keys {
			got, ok := context[key]
			if !ok {
				return false
			}
			switch op {
			case "StringLike":
				if !matchAny(values, got) {
					return false
				}
			case "StringEquals":
				if !contains(values, got) {
					return false
				}
			default:
				t.Fatalf("statement %s: condition operator %s is not evaluated by this test", s.Sid, op)
			}
		}
	}
	return true
}

// matchAny reports whether one of patterns (IAM wildcards * and ?,
// case-insensitive for actions) matches s.
func matchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		re := "^" + strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(regexp.QuoteMeta(p)) + "$"
		if strings.Contains(s, ":") && !strings.HasPrefix(s, "arn:") {
			re = "(?i)" + re // actions: service:Name, case-insensitive
		}
		if regexp.MustCompile(re).MatchString(s) {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// The policy allows every AWS request the mirror makes, on the example
// repositories and the bucket's prefix.
func TestIAMPolicyAllowsTheMirrorsCalls(t *testing.T) {
	t.Parallel()
	p := readPolicy(t, "../aws/iam-policy.json")
	for _, c := range mirrorCalls {
		if !p.allows(t, c) {
			t.Errorf("deploy/aws/iam-policy.json does not allow %s on %s (%s)", c.action, c.resource, c.what)
		}
	}
}

// Every AWS SDK call in the mirror's code is known to sdkActions, and
// the policy allows its actions: objects under the prefix, listing with
// the prefix.
func TestIAMPolicyCoversTheCodesAWSCalls(t *testing.T) {
	t.Parallel()
	p := readPolicy(t, "../aws/iam-policy.json")
	calls := sdkCalls(t, "../..")
	for _, want := range []string{"ecr GetAuthorizationToken", "s3 GetObject", "s3 PutObject", "s3 CreateMultipartUpload"} {
		if _, ok := calls[want]; !ok {
			t.Errorf("found no %s call in the code: is sdkCalls still reading it?", want)
		}
	}
	for call, where := range calls {
		actions, ok := sdkActions[call]
		if !ok {
			t.Errorf("%s calls %s, which sdkActions does not know: add the IAM actions it needs there and to deploy/aws/iam-policy.json", where, call)
			continue
		}
		for _, a := range actions {
			c := awsCall{what: call, action: a, resource: "*"}
			switch {
			case strings.HasPrefix(a, "s3:List") && a != "s3:ListMultipartUploadParts":
				c.resource, c.context = bucketARN, map[string]string{"s3:prefix": examplePrefix + "/blobs/"}
			case strings.HasPrefix(a, "s3:"):
				c.resource = objectARN
			case strings.HasPrefix(a, "ecr:") && a != "ecr:GetAuthorizationToken":
				c.resource = repoARN
			}
			if !p.allows(t, c) {
				t.Errorf("%s calls %s, which needs %s on %s: deploy/aws/iam-policy.json does not allow it", where, call, a, c.resource)
			}
		}
	}
}

// sdkCall finds AWS SDK requests in Go source: &s3.GetObjectInput{...}.
var sdkCall = regexp.MustCompile(`&(s3|ecr|ecrpublic)\.([A-Z][A-Za-z0-9]*)Input\b`)

// sdkCalls lists the AWS SDK calls ("s3 GetObject") in the non-test Go
// files under root, with a file that makes each; test servers and
// deploy/ are not the mirror.
func sdkCalls(t *testing.T, root string) map[string]string {
	t.Helper()
	skip := map[string]bool{"deploy": true, ".git": true, "testdata": true, "internal/fakeecr": true, "internal/s3test": true}
	calls := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && skip[filepath.ToSlash(rel)] {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range sdkCall.FindAllStringSubmatch(string(src), -1) {
			calls[m[1]+" "+m[2]] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return calls
}

// The policy keeps to the prefix and to reading ECR: no other objects,
// no listing beyond the prefix, no bucket administration, no push.
func TestIAMPolicyIsNoWiderThanNeeded(t *testing.T) {
	t.Parallel()
	p := readPolicy(t, "../aws/iam-policy.json")
	for _, c := range []awsCall{
		{what: "an object outside the prefix", action: "s3:GetObject", resource: "arn:aws:s3:::" + exampleBucket + "/other/key"},
		{what: "a write outside the prefix", action: "s3:PutObject", resource: "arn:aws:s3:::" + exampleBucket + "/ecr-mirror-other/key"},
		{what: "listing outside the prefix", action: "s3:ListBucket", resource: bucketARN, context: map[string]string{"s3:prefix": "other/"}},
		{what: "listing the whole bucket", action: "s3:ListBucket", resource: bucketARN},
		{what: "another bucket", action: "s3:GetObject", resource: "arn:aws:s3:::another-bucket/" + blobKey},
		{what: "bucket administration", action: "s3:PutLifecycleConfiguration", resource: bucketARN},
		{what: "deleting the bucket", action: "s3:DeleteBucket", resource: bucketARN},
		{what: "a push (PUSH=true needs its own statement)", action: "ecr:PutImage", resource: repoARN},
		{what: "deleting images", action: "ecr:BatchDeleteImage", resource: repoARN},
	} {
		if p.allows(t, c) {
			t.Errorf("deploy/aws/iam-policy.json allows %s on %s (%s)", c.action, c.resource, c.what)
		}
	}
}

// lifecycle is a bucket lifecycle configuration (aws s3api
// put-bucket-lifecycle-configuration --lifecycle-configuration).
type lifecycle struct {
	Rules []struct {
		ID     string
		Status string
		Filter struct {
			Prefix string
		}
		AbortIncompleteMultipartUpload *struct {
			DaysAfterInitiation int
		}
		Expiration                  json.RawMessage
		NoncurrentVersionExpiration json.RawMessage
		Transitions                 json.RawMessage
	}
}

// The lifecycle rule aborts the multipart uploads a killed replica left
// after a day, over the whole prefix, and expires nothing: the mirror
// bounds the bucket itself (SHARED_STORE_MAX_SIZE), by whole images.
func TestBucketLifecycleAbortsUploadsAndExpiresNothing(t *testing.T) {
	t.Parallel()
	var lc lifecycle
	readJSON(t, "../aws/bucket-lifecycle.json", &lc)
	aborts := 0
	for _, r := range lc.Rules {
		if r.Expiration != nil || r.NoncurrentVersionExpiration != nil || r.Transitions != nil {
			t.Errorf("rule %s expires or moves objects: the mirror bounds the bucket itself (SHARED_STORE_MAX_SIZE), whole images at a time", r.ID)
		}
		if r.Status != "Enabled" || r.AbortIncompleteMultipartUpload == nil {
			continue
		}
		if d := r.AbortIncompleteMultipartUpload.DaysAfterInitiation; d != 1 {
			t.Errorf("rule %s aborts incomplete uploads after %d days, want 1", r.ID, d)
		}
		if r.Filter.Prefix != "" && !strings.HasPrefix(examplePrefix+"/", r.Filter.Prefix) {
			t.Errorf("rule %s covers prefix %q, not the mirror's %s/", r.ID, r.Filter.Prefix, examplePrefix)
		}
		aborts++
	}
	if aborts != 1 {
		t.Errorf("%d enabled rules abort incomplete multipart uploads, want 1", aborts)
	}
}

// The trust policies let exactly the mirror's ServiceAccount assume the
// role: IRSA by its subject, EKS Pod Identity by the pods service.
func TestTrustPolicies(t *testing.T) {
	t.Parallel()
	irsa := readPolicy(t, "../aws/trust-irsa.json")
	podIdentity := readPolicy(t, "../aws/trust-pod-identity.json")
	if len(irsa.Statement) != 1 || len(podIdentity.Statement) != 1 {
		t.Fatalf("want one statement each, IRSA has %d, Pod Identity %d", len(irsa.Statement), len(podIdentity.Statement))
	}
	s := irsa.Statement[0]
	var subs []string
	for key, values := range s.Condition["StringEquals"] {
		if strings.HasSuffix(key, ":sub") {
			subs = append(subs, values...)
		}
	}
	sort.Strings(subs)
	if !contains(s.Action, "sts:AssumeRoleWithWebIdentity") || len(s.Principal["Federated"]) != 1 {
		t.Errorf("IRSA: want sts:AssumeRoleWithWebIdentity from one OIDC provider, got %v from %v", s.Action, s.Principal)
	}
	if want := "system:serviceaccount:ecr-mirror:ecr-mirror"; len(subs) != 1 || subs[0] != want {
		t.Errorf("IRSA: subjects %v, want exactly %s (the ServiceAccount of deploy/kubernetes and the chart's fullnameOverride ecr-mirror)", subs, want)
	}
	s = podIdentity.Statement[0]
	if svc := strings.Join(s.Principal["Service"], ","); svc != "pods.eks.amazonaws.com" || !contains(s.Action, "sts:AssumeRole") || !contains(s.Action, "sts:TagSession") {
		t.Errorf("Pod Identity: want sts:AssumeRole and sts:TagSession from pods.eks.amazonaws.com, got %v from %v", s.Action, s.Principal)
	}
}
