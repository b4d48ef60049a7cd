package sharedstore

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"
)

// The folders of the bucket, under the prefix (layout in doc.go).
const (
	dirBlobs = "blobs/sha256/"
	dirUsed  = "used/"
	dirPins  = "pins/"
)

// OpList is a page of a listing, reported to Options.Observe.
const OpList = "list"

// recordKey is the key of dgst's record in dir (used/ or pins/).
func (s *Store) recordKey(dir string, dgst digest.Digest) string {
	return s.under(dir + dgst.Encoded())
}

// under is name under the store's prefix.
func (s *Store) under(name string) string {
	if s.prefix == "" {
		return name
	}
	return s.prefix + "/" + name
}

// MarkUsed records that a replica served the manifest dgst now: it
// (re)writes the empty object used/<hex>, whose LastModified, the
// bucket's clock rather than a replica's, is the image's last use for
// the sweep (Sweeper).
func (s *Store) MarkUsed(ctx context.Context, dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	key := s.recordKey(dirUsed, dgst)
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key,
		Body: bytes.NewReader(nil), ContentLength: aws.Int64(0)})
	return s.putDone(key, err)
}

// pinRecord is the body of a pins/<hex> object.
type pinRecord struct {
	Names []string `json:"names"`
}

// PutPin records in the bucket that the image dgst is pinned, under
// names: the sweep never deletes it or what it references.
func (s *Store) PutPin(ctx context.Context, dgst digest.Digest, names []string) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	return s.putJSON(ctx, s.recordKey(dirPins, dgst), pinRecord{Names: names})
}

// DeletePin removes the bucket's pin of dgst (no error when there is none).
func (s *Store) DeletePin(ctx context.Context, dgst digest.Digest) error {
	if err := checkDigest(dgst); err != nil {
		return err
	}
	return s.deleteKey(ctx, s.recordKey(dirPins, dgst))
}

// deleteKey removes the object key (no error when there is none).
func (s *Store) deleteKey(ctx context.Context, key string) error {
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.bucket, Key: &key}); err != nil {
		return s.failed(OpDelete, key, err)
	}
	s.observe(OpDelete, OutcomeOK)
	return nil
}

// Listed is an object of a listing: its size and when it was last
// written, by the bucket's clock.
type Listed struct {
	Size     int64
	Modified time.Time
}

// list lists dir (blobs/sha256/, used/ or pins/) by digest, each page
// asked within timeout. Keys that do not name a sha256 digest are
// skipped: nothing the mirror wrote.
func (s *Store) list(ctx context.Context, dir string, timeout time.Duration) (map[digest.Digest]Listed, error) {
	prefix := s.under(dir)
	out := make(map[digest.Digest]Listed)
	pages := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		pctx, cancel := context.WithTimeout(ctx, timeout)
		page, err := pages.NextPage(pctx)
		cancel()
		if err != nil {
			s.observe(OpList, OutcomeError)
			return nil, fmt.Errorf("shared store list s3://%s/%s: %w", s.bucket, prefix, err)
		}
		s.observe(OpList, OutcomeOK)
		for _, o := range page.Contents {
			dgst := digest.NewDigestFromEncoded(digest.SHA256, strings.TrimPrefix(aws.ToString(o.Key), prefix))
			if dgst.Validate() != nil {
				continue
			}
			out[dgst] = Listed{Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}
		}
	}
	return out, nil
}
