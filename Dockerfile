# Build a static ecr-mirror binary, then ship it alone on a distroless,
# non-root base (which carries the CA certificates ECR's TLS needs).
#
#   docker build --build-arg VERSION=v1.2.0 --build-arg COMMIT=$(git rev-parse HEAD) -t ecr-mirror .
#   docker buildx build --platform linux/amd64,linux/arm64 --build-arg VERSION=... -t REPO/ecr-mirror:v1.2.0 --push .
#
# The builder runs on the build machine's own platform and cross-compiles
# for each target platform, without emulation (BuildKit, Docker's builder
# since 23.0, and buildah/podman set BUILDPLATFORM, TARGETOS and
# TARGETARCH). VERSION and COMMIT become the binary's version (ecr-mirror
# version, ecr_mirror_build_info, the User-Agent sent upstream) and the
# image's labels.
FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS TARGETARCH TARGETVARIANT
ARG VERSION=devel
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN if [ "$TARGETARCH" = arm ]; then export GOARM="${TARGETVARIANT#v}"; fi; \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
      -ldflags="-s -w -X github.com/ecr-mirror/ecr-mirror/internal/buildinfo.version=${VERSION} -X github.com/ecr-mirror/ecr-mirror/internal/buildinfo.commit=${COMMIT}" \
      -o /out/ecr-mirror ./cmd/ecr-mirror \
 && mkdir -p /out/cache

FROM gcr.io/distroless/static-debian12:nonroot
# Build arguments are per stage: declared again for the labels.
ARG VERSION=devel
ARG COMMIT=unknown
# Where the source is published; the module path's home by default.
ARG SOURCE=https://github.com/ecr-mirror/ecr-mirror
LABEL org.opencontainers.image.title="ecr-mirror" \
      org.opencontainers.image.description="A caching pull-through mirror for AWS ECR" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ecr-mirror /usr/local/bin/ecr-mirror
COPY LICENSE /usr/share/doc/ecr-mirror/LICENSE
# The cache directory belongs to the nonroot user (65532) so a fresh
# volume mounted there is writable.
COPY --from=build --chown=65532:65532 /out/cache /var/lib/ecr-mirror
USER 65532:65532
# HOME lets the AWS SDK find a mounted ~/.aws (AWS_PROFILE) for this user.
ENV CACHE_DIR=/var/lib/ecr-mirror \
    LISTEN_ADDR=:5000 \
    HOME=/home/nonroot
VOLUME ["/var/lib/ecr-mirror"]
EXPOSE 5000
# Asks /healthz where the settings in the environment say the mirror
# listens (METRICS_ADDR, else LISTEN_ADDR; https with TLS_CERTIFICATE):
# give the server its settings as variables, not flags, so that the check
# reads the same ones.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
  CMD ["/usr/local/bin/ecr-mirror", "healthcheck", "-timeout", "10s"]
ENTRYPOINT ["/usr/local/bin/ecr-mirror"]
