# Build a static ecr-mirror binary, then ship it alone on a distroless,
# non-root base (which carries the CA certificates ECR's TLS needs).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ecr-mirror ./cmd/ecr-mirror \
 && mkdir -p /out/cache

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ecr-mirror /usr/local/bin/ecr-mirror
# The cache directory belongs to the nonroot user (65532) so a fresh
# volume mounted there is writable.
COPY --from=build --chown=65532:65532 /out/cache /var/lib/ecr-mirror
USER 65532:65532
ENV CACHE_DIR=/var/lib/ecr-mirror \
    LISTEN_ADDR=:5000
VOLUME ["/var/lib/ecr-mirror"]
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/ecr-mirror"]
