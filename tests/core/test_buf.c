/* tests/core/test_buf.c - being written. */
#include <criterion/criterion.h>
