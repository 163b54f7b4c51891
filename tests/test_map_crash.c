/* test_map_crash.c -- a child puts and removes names and is SIGKILLed at a
 * random point; after reopening, every acknowledged put is there byte-exact
 * (or a later one that was in flight), no acknowledged remove came back, and
 * no name resolves to a missing or corrupt object.  30 rounds per backend,
 * half of them with FBK_MAP_NOSYNC (acknowledged by fbk_map_sync).  The
 * *_bytes campaign mixes fbk_map_put_bytes with fbk_map_put (so a batch
 * holds values from memory and spill copies together) and reads back with
 * fbk_map_get_bytes. */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define NAMES 24
#define ROUNDS 30

/* An acknowledgement the child sends: name index and the version of its
 * last acknowledged change (negative: removed at version -v-1). */
typedef struct ack {
    int name;
    int intent; /* 1: about to make this change; 0: acknowledged */
    long version;
} ack;

static size_t obj_len(int name, long v) { return (size_t)(8 + (name * 977 + v * 131) % 3000); }

static uint64_t obj_seed(int name, long v) { return (uint64_t)name * 1000003u + (uint64_t)v; }

/* The object of (name, v): its version in the first 8 bytes, then bytes
 * derived from both. */
static fbk_blob *make_obj(int name, long v)
{
    size_t len = obj_len(name, v);
    fbk_blob *b = fbk_blob_new(NULL, len);
    if (!b)
        return NULL;
    memcpy(b->data, &v, 8);
    tu_fill(b->data + 8, len - 8, obj_seed(name, v));
    return b;
}

static int check_obj(const fbk_blob *b, int name, long *v)
{
    if (b->len < 8)
        return 0;
    memcpy(v, b->data, 8);
    if (*v < 0 || b->len != obj_len(name, *v))
        return 0;
    unsigned char *want = malloc(b->len - 8 + 1);
    tu_fill(want, b->len - 8, obj_seed(name, *v));
    int ok = memcmp(want, b->data + 8, b->len - 8) == 0;
    free(want);
    return ok;
}

static void send_ack(int fd, int name, long version, int intent)
{
    ack a = {name, intent, version};
    if (write(fd, &a, sizeof a) != (ssize_t)sizeof a)
        _exit(3);
}

/* The child: changes names until it is killed.  Never returns. */
static bool use_bytes; /* the *_bytes campaigns */

static void child(const char *uri, int nosync, int fd, unsigned seed, long base)
{
    tu_mapenv e;
    fbk_map_options o = {.flags = nosync ? FBK_MAP_NOSYNC : 0};
    if (tu_map_open(&e, uri, "crash", 8, &o, 0)) {
        fprintf(stderr, "child: %s\n", fbk_errmsg());
        _exit(2);
    }
    fbk_map *m = e.m;
    fbk_pool *p = e.p;
    srand(seed);
    ack pending[64];
    int npending = 0;
    for (long v = base;; v++) {
        int name = rand() % NAMES;
        char nm[16];
        int len = snprintf(nm, sizeof nm, "name-%d", name);
        long version = v;
        int remove = rand() % 6 == 0;
        send_ack(fd, name, remove ? -v - 1 : v, 1);
        if (remove) {
            int rc = fbk_map_remove(m, nm, (size_t)len);
            if (rc == FBK_ENOTFOUND)
                continue;
            if (rc)
                _exit(4);
            version = -v - 1;
        } else if (use_bytes && rand() % 3 != 0) {
            fbk_blob *b = make_obj(name, v);
            if (!b || fbk_map_put_bytes(m, nm, (size_t)len, b->data, b->len))
                _exit(5);
            fbk_blob_free(b);
        } else {
            fbk_handle *h;
            fbk_blob *b = make_obj(name, v);
            if (!b || fbk_insert(p, b, &h) || fbk_map_put(m, nm, (size_t)len, h))
                _exit(5);
            fbk_handle_release(h);
        }
        if (!nosync) {
            send_ack(fd, name, version, 0);
            continue;
        }
        pending[npending++] = (ack){name, 0, version};
        if (npending == 64 || rand() % 5 == 0) {
            if (fbk_map_sync(m))
                _exit(6);
            for (int i = 0; i < npending; i++)
                send_ack(fd, pending[i].name, pending[i].version, 0);
            npending = 0;
        }
    }
}

/* fbk_map_get_bytes into a new blob */
typedef struct bytes_out {
    fbk_blob *b;
} bytes_out;

static void *bytes_buf(size_t size, void *arg)
{
    bytes_out *o = arg;
    fbk_blob_free(o->b);
    o->b = fbk_blob_new(NULL, size);
    return o->b ? o->b->data : NULL;
}

static void one_round(const char *uri, int nosync, unsigned seed, long base)
{
    int pfd[2];
    cr_assert_eq(pipe(pfd), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        child(uri, nosync, pfd[1], seed, base);
    }
    close(pfd[1]);
    /* last acknowledged change of each name (0: none yet), and whether a
     * remove of it was begun after that (in flight: may or may not land) */
    static long acked[NAMES];
    static long remove_begun[NAMES]; /* version of the last remove begun (any round) */
    int kill_after = 3 + (int)(seed % 40), got = 0;
    ack a;
    bool killed = false;
    for (;;) {
        ssize_t r = read(pfd[0], &a, sizeof a);
        if (r == 0)
            break; /* the child is gone */
        if (r < 0 && errno == EINTR)
            continue;
        cr_assert_eq(r, (ssize_t)sizeof a);
        if (a.intent) {
            if (a.version < 0)
                remove_begun[a.name] = -a.version - 1;
            continue;
        }
        acked[a.name] = a.version;
        if (++got == kill_after && !killed) {
            kill(pid, SIGKILL);
            killed = true;
        }
    }
    close(pfd[0]);
    int status;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
              "the child ended by itself (status %d) after %d acks", status, got);

    tu_mapenv e;
    cr_assert_eq(tu_map_open(&e, uri, "crash", 8, NULL, 0), 0, "%s", fbk_errmsg());
    fbk_map *m = e.m;
    for (int n = 0; n < NAMES; n++) {
        char nm[16];
        int len = snprintf(nm, sizeof nm, "name-%d", n);
        fbk_handle *h;
        int rc = fbk_map_get(m, nm, (size_t)len, &h);
        long last = acked[n];
        if (rc == FBK_ENOTFOUND) {
            /* absent is right if its last acknowledged change was a remove
             * (or there was none), or a later remove was in flight */
            cr_assert(last <= 0 || remove_begun[n] > last,
                      "round %u: acknowledged put of %s (v%ld) lost (%s; contains %d)", seed, nm,
                      last, fbk_errmsg(), fbk_map_contains(m, nm, (size_t)len));
            continue;
        }
        cr_assert_eq(rc, 0, "round %u: %s: %s", seed, nm, fbk_errmsg());
        if (use_bytes) { /* the same object through the byte-level read */
            bytes_out bo = {0};
            rc = fbk_map_get_bytes(m, nm, (size_t)len, bytes_buf, &bo);
            cr_assert_eq(rc, 0, "round %u: %s: fbk_map_get_bytes: %s", seed, nm, fbk_errmsg());
            long bv;
            cr_assert(check_obj(bo.b, n, &bv), "round %u: %s holds wrong bytes", seed, nm);
            fbk_blob_free(bo.b);
        }
        const void *obj;
        rc = fbk_load(h, &obj);
        cr_assert_eq(rc, 0, "round %u: %s resolves to a missing or corrupt object: %s", seed, nm,
                     fbk_errmsg());
        long v;
        cr_assert(check_obj(obj, n, &v), "round %u: %s holds wrong bytes", seed, nm);
        long floor = last > 0 ? last : last < 0 ? -last - 1 : 0;
        cr_assert_geq(v, floor, "round %u: %s went back to v%ld (acknowledged v%ld)", seed, nm, v,
                      last);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(tu_map_close(&e), 0);
}

static void campaign(const char *scheme)
{
    char uri[512];
    char dir[64];
    snprintf(dir, sizeof dir, "%s%s", scheme, use_bytes ? "-bytes" : "");
    snprintf(uri, sizeof uri, "%s:%s", scheme, tu_fresh_dir(dir));
    for (unsigned r = 0; r < ROUNDS; r++)
        one_round(uri, (int)(r & 1), 1000u * r + 17u, 1 + 1000000L * r); /* versions grow across rounds */
}

Test(map_crash, lmdb_acknowledged_names_survive_sigkill) { campaign("lmdb"); }

Test(map_crash, file_acknowledged_names_survive_sigkill) { campaign("file"); }

Test(map_crash, lmdb_put_bytes_acknowledged_names_survive_sigkill)
{
    use_bytes = true;
    campaign("lmdb");
}

Test(map_crash, file_put_bytes_acknowledged_names_survive_sigkill)
{
    use_bytes = true;
    campaign("file");
}
