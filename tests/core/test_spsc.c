/* tests/core/test_spsc.c - being written. */
#include <criterion/criterion.h>
