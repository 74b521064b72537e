/* tests/core/test_err.c - being written. */
#include <criterion/criterion.h>
