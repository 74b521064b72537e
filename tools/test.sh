#!/usr/bin/env bash
# tools/test.sh - install dependencies, build and run every test:
#   1. the unit suite on the io_uring backend (warnings are errors)
#   2. the unit suite again on the portable epoll backend
#   3. the unit suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   4. the runtime and mailbox tests under ThreadSanitizer
#   5. install + pkg-config: the example program builds against the installed library
#   6. formatting (clang-format) of every C file
# Ends with one line "N passed, M failed". Exit status 0 only if all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh || { echo "install-deps failed"; exit 1; }

passed=0
failed=0
failures=()
step() { # step NAME COMMAND...
  local name=$1
  shift
  echo "=== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== FAILED: $name"
  fi
}

setup() { # setup DIR ARGS...
  local dir=$1
  shift
  if [ -d "$dir" ]; then
    meson setup --reconfigure "$dir" "$@" >/dev/null
  else
    meson setup "$dir" "$@" >/dev/null
  fi && ninja -C "$dir"
}

# Sanitizer runtimes want these; detect_leaks catches what close forgets.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
export RIVVEN_TRACE=${RIVVEN_TRACE:-warn}

step "build (werror)" setup build-test -Dwerror=true --buildtype=debugoptimized
step "unit tests, io_uring backend" env RIVVEN_IO_BACKEND=uring \
  meson test -C build-test --suite unit --print-errorlogs
step "unit tests, epoll backend" env RIVVEN_IO_BACKEND=epoll \
  meson test -C build-test --suite unit --print-errorlogs

step "build (asan+ubsan)" setup build-asan -Dwerror=true -Db_sanitize=address,undefined \
  -Db_lundef=false --buildtype=debug
step "unit tests under asan+ubsan" meson test -C build-asan --suite unit --print-errorlogs

step "build (tsan)" setup build-tsan -Db_sanitize=thread -Db_lundef=false --buildtype=debug
step "runtime and mailbox tests under tsan" meson test -C build-tsan --suite tsan \
  --print-errorlogs --timeout-multiplier 3

step "install and build the example with pkg-config" tools/check-install.sh build-test
step "clang-format" tools/check-format.sh

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "failed steps: ${failures[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
