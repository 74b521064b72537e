# tests/tools/test_lib.sh - what the shell tests share (sourced, not run).
# Counts results in `passed` and `failed`; the test ends with
# `[[ $failed -eq 0 ]]`.
passed=0
failed=0

ok() {
    passed=$((passed + 1))
    echo "ok   $1"
}

fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
}
