/* tests/core/test_mpsc.c - being written. */
#include <criterion/criterion.h>
