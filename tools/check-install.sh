#!/usr/bin/env bash
# tools/check-install.sh BUILD_DIR - install the build into a scratch prefix and
# build docs/examples/hello.c against it with pkg-config, shared and static.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}
dest=$(mktemp -d /tmp/rivven-install-XXXXXX)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" >/dev/null
prefix=$(meson introspect "$build" --buildoptions | /usr/bin/python3 -c \
  'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"]=="prefix"][0])')
libdir=$(dirname "$(find "$dest$prefix" -name rivven.pc | head -n1)")
export PKG_CONFIG_PATH="$libdir"
export PKG_CONFIG_SYSROOT_DIR="$dest"
# pkg-config's sysroot applies to -I/-L but the .pc prefix is the real one.
cflags=$(pkg-config --cflags rivven)
libs=$(pkg-config --libs rivven)
cc -std=c11 -Wall -Werror docs/examples/hello.c $cflags $libs -o "$dest/hello"
LD_LIBRARY_PATH="$dest$prefix/lib:$(dirname "$libdir")" "$dest/hello"
cc -std=c11 -Wall -Werror docs/examples/hello.c $cflags -static-libgcc \
  "$(dirname "$libdir")/librivven.a" $(pkg-config --libs --static rivven | sed 's/-lrivven//') \
  -o "$dest/hello-static"
"$dest/hello-static"
cc -std=c11 -Wall -Werror docs/examples/store.c $cflags $libs -o "$dest/store"
LD_LIBRARY_PATH="$dest$prefix/lib:$(dirname "$libdir")" "$dest/store" "$dest/data"
echo "check-install: the examples build and run against the installed librivven"
