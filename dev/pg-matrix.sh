#!/usr/bin/env bash
# Runs the tests that exercise what differs between PostgreSQL versions against the dev/pg.sh
# clusters of other versions, one version after the other: the core end-to-end tests (`capture`:
# snapshot and stream handoff, kill -9 under load, schema changes, truncate; `types`: every type and
# TOAST; `bad_input`; `failover_slot`, `origin_none` and `generated_columns`: the settings of 17, 16
# and 18, refused before; `streaming`: streamed transactions rolled back, and kill -9 in the middle of
# one, without its 1M-row test, which the suite runs on 15) and the PostgreSQL crate's `decoder`,
# `replication`, `hosts`, `catalog` and `binary_copy`.
#
#   dev/pg-matrix.sh [VERSION...]   start the clusters (default: 14 16 17 18), build, run
#   dev/pg-matrix.sh --list         build, then print the matrix's test binaries (name, file, folder)
#
# Each test binary runs straight from target/ (in its package's folder, as `cargo test` runs it),
# with COURIER_TEST_PG, COURIER_TEST_PG_BIN and COURIER_PG_VERSION pointing at the version's
# cluster, so that several can run beside a `cargo test` without waiting for cargo's lock.
# COURIER_PG_MATRIX_BINARIES names a file `--list` wrote, to run those binaries without building
# (dev/test.sh builds once for the whole suite). Every binary's output goes to
# COURIER_PG_MATRIX_LOGS (default: a temporary folder), as <version>-<name>.log; a failed one's output
# is printed at the end.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

PG_MATRIX_TESTS=(capture types bad_input failover_slot origin_none generated_columns streaming decoder
    replication hosts catalog binary_copy)
# Arguments for a test binary, where the matrix runs only some of its tests.
declare -A PG_MATRIX_ARGS=([streaming]="--skip million_row")

# list_binaries — builds the workspace's tests as dev/test.sh does and prints the matrix's binaries.
list_binaries() {
    local name exe dir found=0
    while read -r name exe dir; do
        case " ${PG_MATRIX_TESTS[*]} " in
            *" $name "*)
                echo "$name $exe $dir"
                found=$((found + 1))
                ;;
        esac
    done < <(cargo test --workspace --all-features --no-run --message-format=json |
        sed -n 's/.*"manifest_path":"\([^"]*\)\/Cargo.toml","target":{[^}]*"kind":\["test"\][^}]*"name":"\([^"]*\)"[^}]*}.*"executable":"\([^"]*\)".*/\2 \3 \1/p')
    [ "$found" -eq "${#PG_MATRIX_TESTS[@]}" ] || {
        echo "pg-matrix: the build has $found of the tests ${PG_MATRIX_TESTS[*]}" >&2
        exit 1
    }
}

if [ "${1:-}" = "--list" ]; then
    list_binaries
    exit 0
fi

versions=("$@")
[ "${#versions[@]}" -gt 0 ] || versions=(14 16 17 18)
logs="${COURIER_PG_MATRIX_LOGS:-$(mktemp -d)}"
mkdir -p "$logs"
binaries="${COURIER_PG_MATRIX_BINARIES:-}"
if [ -z "$binaries" ]; then
    binaries="$logs/binaries"
    list_binaries >"$binaries"
fi
for version in "${versions[@]}"; do
    COURIER_PG_VERSION="$version" bash dev/pg.sh start
done

start=$SECONDS
failed=()
for version in "${versions[@]}"; do
    url="$(COURIER_PG_VERSION="$version" bash dev/pg.sh url)"
    bin="$(COURIER_PG_VERSION="$version" bash dev/pg.sh bin)"
    version_start=$SECONDS
    while read -r name exe dir; do
        log="$logs/$version-$name.log"
        read -ra args <<<"${PG_MATRIX_ARGS[$name]:-}"
        test_start=$SECONDS
        if (cd "$dir" && env -u COURIER_TEST_PG_CA COURIER_PG_VERSION="$version" \
            COURIER_TEST_PG="$url" COURIER_TEST_PG_BIN="$bin" "$exe" "${args[@]}") >"$log" 2>&1; then
            result="$(grep -h '^test result:' "$log" | tail -n 1)"
        else
            result="FAILED ($(grep -h '^test result:' "$log" | tail -n 1 || echo "no result"))"
            failed+=("$version $name")
        fi
        printf 'PostgreSQL %s %-17s %s (%d s)\n' "$version" "$name" "$result" "$((SECONDS - test_start))"
    done <"$binaries"
    printf 'PostgreSQL %s: %d s\n' "$version" "$((SECONDS - version_start))"
done
for f in "${failed[@]}"; do
    read -r version name <<<"$f"
    printf '\n==> PostgreSQL %s: %s failed; its output:\n' "$version" "$name"
    cat "$logs/$version-$name.log"
done
printf 'the core tests on PostgreSQL %s: %d s, %d failed\n' "${versions[*]}" "$((SECONDS - start))" "${#failed[@]}"
[ "${#failed[@]}" -eq 0 ]
