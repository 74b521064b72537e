/* storage/batch.c - being written. */
#include <stddef.h>
