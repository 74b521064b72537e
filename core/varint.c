/* core/varint.c - being written. */
#include "core/varint.h"
