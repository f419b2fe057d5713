#!/bin/sh
# Installs the Debian packages named on the command line that are missing (when root),
# or names them in one line and fails.
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "outboxd: installing$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing) >/dev/null 2>&1 && exit 0
fi
echo "outboxd: missing Debian packages; run: apt-get install$missing" >&2
exit 1
