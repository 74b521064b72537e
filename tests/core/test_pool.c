/* tests/core/test_pool.c - being written. */
#include <criterion/criterion.h>
