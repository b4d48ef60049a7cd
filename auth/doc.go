// Package auth supplies the ECR credentials the mirror sends upstream.
//
// The pieces, from AWS to the wire:
//
//	NewECRClient  builds an ecr.Client from the SDK's default config chain
//	ECRFetcher    turns it into a FetchFunc (one GetAuthorizationToken call)
//	Source        caches the Token, refreshes it ahead of expiry (Run), and
//	              coalesces concurrent fetches with a singleflight.Group
//	Transport     an http.RoundTripper that adds "Authorization: Basic <token>"
//	              to requests for the registry host only, and refreshes and
//	              retries once when the registry rejects the token
//
// The token is a bearer secret for every repository the AWS principal can
// read, so it never appears in logs, errors or fmt output: Token formats
// itself as "ecr-token(expires …)".
//
// ECR answers blob GETs with a 307 to a presigned S3 URL, and S3 rejects a
// request that carries both a presigned query and an Authorization header.
// The Transport therefore decides per request, by URL host, whether to add
// the header; it never sets it on the caller's request, so http.Client
// cannot copy it to the redirect target.
package auth
