#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine, as root (CI runs exactly this).
# It installs what it needs: Debian packages (the reference qemu-ga, qemu-system-x86 for the
# VM tier, rpm tooling, filesystem tools) and a virtualenv with the Python test dependencies.
#
#   QGA_FULL=1      long fuzz/soak budgets instead of the quick CI budgets
#   QGA_VENV=DIR    where the virtualenv lives (default /var/cache/qemu-ga-py/venv)
#   QGA_VM_CACHE=DIR  the VM tier's artefact cache (kernel, initramfs, disk and root images;
#                     default /var/cache/qemu-ga-py-vm): an empty directory runs from a cold cache
#   CI=true         a test whose prerequisite is missing fails instead of skipping (.ci/run sets it)
#   extra arguments are passed to pytest (e.g. -m "not vm", -x, -k NAME)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-guest-agent            # the reference agent (qemu-ga 7.2) for side-by-side tests
  qemu-system-x86 qemu-utils  # the VM tier
  libvirt-daemon libvirt-daemon-system libvirt-clients  # the VM tier driven by libvirt (test_vm_libvirt.py)
  busybox-static cpio kmod zstd
  xfsprogs e2fsprogs util-linux fuse3
  rpm rpmlint cpio groff-base # packaging tests (the RPM build runs Debian's /usr/bin/python3)
  python3-pip python3-setuptools python3-wheel python3-systemd python3-serial
  systemd udev libsystemd-dev pkg-config  # systemd-analyze, the systemd guest; building systemd-python
  socat
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

VENV=${QGA_VENV:-/var/cache/qemu-ga-py/venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test,systemd,fast]"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/requirements.txt
# Coverage-guided fuzzing; its test names the reason if the wheel cannot be had.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check atheris \
  || echo "== atheris could not be installed: tests/hardening/test_atheris.py will say so"

echo "== Python 3.9 compatibility (RHEL 9's python3)"
PY39=$(ls -d /root/.pyenv/versions/3.9*/bin/python3.9 2>/dev/null | head -n 1 || true)
"$VENV/bin/vermin" --no-tips -q -t=3.9- --violations qga
if [ -n "$PY39" ]; then
  "$PY39" -m pip install -q --disable-pip-version-check pytest hypothesis pyserial pybase64 >/dev/null 2>&1 || true
  echo "== unit tests under $("$PY39" --version)"
  "$PY39" -m pytest -q -p no:cacheprovider tests/unit
else
  echo "== no python3.9 interpreter here: vermin's check above stands in for running under 3.9"
fi

# The reference tier again with the standard library's base64 instead of pybase64:
# replies must be byte-identical to qemu-ga's on both codec paths.
echo "== reference tier with the stdlib base64 fallback (QGA_NO_ACCEL=1)"
QGA_NO_ACCEL=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/reference

echo "== full suite under $("$VENV/bin/python" --version)"
set +e
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -ra tests "$@"
status=$?
set -e
if [ $status -eq 5 ]; then
  echo "pytest collected no tests" >&2
  exit 1
fi
exit $status
