package sharedstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/opencontainers/go-digest"
)

// ErrNotFound says the bucket holds no object for a digest.
var ErrNotFound = errors.New("not in the shared store")

// DefaultPartSize is the size of each part of a multipart upload, and
// the size above which uploads are multipart.
const DefaultPartSize = 16 << 20

// abortTimeout bounds the cleanup of a failed multipart upload, which
// runs on a context of its own: the upload's may be canceled.
const abortTimeout = 30 * time.Second

// Operations and outcomes reported to Options.Observe.
const (
	OpGet    = "get"
	OpHead   = "head"
	OpPut    = "put"
	OpDelete = "delete"

	OutcomeOK       = "ok"
	OutcomeNotFound = "not_found"
	OutcomeExists   = "exists" // a conditional create found the object there
	OutcomeError    = "error"
)

// Options configures a Store.
type Options struct {
	// Bucket and Prefix locate the objects (ParseURL splits an s3:// URL).
	Bucket, Prefix string
	// PathStyle addresses the bucket in the path rather than the host
	// name (IP endpoints and most on-premises stores need it).
	PathStyle bool
	// AWS holds credentials, region and endpoint (config.LoadDefaultConfig
	// reads AWS_ENDPOINT_URL_S3, profiles, IRSA...).
	AWS aws.Config
	// PartSize is the multipart part size (0: DefaultPartSize).
	PartSize int64
	// Observe, if set, is told of every request's operation and outcome.
	Observe func(op, outcome string)
}

// Store reads and writes content by digest in one bucket.
type Store struct {
	client         *s3.Client
	bucket, prefix string
	partSize       int64
	observe        func(op, outcome string)
}

// ParseURL splits s3://BUCKET[/PREFIX] into its bucket and prefix.
func ParseURL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", errors.New("shared store: not a URL: want s3://BUCKET[/PREFIX]")
	}
	if u.Scheme != "s3" || u.Host == "" || u.RawQuery != "" || u.User != nil {
		// Redacted: a password written into the URL is never echoed.
		return "", "", fmt.Errorf("shared store %q: want s3://BUCKET[/PREFIX] (credentials come from the AWS SDK's settings)", u.Redacted())
	}
	return u.Host, strings.Trim(u.Path, "/"), nil
}

// New returns the store of opts.
func New(opts Options) (*Store, error) {
	if opts.Bucket == "" {
		return nil, errors.New("shared store: no bucket")
	}
	if opts.PartSize <= 0 {
		opts.PartSize = DefaultPartSize
	}
	if opts.PartSize < 5<<20 {
		return nil, fmt.Errorf("shared store: part size %d is below S3's 5 MiB minimum", opts.PartSize)
	}
	client := s3.NewFromConfig(opts.AWS, func(o *s3.Options) {
		o.UsePathStyle = opts.PathStyle
		// Checksums only where S3 requires them: not every
		// S3-compatible store knows the newer checksum headers. The
		// content is verified by digest anyway.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	observe := opts.Observe
	if observe == nil {
		observe = func(string, string) {}
	}
	return &Store{client: client, bucket: opts.Bucket, prefix: opts.Prefix, partSize: opts.PartSize, observe: observe}, nil
}

// Key is the object key of dgst.
func (s *Store) Key(dgst digest.Digest) string {
	k := "blobs/" + dgst.Algorithm().String() + "/" + dgst.Encoded()
	if s.prefix != "" {
		k = s.prefix + "/" + k
	}
	return k
}

// Bucket is the store's bucket.
func (s *Store) Bucket() string { return s.bucket }

// Object is an object being read: its body, size and the media type it
// was written with.
type Object struct {
	Body      io.ReadCloser
	Size      int64 // -1: the store did not say
	MediaType string
}

// Open streams the object of dgst. ErrNotFound when the bucket has none.
func (s *Store) Open(ctx context.Context, dgst digest.Digest) (*Object, error) {
	if err := dgst.Validate(); err != nil {
		return nil, fmt.Errorf("shared store: %w", err)
	}
	key := s.Key(dgst)
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return nil, s.failed(OpGet, key, err)
	}
	s.observe(OpGet, OutcomeOK)
	size := int64(-1) // sent without a length (chunked): unknown, not 0
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	return &Object{Body: out.Body, Size: size, MediaType: aws.ToString(out.ContentType)}, nil
}

// Has reports whether the bucket holds an object for dgst.
func (s *Store) Has(ctx context.Context, dgst digest.Digest) (bool, error) {
	key := s.Key(dgst)
	_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err == nil {
		s.observe(OpHead, OutcomeOK)
		return true, nil
	}
	if err = s.failed(OpHead, key, err); errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return false, err
}

// Delete removes the object of dgst (no error when there is none).
func (s *Store) Delete(ctx context.Context, dgst digest.Digest) error {
	key := s.Key(dgst)
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		return s.failed(OpDelete, key, err)
	}
	s.observe(OpDelete, OutcomeOK)
	return nil
}

// failed counts a failed request and names what it was about. A missing
// object becomes ErrNotFound.
func (s *Store) failed(op, key string, err error) error {
	if isNotFound(err) {
		s.observe(op, OutcomeNotFound)
		return fmt.Errorf("s3://%s/%s: %w", s.bucket, key, ErrNotFound)
	}
	s.observe(op, OutcomeError)
	return fmt.Errorf("shared store %s s3://%s/%s: %w", op, s.bucket, key, err)
}

func isNotFound(err error) bool {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	return errors.As(err, &nsk) || errors.As(err, &nf) || statusOf(err) == 404
}

// statusOf is the HTTP status of a failed request's answer (0: none came).
func statusOf(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}
