# Prometheus for the compose test: Debian's package on the locally made base image,
# standing in for the prom/prometheus image of docker/compose.yaml (no registry is
# reachable). wget for the compose file's healthcheck, as in the image it replaces.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o prometheus -g prometheus /prometheus
USER prometheus
ENTRYPOINT ["/usr/bin/prometheus"]
