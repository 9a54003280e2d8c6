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
  local log rc=0 p units=()
  log=$(mktemp -t link-apt.XXXXXX)
  # Services these packages would start on the machine: the tests run their own, in the lab.
  for p in "${missing[@]}"; do
    case $p in
      prometheus) units+=(prometheus.service) ;;
      patroni) units+=(patroni.service) ;;
      postgresql) units+=(postgresql.service postgresql@15-main.service) ;;
    esac
  done
  [ "${#units[@]}" -eq 0 ] || _services_held "${units[@]}"
  { DEBIAN_FRONTEND=noninteractive apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 || rc=$?
  if [ "${#units[@]}" -gt 0 ]; then
    _services_off "${units[@]}"
    [ "$rc" -ne 0 ] || echo "$who: installed for the tests, their services left stopped and disabled: ${units[*]}"
  fi
  if [ "$rc" -ne 0 ]; then
    echo "$who: FAILED: apt-get install ${missing[*]}" >&2
    tail -n 60 "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# Debian's prometheus package starts its service when installed (every address, port 9090),
# postgresql its main cluster (port 5432), patroni its service; the tests run their own inside
# lab namespaces, so an install made here leaves those services stopped and disabled. systemd:
# the units are masked during the install (deb-systemd-helper keeps a mask it did not make, and
# their start fails harmlessly), then unmasked and disabled. SysV init: a policy-rc.d, only when
# there is none, refuses every start (invoke-rc.d asks it) while apt runs; the init scripts are
# disabled afterwards.
_own_policy_rc=""
_services_held() {  # _services_held UNIT...
  if [ -d /run/systemd/system ]; then
    systemctl mask --quiet "$@"
  elif [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# link scripts/apt-packages.sh: no service starts during this apt-get install\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    _own_policy_rc=/usr/sbin/policy-rc.d
  fi
}
_services_off() {  # _services_off UNIT...
  local unit
  if [ -d /run/systemd/system ]; then
    systemctl unmask --quiet "$@"
    systemctl disable --now --quiet "$@" 2>/dev/null || true
  else
    if [ -n "$_own_policy_rc" ]; then
      rm -f "$_own_policy_rc"
      _own_policy_rc=""
    fi
    for unit in "$@"; do
      case $unit in *@*) continue ;; esac  # an instance of a template: no init script of its own
      update-rc.d "${unit%.service}" disable >/dev/null 2>&1 || true
    done
  fi
}
