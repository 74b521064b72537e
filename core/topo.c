/*
 * core/topo.c - CPU and NUMA topology (see topo.h).
 *
 * Everything here runs at startup or on control paths: parsing a configured
 * cpuset, choosing a CPU and a node per shard, pinning. The one piece of shared
 * state is the snapshot of the process's allowed CPUs, taken once under
 * pthread_once so that threads pinning themselves cannot change what later
 * callers see.
 */
#include "core/topo.h"

#include <ctype.h>
#include <errno.h>
#include <numa.h>
#include <numaif.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

RV_STATIC_ASSERT(RV_CPUSET_MAX == CPU_SETSIZE);
RV_STATIC_ASSERT(RV_CPUSET_MAX % 64 == 0);

/* Nodes a set_mempolicy mask can name; the kernel reads maxnode - 1 bits. */
#define TOPO_NODE_MAX 1024

/* Cpusets. */

void rv_cpuset_clear(struct rv_cpuset *s)
{
    RV_ASSERT(s != NULL);
    memset(s, 0, sizeof(*s));
}

void rv_cpuset_add(struct rv_cpuset *s, unsigned cpu)
{
    RV_ASSERT(s != NULL);
    RV_ASSERT(cpu < RV_CPUSET_MAX);
    s->bits[cpu / 64] |= UINT64_C(1) << (cpu % 64);
}

bool rv_cpuset_has(const struct rv_cpuset *s, unsigned cpu)
{
    RV_ASSERT(s != NULL);
    if (cpu >= RV_CPUSET_MAX)
        return false;
    return (s->bits[cpu / 64] >> (cpu % 64)) & 1;
}

unsigned rv_cpuset_count(const struct rv_cpuset *s)
{
    RV_ASSERT(s != NULL);
    unsigned count = 0;
    for (size_t i = 0; i < RV_ARRAY_LEN(s->bits); i++)
        count += (unsigned)__builtin_popcountll(s->bits[i]);
    return count;
}

int rv_cpuset_nth(const struct rv_cpuset *s, unsigned n)
{
    RV_ASSERT(s != NULL);
    for (size_t i = 0; i < RV_ARRAY_LEN(s->bits); i++) {
        uint64_t word = s->bits[i];
        unsigned in_word = (unsigned)__builtin_popcountll(word);
        if (n >= in_word) {
            n -= in_word;
            continue;
        }
        /* Drop the n lowest set bits; the answer is then the lowest one left. */
        for (unsigned k = 0; k < n; k++)
            word &= word - 1;
        return (int)(i * 64) + __builtin_ctzll(word);
    }
    return -1;
}

static const char *topo_skip_space(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    return p;
}

static size_t topo_column(const char *s, const char *p)
{
    return (size_t)(p - s) + 1;
}

/* Parse one CPU number at *pp (leading and trailing blanks skipped). */
static int topo_parse_cpu(const char *s, const char **pp, unsigned *out)
{
    const char *p = topo_skip_space(*pp);
    const char *digits = p;
    unsigned long cpu = 0;

    if (!isdigit((unsigned char)*p)) {
        if (*p == '\0')
            return rv_errf(-EINVAL, "cpuset \"%s\": expected a CPU number at end of string", s);
        return rv_errf(-EINVAL, "cpuset \"%s\": expected a CPU number at column %zu", s,
                       topo_column(s, p));
    }
    for (; isdigit((unsigned char)*p); p++) {
        /* Saturate instead of overflowing; the range check below reports it. */
        if (cpu < RV_CPUSET_MAX)
            cpu = cpu * 10 + (unsigned long)(*p - '0');
    }
    if (cpu >= RV_CPUSET_MAX)
        return rv_errf(-EINVAL, "cpuset \"%s\": CPU %.*s is out of range (at most %d CPUs)", s,
                       (int)(p - digits), digits, RV_CPUSET_MAX);
    *out = (unsigned)cpu;
    *pp = topo_skip_space(p);
    return 0;
}

/* Parse one item, "a" or "a-b", at *pp into set. */
static int topo_parse_item(const char *s, const char **pp, struct rv_cpuset *set)
{
    const char *p = topo_skip_space(*pp);
    unsigned first;
    unsigned last;

    if (*p == ',')
        return rv_errf(-EINVAL, "cpuset \"%s\": empty item at column %zu", s, topo_column(s, p));
    int rc = topo_parse_cpu(s, &p, &first);
    if (rc < 0)
        return rc;
    last = first;
    if (*p == '-') {
        p++;
        rc = topo_parse_cpu(s, &p, &last);
        if (rc < 0)
            return rc;
        if (last < first)
            return rv_errf(-EINVAL, "cpuset \"%s\": range %u-%u is reversed", s, first, last);
    }
    for (unsigned cpu = first; cpu <= last; cpu++)
        rv_cpuset_add(set, cpu);
    *pp = p;
    return 0;
}

int rv_cpuset_parse(const char *s, struct rv_cpuset *out)
{
    RV_ASSERT(s != NULL);
    RV_ASSERT(out != NULL);
    struct rv_cpuset set;
    const char *p = topo_skip_space(s);
    /* Every item takes at least one character, so this bounds the items. */
    size_t item_max = strlen(s) + 1;

    rv_cpuset_clear(&set);
    if (*p == '\0')
        return rv_errf(-EINVAL, "cpuset \"%s\": empty", s);
    for (size_t i = 0; i < item_max; i++) {
        int rc = topo_parse_item(s, &p, &set);
        if (rc < 0)
            return rc;
        if (*p == '\0') {
            *out = set;
            return 0;
        }
        if (*p != ',')
            return rv_errf(-EINVAL, "cpuset \"%s\": unexpected character at column %zu", s,
                           topo_column(s, p));
        p++;
        if (*topo_skip_space(p) == '\0')
            return rv_errf(-EINVAL, "cpuset \"%s\": trailing comma", s);
    }
    RV_ASSERT(!"cpuset parse made no progress");
    return -EINVAL;
}

/* The last CPU of the run of consecutive CPUs that starts at `cpu`. */
static unsigned topo_run_end(const struct rv_cpuset *s, unsigned cpu)
{
    while (cpu + 1 < RV_CPUSET_MAX && rv_cpuset_has(s, cpu + 1))
        cpu++;
    return cpu;
}

int rv_cpuset_format(const struct rv_cpuset *s, char *buf, size_t len)
{
    RV_ASSERT(s != NULL);
    RV_ASSERT(buf != NULL || len == 0);
    size_t used = 0;

    if (len == 0)
        return -ENOSPC;
    buf[0] = '\0';
    for (unsigned cpu = 0; cpu < RV_CPUSET_MAX; cpu++) {
        if (!rv_cpuset_has(s, cpu))
            continue;
        unsigned last = topo_run_end(s, cpu);
        const char *sep = used > 0 ? "," : "";
        int n = last == cpu ? snprintf(buf + used, len - used, "%s%u", sep, cpu)
                            : snprintf(buf + used, len - used, "%s%u-%u", sep, cpu, last);
        if (n < 0 || (size_t)n >= len - used)
            return -ENOSPC;
        used += (size_t)n;
        cpu = last;
    }
    return 0;
}

/* Topology queries. */

static pthread_once_t topo_allowed_once = PTHREAD_ONCE_INIT;
static struct rv_cpuset topo_allowed;
static int topo_allowed_rc;

static void topo_allowed_read(void)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    /* The main thread's mask (tid == pid) stands for the process: shard threads
     * pin themselves, the main thread usually does not, or not before this. */
    if (sched_getaffinity(getpid(), sizeof(set), &set) != 0) {
        topo_allowed_rc = -errno;
        return;
    }
    rv_cpuset_clear(&topo_allowed);
    for (unsigned cpu = 0; cpu < RV_CPUSET_MAX; cpu++) {
        if (CPU_ISSET(cpu, &set))
            rv_cpuset_add(&topo_allowed, cpu);
    }
    topo_allowed_rc = 0;
}

int rv_topo_allowed_cpus(struct rv_cpuset *out)
{
    RV_ASSERT(out != NULL);
    int rc = pthread_once(&topo_allowed_once, topo_allowed_read);
    RV_ASSERT(rc == 0);
    if (topo_allowed_rc < 0)
        return rv_errf(topo_allowed_rc, "sched_getaffinity: %s", rv_strerror(topo_allowed_rc));
    *out = topo_allowed;
    return 0;
}

unsigned rv_topo_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

int rv_topo_cpu_node(unsigned cpu)
{
    if (cpu >= RV_CPUSET_MAX)
        return -EINVAL;
    if (numa_available() < 0)
        return 0;
    int node = numa_node_of_cpu((int)cpu);
    return node >= 0 ? node : -EINVAL;
}

unsigned rv_topo_node_count(void)
{
    if (numa_available() < 0)
        return 1;
    int n = numa_num_configured_nodes();
    return n > 0 ? (unsigned)n : 1;
}

/* Thread placement. */

int rv_topo_pin_self(unsigned cpu)
{
    struct rv_cpuset allowed;
    char allowed_str[128];
    cpu_set_t set;

    if (cpu >= RV_CPUSET_MAX)
        return rv_errf(-EINVAL, "pin to CPU %u: at most %d CPUs", cpu, RV_CPUSET_MAX);
    int rc = rv_topo_allowed_cpus(&allowed);
    if (rc < 0)
        return rc;
    if (!rv_cpuset_has(&allowed, cpu)) {
        /* A truncated list still helps the reader: mark it and go on. */
        if (rv_cpuset_format(&allowed, allowed_str, sizeof(allowed_str)) < 0)
            memcpy(allowed_str + sizeof(allowed_str) - 4, "...", 4);
        return rv_errf(-EINVAL, "pin to CPU %u: not in the allowed CPUs %s", cpu, allowed_str);
    }
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    rc = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (rc != 0)
        return rv_errf(-rc, "pin to CPU %u: %s", cpu, rv_strerror(rc));
    return 0;
}

int rv_topo_prefer_node(int node)
{
    unsigned long mask[TOPO_NODE_MAX / (8 * sizeof(unsigned long))];
    const size_t bits_per_word = 8 * sizeof(unsigned long);

    if (node < -1)
        return rv_errf(-EINVAL, "prefer NUMA node %d: no such node", node);
    if (numa_available() < 0)
        return 0;
    if (node > numa_max_node() || node >= TOPO_NODE_MAX)
        return rv_errf(-EINVAL, "prefer NUMA node %d: no such node (max %d)", node,
                       numa_max_node());
    /* set_mempolicy rather than numa_set_preferred: the latter returns nothing
     * and prints to stderr when the kernel refuses. */
    if (node == -1) {
        if (set_mempolicy(MPOL_DEFAULT, NULL, 0) == 0)
            return 0;
        int err = -errno;
        return rv_errf(err, "set_mempolicy(MPOL_DEFAULT): %s", rv_strerror(err));
    }
    memset(mask, 0, sizeof(mask));
    mask[(size_t)node / bits_per_word] = 1UL << ((size_t)node % bits_per_word);
    if (set_mempolicy(MPOL_PREFERRED, mask, TOPO_NODE_MAX + 1) == 0)
        return 0;
    int err = -errno;
    return rv_errf(err, "set_mempolicy(MPOL_PREFERRED, %d): %s", node, rv_strerror(err));
}
