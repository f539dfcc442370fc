# shellcheck shell=bash
# Shared helpers for the scripts in dev/ that install and run local services.
#
# Source it from a script that has set DEV_NAME (a short tag for messages):
#     . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# It sets COURIER_REPO to the checkout that holds the sourcing script, so the
# scripts work from any clone, in any folder, and from any working directory.

# shellcheck disable=SC2034 # used by the scripts that source this file
COURIER_REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"

# say MESSAGE... — a progress line on stderr (stdout stays for values such as URLs).
say() {
    printf '[%s] %s\n' "${DEV_NAME:-dev}" "$*" >&2
}

# die MESSAGE... — explain what went wrong and how to fix it, then exit 1.
die() {
    printf '[%s] error: %s\n' "${DEV_NAME:-dev}" "$*" >&2
    exit 1
}

# mvn_quiet LOG ARG... — `mvn -B -q ARG...` with its output in LOG, tried up to
# three times: first fetches running side by side into one local repository
# (~/.m2) can trip over each other's partial downloads ("... .pom.part (No such
# file or directory)"), and a second attempt finds the file the other one wrote.
mvn_quiet() {
    local log=$1 attempt
    shift
    for attempt in 1 2 3; do
        if mvn -B -q "$@" </dev/null >"$log" 2>&1; then
            return 0
        fi
        [ "$attempt" -lt 3 ] && sleep $((attempt * 5))
    done
    return 1
}

# apt_installed PACKAGE — true when the Debian package is installed.
apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# ensure_apt_packages PACKAGE... — install whichever packages are missing.
# Silent when all are installed. Runs `apt-get update` only when the package
# lists do not know a package yet or an install fails. Several dev scripts may
# run at once, so installs are serialised by a lock.
ensure_apt_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        apt_installed "$pkg" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0

    [ "$(id -u)" -eq 0 ] || die "missing packages ${missing[*]}; run as root or install them with apt-get"
    local log
    log="$(mktemp)"
    (
        flock 8
        export DEBIAN_FRONTEND=noninteractive
        local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
        local needs_update=0
        for pkg in "${missing[@]}"; do
            apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [^(]' || needs_update=1
        done
        say "installing ${missing[*]} (Debian packages)"
        if [ "$needs_update" -eq 1 ]; then
            apt-get -q -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1
        fi
        if ! "${apt[@]}" install "${missing[@]}" >>"$log" 2>&1; then
            apt-get -q -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1
            "${apt[@]}" install "${missing[@]}" >>"$log" 2>&1
        fi
    ) 8>/var/lock/courier-dev-apt.lock || {
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "could not install ${missing[*]} with apt-get (output above)"
    }
    rm -f "$log"
}

# make_reachable_by USER PATH — let USER traverse every folder above PATH.
# A clone under a private folder (such as /root) is otherwise out of reach of
# a service that runs as its own system user. Adds only the search bit (o+x),
# never read access, to the folders that lack it.
make_reachable_by() {
    local user="$1" path="$2" dir
    runuser -u "$user" -- test -x "$path" 2>/dev/null && return 0
    dir="$path"
    while [ "$dir" != "/" ]; do
        dir="$(dirname "$dir")"
        if [ -z "$(find "$dir" -maxdepth 0 -perm -o=x)" ]; then
            chmod o+x "$dir"
            say "made $dir traversable (o+x) so that $user can reach $path"
        fi
    done
    runuser -u "$user" -- test -x "$path" || die "$user cannot reach $path; check its permissions"
}

# port_open HOST PORT — true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# sql_quote TEXT — TEXT as a single-quoted literal for SQL and PostgreSQL
# configuration files.
sql_quote() {
    printf "'%s'" "${1//\'/\'\'}"
}
