package auth_test

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/ecr-mirror/ecr-mirror/auth"
)

// An "oci" upstream's client: the registry's own challenges answered
// with the logins of UPSTREAM_DOCKER_CONFIG, for that registry's host
// only, around the proxy's base transport (in the mirror, through
// proxy.RedirectPolicy.Client's wrap function).
func ExampleDockerConfig_Transport() {
	logins, err := auth.LoadDockerConfig("/etc/ecr-mirror/docker-config.json", slog.Default())
	if err != nil {
		slog.Error("startup", "error", err) // it names UPSTREAM_DOCKER_CONFIG and the file
		return
	}
	client := &http.Client{Transport: logins.Transport("ghcr.io", http.DefaultTransport)}
	_ = client // client.Get("https://ghcr.io/v2/owner/image/manifests/latest")
}

// An "ecr-public" upstream's client: ECR Public tokens from the AWS SDK
// when credentials allow (higher rate limits), anonymous pulls otherwise.
func ExampleSourceLogin() {
	ctx := context.Background()
	api, err := auth.NewECRPublicClient(ctx, "")
	if err != nil {
		slog.Error("startup", "error", err)
		return
	}
	// No Logger: the transport says once that it pulls anonymously.
	tokens := auth.NewSource(auth.ECRPublicFetcher(api), auth.Options{})
	rt := auth.NewRegistryTransport(auth.ECRPublicHost, http.DefaultTransport, auth.RegistryOptions{
		Login: auth.SourceLogin(tokens), AnonymousFallback: true, Logger: slog.Default(),
	})
	_ = &http.Client{Transport: rt}
}
