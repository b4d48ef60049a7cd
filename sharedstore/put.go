package sharedstore

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/opencontainers/go-digest"
)

// Put writes size bytes of r, content already verified as dgst of
// mediaType (kept as the object's Content-Type), unless
// the bucket holds dgst already. The write is a conditional create: when
// another replica wrote the object first (412), that is success. Above
// the part size it is a multipart upload, each part read from r as it is
// sent; a failed one is aborted, leaving no partial object.
func (s *Store) Put(ctx context.Context, dgst digest.Digest, size int64, mediaType string, r io.ReaderAt) error {
	if has, err := s.Has(ctx, dgst); err != nil || has {
		return err
	}
	key := s.Key(dgst)
	var err error
	if size <= s.partSize {
		err = s.putSingle(ctx, key, size, mediaType, r)
	} else {
		err = s.putMultipart(ctx, key, size, mediaType, r)
	}
	if statusOf(err) == 412 {
		s.observe(OpPut, OutcomeExists)
		return nil
	}
	if err != nil {
		s.observe(OpPut, OutcomeError)
		return fmt.Errorf("shared store put s3://%s/%s: %w", s.bucket, key, err)
	}
	s.observe(OpPut, OutcomeOK)
	return nil
}

func (s *Store) putSingle(ctx context.Context, key string, size int64, mediaType string, r io.ReaderAt) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &s.bucket, Key: &key, IfNoneMatch: aws.String("*"), ContentType: contentType(mediaType),
		Body: io.NewSectionReader(r, 0, size), ContentLength: aws.Int64(size),
	})
	return err
}

func (s *Store) putMultipart(ctx context.Context, key string, size int64, mediaType string, r io.ReaderAt) (err error) {
	up, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.bucket, Key: &key, ContentType: contentType(mediaType)})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			s.abort(key, up.UploadId)
		}
	}()
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+s.partSize, n+1 {
		length := min(s.partSize, size-off)
		out, err := s.client.UploadPart(ctx, &s3.UploadPartInput{
			Bucket: &s.bucket, Key: &key, UploadId: up.UploadId, PartNumber: aws.Int32(n),
			Body: io.NewSectionReader(r, off, length), ContentLength: aws.Int64(length),
		})
		if err != nil {
			return fmt.Errorf("part %d: %w", n, err)
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, UploadId: up.UploadId, IfNoneMatch: aws.String("*"),
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	return err
}

// abort drops a multipart upload's parts, on a context of its own: the
// upload's may be what failed.
func (s *Store) abort(key string, id *string) {
	ctx, cancel := context.WithTimeout(context.Background(), abortTimeout)
	defer cancel()
	_, _ = s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.bucket, Key: &key, UploadId: id})
}

// contentType is the Content-Type an object is written with: its media
// type, if known.
func contentType(mediaType string) *string {
	if mediaType == "" {
		return nil
	}
	return &mediaType
}
