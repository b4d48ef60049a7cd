package fakeecr

import (
	"context"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
)

// TestSDKGetAuthorizationToken checks the token API against the client the
// mirror uses, aws-sdk-go-v2, pointed at the fake by BaseEndpoint.
func TestSDKGetAuthorizationToken(t *testing.T) {
	t.Parallel()
	clk := newClock()
	f := Start(t, Options{Now: clk.Now})
	client := ecr.New(ecr.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(f.TokenURL()),
		Credentials:  credentials.NewStaticCredentialsProvider("fake", "fake", ""),
		// The throttling check below wants one attempt, not the SDK's retries.
		RetryMaxAttempts: 1,
	})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.AuthorizationData) != 1 {
		t.Fatalf("%d authorizationData entries", len(out.AuthorizationData))
	}
	ad := out.AuthorizationData[0]
	if got := aws.ToTime(ad.ExpiresAt); !got.Equal(clk.Now().Add(12 * time.Hour)) {
		t.Errorf("ExpiresAt %v, want %v", got, clk.Now().Add(12*time.Hour))
	}
	if aws.ToString(ad.ProxyEndpoint) != f.URL() {
		t.Errorf("ProxyEndpoint %q", aws.ToString(ad.ProxyEndpoint))
	}
	creds, err := base64.StdEncoding.DecodeString(aws.ToString(ad.AuthorizationToken))
	if err != nil || !strings.HasPrefix(string(creds), "AWS:") {
		t.Fatalf("token %q does not decode to AWS:<password> (%v)", aws.ToString(ad.AuthorizationToken), err)
	}
	c := newClient(t)
	if r := do(t, c, http.MethodGet, f.URL()+"/v2/", "Authorization: Basic "+aws.ToString(ad.AuthorizationToken)); r.StatusCode != http.StatusOK {
		t.Errorf("registry with the SDK's token: %d", r.StatusCode)
	}

	// Throttling surfaces as the SDK's error type name.
	f.SetTokenFault(Fault{Mode: FaultStatus, Times: 1})
	_, err = client.GetAuthorizationToken(ctx, &ecr.GetAuthorizationTokenInput{})
	if err == nil || !strings.Contains(err.Error(), "ThrottlingException") {
		t.Errorf("throttled call: %v", err)
	}
}
