# Sourced by the install, test and benchmark scripts: the Debian 12 packages they need, and
# how they install the missing ones (quietly; the log is shown if apt fails).

# What the .deb depends on: the agents run on these in test-debian-libs.sh and the benchmarks.
DEBIAN_PYTHON_LIBS=(python3-etcd3 python3-protobuf python3-grpcio python3-pyroute2 python3-scapy python3-bottle
                    python3-waitress python3-setproctitle python3-psutil python3-prometheus-client)

apt_install_missing() {  # apt_install_missing WHO PACKAGE...: install those not installed yet
  local who=$1; shift
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "$who: missing Debian packages (${missing[*]}): run as root" >&2
    return 1
  fi
  echo "$who: apt-get install ${missing[*]}"
  local log
  log=$(mktemp -t link-apt.XXXXXX)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    echo "$who: FAILED: apt-get install ${missing[*]}" >&2
    tail -n 60 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}
