/* tests/storage/test_idx.c - being written. */
#include <criterion/criterion.h>
