#!/bin/sh
# Check the systemd units in deploy/systemd with `systemd-analyze verify`.
#
#   scripts/check_units.sh            # the units as shipped, against this checkout's genhook
#   GENHOOK_BIN=/path/to/genhook scripts/check_units.sh
#
# `systemd-analyze verify` refuses a unit whose ExecStart binary does not exist, and the units
# name the installed path (/opt/genhook/bin/genhook). So each unit is copied to a temporary
# folder with that path replaced by a real genhook (GENHOOK_BIN, else .venv/bin/genhook of this
# checkout, else the genhook on PATH); the template genhook-worker@.service is checked as an
# instance (genhook-worker@9101.service, %i = its health port). Any line systemd-analyze prints
# (an unknown key, a bad value, a missing binary) fails the check.
#
# Exit status: 0 all units verified, 1 a unit failed, 77 no systemd-analyze here (skipped).
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
units="$root/deploy/systemd"
installed=/opt/genhook/bin/genhook

analyze=${SYSTEMD_ANALYZE:-$(command -v systemd-analyze || true)}
if [ -z "$analyze" ] || [ ! -x "$analyze" ]; then
    echo "check_units: systemd-analyze not found; units not verified" >&2
    exit 77
fi

bin=${GENHOOK_BIN:-}
if [ -z "$bin" ] && [ -x "$root/.venv/bin/genhook" ]; then
    bin="$root/.venv/bin/genhook"
fi
if [ -z "$bin" ]; then
    bin=$(command -v genhook || true)
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "check_units: no genhook executable (set GENHOOK_BIN)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

checked=""
for unit in "$units"/*.service; do
    name=$(basename "$unit")
    case "$name" in
        *@.service) target="${name%@.service}@9101.service" ;;
        *) target="$name" ;;
    esac
    sed "s#$installed#$bin#g" "$unit" > "$work/$target"
    checked="$checked $target"
done
if [ -z "$checked" ]; then
    echo "check_units: no units in $units" >&2
    exit 1
fi

cd "$work"
status=0
# shellcheck disable=SC2086 # one argument per unit
output=$("$analyze" verify $checked 2>&1) || status=$?
if [ -n "$output" ]; then
    printf '%s\n' "$output" >&2
    [ "$status" -ne 0 ] || status=1
fi
if [ "$status" -ne 0 ]; then
    echo "check_units: FAILED:$checked" >&2
    exit 1
fi
echo "check_units: verified$checked"
