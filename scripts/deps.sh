#!/usr/bin/env bash
# Installs the Debian packages kelp and its tests need, if missing. Sourced by run.sh and test.sh.
set -euo pipefail

kelp_need_packages() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc)
    command -v curl >/dev/null || missing+=(curl)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v ping >/dev/null || missing+=(iputils-ping)
    # The node: containerd (kelp supervises its own instance) and runc.
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    # protoc compiles the CRI and containerd API definitions at build time.
    command -v protoc >/dev/null || missing+=(protobuf-compiler)
    # Test images are built from busybox-static (scripts/build-test-images.sh).
    ldd /bin/busybox 2>&1 | grep -q "not a dynamic" || missing+=(busybox-static)
    # Registry pulls are tested against a local registry on loopback.
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    # The join test runs agents in network namespaces (nsenter) and asks
    # for a certificate with a request openssl makes.
    command -v nsenter >/dev/null || missing+=(util-linux)
    command -v openssl >/dev/null || missing+=(openssl)
    # The store conformance and high-availability tests run a real etcd
    # and PostgreSQL on loopback (their own instances, on free ports).
    command -v etcd >/dev/null || missing+=(etcd-server)
    command -v etcdctl >/dev/null || missing+=(etcd-client)
    ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
    # Metrics pages are checked with Prometheus' own text parser.
    /usr/bin/python3 -c "import prometheus_client" 2>/dev/null || missing+=(python3-prometheus-client)
    if ((${#missing[@]})); then
        echo "kelp: installing ${missing[*]}" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! command -v kubectl >/dev/null; then
        # kubectl ships with the machine image (google-cloud-sdk's dispatcher); Debian's
        # kubernetes-client is 1.20, too old for a 1.33 server, so say so instead of installing it.
        echo "kelp: kubectl not found; install kubectl (1.27 or newer) and retry" >&2
        return 1
    fi
}
