/*
 * core/assert.h - the assertion policy (docs/architecture.md, "Style").
 *
 * RV_ASSERT is always compiled in: a false invariant is a bug and bugs crash,
 * with the expression, the place, the shard and a backtrace. RV_DASSERT is for
 * O(n) checks and exists only with -Ddebug_checks=true. Never assert on bytes
 * that came from the network, a disk or a config file: those are operating
 * errors and are returned as -EPROTO / -EBADMSG / -EINVAL.
 */
#ifndef RV_CORE_ASSERT_H
#define RV_CORE_ASSERT_H

_Noreturn void rv_assert_fail(const char *expr, const char *file, int line);

/* Print a backtrace of the calling thread to stderr (async-signal-safe enough for
 * diagnostics: backtrace_symbols_fd). */
void rv_assert_backtrace(void);

#define RV_ASSERT(e) (__builtin_expect(!!(e), 1) ? (void)0 : rv_assert_fail(#e, __FILE__, __LINE__))

#if RV_DEBUG_CHECKS
#define RV_DASSERT(e) RV_ASSERT(e)
#else
#define RV_DASSERT(e) ((void)sizeof(e)) /* type-checked, never evaluated */
#endif

#define RV_STATIC_ASSERT(e) _Static_assert(e, #e)
#define RV_MUST_CHECK       __attribute__((warn_unused_result))
#define RV_LIKELY(e)        __builtin_expect(!!(e), 1)
#define RV_UNLIKELY(e)      __builtin_expect(!!(e), 0)
#define RV_CACHELINE        64
#define RV_ALIGNED_CACHE    __attribute__((aligned(RV_CACHELINE)))
#define RV_ARRAY_LEN(a)     (sizeof(a) / sizeof((a)[0]))

#endif /* RV_CORE_ASSERT_H */
