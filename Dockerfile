# One image for both ironlb binaries. Build: `make image` (needs a Docker
# engine; none runs on the project's CI machines, so CI builds the same
# binaries with `make build` instead).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static, reproducible, version stamped; grpcnotrace as in the Makefile.
RUN CGO_ENABLED=0 go build -tags grpcnotrace -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ ./cmd/...

# distroless/static: no shell, no package manager, non-root by default. The
# speaker gets its network capabilities from the chart, not from the image.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/controller"]
