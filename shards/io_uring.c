/* shards/io_uring.c - being written. */
#include <stddef.h>
