package auth

import (
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/middleware"
)

// ClientOption changes the AWS SDK configuration NewECRClient and
// NewECRPublicClient load.
type ClientOption = func(*config.LoadOptions) error

// WithUserAgent appends product/version (e.g. ecr-mirror/v1.2.0) to the
// SDK's User-Agent on every AWS API call, GetAuthorizationToken
// included, so the caller shows in CloudTrail's userAgent. The SDK
// replaces characters a product token may not hold.
func WithUserAgent(product, version string) ClientOption {
	return config.WithAPIOptions([]func(*middleware.Stack) error{awsmiddleware.AddUserAgentKeyValue(product, version)})
}
