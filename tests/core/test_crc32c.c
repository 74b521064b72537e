/* tests/core/test_crc32c.c - being written. */
#include <criterion/criterion.h>
