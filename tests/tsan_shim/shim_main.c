/* The runner of the Criterion stand-in (see criterion/criterion.h here). */
#include <criterion/criterion.h>

#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
    const char *suite, *name;
    void (*fn)(void);
    struct cr_shim_opts opts;
} shim_test;

static shim_test tests[256];
static int ntests;
static int expect_failed;
static jmp_buf skip_jmp;
static const shim_test *running;

void cr_shim_register(const char *suite, const char *name, void (*fn)(void), struct cr_shim_opts opts)
{
    if (ntests < 256)
        tests[ntests++] = (shim_test){suite, name, fn, opts};
}

void cr_shim_fail(const char *file, int line, const char *expr, int fatal)
{
    fprintf(stderr, "[FAIL] %s::%s: %s:%d: assertion failed: %s\n", running ? running->suite : "?",
            running ? running->name : "?", file, line, expr);
    if (fatal) {
        printf("0 passed, 1 failed\n");
        fflush(NULL);
        _exit(1);
    }
    expect_failed = 1;
}

void cr_shim_skip(void) { longjmp(skip_jmp, 1); }

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "[FAIL] timed out (deadlock?)\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(2);
}

int main(void)
{
    /* volatile: modified between setjmp and longjmp */
    volatile int passed = 0, failed = 0, skipped = 0;
    signal(SIGALRM, on_alarm);
    for (int i = 0; i < ntests; i++) {
        running = &tests[i];
        if (tests[i].opts.disabled)
            continue;
        expect_failed = 0;
        alarm(tests[i].opts.timeout ? tests[i].opts.timeout : 600);
        if (setjmp(skip_jmp) == 0) {
            if (tests[i].opts.init)
                tests[i].opts.init();
            tests[i].fn();
            if (tests[i].opts.fini)
                tests[i].opts.fini();
            alarm(0);
            printf("[%s] %s::%s\n", expect_failed ? "FAIL" : "PASS", tests[i].suite, tests[i].name);
            if (expect_failed)
                failed++;
            else
                passed++;
        } else {
            alarm(0);
            printf("[SKIP] %s::%s\n", tests[i].suite, tests[i].name);
            skipped++;
        }
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
