package upstreams

import (
	"cmp"
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// sharedStoreRegion is the region asked of an S3-compatible store when
// neither SHARED_STORE_REGION nor the AWS settings name one: most such
// stores ignore it.
const sharedStoreRegion = "us-east-1"

// sharedStore builds SHARED_STORE's blob tier, reached with the AWS SDK's
// usual settings (AWS_ENDPOINT_URL_S3, profile, IRSA...); nil when
// SHARED_STORE is unset. Its requests feed up.Metrics.
func (up *Side) sharedStore(ctx context.Context, cfg *settings.Config) (proxy.SharedBlobs, error) {
	if cfg.SharedStore == "" {
		return nil, nil
	}
	bucket, prefix, err := sharedstore.ParseURL(cfg.SharedStore)
	if err != nil {
		return nil, fmt.Errorf("SHARED_STORE: %w", err)
	}
	var awsCfg aws.Config
	if cfg.SharedStoreAWS != nil {
		awsCfg = *cfg.SharedStoreAWS
	} else if awsCfg, err = config.LoadDefaultConfig(ctx, up.awsUserAgent()); err != nil {
		return nil, fmt.Errorf("SHARED_STORE: loading the AWS configuration: %w", err)
	}
	awsCfg.Region = cmp.Or(cfg.SharedStoreRegion, awsCfg.Region, sharedStoreRegion)
	st, err := sharedstore.New(sharedstore.Options{Bucket: bucket, Prefix: prefix, PathStyle: cfg.SharedStorePathStyle, AWS: awsCfg,
		Observe: func(op, outcome string) {
			if up.Metrics != nil { // set once every proxy is built
				up.Metrics.ObserveSharedStore(op, outcome)
			}
		}})
	if err != nil {
		return nil, fmt.Errorf("SHARED_STORE: %w", err)
	}
	return st, nil
}
