/* tests/core/test_hist.c - being written. */
#include <criterion/criterion.h>
