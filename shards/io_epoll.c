/* shards/io_epoll.c - being written. */
#include <stddef.h>
