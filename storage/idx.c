/* storage/idx.c - being written. */
#include <stddef.h>
