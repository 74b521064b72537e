/* tests/core/test_varint.c - being written. */
#include <criterion/criterion.h>
