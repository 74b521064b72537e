/* tests/core/test_hmap.c - being written. */
#include <criterion/criterion.h>
