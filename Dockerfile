# One image for both ironlb binaries, for users with Docker
# (`docker build .`). `make image` builds the same image without a
# container engine or a base image to pull (hack/tools/image); its
# TestDockerfileAgrees and TestBuiltImage hold the two together: same user,
# entrypoint, binary paths, build flags and distroless/static's files.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static, reproducible, version stamped; grpcnotrace as in the Makefile.
RUN CGO_ENABLED=0 go build -tags grpcnotrace -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ ./cmd/controller ./cmd/speaker

# distroless/static: no shell, no package manager, non-root by default. The
# speaker gets its network capabilities from the chart, not from the image.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/controller"]
