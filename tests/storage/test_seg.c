/* tests/storage/test_seg.c - being written. */
#include <criterion/criterion.h>
