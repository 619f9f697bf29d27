# For users with Docker. Not exercised by this repository's tests, which build
# the same image without Docker (hack/image.sh: static binary + OCI layout).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin lifecycle-operator

FROM scratch
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/lifecycle-operator /lifecycle-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/lifecycle-operator"]
