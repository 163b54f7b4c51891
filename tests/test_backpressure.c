/* test_backpressure.c -- the bounds on queued eviction writes: a blocking
 * call that queued one waits for the workers once more than
 * max_queued_writes writes, or more than max_queued_bytes bytes of objects
 * whose codec has `view`, are queued; codecs without view are bounded by the
 * count alone.  The backend's store is held at a gate, so nothing drains
 * until the test says so; an inserter thread is seen blocked when it sleeps
 * inside fbk_insert (it has no other reason to sleep: the worker holds no
 * lock while it waits at the gate, and the test thread calls nothing). */
#include "counting_backend.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { MEM = 2, LEN = 1000, N = 8 };

typedef struct inserter {
    fbk_pool *p;
    fbk_handle *h[N];
    _Atomic int done; /* inserts returned */
    _Atomic pid_t tid;
} inserter;

static void *insert_thread(void *arg)
{
    inserter *in = arg;
    atomic_store(&in->tid, (pid_t)syscall(SYS_gettid));
    for (int i = 0; i < N; i++) {
        fbk_blob *b = tu_blob(LEN, (uint64_t)i);
        cr_assert_not_null(b);
        int rc = fbk_insert(in->p, b, &in->h[i]);
        cr_assert_eq(rc, 0, "fbk_insert: %s (%s)", fbk_err_name(rc), fbk_errmsg());
        atomic_fetch_add(&in->done, 1);
    }
    return NULL;
}

/* The scheduler state of one of this process's threads ('R', 'S', ...). */
static char thread_state(pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    cr_assert(p && p[1] == ' ' && p[2], "unexpected %s: %s", path, buf);
    return p[2];
}

/* With the first eviction write held at the gate: waits until the inserter
 * has returned from `done` inserts and sleeps inside the next one. */
static void expect_blocked_after(fx *f, inserter *in, int done)
{
    counting_gate_wait(f->cb, CB_STORE, 1);
    while (atomic_load(&in->done) < done || !atomic_load(&in->tid))
        sched_yield();
    while (thread_state(atomic_load(&in->tid)) != 'S')
        sched_yield();
    cr_assert_eq(atomic_load(&in->done), done, "the inserter went past the bound");
}

/* A counting store (one worker, the given bounds) and a pool of mem_items
 * MEM for codec c, with the store gate closed. */
static void open_gated(fx *f, const fbk_codec *c, unsigned max_writes, size_t max_bytes)
{
    f->opts.threads = 1;
    f->opts.max_queued_writes = max_writes;
    f->opts.max_queued_bytes = max_bytes;
    int rc = counting_open_flags(&f->s, &f->opts, 0, &f->cb);
    cr_assert_eq(rc, 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&f->p, f->s, c, MEM), 0);
    counting_gate_close(f->cb, CB_STORE);
}

static void check_and_close(fx *f, inserter *in)
{
    for (int i = 0; i < N; i++) {
        int rc = tc_check(in->h[i], LEN, (uint64_t)i);
        cr_assert_eq(rc, 0, "item %d: %s", i, fbk_err_name(rc));
        fbk_handle_release(in->h[i]);
    }
    fx_close(f);
}

/* Runs the inserter against a store bounded by max_writes / max_bytes with
 * every write held at the gate.  blocked_after >= 0: the inserter must sleep
 * inside its next insert once that many returned, and go on when the gate
 * opens; < 0: all N inserts must return while every write is still held. */
static void scenario(const fbk_codec *c, unsigned max_writes, size_t max_bytes, int blocked_after)
{
    fx f = {0};
    fbk_codec copy = c ? *c : tc_codec(&f.ctx, 1);
    open_gated(&f, &copy, max_writes, max_bytes);
    inserter in = {.p = f.p};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, insert_thread, &in), 0);
    if (blocked_after >= 0) {
        expect_blocked_after(&f, &in, blocked_after);
        counting_gate_open(f.cb, CB_STORE);
        pthread_join(th, NULL);
    } else {
        pthread_join(th, NULL); /* returns with the gate still closed */
        counting_gate_wait(f.cb, CB_STORE, 1);
        cr_assert_eq(counting_stored_count(f.cb), 0, "a write got past the closed gate");
        counting_gate_open(f.cb, CB_STORE);
    }
    cr_assert_eq(atomic_load(&in.done), N);
    cr_assert_eq(fbk_store_drain(f.s), 0, "%s", fbk_errmsg());
    check_and_close(&f, &in);
}

/* Inserts 1-2 fill the pool, 3-5 queue three writes of LEN bytes (the first
 * held at the gate), the 6th queues a fourth: 4 * LEN > 3 * LEN, so it
 * waits (the count bound, 1000, is far away). */
Test(backpressure, byte_bound_blocks_the_inserter_until_writes_drain, .timeout = 60)
{
    scenario(&fbk_blob_codec, 1000, 3 * LEN, MEM + 3);
}

/* With the default byte bound (16 MiB) the same inserts all return while
 * every write is still held: only the bound above made the inserter wait. */
Test(backpressure, default_byte_bound_leaves_small_objects_alone, .timeout = 60)
{
    scenario(&fbk_blob_codec, 1000, 0, -1);
}

/* A codec without view (the test codec): its size() is not called to count
 * bytes (it may be costly), so a byte bound of 1 holds nothing back. */
Test(backpressure, codecs_without_view_are_bounded_by_count_only, .timeout = 60)
{
    cr_assert_null(tc_codec(NULL, 1).view);
    scenario(NULL, 1000, 1, -1);
}

/* The count bound still applies to blobs: 3 writes allowed, the 4th waits. */
Test(backpressure, count_bound_blocks_the_inserter, .timeout = 60)
{
    scenario(&fbk_blob_codec, 3, 0, MEM + 3);
}
