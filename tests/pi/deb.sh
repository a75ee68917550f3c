#!/usr/bin/env bash
# The Debian packages (issue 8): builds arm64 and armhf .debs around the ARM agents
# (tests/pi/build.sh) with packaging/deb/build-deb.sh, then checks
#   - contents (dpkg-deb -c): binary, unit, config, sysusers/tmpfiles snippets, docs, owners, modes;
#   - control data (dpkg-deb -I / -e): fields, conffiles, maintainer scripts;
#   - the unit: every hardening directive we promise, and systemd-analyze's offline verdict;
#   - install / upgrade / remove / purge in a throwaway root (dpkg --root, maintainer scripts run
#     chrootless with $DPKG_ROOT): user and data dir created, config and data kept across an
#     upgrade and a remove, all gone after purge.
#
#   tests/pi/deb.sh [PROFILE]    # default profile: ci-arm
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-ci-arm}

passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
check() { local what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }
die() { echo "FAIL $*" >&2; exit 1; }

for tool in dpkg-deb dpkg readelf systemd-analyze systemd-sysusers systemd-tmpfiles userdel; do
  command -v $tool >/dev/null || die "$tool is not installed"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# These packages are thrown away: compress fast (releases use xz).
export DEB_COMPRESS=gzip DEB_COMPRESS_LEVEL=1
version=$(sed -n 's/^version = "\(.*\)"/\1/p' agent/Cargo.toml | head -n1)

# --- build ---------------------------------------------------------------------------------
tdir=${CARGO_TARGET_DIR:-target}
declare -A bin=([arm64]=$tdir/aarch64-unknown-linux-gnu/$profile/edgefn-agent
                [armhf]=$tdir/armv7-unknown-linux-gnueabihf/$profile/edgefn-agent)
for arch in arm64 armhf; do
  [ -x "${bin[$arch]}" ] || die "${bin[$arch]} is missing (tests/pi/build.sh builds it)"
  packaging/deb/build-deb.sh --arch $arch --binary "${bin[$arch]}" --out "$work/v1" >/dev/null
  packaging/deb/build-deb.sh --arch $arch --binary "${bin[$arch]}" --out "$work/v2" --version "$version+upgrade1" >/dev/null
done
# A wrong-architecture binary must be refused.
check "build-deb refuses an armhf binary for arm64" \
  bash -c "! packaging/deb/build-deb.sh --arch arm64 --binary '${bin[armhf]}' --out '$work/bad' 2>/dev/null"

# --- contents and control data ----------------------------------------------------------------
for arch in arm64 armhf; do
  deb=$work/v1/edgefn-agent_${version}_$arch.deb
  check "$arch: $deb built" test -s "$deb"
  info=$(dpkg-deb -I "$deb")
  check "$arch: Package edgefn-agent" grep -qx ' Package: edgefn-agent' <<<"$info"
  check "$arch: Architecture $arch" grep -qx " Architecture: $arch" <<<"$info"
  check "$arch: Version $version" grep -qx " Version: $version" <<<"$info"
  check "$arch: depends on libc6 (>= 2.x) and systemd" grep -qE '^ Depends: libc6 \(>= 2\.[0-9]+\), systemd$' <<<"$info"
  check "$arch: recommends mosquitto" grep -qx ' Recommends: mosquitto' <<<"$info"

  contents=$(dpkg-deb -c "$deb")
  has() { grep -qE "^$1 root/root +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$contents"; }
  check "$arch: /usr/bin/edgefn-agent, root-owned, 0755" has -rwxr-xr-x usr/bin/edgefn-agent
  check "$arch: the systemd unit" has -rw-r--r-- lib/systemd/system/edgefn-agent.service
  check "$arch: /etc/edgefn/agent.toml" has -rw-r--r-- etc/edgefn/agent.toml
  check "$arch: sysusers.d snippet" has -rw-r--r-- usr/lib/sysusers.d/edgefn-agent.conf
  check "$arch: tmpfiles.d snippet" has -rw-r--r-- usr/lib/tmpfiles.d/edgefn-agent.conf
  check "$arch: copyright" has -rw-r--r-- usr/share/doc/edgefn-agent/copyright
  check "$arch: the Raspberry Pi guide" has -rw-r--r-- usr/share/doc/edgefn-agent/raspberry-pi.md
  check "$arch: nothing in /var/lib (data is created, never shipped)" bash -c "! grep -q '\./var/' <<<'$contents'"

  x=$work/x-$arch
  dpkg-deb -x "$deb" "$x"
  dpkg-deb -e "$deb" "$x/DEBIAN"
  check "$arch: conffiles lists exactly /etc/edgefn/agent.toml" diff <(echo /etc/edgefn/agent.toml) "$x/DEBIAN/conffiles"
  for s in postinst prerm postrm; do
    check "$arch: $s is an executable sh script" bash -c "test -x '$x/DEBIAN/$s' && sh -n '$x/DEBIAN/$s'"
  done
  machine=$([ $arch = arm64 ] && echo AArch64 || echo ARM)
  check "$arch: the packaged binary is $machine and stripped" \
    bash -c "readelf -h '$x/usr/bin/edgefn-agent' | grep -q 'Machine:.*$machine\$' && ! readelf -S '$x/usr/bin/edgefn-agent' | grep -q '\.symtab'"
  cmp -s "$x/usr/bin/edgefn-agent" "${bin[$arch]}" && ok "$arch: the packaged binary is the built one" || bad "$arch: packaged binary differs"
done

# --- the unit -------------------------------------------------------------------------------------
unit=$work/x-arm64/lib/systemd/system/edgefn-agent.service
for d in Type=notify NotifyAccess=main WatchdogSec=30s Restart=on-failure User=edgefn Group=edgefn \
         StateDirectory=edgefn StateDirectoryMode=0700 UMask=0077 \
         NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes PrivateDevices=yes \
         ProtectKernelTunables=yes ProtectKernelModules=yes ProtectControlGroups=yes \
         RestrictSUIDSGID=yes MemoryDenyWriteExecute=yes LockPersonality=yes \
         SystemCallArchitectures=native 'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' \
         'ExecStart=/usr/bin/edgefn-agent run --config /etc/edgefn/agent.toml --data-dir /var/lib/edgefn' \
         'WantedBy=multi-user.target'; do
  check "unit: $d" grep -qxF -- "$d" "$unit"
done
check "unit: no DynamicUser (the data must outlive the user's uid)" bash -c "! grep -q '^DynamicUser' '$unit'"
check "unit: logs go to the journal (no StandardOutput/StandardError to files)" bash -c "! grep -qE '^Standard(Output|Error)=(file|append)' '$unit'"
# systemd's own reading of the unit: syntax and an exposure score (0 = locked down, 10 = exposed).
# 2.5 or more would mean a hardening directive was lost.
if analysis=$(systemd-analyze security --offline=true --root="$work/x-arm64" --threshold=25 \
    /lib/systemd/system/edgefn-agent.service 2>&1); then
  ok "unit: systemd-analyze security: $(grep -o 'Overall exposure level.*' <<<"$analysis" | sed 's/\x1b\[[0-9;]*m//g')"
  if grep -qiE 'unknown (key|section)|ignoring' <<<"$analysis"; then
    bad "unit: systemd ignores part of it:"; grep -iE 'unknown|ignoring' <<<"$analysis"
  else
    ok "unit: systemd understands every line of it"
  fi
else
  bad "unit: systemd-analyze security failed or scored above 2.5:"; echo "$analysis" | tail -n 20
fi

# --- install, upgrade, remove, purge in a throwaway root ---------------------------------------------
root=$work/root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates" "$root/etc"
touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
cp /etc/login.defs "$root/etc/" 2>/dev/null || true
dpkg_root() {
  dpkg --root="$root" --log=/dev/null --force-script-chrootless --force-architecture \
       --force-depends --force-confold "$@"
}
uid_of() { awk -F: -v u="$1" '$1 == u { print $3 }' "$root/etc/passwd"; }
gid_of() { awk -F: -v g="$1" '$1 == g { print $3 }' "$root/etc/group"; }

dpkg_root -i "$work/v1/edgefn-agent_${version}_arm64.deb" >"$work/install.log" 2>&1 || { cat "$work/install.log"; die "dpkg -i failed"; }
check "install: status is installed $version" bash -c "dpkg-query --admindir='$root/var/lib/dpkg' -W -f='\${Status} \${Version}' edgefn-agent | grep -qx 'install ok installed $version'"
check "install: /usr/bin/edgefn-agent" test -x "$root/usr/bin/edgefn-agent"
check "install: user edgefn with nologin shell" grep -qE '^edgefn:x:[0-9]+:[0-9]+:[^:]*:/var/lib/edgefn:/usr/sbin/nologin$' "$root/etc/passwd"
check "install: group edgefn" grep -q '^edgefn:' "$root/etc/group"
check "install: edgefn is a system user (uid < 1000)" test "$(uid_of edgefn)" -lt 1000
check "install: /var/lib/edgefn is 0700 edgefn:edgefn" \
  test "$(stat -c '%a %u %g' "$root/var/lib/edgefn")" = "700 $(uid_of edgefn) $(gid_of edgefn)"
check "install: /etc/edgefn/agent.toml is 0640 root:edgefn" \
  test "$(stat -c '%a %u %g' "$root/etc/edgefn/agent.toml")" = "640 0 $(gid_of edgefn)"

# Upgrade: a local config edit and the data survive; the version moves.
echo 'agent state' > "$root/var/lib/edgefn/agent.db"
echo '# edited by the operator' >> "$root/etc/edgefn/agent.toml"
uid_before=$(uid_of edgefn)
dpkg_root -i "$work/v2/edgefn-agent_${version}+upgrade1_arm64.deb" >"$work/upgrade.log" 2>&1 || { cat "$work/upgrade.log"; die "upgrade failed"; }
check "upgrade: status is installed $version+upgrade1" bash -c "dpkg-query --admindir='$root/var/lib/dpkg' -W -f='\${Version}' edgefn-agent | grep -qx '$version+upgrade1'"
check "upgrade: data kept" grep -qx 'agent state' "$root/var/lib/edgefn/agent.db"
check "upgrade: edited config kept" grep -qx '# edited by the operator' "$root/etc/edgefn/agent.toml"
check "upgrade: same uid" test "$(uid_of edgefn)" = "$uid_before"

# Remove: binary gone, config, data and user stay.
dpkg_root -r edgefn-agent >"$work/remove.log" 2>&1 || { cat "$work/remove.log"; die "dpkg -r failed"; }
check "remove: binary gone" test ! -e "$root/usr/bin/edgefn-agent"
check "remove: unit gone" test ! -e "$root/lib/systemd/system/edgefn-agent.service"
check "remove: config kept" test -f "$root/etc/edgefn/agent.toml"
check "remove: data kept" test -f "$root/var/lib/edgefn/agent.db"
check "remove: user kept" grep -q '^edgefn:' "$root/etc/passwd"

# Purge: everything the package or the agent made is gone.
dpkg_root -P edgefn-agent >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; die "dpkg -P failed"; }
check "purge: data gone" test ! -e "$root/var/lib/edgefn"
check "purge: config gone" test ! -e "$root/etc/edgefn"
check "purge: user gone" bash -c "! grep -q '^edgefn:' '$root/etc/passwd'"
check "purge: group gone" bash -c "! grep -q '^edgefn:' '$root/etc/group'"
check "purge: dpkg knows nothing of it" bash -c "! dpkg-query --admindir='$root/var/lib/dpkg' -W edgefn-agent 2>/dev/null | grep -q ."

echo "deb: $passed passed, $failed failed"
[ $failed = 0 ]
