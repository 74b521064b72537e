/* core/buf.c - being written. */
#include "core/buf.h"
