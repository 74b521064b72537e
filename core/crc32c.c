/* core/crc32c.c - being written. */
#include "core/crc32c.h"
