#!/bin/bash
# Build the qemu-ga-py source tarball, SRPM and noarch RPM on a Debian machine.
#
#   packaging/rpm/build-rpm.sh [TOPDIR]
#
# TOPDIR (default: $TMPDIR/qemu-ga-py-rpmbuild) receives the usual rpmbuild
# tree; the packages end up in TOPDIR/RPMS/noarch and TOPDIR/SRPMS, and their
# paths are printed on the last two lines of the output.
#
# Fedora's macros are replaced by packaging/rpm/compat.macros (loaded here
# only).  BuildRequires are not checked (--nodeps): on Debian they come from
# apt: rpm, python3-pip, python3-setuptools, python3-wheel, python3-serial,
# python3-systemd.
#
# The tarball holds the files git tracks, with their working-tree contents
# (so uncommitted edits of tracked files are built; untracked files are not,
# unless QGA_RPM_UNTRACKED=1 is set: then untracked, not-ignored files too).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
topdir=${1:-${TMPDIR:-/tmp}/qemu-ga-py-rpmbuild}
name=qemu-ga-py

command -v rpmbuild >/dev/null 2>&1 || { echo "build-rpm.sh: rpmbuild not found (apt-get install rpm)" >&2; exit 1; }
command -v git >/dev/null 2>&1 || { echo "build-rpm.sh: git not found" >&2; exit 1; }

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$repo/qga/__init__.py")
spec_version=$(sed -n 's/^Version:[[:space:]]*//p' "$here/$name.spec")
if [ -z "$version" ] || [ "$version" != "$spec_version" ]; then
    echo "build-rpm.sh: qga.__version__ ($version) != spec Version ($spec_version)" >&2
    exit 1
fi

mkdir -p "$topdir/SOURCES" "$topdir/SPECS" "$topdir/BUILD" "$topdir/RPMS" "$topdir/SRPMS"
rm -f "$topdir/RPMS/noarch/$name-"*.rpm "$topdir/SRPMS/$name-"*.src.rpm

# Reproducible tarball: sorted, fixed owner and mtime (last commit), no gzip timestamp.
: "${SOURCE_DATE_EPOCH:=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH
list=$(mktemp)
trap 'rm -f "$list"' EXIT
# Tracked files that still exist (a deletion not yet committed is skipped).
ls_opts="--cached"
if [ "${QGA_RPM_UNTRACKED:-0}" = 1 ]; then ls_opts="--cached --others --exclude-standard"; fi
# shellcheck disable=SC2086
(cd "$repo" && git ls-files -z $ls_opts | while IFS= read -r -d '' f; do
    if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done) > "$list"
tarball="$topdir/SOURCES/$name-$version.tar.gz"
tar -C "$repo" --null -T "$list" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" --transform "s,^,$name-$version/," -cf - | gzip -n > "$tarball"
cp "$here/$name.spec" "$topdir/SPECS/"

# Debian's rpm prints "RPM should not be used directly install RPM packages,
# use Alien instead!" on every call: filter that line only.
rpmbuild --load="$here/compat.macros" \
    --define "_topdir $topdir" \
    --define "_buildhost reproducible" \
    --nodeps -ba "$topdir/SPECS/$name.spec" 2>&1 | sed '/use Alien instead/d'
rpm_file=$(ls "$topdir/RPMS/noarch/$name-$version-"*.noarch.rpm 2>/dev/null | head -n1)
srpm_file=$(ls "$topdir/SRPMS/$name-$version-"*.src.rpm 2>/dev/null | head -n1)
if [ -z "$rpm_file" ] || [ -z "$srpm_file" ]; then
    echo "build-rpm.sh: rpmbuild failed" >&2
    exit 1
fi
echo "$rpm_file"
echo "$srpm_file"
