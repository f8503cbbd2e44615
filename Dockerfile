# syntax=docker/dockerfile:1
#
# pcce-proxy container image: `docker build -t pcce-proxy .`
#
# The build stage compiles exactly what CI checks (`cargo build --release --locked`, so
# Cargo.lock must be current); the final stage holds the binary alone on a distroless
# base (glibc, CA certificates, no shell), running as the unprivileged user 65532.
#
# Listening in a pod: containers of a pod share one network namespace, so the proxy's
# default listen address, 127.0.0.1:8083, is exactly what the application container next
# to it reaches, and nothing outside the pod does. The admin listener must be reachable
# by the kubelet's probes at the pod's IP, so the image moves it to 0.0.0.0:9083; only
# /healthz, /readyz and /metrics answer there for other hosts (/status and
# /quitquitquit answer loopback peers only). To change it, set PCCE_PROXY_ADMIN__ADDRESS:
# like every variable, it overrides the configuration file.
#
# Configuration: mount a TOML file at /etc/pcce-proxy/config.toml (found without
# --config, since XDG_CONFIG_HOME is /etc) and/or set PCCE_PROXY_<SECTION>__<KEY>
# variables. The health check runs `pcce-proxy health`, which reads the same file and
# variables to find the admin listener.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/pcce-proxy /pcce-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /pcce-proxy /pcce-proxy
ENV XDG_CONFIG_HOME=/etc \
    PCCE_PROXY_ADMIN__ADDRESS=0.0.0.0:9083 \
    PCCE_PROXY_LOG__FORMAT=json
USER 65532:65532
EXPOSE 9083
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/pcce-proxy", "health"]
ENTRYPOINT ["/pcce-proxy"]
CMD ["run"]
