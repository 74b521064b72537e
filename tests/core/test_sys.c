/* tests/core/test_sys.c - being written. */
#include <criterion/criterion.h>
