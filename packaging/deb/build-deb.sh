#!/usr/bin/env bash
# Builds the edgefn-agent Debian package around an already built agent binary:
#
#   packaging/deb/build-deb.sh --arch arm64|armhf|amd64 --binary PATH [--out DIR] [--version V]
#
# A small script around dpkg-deb (present on every Debian machine) instead of cargo-deb: nothing
# to `cargo install` in CI, and the maintainer scripts and unit are ours to write either way.
# scripts/build-pi.sh calls it for release builds; tests/pi/deb.sh checks what it produces.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

arch='' binary='' out="$top/target/deb" version=''
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) echo "usage: $0 --arch arm64|armhf|amd64 --binary PATH [--out DIR] [--version V]" >&2; exit 2 ;;
  esac
done
case "$arch" in
  arm64) machine=AArch64 ;;
  armhf) machine=ARM ;;
  amd64) machine=X86-64 ;;
  *) echo "--arch must be arm64, armhf or amd64 (got '$arch')" >&2; exit 2 ;;
esac
[ -f "$binary" ] || { echo "no agent binary at '$binary'" >&2; exit 2; }
if [ -z "$version" ]; then
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/agent/Cargo.toml" | head -n1)
fi

# The binary must be for the package's architecture, and stripped (release profile: strip = true).
header=$(readelf -h "$binary")
grep -q "Machine:.*$machine\$" <<<"$header" || {
  echo "$binary is not a $arch binary:" >&2; grep Machine <<<"$header" >&2; exit 1; }
if readelf -S "$binary" | grep -q '\.symtab'; then
  echo "$binary is not stripped (build it with the release profile)" >&2; exit 1
fi
# The oldest libc6 it runs with: the newest GLIBC_x.y symbol version it needs.
# Packed relative relocations (DT_RELR, agent/build.rs) need glibc 2.36; the binary names them
# with the GLIBC_ABI_DT_RELR version instead of a numbered one.
versions=$(readelf -V "$binary")
glibc=$( { grep -o 'GLIBC_[0-9][0-9.]*' <<<"$versions" | sed 's/GLIBC_//'
          if grep -q 'GLIBC_ABI_DT_RELR' <<<"$versions"; then echo 2.36; fi; } | sort -V | tail -n1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/edgefn-agent"
install -D -m 0755 "$binary" "$pkg/usr/bin/edgefn-agent"
install -D -m 0644 "$here/edgefn-agent.service" "$pkg/lib/systemd/system/edgefn-agent.service"
install -D -m 0644 "$here/sysusers.conf" "$pkg/usr/lib/sysusers.d/edgefn-agent.conf"
install -D -m 0644 "$here/tmpfiles.conf" "$pkg/usr/lib/tmpfiles.d/edgefn-agent.conf"
install -D -m 0644 "$here/agent.toml" "$pkg/etc/edgefn/agent.toml"
install -D -m 0644 "$top/docs/raspberry-pi.md" "$pkg/usr/share/doc/edgefn-agent/raspberry-pi.md"
install -D -m 0644 "$here/copyright" "$pkg/usr/share/doc/edgefn-agent/copyright"

install -d "$pkg/DEBIAN"
install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$pkg/DEBIAN/"
echo /etc/edgefn/agent.toml > "$pkg/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOF
Package: edgefn-agent
Version: $version
Architecture: $arch
Maintainer: edgefn developers <edgefn@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), systemd
Recommends: mosquitto
Section: net
Priority: optional
Homepage: https://example.invalid/edgefn
Description: edge agent running WebAssembly functions on MQTT, schedules and HTTP
 edgefn-agent runs small functions compiled to WebAssembly in the wasmi interpreter, with
 fuel, memory and time limits, triggered by MQTT messages (the gateway's Mosquitto), cron and
 interval schedules and local HTTP calls. State lives in SQLite under /var/lib/edgefn.
 .
 The package installs a hardened systemd service (edgefn-agent.service) running as the
 edgefn system user, with its configuration in /etc/edgefn/agent.toml.
EOF

mkdir -p "$out"
deb="$out/edgefn-agent_${version}_${arch}.deb"
# xz makes the smallest package (releases); DEB_COMPRESS=gzip DEB_COMPRESS_LEVEL=1 is much faster
# for throwaway packages (tests/pi/deb.sh).
dpkg-deb --root-owner-group -Z"${DEB_COMPRESS:-xz}" ${DEB_COMPRESS_LEVEL:+-z"$DEB_COMPRESS_LEVEL"} \
  --build "$pkg" "$deb" >/dev/null
echo "$deb"
