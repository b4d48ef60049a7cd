// Package admin holds the operations of "ecr-mirror cache" and "ecr-mirror
// import" on a mirror's store, and the local endpoint that serves them.
//
// The running mirror owns its CACHE_DIR (Badger locks it), so the commands
// reach a running mirror through a unix socket inside CACHE_DIR (mode 0600,
// out of the network's reach) and open a stopped mirror's store directly.
// Both ways run the same Service: Client, on the socket, and Service, on a
// store, implement Cache alike, with the same results and errors.
//
// Where each concern lives: service.go, the operations on a store
// (import.go, archives); server.go, the socket, its handler and
// NewServer, which a running mirror serves them with;
// client.go, the operations through the socket; open.go, Open, which
// picks one of the two for a command (waiting out a mirror that starts or
// stops), and OpenStore, which opens a stopped mirror's store.
//
// Tag records are the upstreams': List names each one's upstream registry
// (records without one are the main upstream's), purge and pin resolve
// repo:tag across upstreams, or <registry>/repo:tag for one, and Import
// records and links what it admits for the main upstream.
//
// Referrers (signatures, SBOMs) name their image as their subject; the
// image does not reference them, so its pin does not hold them and its
// links do not cover them. Pin with PinOptions.Referrers pins each under a
// pin of its own (ReferrerPinName), which Unpin of the image removes;
// Import links an image's referrers in the archive to its repository and
// records their referrers lists (cache.ReferrersRecord), whole and per
// artifactType, as if upstream had just answered them.
//
// With a shared blob tier (NewServer's SharedPins), a running mirror's pin
// and unpin also write and remove the image's pin in the bucket
// (pins/<hex>), which the tier's sweep never deletes; a stopped mirror's
// pins reach the bucket when it starts.
package admin
