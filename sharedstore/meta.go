package sharedstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"
)

// Operations on metadata objects (links, tag and referrers records)
// reported to Options.Observe, apart from the blobs' so that the blob
// counts stay one per digest.
const (
	OpMetaGet = "meta_get"
	OpMetaPut = "meta_put"
)

// ErrMalformed says an object read back from the bucket is not a record
// this mirror writes: it is ignored, never served.
var ErrMalformed = errors.New("malformed record in the shared store")

// Bounds on what is read from a metadata object: records are small, and
// the bucket's content is untrusted input.
const (
	maxTagRecordBody       = 4 << 10
	maxReferrersRecordBody = 128 << 10
	// MaxReferrersBody is the largest referrers answer a record holds
	// (the local store's own bound, cache.MaxReferrersBody).
	MaxReferrersBody = 48 << 10
	maxRecordField   = 2 << 10
	maxMediaTypeLen  = 255
	maxRegistryLen   = 261
	maxRepoNameLen   = 255
)

// The distribution spec's grammar of repository names and tags (no "..",
// no leading "/", no empty component), and a registry host with an
// optional port: what a key may be built from.
var (
	repoNameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRE      = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	registryRE = regexp.MustCompile(`^[A-Za-z0-9\[][A-Za-z0-9.:\[\]-]*$`)
)

// Repo names a repository of an upstream registry.
type Repo struct {
	// Registry is the upstream registry's host (and port), never empty.
	Registry string
	// Name is the repository's name there.
	Name string
}

func (r Repo) validate() error {
	if len(r.Registry) > maxRegistryLen || !registryRE.MatchString(r.Registry) || strings.Contains(r.Registry, "..") {
		return fmt.Errorf("shared store: invalid registry host %q", r.Registry)
	}
	if len(r.Name) > maxRepoNameLen || !repoNameRE.MatchString(r.Name) {
		return fmt.Errorf("shared store: invalid repository name %q", r.Name)
	}
	return nil
}

// TagRecord is the answer ECR gave for a tag asked with one Accept: the
// manifest it named and when.
type TagRecord struct {
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType,omitempty"`
	Size      int64         `json:"size"`
	// Checked is when ECR gave this answer.
	Checked time.Time `json:"checked"`
}

// ReferrersKey names one recorded referrers answer: a subject's
// referrers in a repository, with the client's filter and page.
type ReferrersKey struct {
	Repo         Repo
	Subject      digest.Digest
	ArtifactType string // "" for none
	Page         string // the rest of the query, normalised; "" for the first page
}

// ReferrersRecord is the answer ECR gave for a ReferrersKey.
type ReferrersRecord struct {
	// Body is the OCI image index served, at most MaxReferrersBody.
	Body           []byte    `json:"body"`
	FiltersApplied string    `json:"filtersApplied,omitempty"`
	NextQuery      string    `json:"nextQuery,omitempty"`
	Fallback       bool      `json:"fallback,omitempty"`
	Checked        time.Time `json:"checked"`
}

// metaKey prefixes a metadata key with the store's prefix.
func (s *Store) metaKey(k string) string {
	if s.prefix != "" {
		return s.prefix + "/" + k
	}
	return k
}

// LinkKey is the object key of the link of dgst to repo.
func (s *Store) LinkKey(repo Repo, dgst digest.Digest) (string, error) {
	if err := checkDigest(dgst); err != nil {
		return "", err
	}
	if err := repo.validate(); err != nil {
		return "", err
	}
	return s.metaKey("links/" + repo.Registry + "/" + repo.Name + "/sha256/" + dgst.Encoded()), nil
}

// TagKey is the object key of the record of repo:tag asked with an
// Accept that normalises to accept (the same for every replica:
// cache.NormalizeAccept).
func (s *Store) TagKey(repo Repo, tag, accept string) (string, error) {
	if err := repo.validate(); err != nil {
		return "", err
	}
	if !tagRE.MatchString(tag) {
		return "", fmt.Errorf("shared store: invalid tag %q", tag)
	}
	return s.metaKey("tags/" + repo.Registry + "/" + repo.Name + "/" + tag + "/" + hashHex(accept)), nil
}

// ReferrersKey is the object key of k's record.
func (s *Store) ReferrersKey(k ReferrersKey) (string, error) {
	if err := checkDigest(k.Subject); err != nil {
		return "", err
	}
	if err := k.Repo.validate(); err != nil {
		return "", err
	}
	if len(k.ArtifactType) > maxRecordField || len(k.Page) > maxRecordField {
		return "", fmt.Errorf("shared store: referrers query of %d+%d bytes is over %d", len(k.ArtifactType), len(k.Page), maxRecordField)
	}
	// The length first, so that no two filter and page pairs share it.
	query := hashHex(strconv.Itoa(len(k.ArtifactType)) + ":" + k.ArtifactType + k.Page)
	return s.metaKey("referrers/" + k.Repo.Registry + "/" + k.Repo.Name + "/sha256/" + k.Subject.Encoded() + "/" + query), nil
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func checkDigest(dgst digest.Digest) error {
	if err := dgst.Validate(); err != nil || dgst.Algorithm() != digest.SHA256 {
		return fmt.Errorf("shared store: invalid digest %q", dgst)
	}
	return nil
}

// PutLink records that ECR holds dgst in repo: an empty object, written
// once (a conditional create; one there already is success).
func (s *Store) PutLink(ctx context.Context, repo Repo, dgst digest.Digest) error {
	key, err := s.LinkKey(repo, dgst)
	if err != nil {
		return err
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, IfNoneMatch: aws.String("*"),
		Body: bytes.NewReader(nil), ContentLength: aws.Int64(0)})
	if statusOf(err) == 412 {
		s.observe(OpMetaPut, OutcomeExists)
		return nil
	}
	return s.putDone(key, err)
}

// Linked reports whether the bucket holds the link of dgst to repo.
func (s *Store) Linked(ctx context.Context, repo Repo, dgst digest.Digest) (bool, error) {
	key, err := s.LinkKey(repo, dgst)
	if err != nil {
		return false, err
	}
	_, err = s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.bucket, Key: &key})
	if err == nil {
		s.observe(OpMetaGet, OutcomeOK)
		return true, nil
	}
	if err = s.failed(OpMetaGet, key, err); errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return false, err
}

// PutTag writes rec as the record of repo:tag asked with accept
// (TagKey), replacing the one there unless that one is newer.
func (s *Store) PutTag(ctx context.Context, repo Repo, tag, accept string, rec TagRecord) error {
	key, err := s.TagKey(repo, tag, accept)
	if err != nil {
		return err
	}
	if err := rec.validate(); err != nil {
		return fmt.Errorf("shared store put s3://%s/%s: %w", s.bucket, key, err)
	}
	if cur, err := s.GetTag(ctx, repo, tag, accept); err == nil && cur.Checked.After(rec.Checked) {
		return s.keptNewer(key)
	}
	return s.putJSON(ctx, key, rec)
}

// keptNewer leaves key's record, newer than the one to write (another
// replica's later answer, written first): an answer written late never
// replaces it. Not atomic: two writes at the same moment may still land
// in either order.
func (s *Store) keptNewer(key string) error {
	s.observe(OpMetaPut, OutcomeExists)
	return nil
}

// GetTag reads the record of repo:tag asked with accept: ErrNotFound
// when there is none, ErrMalformed when the object is not one.
func (s *Store) GetTag(ctx context.Context, repo Repo, tag, accept string) (TagRecord, error) {
	var rec TagRecord
	key, err := s.TagKey(repo, tag, accept)
	if err != nil {
		return rec, err
	}
	if err := s.getJSON(ctx, key, maxTagRecordBody, &rec); err != nil {
		return TagRecord{}, err
	}
	if err := rec.validate(); err != nil {
		return TagRecord{}, fmt.Errorf("s3://%s/%s: %w: %w", s.bucket, key, ErrMalformed, err)
	}
	return rec, nil
}

func (r TagRecord) validate() error {
	switch {
	case checkDigest(r.Digest) != nil:
		return fmt.Errorf("tag record names digest %q", r.Digest)
	case r.Size < 0 || len(r.MediaType) > maxMediaTypeLen || strings.ContainsAny(r.MediaType, " \t\r\n,;"):
		return fmt.Errorf("tag record has size %d, media type %q", r.Size, r.MediaType)
	case r.Checked.IsZero():
		return errors.New("tag record has no time")
	}
	return nil
}

// PutReferrers writes rec as k's record, replacing the one there unless
// that one is newer.
func (s *Store) PutReferrers(ctx context.Context, k ReferrersKey, rec ReferrersRecord) error {
	key, err := s.ReferrersKey(k)
	if err != nil {
		return err
	}
	if err := rec.validate(); err != nil {
		return fmt.Errorf("shared store put s3://%s/%s: %w", s.bucket, key, err)
	}
	if cur, err := s.GetReferrers(ctx, k); err == nil && cur.Checked.After(rec.Checked) {
		return s.keptNewer(key)
	}
	return s.putJSON(ctx, key, rec)
}

// GetReferrers reads k's record: ErrNotFound when there is none,
// ErrMalformed when the object is not one.
func (s *Store) GetReferrers(ctx context.Context, k ReferrersKey) (ReferrersRecord, error) {
	var rec ReferrersRecord
	key, err := s.ReferrersKey(k)
	if err != nil {
		return rec, err
	}
	if err := s.getJSON(ctx, key, maxReferrersRecordBody, &rec); err != nil {
		return ReferrersRecord{}, err
	}
	if err := rec.validate(); err != nil {
		return ReferrersRecord{}, fmt.Errorf("s3://%s/%s: %w: %w", s.bucket, key, ErrMalformed, err)
	}
	return rec, nil
}

func (r ReferrersRecord) validate() error {
	switch {
	case len(r.Body) == 0 || len(r.Body) > MaxReferrersBody || !json.Valid(r.Body):
		return fmt.Errorf("referrers record body of %d bytes is not a JSON document of at most %d", len(r.Body), MaxReferrersBody)
	case len(r.FiltersApplied) > maxRecordField || len(r.NextQuery) > maxRecordField:
		return fmt.Errorf("referrers record fields of %d and %d bytes (at most %d)", len(r.FiltersApplied), len(r.NextQuery), maxRecordField)
	case r.Checked.IsZero():
		return errors.New("referrers record has no time")
	}
	return nil
}

// putJSON writes v as key's object.
func (s *Store) putJSON(ctx context.Context, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("shared store put s3://%s/%s: %w", s.bucket, key, err)
	}
	_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.bucket, Key: &key, ContentType: aws.String("application/json"),
		Body: bytes.NewReader(b), ContentLength: aws.Int64(int64(len(b)))})
	return s.putDone(key, err)
}

func (s *Store) putDone(key string, err error) error {
	if err != nil {
		s.observe(OpMetaPut, OutcomeError)
		return fmt.Errorf("shared store put s3://%s/%s: %w", s.bucket, key, err)
	}
	s.observe(OpMetaPut, OutcomeOK)
	return nil
}

// getJSON reads key's object, at most limit bytes, into v: one JSON
// object with only v's fields, nothing after it.
func (s *Store) getJSON(ctx context.Context, key string, limit int64, v any) error {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.bucket, Key: &key})
	if err != nil {
		return s.failed(OpMetaGet, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		s.observe(OpMetaGet, OutcomeError)
		return fmt.Errorf("shared store %s s3://%s/%s: %w", OpMetaGet, s.bucket, key, err)
	}
	s.observe(OpMetaGet, OutcomeOK)
	if int64(len(b)) > limit {
		return fmt.Errorf("s3://%s/%s: %w: over %d bytes", s.bucket, key, ErrMalformed, limit)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("s3://%s/%s: %w: %w", s.bucket, key, ErrMalformed, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("s3://%s/%s: %w: data after the record", s.bucket, key, ErrMalformed)
	}
	return nil
}
