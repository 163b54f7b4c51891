/* test_map_sharing.c -- four processes put, get and remove names of one map
 * of one store directory at once, for a bounded number of operations each;
 * one of them is SIGKILLed half-way.  Checked against a model: every
 * process changes only its own names (so the last acknowledged change of
 * each name is known) and reads everybody's, and every read must give a
 * complete object of the right name; one name all of them put ends with one
 * of their puts.  After they are gone, every name is in the state of its
 * last acknowledged change (or of the change the killed process had in
 * flight). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PROCS 4
#define NAMES 12 /* per process */
#define OPS 120  /* per process */
#define VICTIM 2 /* killed after half its operations */

typedef struct msg {
    int proc, name; /* name -1: the shared name */
    int intent;     /* 1: about to change; 0: acknowledged */
    long version;   /* < 0: removed at -version-1 */
} msg;

static uint64_t seed_of(int proc, int name, long v)
{
    return (uint64_t)proc * 1000003u + (uint64_t)(name + 1) * 7919u + (uint64_t)v;
}

static size_t len_of(long v) { return (size_t)(16 + (v * 37) % 5000); }

/* (proc, name, v) -> bytes: a header naming them, then derived bytes. */
static fbk_blob *make_obj(int proc, int name, long v)
{
    size_t len = len_of(v);
    fbk_blob *b = fbk_blob_new(NULL, len);
    if (!b)
        return NULL;
    int hdr[2] = {proc, name};
    memcpy(b->data, hdr, 8);
    memcpy(b->data + 8, &v, 8);
    tu_fill(b->data + 16, len - 16, seed_of(proc, name, v));
    return b;
}

/* 1 if b is a complete object; its writer and version. */
static int parse_obj(const fbk_blob *b, int *proc, int *name, long *v)
{
    if (b->len < 16)
        return 0;
    int hdr[2];
    memcpy(hdr, b->data, 8);
    memcpy(v, b->data + 8, 8);
    *proc = hdr[0];
    *name = hdr[1];
    if (*v <= 0 || b->len != len_of(*v))
        return 0;
    unsigned char *want = malloc(b->len);
    tu_fill(want, b->len - 16, seed_of(*proc, *name, *v));
    int ok = memcmp(want, b->data + 16, b->len - 16) == 0;
    free(want);
    return ok;
}

static int name_of(char *out, size_t cap, int proc, int name)
{
    return name < 0 ? snprintf(out, cap, "shared") : snprintf(out, cap, "p%d-n%d", proc, name);
}

static void say(int fd, msg m)
{
    if (write(fd, &m, sizeof m) != (ssize_t)sizeof m)
        _exit(3);
}

/* A child: OPS random operations, reporting intents and acks. */
static void child(const char *uri, int proc, int fd, int go)
{
    char c;
    if (read(go, &c, 1) != 1) /* all four start together */
        _exit(7);
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    if (fbk_store_open(&s, uri, NULL) || fbk_pool_create(&p, s, &fbk_blob_codec, 8) ||
        fbk_location_open(s, "shared-map", &loc) || fbk_map_open(p, loc, NULL, &m)) {
        fprintf(stderr, "child %d: %s\n", proc, fbk_errmsg());
        _exit(2);
    }
    srand((unsigned)(proc * 7 + 1));
    /* the victim asks to be killed half-way, then goes on working until
     * the kill lands (never exits by itself) */
    for (long v = 1; v <= OPS || proc == VICTIM; v++) {
        if (proc == VICTIM && v == OPS / 2)
            say(fd, (msg){proc, -2, 0, 0}); /* "kill me now" */
        int what = rand() % 10, name = rand() % NAMES;
        char nm[32];
        if (what < 3) { /* read anybody's name */
            int other = rand() % PROCS;
            int on = rand() % (NAMES + 1) - 1;
            int len = name_of(nm, sizeof nm, other, on);
            fbk_handle *h;
            int rc = fbk_map_get(m, nm, (size_t)len, &h);
            if (rc == FBK_ENOTFOUND)
                continue;
            const void *obj;
            int lrc = rc ? rc : fbk_load(h, &obj);
            if (lrc == FBK_ENOTFOUND && !rc) {
                /* the handle is registered, not loaded: its writer rebound
                 * the name and removed the object (bound by no name then)
                 * between this get and the load -- a read that lost the
                 * race, not a wrong object */
                fbk_handle_release(h);
                continue;
            }
            if (lrc) {
                fprintf(stderr, "child %d: get %s: %s\n", proc, nm, fbk_errmsg());
                _exit(4);
            }
            int wp, wn;
            long wv;
            if (!parse_obj(obj, &wp, &wn, &wv) || wn != on || (on >= 0 && wp != other)) {
                fprintf(stderr, "child %d: %s holds a wrong or torn object\n", proc, nm);
                _exit(5);
            }
            fbk_unload(h);
            fbk_handle_release(h);
            continue;
        }
        if (what == 3)
            name = -1; /* the name everybody puts */
        int len = name_of(nm, sizeof nm, proc, name);
        int remove = what == 4 && name >= 0;
        say(fd, (msg){proc, name, 1, remove ? -v - 1 : v});
        int rc;
        if (remove) {
            rc = fbk_map_remove(m, nm, (size_t)len);
            if (rc == FBK_ENOTFOUND)
                rc = 0;
        } else {
            fbk_handle *h;
            fbk_blob *b = make_obj(proc, name, v);
            rc = !b || fbk_insert(p, b, &h);
            if (!rc) {
                rc = fbk_map_put(m, nm, (size_t)len, h);
                fbk_handle_release(h);
            }
        }
        if (rc) {
            fprintf(stderr, "child %d: change of %s: %s\n", proc, nm, fbk_errmsg());
            _exit(6);
        }
        say(fd, (msg){proc, name, 0, remove ? -v - 1 : v});
    }
    if (fbk_map_close(m))
        _exit(8);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    _exit(0);
}

static void run(const char *scheme)
{
    char uri[512];
    snprintf(uri, sizeof uri, "%s:%s", scheme, tu_fresh_dir(scheme));
    int pfd[2], go[2];
    cr_assert_eq(pipe(pfd), 0);
    cr_assert_eq(pipe(go), 0);
    pid_t pids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        pids[i] = fork();
        cr_assert_geq(pids[i], 0);
        if (pids[i] == 0) {
            close(pfd[0]);
            close(go[1]);
            child(uri, i, pfd[1], go[0]);
        }
    }
    close(pfd[1]);
    close(go[0]);
    char start[PROCS] = {0};
    cr_assert_eq(write(go[1], start, PROCS), PROCS);
    close(go[1]);

    long acked[PROCS][NAMES + 1] = {{0}};  /* [.][0] is the shared name */
    long begun[PROCS][NAMES + 1] = {{0}};  /* last change begun, unacknowledged */
    long shared_acked[PROCS] = {0};
    msg mg;
    for (;;) {
        ssize_t r = read(pfd[0], &mg, sizeof mg);
        if (r == 0)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        cr_assert_eq(r, (ssize_t)sizeof mg);
        if (mg.name == -2) {
            kill(pids[mg.proc], SIGKILL);
            continue;
        }
        if (mg.intent) {
            begun[mg.proc][mg.name + 1] = mg.version;
            continue;
        }
        acked[mg.proc][mg.name + 1] = mg.version;
        begun[mg.proc][mg.name + 1] = 0;
        if (mg.name < 0)
            shared_acked[mg.proc] = mg.version;
    }
    close(pfd[0]);
    for (int i = 0; i < PROCS; i++) {
        int st;
        cr_assert_eq(waitpid(pids[i], &st, 0), pids[i]);
        if (i == VICTIM)
            cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "victim status %d", st);
        else
            cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d failed (status %d)", i,
                      st);
    }

    /* the survivors are gone too: one more open, which also reclaims the
     * victim's spill area */
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 8), 0);
    cr_assert_eq(fbk_location_open(s, "shared-map", &loc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, loc, NULL, &m), 0, "%s", fbk_errmsg());
    for (int i = 0; i < PROCS; i++) {
        for (int n = 0; n < NAMES; n++) {
            char nm[32];
            int len = name_of(nm, sizeof nm, i, n);
            long last = acked[i][n + 1], inflight = begun[i][n + 1];
            fbk_handle *h;
            int rc = fbk_map_get(m, nm, (size_t)len, &h);
            if (rc == FBK_ENOTFOUND) {
                cr_assert(last <= 0 || inflight < 0, "%s: acknowledged put v%ld lost", nm, last);
                continue;
            }
            cr_assert_eq(rc, 0, "%s: %s", nm, fbk_errmsg());
            const void *obj;
            cr_assert_eq(fbk_load(h, &obj), 0, "%s: %s", nm, fbk_errmsg());
            int wp, wn;
            long wv;
            cr_assert(parse_obj(obj, &wp, &wn, &wv) && wp == i && wn == n, "%s: wrong object", nm);
            cr_assert(wv == last || wv == inflight,
                      "%s holds v%ld; acknowledged v%ld, in flight v%ld", nm, wv, last, inflight);
            fbk_unload(h);
            fbk_handle_release(h);
        }
    }
    fbk_handle *h;
    int rc = fbk_map_get(m, "shared", 6, &h);
    if (rc == 0) {
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s", fbk_errmsg());
        int wp, wn;
        long wv;
        cr_assert(parse_obj(obj, &wp, &wn, &wv) && wn == -1);
        cr_assert(wv == shared_acked[wp] || wv == begun[wp][0],
                  "shared holds process %d's v%ld, which it never put last", wp, wv);
        fbk_unload(h);
        fbk_handle_release(h);
    } else {
        cr_assert_eq(rc, FBK_ENOTFOUND);
        for (int i = 0; i < PROCS; i++)
            cr_assert_eq(shared_acked[i], 0, "an acknowledged put of shared was lost");
    }
    cr_assert_eq(fbk_map_close(m), 0);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

Test(map_sharing, lmdb_four_processes_one_map) { run("lmdb"); }

Test(map_sharing, file_four_processes_one_map) { run("file"); }
