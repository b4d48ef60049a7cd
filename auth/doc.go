// Package auth supplies the credentials the mirror sends upstream.
//
// For ECR, from AWS to the wire:
//
//	NewECRClient  builds an ecr.Client from the SDK's default config chain
//	              (WithUserAgent adds the mirror's product/version to the
//	              SDK's User-Agent: awsoptions.go)
//	ECRFetcher    turns it into a FetchFunc (one GetAuthorizationToken call)
//	Source        caches the Token, refreshes it ahead of expiry (Run), and
//	              coalesces concurrent fetches with a singleflight.Group
//	Transport     an http.RoundTripper that adds "Authorization: Basic <token>"
//	              to requests for the registry host only, and refreshes and
//	              retries once when the registry rejects the token
//
// For any other registry (an "oci" upstream) and for ECR Public:
//
//	NewRegistryTransport  an http.RoundTripper that answers the registry's
//	                      own 401 challenges: Bearer tokens from its realm,
//	                      one per repository scope, cached until shortly
//	                      before expiry (registry.go, realm.go, scope.go,
//	                      challenge.go), or Basic credentials
//	Login                 the credentials it presents, from:
//	LoadDockerConfig      a Docker config.json (UPSTREAM_DOCKER_CONFIG):
//	                      "auths", "credHelpers" and "credsStore" through
//	                      go-containerregistry's authn (dockerconfig.go)
//	NewECRPublicClient,   ECR Public's GetAuthorizationToken (us-east-1) as a
//	ECRPublicFetcher,     FetchFunc for a Source, presented to
//	SourceLogin           public.ecr.aws's token realm; with AnonymousFallback
//	                      the transport pulls anonymously when AWS credentials
//	                      are missing or refused (ecrpublic.go)
//
// go-containerregistry's transport.NewWithContext fixes its scopes when it
// is built, one repository per transport; a mirror serves any repository
// of a registry through one client, so NewRegistryTransport handles the
// challenge itself, per request scope, and takes ggcr's authn for the
// credentials (keychains, helpers, identity and registry tokens).
//
// Tokens and logins are bearer secrets, so they never appear in logs,
// errors or fmt output: Token formats itself as "ecr-token(expires …)",
// registry tokens as "registry-credential(…)".
//
// Credentials never cross hosts. ECR answers blob GETs with a 307 to a
// presigned S3 URL (other registries to a CDN), and S3 rejects a request
// that carries both a presigned query and an Authorization header. Both
// transports therefore decide per request, by URL host, whether to add the
// header; they never set it on the caller's request, so http.Client cannot
// copy it to the redirect target. A token realm gets its own registry's
// login only, only over https (or loopback, in tests), and its redirects
// are not followed.
package auth
