# The rpixen container: `docker run --rm rpixen live > live.raw` writes a bootable image with no network.
# The final image is FROM scratch: a static rpixen, the built packages (OCI layouts) and the board
# manifests. Everything it needs is inside, so only the build may use the network.
#
# Two ways to get the artifacts (build arg ARTIFACTS):
#   source  (default) build rpixen and every package inside a Rust image: needs Docker Hub and the
#           Debian archive, nothing on the host.
#             docker build -t rpixen .
#   context use what `make pkgs docker-bin` left in dist/ (dist/docker/rpixen, dist/pkg): no base image
#           at all, which is how `make docker` and the tests build it.
#             docker build --build-arg ARTIFACTS=context -t rpixen .
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG ARTIFACTS=source

FROM ${RUST_IMAGE} AS source
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools debian-archive-keyring binutils-aarch64-linux-gnu \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN rustup show >/dev/null \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl aarch64-unknown-none \
 && cargo build --locked --release -p rpixen --target x86_64-unknown-linux-musl \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-musl/release/rpixen /out/rpixen \
 && for p in pkg/*/; do /out/rpixen pkg build "$p" -o "/out/pkg/$(basename "$p")" || exit 1; done

FROM scratch AS context
COPY dist/docker/rpixen /out/rpixen
COPY dist/pkg /out/pkg

FROM ${ARTIFACTS} AS artifacts

FROM scratch
COPY --from=artifacts /out/rpixen /usr/bin/rpixen
COPY --from=artifacts /out/pkg /usr/share/rpixen/pkg
COPY images /usr/share/rpixen/images
# rpixen writes temporary files; scratch has no /tmp (WORKDIR creates it).
WORKDIR /tmp
WORKDIR /
ENV RPIXEN_PKG_DIR=/usr/share/rpixen/pkg \
    RPIXEN_IMAGES_DIR=/usr/share/rpixen/images \
    RPIXEN_IN_DIR=/in \
    RPIXEN_OUT_DIR=/out \
    XDG_CACHE_HOME=/tmp/cache \
    TMPDIR=/tmp
ENTRYPOINT ["/usr/bin/rpixen"]
CMD ["help"]
