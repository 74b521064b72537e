/* storage/seg.c - being written. */
#include <stddef.h>
