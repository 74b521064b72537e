/*
 * core/topo.h - CPU and NUMA topology: cpusets, pinning, node preference.
 *
 * A struct rv_cpuset is a plain bitmap of up to RV_CPUSET_MAX CPUs, written and
 * read in the Linux cpuset list syntax ("0-3,8"). The rv_topo_* queries ask the
 * kernel (sched_getaffinity, sysconf) and libnuma; when libnuma reports NUMA as
 * unavailable the machine is treated as one node, 0.
 *
 * Threading: cpusets are caller-owned values with no shared state. The
 * rv_topo_pin_self / rv_topo_prefer_node calls change the calling thread only;
 * the shards layer calls them once on each shard thread as it starts.
 */
#ifndef RV_CORE_TOPO_H
#define RV_CORE_TOPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/assert.h"

/* CPUs a cpuset can name: 0 .. RV_CPUSET_MAX - 1 (the size of glibc's cpu_set_t). */
#define RV_CPUSET_MAX 1024

struct rv_cpuset {
    uint64_t bits[RV_CPUSET_MAX / 64]; /* bit c % 64 of bits[c / 64] set: CPU c is in */
};

/* Cpusets. */

/* Parse a Linux cpuset list such as "0-3,8" or "0-1, 4-7, 12" into *out.
 * Items are CPU numbers or inclusive ranges "a-b" separated by commas;
 * whitespace around numbers is allowed. Returns 0, or -EINVAL (with a message
 * through rv_errf naming the string and what is wrong) for an empty string, an
 * empty item (a leading, doubled or trailing comma), text that is not a number,
 * a reversed range "3-1", or a CPU >= RV_CPUSET_MAX. On failure *out is
 * unchanged. Any thread. */
RV_MUST_CHECK int rv_cpuset_parse(const char *s, struct rv_cpuset *out);

/* Write the canonical list form of *s ("0-3,8": ascending, runs of two or more
 * as ranges) into buf, NUL-terminated; an empty set is "". Returns 0, or
 * -ENOSPC when it does not fit in len bytes (buf then holds a truncated,
 * terminated prefix if len > 0). */
RV_MUST_CHECK int rv_cpuset_format(const struct rv_cpuset *s, char *buf, size_t len);

/* Number of CPUs in the set. */
unsigned rv_cpuset_count(const struct rv_cpuset *s);

/* The n-th CPU of the set in ascending order (n from 0), or -1 when the set has
 * n or fewer CPUs. */
int rv_cpuset_nth(const struct rv_cpuset *s, unsigned n);

/* Whether CPU `cpu` is in the set (false for cpu >= RV_CPUSET_MAX). */
bool rv_cpuset_has(const struct rv_cpuset *s, unsigned cpu);

/* Add CPU `cpu` (< RV_CPUSET_MAX, asserted: callers pass checked values). */
void rv_cpuset_add(struct rv_cpuset *s, unsigned cpu);

/* Empty the set. */
void rv_cpuset_clear(struct rv_cpuset *s);

/* Topology queries. */

/* The CPUs this process may run on: the affinity mask of its main thread as
 * first seen by this module. It is read once and remembered, so that a thread
 * that pins itself (the main thread may become shard 0) does not shrink what
 * later pinning checks against. Returns 0, or the -errno of sched_getaffinity.
 * Any thread. */
RV_MUST_CHECK int rv_topo_allowed_cpus(struct rv_cpuset *out);

/* Number of online CPUs (sysconf), at least 1. */
unsigned rv_topo_online_cpus(void);

/* The NUMA node of CPU `cpu`: libnuma's answer when NUMA is available, else 0.
 * Returns -EINVAL for a CPU libnuma does not know or cpu >= RV_CPUSET_MAX. */
RV_MUST_CHECK int rv_topo_cpu_node(unsigned cpu);

/* Number of NUMA nodes (1 when NUMA is unavailable). */
unsigned rv_topo_node_count(void);

/* Thread placement. */

/* Pin the calling thread to CPU `cpu`. Returns 0; -EINVAL (with a message) when
 * cpu is not in rv_topo_allowed_cpus(); or the -errno of pthread_setaffinity_np
 * or of reading the allowed set. On failure the thread's affinity is unchanged.
 * Calling thread only. */
RV_MUST_CHECK int rv_topo_pin_self(unsigned cpu);

/* Make the calling thread's future allocations prefer NUMA node `node`, or with
 * node -1 go back to local allocation. Returns 0 (also when NUMA is unavailable:
 * there is nothing to prefer), -EINVAL for a node that does not exist, or the
 * -errno of set_mempolicy (e.g. -EPERM in a restricted container). Calling
 * thread only. */
RV_MUST_CHECK int rv_topo_prefer_node(int node);

#endif /* RV_CORE_TOPO_H */
