# lumbo_bids BIDS App: docker build -t lumbo_bids .   (GPU: --build-arg FLAVOUR=gpu)
FROM debian:bookworm-slim

ARG FLAVOUR=cpu
ARG VERSION=0.1.0

LABEL org.opencontainers.image.title="lumbo_bids" \
      org.opencontainers.image.description="BIDS App: spinal cord segmentation built for the lumbosacral cord and conus medullaris" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/lumbo-bids/lumbo_bids" \
      org.opencontainers.image.licenses="MIT"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY pyproject.toml README.md LICENSE run.py /src/
COPY lumbo_bids /src/lumbo_bids
COPY containers/install.sh /src/containers/install.sh
RUN bash /src/containers/install.sh /src "${FLAVOUR}" && rm -rf /src /root/.cache

# Nothing is written outside the mounted output and work folders: the work dir defaults to
# /tmp/work (mount a volume there, or pass -w), every tool's cache lives inside it.
ENV PATH=/opt/lumbo_bids/bin:$PATH \
    PYTHONNOUSERSITE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    LUMBO_BIDS_WORK_DIR=/tmp/work \
    LUMBO_BIDS_IN_DOCKER=1 \
    HOME=/tmp

RUN useradd --system --uid 1000 --no-create-home --home-dir /tmp lumbo
USER 1000:1000
WORKDIR /tmp
ENTRYPOINT ["/opt/lumbo_bids/bin/python", "/opt/lumbo_bids/run.py"]
CMD ["--help"]
