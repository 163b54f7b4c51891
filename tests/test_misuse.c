/* test_misuse.c -- the misuse fbk.h calls undefined behaviour is stopped with
 * a clear report in debug builds: an unload without a load, an
 * fbk_unload_mut without an fbk_load_mut, a handle used or released after
 * its last release, a task waited for twice.
 *
 * Each case runs in a forked child (store and all), whose stderr the test
 * reads: the child must die of SIGABRT after a "libfbk: misuse in FN: ..."
 * line.  A library built with NDEBUG has no such checks (they cost nothing
 * there): every test then skips.  Where the misuse reads freed memory, an
 * AddressSanitizer build may report it first: its heap-use-after-free
 * report is accepted in place of ours. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Internal (src/error.c): whether this libfbk was built with the checks. */
bool fbk__debug_checks(void);

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD 1
#endif
#endif

typedef struct world {
    fbk_store *s;
    fbk_pool *p;
    fbk_handle *h;
} world;

/* In the child: a mem: store, a pool and one item in memory. */
static world world_open(void)
{
    world w = {0};
    if (fbk_store_open(&w.s, "mem:", NULL) || fbk_pool_create(&w.p, w.s, &fbk_blob_codec, 4)
        || fbk_insert(w.p, fbk_blob_new("abc", 3), &w.h))
        _exit(3);
    return w;
}

/* Runs misuse() in a child with stderr captured; returns what it wrote and
 * sets *status to its wait status.  The child never returns into Criterion:
 * it ends with _exit (0 if the misuse went through unnoticed). */
static char *run_child(void (*misuse)(void), int *status)
{
    static char out[4096];
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_neq(pid, -1);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        misuse();
        _exit(0);
    }
    close(fds[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fds[0], out + n, sizeof out - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(fds[0]);
    cr_assert_eq(waitpid(pid, status, 0), pid);
    return out;
}

/* The child must abort with "libfbk: misuse in FN: ...WHAT...".  With
 * freed_memory, an AddressSanitizer build may stop it first with its own
 * report. */
static void expect_misuse(void (*misuse)(void), const char *fn, const char *what,
                          bool freed_memory)
{
    if (!fbk__debug_checks())
        cr_skip("libfbk was built with NDEBUG: no misuse checks");
    int status = 0;
    const char *err = run_child(misuse, &status);
#ifdef ASAN_BUILD
    /* malloc'd memory, or an item on its pool's free list (poisoned) */
    if (freed_memory && (strstr(err, "heap-use-after-free") || strstr(err, "use-after-poison"))) {
        cr_assert(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0));
        return;
    }
#else
    (void)freed_memory;
#endif
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
              "the child should abort (status 0x%x), stderr: \"%s\"", status, err);
    char head[128];
    snprintf(head, sizeof head, "libfbk: misuse in %s: ", fn);
    cr_assert(strstr(err, head) != NULL, "expected \"%s\" in \"%s\"", head, err);
    cr_assert(strstr(err, what) != NULL, "expected \"%s\" in \"%s\"", what, err);
}

/* ------------------------------------------------------------ pin counts */

static void unload_without_load(void)
{
    world w = world_open();
    fbk_unload(w.h);
}

Test(misuse, unload_without_a_load_aborts)
{
    expect_misuse(unload_without_load, "fbk_unload", "not pinned", false);
}

static void unload_twice(void)
{
    world w = world_open();
    const void *o;
    if (fbk_load(w.h, &o))
        _exit(3);
    fbk_unload(w.h);
    fbk_unload(w.h);
}

Test(misuse, second_unload_of_one_load_aborts)
{
    expect_misuse(unload_twice, "fbk_unload", "not pinned", false);
}

static void unload_mut_without_load_mut(void)
{
    world w = world_open();
    fbk_unload_mut(w.h);
}

Test(misuse, unload_mut_without_a_load_mut_aborts)
{
    expect_misuse(unload_mut_without_load_mut, "fbk_unload_mut", "no fbk_load_mut", false);
}

static void release_while_mut_held(void)
{
    world w = world_open();
    void *o;
    if (fbk_load_mut(w.h, &o))
        _exit(3);
    fbk_handle_release(w.h);
}

Test(misuse, last_release_while_load_mut_holds_the_item_aborts)
{
    expect_misuse(release_while_mut_held, "fbk_handle_release", "while fbk_load_mut held", false);
}

/* ------------------------------------------------ handles after release */

/* A pin keeps the item alive after the last release: no freed memory is
 * touched, the counts tell the misuse. */
static void release_twice_while_pinned(void)
{
    world w = world_open();
    const void *o;
    if (fbk_load(w.h, &o))
        _exit(3);
    fbk_handle_release(w.h);
    fbk_handle_release(w.h);
}

Test(misuse, second_release_of_a_pinned_item_aborts)
{
    expect_misuse(release_twice_while_pinned, "fbk_handle_release",
                  "released more times than it was retained", false);
}

static void load_after_release_while_pinned(void)
{
    world w = world_open();
    const void *o;
    if (fbk_load(w.h, &o))
        _exit(3);
    fbk_handle_release(w.h);
    (void)fbk_load(w.h, &o);
}

Test(misuse, load_after_the_last_release_aborts)
{
    expect_misuse(load_after_release_while_pinned, "fbk_load",
                  "used after its last fbk_handle_release", false);
}

static void unload_after_release_is_fine(void)
{
    world w = world_open();
    const void *o;
    if (fbk_load(w.h, &o))
        _exit(3);
    fbk_handle_release(w.h); /* allowed: the pin keeps the item alive */
    fbk_unload(w.h);
    fbk_pool_release(w.p);
    fbk_store_close(w.s);
    _exit(0);
}

Test(misuse, unload_after_the_last_release_is_not_misuse)
{
    if (!fbk__debug_checks())
        cr_skip("libfbk was built with NDEBUG: no misuse checks");
    int status = 0;
    const char *err = run_child(unload_after_release_is_fine, &status);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status 0x%x, stderr: \"%s\"", status,
              err);
}

/* The item is freed by the first release: the check reads the freed item's
 * magic (valid while the memory is not reused, which nothing does here). */
static void release_twice(void)
{
    world w = world_open();
    fbk_handle_release(w.h);
    fbk_handle_release(w.h);
}

Test(misuse, second_release_of_a_freed_item_aborts)
{
    expect_misuse(release_twice, "fbk_handle_release", "already freed", true);
}

static void retain_after_free(void)
{
    world w = world_open();
    fbk_handle_release(w.h);
    (void)fbk_handle_retain(w.h);
}

Test(misuse, retain_after_the_item_was_freed_aborts)
{
    expect_misuse(retain_after_free, "fbk_handle_retain", "already freed", true);
}

/* ----------------------------------------------------------------- tasks */

static void wait_twice(void)
{
    world w = world_open();
    fbk_task *t;
    if (fbk_prefetch(w.h, &t) || fbk_task_wait(t))
        _exit(3);
    (void)fbk_task_wait(t);
}

Test(misuse, second_wait_of_a_task_aborts)
{
    expect_misuse(wait_twice, "fbk_task_wait", "already", true);
}

static void wait_after_release(void)
{
    world w = world_open();
    fbk_task *t;
    if (fbk_prefetch(w.h, &t))
        _exit(3);
    fbk_task_release(t);
    /* whether the worker has freed t by now or not, this is misuse */
    (void)fbk_task_wait(t);
}

Test(misuse, wait_after_release_of_a_task_aborts)
{
    expect_misuse(wait_after_release, "fbk_task_wait", "already", true);
}
