/* tests/core/test_trace.c - being written. */
#include <criterion/criterion.h>
