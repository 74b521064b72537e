/* core/topo.c - being written. */
#include "core/topo.h"
