/* A minimal stand-in for <criterion/criterion.h>, used ONLY for the
 * ThreadSanitizer build of the concurrency tests: Criterion's runner cannot
 * start under TSan (its inheritable arena mapping collides with TSan's
 * shadow memory; upstream Snaipe/Criterion issue #274, open).  It supports
 * the subset our tests use: Test(suite, name, .timeout = N), cr_assert*,
 * cr_expect_eq, cr_skip.  Tests run one after another in one process; the
 * closing line is "N passed, N failed". */
#ifndef FBK_TSAN_SHIM_CRITERION_H
#define FBK_TSAN_SHIM_CRITERION_H

#include <stdio.h>
#include <string.h>

struct cr_shim_opts {
    int dummy;
    unsigned timeout;
    void (*init)(void);
    void (*fini)(void);
    int disabled;
};

void cr_shim_register(const char *suite, const char *name, void (*fn)(void), struct cr_shim_opts opts);
void cr_shim_fail(const char *file, int line, const char *expr, int fatal);
void cr_shim_skip(void);

#define Test(suite, name, ...)                                                                     \
    static void suite##_##name##_impl(void);                                                       \
    __attribute__((constructor)) static void suite##_##name##_reg(void)                            \
    {                                                                                              \
        cr_shim_register(#suite, #name, suite##_##name##_impl,                                     \
                         (struct cr_shim_opts){.dummy = 0, __VA_ARGS__});                          \
    }                                                                                              \
    static void suite##_##name##_impl(void)

#define CR_SHIM_CHECK(cond, text, fatal)                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_shim_fail(__FILE__, __LINE__, text, fatal);                                         \
    } while (0)

#define cr_assert(cond, ...) CR_SHIM_CHECK((cond), #cond, 1)
#define cr_assert_not(cond, ...) CR_SHIM_CHECK(!(cond), "!(" #cond ")", 1)
#define cr_assert_eq(a, b, ...) CR_SHIM_CHECK((a) == (b), #a " == " #b, 1)
#define cr_assert_neq(a, b, ...) CR_SHIM_CHECK((a) != (b), #a " != " #b, 1)
#define cr_assert_lt(a, b, ...) CR_SHIM_CHECK((a) < (b), #a " < " #b, 1)
#define cr_assert_leq(a, b, ...) CR_SHIM_CHECK((a) <= (b), #a " <= " #b, 1)
#define cr_assert_gt(a, b, ...) CR_SHIM_CHECK((a) > (b), #a " > " #b, 1)
#define cr_assert_geq(a, b, ...) CR_SHIM_CHECK((a) >= (b), #a " >= " #b, 1)
#define cr_assert_null(p, ...) CR_SHIM_CHECK((p) == NULL, #p " == NULL", 1)
#define cr_assert_not_null(p, ...) CR_SHIM_CHECK((p) != NULL, #p " != NULL", 1)
#define cr_assert_str_eq(a, b, ...) CR_SHIM_CHECK(strcmp((a), (b)) == 0, #a " eq " #b, 1)
#define cr_assert_str_neq(a, b, ...) CR_SHIM_CHECK(strcmp((a), (b)) != 0, #a " neq " #b, 1)
#define cr_expect_eq(a, b, ...) CR_SHIM_CHECK((a) == (b), #a " == " #b, 0)
#define cr_skip(...) cr_shim_skip()
#define cr_log_info(...) (fprintf(stderr, __VA_ARGS__), fputc('\n', stderr))
#define cr_log_warn(...) cr_log_info(__VA_ARGS__)

#endif
