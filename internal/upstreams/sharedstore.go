package upstreams

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// sharedStoreRegion is the region asked of an S3-compatible store when
// neither SHARED_STORE_REGION nor the AWS settings name one: most such
// stores ignore it.
const sharedStoreRegion = "us-east-1"

// pinSyncTimeout bounds the writing of the local pins to the bucket at
// start.
const pinSyncTimeout = 5 * time.Minute

// sharedStore builds SHARED_STORE's blob tier, reached with the AWS SDK's
// usual settings (AWS_ENDPOINT_URL_S3, profile, IRSA...); nil when
// SHARED_STORE is unset. Its requests feed up.Metrics.
func (up *Side) sharedStore(ctx context.Context, cfg *settings.Config) (*sharedstore.Store, error) {
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

// sharedBound is what keeps SHARED_STORE's bucket under
// SHARED_STORE_MAX_SIZE: the use records this replica writes for the
// manifests it serves, and the sweeper it runs when elected.
type sharedBound struct {
	usage   *sharedstore.Usage
	sweeper *sharedstore.Sweeper
	ctx     context.Context // done when close is called
	stop    context.CancelFunc
	sweeps  sync.WaitGroup
}

// newSharedBound builds the use records and the sweeper of
// SHARED_STORE_MAX_SIZE; nil without it. Use records are written as
// proxies report uses; sweeps start with startSharedUpkeep.
func newSharedBound(st *sharedstore.Store, cfg *settings.Config, log *slog.Logger) (*sharedBound, error) {
	if st == nil || cfg.SharedStoreMaxSize <= 0 {
		return nil, nil
	}
	sw, err := st.NewSweeper(sharedstore.SweepOptions{MaxSize: cfg.SharedStoreMaxSize, Clock: cfg.SharedStoreClock, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("SHARED_STORE_MAX_SIZE: %w", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	return &sharedBound{sweeper: sw, stop: stop, ctx: ctx,
		usage: st.NewUsage(ctx, sharedstore.UsageOptions{Clock: cfg.SharedStoreClock, Logger: log})}, nil
}

// startSharedUpkeep starts, once up.Metrics counts the shared tier's
// requests, the sweeps every SHARED_STORE_SWEEP_INTERVAL and the writing
// of store's pins to the bucket.
func (up *Side) startSharedUpkeep(cfg *settings.Config, store *cache.Store, log *slog.Logger) {
	if up.sharedBlobs == nil {
		return
	}
	syncPins(up.sharedBlobs, store, log)
	b := up.bound
	if b == nil {
		return
	}
	up.Metrics.WatchSharedSweeps(b.sweeper.Stats)
	b.sweeps.Go(func() { b.sweeper.Run(b.ctx, cfg.SharedStoreSweepInterval, up.sweeps) })
}

// sweepKey names the key whose owner among the peers sweeps the shared
// tier.
const sweepKey = "ecr-mirror: the replica that sweeps the shared store"

// sweeps says whether this replica sweeps the shared tier now: with
// peers, when it owns sweepKey by their rendezvous hashing, so that one
// replica sweeps while the members agree; without peers, or while this
// replica is not among the members it resolved (it cannot tell who
// sweeps), it does. Sweeps by several replicas are safe: deletes are
// idempotent and a race costs a download.
func (up *Side) sweeps() bool {
	if up.Members == nil {
		return true
	}
	if _, self, _ := up.Members.Status(); !self {
		return true
	}
	_, owns := up.Members.Owner(digest.FromString(sweepKey))
	return owns
}

// recorder is the proxies' UsedManifest; nil without a bound.
func (b *sharedBound) recorder() func(digest.Digest) {
	if b == nil {
		return nil
	}
	return b.usage.Record
}

// close stops the sweeps and the use records, and waits for them.
func (b *sharedBound) close() {
	if b != nil {
		b.stop()
		b.sweeps.Wait()
		b.usage.Wait()
	}
}

// sharedTier is the proxies' SharedStore; nil without SHARED_STORE.
func (up *Side) sharedTier() proxy.SharedBlobs {
	if up.sharedBlobs == nil {
		return nil
	}
	return up.sharedBlobs
}

// SharedPins are the shared tier's pins, for "cache pin"; nil without
// SHARED_STORE.
func (up *Side) SharedPins() admin.SharedPins {
	if up.sharedBlobs == nil {
		return nil
	}
	return up.sharedBlobs
}

// syncPins writes every pin of store to the bucket, in the background: a
// pin made while the mirror was stopped, or before SHARED_STORE was set,
// holds in the bucket too.
func syncPins(st *sharedstore.Store, store *cache.Store, log *slog.Logger) {
	pins, err := store.Pins()
	if err != nil || len(pins) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), pinSyncTimeout)
		defer cancel()
		for _, p := range pins {
			if err := st.PutPin(ctx, p.Digest, p.Names); err != nil {
				log.Warn("writing a pin to the shared store failed; pin it again", "digest", p.Digest, "error", err)
			}
		}
	}()
}
