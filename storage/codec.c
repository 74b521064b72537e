/* storage/codec.c - being written. */
#include <stddef.h>
