// Package imageclient reads whole images through a registry API (the
// mirror's, as "ecr-mirror warm", "export" and "cache pin" do), verifying
// every manifest and blob against its digest.
//
// Where each concern lives:
//
//   - client.go: [Client], its GETs and the manifest reads with their
//     size cap and digest check.
//   - errors.go: [RegistryError], an answer other than 200, read as the
//     codes and messages of its OCI error body (never the raw JSON).
//   - login.go: [Client.Ping] and the login to a mirror with an htpasswd
//     file: Options.Login, or Options.Keychain's for the registry's host
//     (authn.DefaultKeychain: the Docker config), looked up only when the
//     registry asks, sent as Basic credentials to its host alone;
//     [LoginError] when it is missing or refused.
//   - loginrequest.go: [LoginRequest.Resolve], the login a command was
//     given (--username with the password on stdin, or the --mirror
//     URL's userinfo) split from the mirror's URL, and [LoginHint], the
//     line saying how to log in when a mirror asks.
//   - dial.go: [Dial], a client of a mirror's URL over a transport of its
//     own; [PullWhole], the pull behind "cache pin" (with referrers for
//     "cache pin --with-referrers"); [ParseImages] and [ReadImageList],
//     the images of the commands' arguments and -f files.
//   - image.go: [Image], the walk from a tag or digest through indexes to
//     the blobs of the wanted platforms ([Client.Resolve]).
//   - referrers.go: [Client.Referrers], an image's referrers list (every
//     page, an artifactType filter), and the walk that adds referrers,
//     and theirs to a bounded depth, to an [Image] (Options.WithReferrers).
//   - warm.go: [Client.Warm], which reads every blob, several at once, and
//     the [Progress] it reports to; [Client.WarmAll], "ecr-mirror warm".
//   - layout.go: [Client.WriteImage], which adds an image (and its
//     referrers, each an index.json entry naming no image) to an OCI
//     layout archive, and [OCIForm], which rewrites Docker schema2
//     manifests to OCI ones as the layout wants them.
//   - export.go: [Client.Export], "ecr-mirror export": images written to
//     an archive file complete or not at all, one [Task] of progress per
//     image, and the [ExportSummary] of what was written.
//
// Descriptors and media types are those of package oci, the one set the
// project shares.
package imageclient
