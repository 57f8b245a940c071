# The rpixen container: `docker run --rm rpixen live > live.raw` writes a bootable image with no network.
# With a folder at /out: `docker run --rm -v $PWD/out:/out rpixen live rpi4 --release --imager-url URL`
# writes out/live.raw and its release files; `docker run --rm rpixen sbom rpi4 > sbom.spdx.json`.
# The final image is FROM scratch: a static rpixen, the built packages (OCI layouts) and the board
# manifests. Everything it needs is inside, so only the build may use the network.
#
# Two ways to get the artifacts (build arg ARTIFACTS):
#   source  (default) build rpixen and every package inside a Rust image (RUST_IMAGE): needs that image
#           and the Debian archive, nothing else on the host.
#             docker build --network=host -t rpixen .
#           Without access to Docker Hub, make a local stand-in for the Rust image first:
#             scripts/rust-base-image.sh      # Debian (debootstrap) + the pinned toolchain
#             docker build --network=host --build-arg RUST_IMAGE=rpixen-rust:1.95-bookworm -t rpixen .
#   context use what `make pkgs docker-bin` left in dist/ (dist/docker/rpixen, dist/docker/src, dist/pkg):
#           no base image at all, which is how `make docker` builds it.
#             docker build --build-arg ARTIFACTS=context -t rpixen .
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm
ARG ARTIFACTS=source

FROM ${RUST_IMAGE} AS source
# Tools and toolchain targets first, so a source change never re-runs apt or rustup; the crates and
# their compiled forms live in the cache mounts below, so a source change rebuilds only our crates.
# gcc-aarch64-linux-gnu + libc6-dev-arm64-cross: ring (rpixen-update's TLS) compiles C for the
# aarch64-musl update agent (`pkg/agent`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools debian-archive-keyring binutils-aarch64-linux-gnu \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY rust-toolchain.toml ./
RUN rustup show active-toolchain >/dev/null \
 && rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl aarch64-unknown-none
# rustc records dependency source paths (panic locations) in the binaries it builds; with the registry
# where a root user's host build keeps it, the hypervisor and dom0-init built here are byte-identical to
# `make pkgs`' on such a host, and so are the images.
ENV CARGO_HOME=/root/.cargo
COPY . .
# Cache mounts keep the crate downloads, compiled dependencies and fetched .debs between builds, so a
# source change rebuilds only our crates (they are not part of the image: outputs are copied to /out).
# The binary is stripped: its symbol table is 3 MB (of 20) that nothing in the container reads.
RUN --mount=type=cache,id=rpixen-cargo-registry,target=/root/.cargo/registry \
    --mount=type=cache,id=rpixen-target,target=/src/target \
    --mount=type=cache,id=rpixen-xdg-cache,target=/root/.cache \
    cargo build --locked --release -p rpixen --target x86_64-unknown-linux-musl \
 && mkdir -p /out \
 && strip -o /out/rpixen target/x86_64-unknown-linux-musl/release/rpixen \
 && scripts/sbom-sources.sh /out/src \
 && for p in pkg/*/; do /out/rpixen pkg build "$p" -o "/out/pkg/$(basename "$p")" || exit 1; done

FROM scratch AS context
COPY dist/docker/rpixen /out/rpixen
COPY dist/docker/src /out/src
COPY dist/pkg /out/pkg

FROM ${ARTIFACTS} AS artifacts

FROM scratch
COPY --from=artifacts /out/rpixen /usr/bin/rpixen
COPY --from=artifacts /out/pkg /usr/share/rpixen/pkg
COPY images /usr/share/rpixen/images
# What `rpixen sbom` reads: the packages' .deb pins and the crates they build (Cargo.lock plus every
# crate manifest, which separates normal from dev dependencies; scripts/sbom-sources.sh finds them, so
# a new workspace member needs no line here). A few KiB.
COPY --from=artifacts /out/src /usr/share/rpixen/src
COPY pkg /usr/share/rpixen/src/pkg
# rpixen writes temporary files; scratch has no /tmp (WORKDIR creates it).
WORKDIR /tmp
WORKDIR /
ENV RPIXEN_PKG_DIR=/usr/share/rpixen/pkg \
    RPIXEN_IMAGES_DIR=/usr/share/rpixen/images \
    RPIXEN_SOURCE_DIR=/usr/share/rpixen/src \
    RPIXEN_IN_DIR=/in \
    RPIXEN_OUT_DIR=/out \
    XDG_CACHE_HOME=/tmp/cache \
    TMPDIR=/tmp
ENTRYPOINT ["/usr/bin/rpixen"]
CMD ["help"]
