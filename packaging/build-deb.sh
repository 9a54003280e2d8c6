#!/usr/bin/env bash
# Build the Debian package of link from this checkout: dist/link_<version>_all.deb.
#
#   bash packaging/build-deb.sh            (as root on Debian 12: installs the build tools)
#
# dpkg-buildpackage wants debian/ at the top of the source tree, and writes its results
# next to it: so the tree (git-tracked files plus untracked, non-ignored ones) is copied
# into a temporary directory, packaging/debian becomes debian/ there, the package is built
# with Debian's own toolchain (PATH reset: no pyenv or virtualenv python), checked with
# lintian (an error fails the build; every tag is printed), and copied to dist/.
# LINK_KEEP_BUILD=1 keeps the temporary directory (its path is printed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C.UTF-8
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV

die() { echo "build-deb.sh: $*" >&2; exit 1; }

# --- the version: link/__init__.py and the changelog must agree
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' link/__init__.py)
[ -n "$version" ] || die "no __version__ in link/__init__.py"
deb_version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version 2>/dev/null) \
  || die "cannot read packaging/debian/changelog (is dpkg-dev installed?)"
[ "$version" = "$deb_version" ] \
  || die "version mismatch: link/__init__.py says $version, packaging/debian/changelog says $deb_version"

# --- the build tools
tools=(debhelper dh-python python3-all python3-setuptools lintian dpkg-dev)
missing=()
for p in "${tools[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing build tools (${missing[*]}): run as root, or apt-get install them"
  echo "build-deb.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${tools[@]}" >/dev/null
fi

# --- a clean copy of the tree
work=$(mktemp -d -t link-deb.XXXXXX)
cleanup=()  # what the EXIT trap removes
if [ "${LINK_KEEP_BUILD:-}" = 1 ]; then
  trap 'rm -rf "${cleanup[@]}"; echo "build-deb.sh: build directory kept: $work" >&2' EXIT
else
  cleanup+=("$work")
  trap 'rm -rf "${cleanup[@]}"' EXIT
fi
src="$work/link-$version"
mkdir -p "$src"
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Tracked plus untracked-but-not-ignored files; skip those deleted from the work tree.
  git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$src"
else
  tar --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build \
      --exclude='__pycache__' --exclude='*.egg-info' --exclude=./.pytest_cache -cf - . | tar -xf - -C "$src"
fi
rm -rf "$src/debian"
cp -a "$src/packaging/debian" "$src/debian"

# --- build
log="$work/build.log"
echo "build-deb.sh: dpkg-buildpackage -us -uc -b (link $version)"
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$log" 2>&1; then
  tail -n 80 "$log" >&2
  die "dpkg-buildpackage failed (whole log: $log; LINK_KEEP_BUILD=1 keeps it)"
fi
deb="$work/link_${version}_all.deb"
[ -f "$deb" ] || die "dpkg-buildpackage did not make $deb"

# --- lintian: errors fail the build; warnings and the rest are printed (explained in
# packaging/README.md). Its profile is Debian's; overrides live in debian/link.lintian-overrides.
echo "build-deb.sh: lintian"
lintian_out="$work/lintian.txt"
lint_cwd=$work
lint_deb=$deb
as=()
if [ "$(id -u)" -eq 0 ] && id nobody >/dev/null 2>&1; then
  # lintian unpacks what it checks: not as root. As nobody it can enter neither this
  # checkout nor $work when they lie under a directory only root may enter (a clone in
  # /root, TMPDIR=/root/tmp): it gets a copy of the .deb alone, in a directory of its own
  # under /tmp (0755, read-only to it), and is started there (lintian returns to the
  # directory it was started in, and stops with "Can't cd" where it may not).
  lint_dir=$(mktemp -d -p /tmp link-lintian.XXXXXX)
  cleanup+=("$lint_dir")
  chmod 0755 "$lint_dir"
  install -m 0644 "$deb" "$lint_dir/"
  lint_cwd=$lint_dir
  lint_deb=$lint_dir/$(basename "$deb")
  as=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$lint_dir" TMPDIR=/tmp)
fi
set +e
(cd "$lint_cwd" && "${as[@]}" lintian --info --display-level ">=pedantic" --fail-on error "$lint_deb") >"$lintian_out" 2>&1
lintian_rc=$?
set -e
grep -v '^N: ' "$lintian_out" | sed 's/^/  /' || true
[ "$lintian_rc" -eq 0 ] || die "lintian found errors (exit $lintian_rc)"
tags=$(grep -cE '^[EWIP]: ' "$lintian_out" || true)
echo "build-deb.sh: lintian: no errors ($tags tags in all)"

mkdir -p dist
cp "$deb" dist/
echo "build-deb.sh: built dist/$(basename "$deb")"
