/* tests/core/test_err.c - tests core/err.c and core/assert.h. */
#include <criterion/criterion.h>
#include <signal.h>
#include <string.h>

#include "core/assert.h"
#include "core/ctx.h"
#include "core/err.h"

TestSuite(err);

Test(err, strerror_names_the_symbol_for_negative_and_positive_codes)
{
    cr_assert(strstr(rv_strerror(-ENOSPC), "ENOSPC") != NULL, "%s", rv_strerror(-ENOSPC));
    cr_assert(strstr(rv_strerror(EBADMSG), "EBADMSG") != NULL);
    cr_assert(strstr(rv_strerror(-EPROTO), "EPROTO") != NULL);
    cr_assert(strstr(rv_strerror(-9999), "9999") != NULL, "unknown codes show the number");
}

Test(err, errf_returns_the_code_and_keeps_the_message)
{
    rv_err_clear();
    cr_assert_str_eq(rv_err_msg(), "");
    int rc = rv_errf(-EBADMSG, "seg %u: crc mismatch at %u", 7u, 4096u);
    cr_assert_eq(rc, -EBADMSG);
    cr_assert(strstr(rv_err_msg(), "seg 7: crc mismatch at 4096") != NULL, "%s", rv_err_msg());
    cr_assert(strstr(rv_err_msg(), "EBADMSG") != NULL, "%s", rv_err_msg());
    rv_err_clear();
    cr_assert_str_eq(rv_err_msg(), "");
}

Test(err, long_messages_are_truncated_not_overflowed)
{
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(rv_errf(-EINVAL, "%s", big), -EINVAL);
    cr_assert_lt(strlen(rv_err_msg()), 512);
}

Test(err, assert_aborts_on_a_false_invariant, .signal = SIGABRT)
{
    rv_ctx_set_shard_id(3);
    volatile int x = 1;
    RV_ASSERT(x == 2);
}

Test(err, assert_passes_on_a_true_invariant)
{
    volatile int x = 2;
    RV_ASSERT(x == 2);
    RV_STATIC_ASSERT(sizeof(int) >= 4);
}
