#!/usr/bin/env bash
# Usage: scripts/optimized-python.sh [DIR]
#
# Prints the path of a CPython 3.13 interpreter built as the official `python` container images build theirs
# (configure --enable-optimizations --with-lto --enable-shared, Debian's CFLAGS and LDFLAGS, the default PGO
# profile task), building it under DIR (/var/cache/kubemta/python) unless one is there already.
#
# Why: kubemta's image runs on such a build (Dockerfile: python:3.12-slim-bookworm), while this machine's pyenv
# interpreters are built without profile-guided and link-time optimisation and spend noticeably more CPU on the
# same Python code. `make bench` runs the services on this build so that it measures kubemta as it ships
# (README, "Benchmark"). CPython 3.12's source is not on the Debian mirror any more; trixie's python3.13 source
# is, so the build is 3.13 (README says what the version changes).
#
# Needs root for the build dependencies and deb.debian.org for the source; about 15 minutes on 2 cores, once per
# machine.
set -euo pipefail
base=${1:-/var/cache/kubemta/python}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

ready() {  # newest finished build under $base, if any
    local stamp
    for stamp in $(ls -d "$base"/3.13.*/.complete 2>/dev/null | sort -V -r); do
        local python=${stamp%/.complete}/bin/python3.13
        if "$python" -c 'import ssl, sqlite3, ctypes, lzma, bz2, zlib, readline, uuid' 2>/dev/null; then
            echo "$python"
            return 0
        fi
    done
    return 1
}

if ready; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "building CPython under $base needs root (build dependencies)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
needed=(build-essential dpkg-dev libssl-dev libffi-dev zlib1g-dev libbz2-dev liblzma-dev libsqlite3-dev
    libreadline-dev uuid-dev libncurses-dev libgdbm-dev libexpat1-dev xz-utils)
missing=()
for package in "${needed[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
fi

work=$(mktemp -d /tmp/kubemta-python.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The source comes through apt from its own lists (deb-src), so the machine's apt configuration is left alone.
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/source"
printf 'deb-src %s trixie main\ndeb-src %s trixie-updates main\n' "$mirror" "$mirror" >"$work/sources.list"
apt_options=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt_options[@]}" update -qq
tarball=
for version in $(apt-cache "${apt_options[@]}" showsrc python3.13 | sed -n 's/^Version: //p' | sort -V -r -u); do
    if (cd "$work/source" && apt-get "${apt_options[@]}" source --download-only -qq "python3.13=$version") \
        >/dev/null 2>&1; then
        tarball=$(ls "$work"/source/python3.13_*.orig.tar.xz | head -1)
        break
    fi
done
if [[ -z $tarball ]]; then
    echo "no python3.13 source could be fetched from $mirror" >&2
    exit 1
fi
upstream=$(basename "$tarball" .orig.tar.xz)
upstream=${upstream#python3.13_}
prefix=$base/$upstream
tar -xf "$tarball" -C "$work"
cd "$work/Python-$upstream"
echo "building CPython $upstream with PGO and LTO into $prefix (about 15 minutes)" >&2
rm -rf "$prefix"
{
    ./configure --prefix="$prefix" --enable-loadable-sqlite-extensions --enable-optimizations --with-lto \
        --enable-shared --with-ensurepip=no
    # The profile task is CPython's default; a test of it that fails here (3.13.5's test_generators did on this
    # machine) still leaves its profile, and 3.13 would otherwise stop the build there.
    make -j "$(nproc)" "EXTRA_CFLAGS=$(dpkg-buildflags --get CFLAGS)" \
        "LDFLAGS=$(dpkg-buildflags --get LDFLAGS) -Wl,-rpath=$prefix/lib" \
        "PROFILE_TASK=-m test --pgo --timeout=1200 || true"
    make install
} >"$work/build.log" 2>&1 </dev/null || {
    tail -30 "$work/build.log" >&2
    trap - EXIT  # the work directory stays for a look at the whole log
    echo "the CPython build failed; its log: $work/build.log" >&2
    exit 1
}
touch "$prefix/.complete"
ready
