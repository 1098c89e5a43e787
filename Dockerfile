# FreeLLM gateway image: an example (see docs/deploy.md; not built by the test suite).
#
#   docker build -t freellm .
#   docker run -p 3000:3000 -e GROQ_API_KEY=gsk_... -e FREELLM_ADMIN_KEY=... freellm
#
# Stage 1 builds the provider components (wasm32-wasip2) and the gateway;
# stage 2 is a slim runtime with the binary, plugins.toml and the components.

FROM rust:1-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
# The components, then the gateway (`release`: thin LTO; `dist` is the slower fat-LTO build bench/ uses).
RUN scripts/build-components.sh \
 && cargo build --release -p freellm \
 && mkdir -p /out/target/wasm32-wasip2/wasm \
 && cp target/release/freellm /out/freellm \
 && cp target/wasm32-wasip2/wasm/freellm_provider_*.wasm /out/target/wasm32-wasip2/wasm/

FROM debian:bookworm-slim
# CA roots for HTTPS upstreams; nothing else is needed at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/freellm --create-home freellm
COPY --from=build /out/freellm /usr/local/bin/freellm
# plugins.toml names its components relative to itself: target/wasm32-wasip2/wasm/<crate>.wasm.
COPY --from=build /out/target /opt/freellm/target
COPY plugins.toml /opt/freellm/plugins.toml
WORKDIR /opt/freellm
ENV HOST=0.0.0.0 \
    PORT=3000 \
    FREELLM_DATA_DIR=/var/lib/freellm
USER freellm
EXPOSE 3000
HEALTHCHECK --interval=10s --timeout=2s CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/3000 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q 200 <&3"]
ENTRYPOINT ["/usr/local/bin/freellm"]
CMD ["serve", "--config", "/opt/freellm/plugins.toml"]
