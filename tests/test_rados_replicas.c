/* test_rados_replicas.c -- the rados: backend shared by two processes, and
 * saves on a 3-replica pool that lose an OSD (docs/rados-backend.md, "Losing
 * an OSD"), against the throw-away cluster of tests/cluster/ceph-up.sh.
 *
 * $FBK_RADOS_CONF names the cluster's ceph.conf (tests/CMakeLists.txt starts
 * the cluster, with 3 OSDs, as a CTest fixture); every test skips when it is
 * missing, and the OSD test also when the pool "fbk3" or the OSDs' PID files
 * are (a cluster not made by ceph-up.sh DIR 3).  $FBK_CEPH_TOOLS names
 * tests/cluster/ (ceph-osd-restart.sh). */
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <rados/librados.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void ns_for(char *out, size_t cap, const char *what)
{
    static int counter;
    snprintf(out, cap, "%s-%d-%ld-%d", what, (int)getpid(), (long)time(NULL), counter++);
}

/* ------------------------------------------------- two processes, one pool */

#define NOBJ 3

typedef struct msg {
    fbk_key keys[NOBJ]; /* persisted and synced by the sender */
    int status;         /* 0: the sender's steps succeeded */
} msg;

/* All len bytes through read() or write() (a pipe between the processes). */
static int move_all(int fd, void *buf, size_t len, int writing)
{
    char *p = buf;
    while (len) {
        ssize_t n = writing ? write(fd, p, len) : read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t len) { return move_all(fd, (void *)buf, len, 1); }
static int read_all(int fd, void *buf, size_t len) { return move_all(fd, buf, len, 0); }

/* One process's store on the pool "fbk": everything returns 0 or a message in
 * err (the child cannot use Criterion's assertions). */
typedef struct proc {
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *m;
    char err[2048];
} proc;

#define FAIL(x, ...) (snprintf((x)->err, sizeof (x)->err, __VA_ARGS__), -1)

static int proc_open(proc *x, const char *dir, const char *ns)
{
    memset(x, 0, sizeof *x);
    char uri[1024];
    snprintf(uri, sizeof uri, "rados:%s?pool=fbk&conf=%s", dir, tu_rados_conf());
    if (fbk_store_open(&x->s, uri, NULL) != 0)
        return FAIL(x, "open %s: %s", uri, fbk_errmsg());
    if (fbk_pool_create(&x->p, x->s, &fbk_blob_codec, 4) != 0)
        return FAIL(x, "pool: %s", fbk_errmsg());
    if (fbk_location_open(x->s, ns, &x->loc) != 0)
        return FAIL(x, "location %s: %s", ns, fbk_errmsg());
    if (fbk_map_open(x->p, x->loc, NULL, &x->m) != 0)
        return FAIL(x, "map: %s", fbk_errmsg());
    return 0;
}

static void proc_close(proc *x)
{
    if (x->m)
        fbk_map_close(x->m);
    if (x->loc)
        fbk_location_close(x->loc);
    if (x->p)
        fbk_pool_release(x->p);
    if (x->s)
        fbk_store_close(x->s);
}

/* persists NOBJ objects (seeds base..base+NOBJ-1), binds "who/i" to each,
 * syncs location and map; their keys into out */
static int proc_put(proc *x, const char *who, uint64_t base, msg *out)
{
    for (int i = 0; i < NOBJ; i++) {
        fbk_handle *h;
        if (fbk_insert(x->p, tu_blob(10000 + (size_t)i * 4099, base + (uint64_t)i), &h) != 0)
            return FAIL(x, "insert: %s", fbk_errmsg());
        if (fbk_persist(h, x->loc) != 0)
            return FAIL(x, "persist: %s", fbk_errmsg());
        char name[64];
        int n = snprintf(name, sizeof name, "%s/%d", who, i);
        if (fbk_map_put(x->m, name, (size_t)n, h) != 0)
            return FAIL(x, "map put %s: %s", name, fbk_errmsg());
        fbk_handle_key(h, &out->keys[i]);
        fbk_handle_release(h);
    }
    if (fbk_location_sync(x->loc) != 0)
        return FAIL(x, "sync: %s", fbk_errmsg());
    if (fbk_map_sync(x->m) != 0)
        return FAIL(x, "map sync: %s", fbk_errmsg());
    return 0;
}

static int check_loaded(proc *x, fbk_handle *h, size_t len, uint64_t seed, const char *what)
{
    const void *obj;
    if (fbk_load(h, &obj) != 0)
        return FAIL(x, "load %s: %s", what, fbk_errmsg());
    int ok = tu_blob_check(obj, len, seed);
    fbk_unload(h);
    return ok ? 0 : FAIL(x, "%s came back with other bytes", what);
}

/* registers and loads the other's keys, gets and loads its names */
static int proc_get(proc *x, const char *who, uint64_t base, const msg *in)
{
    if (fbk_location_refresh(x->loc) != 0)
        return FAIL(x, "refresh: %s", fbk_errmsg());
    for (int i = 0; i < NOBJ; i++) {
        size_t len = 10000 + (size_t)i * 4099;
        uint64_t seed = base + (uint64_t)i;
        if (!fbk_location_contains(x->loc, &in->keys[i]))
            return FAIL(x, "%s's object %d is not in the refreshed location", who, i);
        fbk_handle *h;
        if (fbk_register(x->p, x->loc, &in->keys[i], &h) != 0)
            return FAIL(x, "register %s's object %d: %s", who, i, fbk_errmsg());
        int rc = check_loaded(x, h, len, seed, "a registered object");
        fbk_handle_release(h);
        if (rc)
            return rc;
        char name[64];
        int n = snprintf(name, sizeof name, "%s/%d", who, i);
        if (fbk_map_get(x->m, name, (size_t)n, &h) != 0)
            return FAIL(x, "map get %s: %s", name, fbk_errmsg());
        fbk_key k;
        fbk_handle_key(h, &k);
        rc = memcmp(&k, &in->keys[i], sizeof k) ? FAIL(x, "%s names another key", name)
                                                : check_loaded(x, h, len, seed, name);
        fbk_handle_release(h);
        if (rc)
            return rc;
    }
    return 0;
}

/* the child: puts first, then gets the parent's; exit status 0 = all fine */
static void child(const char *dir, const char *ns, int rfd, int wfd)
{
    proc x;
    msg mine = {0}, theirs;
    mine.status = proc_open(&x, dir, ns);
    if (mine.status == 0)
        mine.status = proc_put(&x, "child", 100, &mine);
    if (mine.status)
        fprintf(stderr, "child: %s\n", x.err);
    if (write_all(wfd, &mine, sizeof mine) != 0 || mine.status != 0)
        _exit(1);
    if (read_all(rfd, &theirs, sizeof theirs) != 0 || theirs.status != 0)
        _exit(2); /* the parent failed first */
    if (proc_get(&x, "parent", 200, &theirs) != 0) {
        fprintf(stderr, "child: %s\n", x.err);
        _exit(3);
    }
    proc_close(&x);
    _exit(0);
}

Test(rados_procs, two_processes_share_a_location_and_a_map)
{
    TU_NEED_RADOS();
    char ns[128];
    ns_for(ns, sizeof ns, "procs");
    char cdir[2048], pdir[2048];
    snprintf(cdir, sizeof cdir, "%s", tu_fresh_dir("rados-procs-child"));
    snprintf(pdir, sizeof pdir, "%s", tu_fresh_dir("rados-procs-parent"));
    int c2p[2], p2c[2];
    cr_assert_eq(pipe(c2p), 0);
    cr_assert_eq(pipe(p2c), 0);
    /* before this process opens any store (librados's threads do not
     * survive a fork) */
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        close(c2p[0]);
        close(p2c[1]);
        child(cdir, ns, p2c[0], c2p[1]);
    }
    close(c2p[1]);
    close(p2c[0]);

    /* the child's persisted and synced objects and names, here */
    msg theirs, mine = {0};
    int got = read_all(c2p[0], &theirs, sizeof theirs);
    proc x;
    int rc = got == 0 && theirs.status == 0 ? proc_open(&x, pdir, ns) : -1;
    if (rc == 0)
        rc = proc_get(&x, "child", 100, &theirs);
    /* and ours, there */
    if (rc == 0)
        rc = proc_put(&x, "parent", 200, &mine);
    mine.status = rc;
    int sent = write_all(p2c[1], &mine, sizeof mine);
    close(p2c[1]);
    close(c2p[0]);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert_eq(got, 0, "the child died before its message");
    cr_assert_eq(theirs.status, 0, "the child failed to persist (see its stderr)");
    cr_assert_eq(rc, 0, "parent: %s", x.err);
    cr_assert_eq(sent, 0);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "the child failed to get the parent's objects (status %d, see its stderr)", st);
    proc_close(&x);
}

/* ------------------------------------------- an OSD killed during saves */

#define POOL3 "fbk3"
#define VICTIM 1   /* osd.1: not osd.0, the only OSD of pool "fbk" */
#define ROUNDS 24  /* saves at least */
#define PER_ROUND 4
#define KILL_AFTER 4 /* acknowledged saves before the kill */
#define AFTER_KILL 10 /* saves started after the kill, at least */
#define MAXOBJ ((ROUNDS + AFTER_KILL) * PER_ROUND)

static int cluster_dir(char *out, size_t cap)
{
    char c[1024];
    snprintf(c, sizeof c, "%s", tu_rados_conf());
    snprintf(out, cap, "%s", dirname(c));
    return 0;
}

static pid_t osd_pid(int n)
{
    char d[1024], p[1200];
    cluster_dir(d, sizeof d);
    if (n == 0)
        snprintf(p, sizeof p, "%s/run/osd.pid.up", d);
    else
        snprintf(p, sizeof p, "%s/run/osd.%d.pid.up", d, n);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    long v = 0;
    int ok = fscanf(f, "%ld", &v) == 1;
    fclose(f);
    return ok && v > 0 ? (pid_t)v : -1;
}

typedef struct killer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int acked;      /* saves acknowledged so far (fbk_save returned 0) */
    int killed;     /* 1 once the OSD is killed */
    int kill_rc;    /* kill()'s errno, or 0 */
    int down_rc;    /* the monitor's answer to "osd down" */
    pid_t victim;
} killer;

/* marks osd.N down at once (its peers would report it within a second or
 * so anyway: a killed OSD refuses their connections) */
static int mark_down(int n)
{
    rados_t cl;
    int rc = rados_create(&cl, NULL);
    if (rc)
        return rc;
    if ((rc = rados_conf_read_file(cl, tu_rados_conf())) == 0 && (rc = rados_connect(cl)) == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "{\"prefix\": \"osd down\", \"ids\": [\"%d\"]}", n);
        const char *cmds[1] = {cmd};
        char *outbuf = NULL, *outs = NULL;
        size_t outlen = 0, outslen = 0;
        rc = rados_mon_command(cl, cmds, 1, "", 0, &outbuf, &outlen, &outs, &outslen);
        rados_buffer_free(outbuf);
        rados_buffer_free(outs);
    }
    rados_shutdown(cl);
    return rc;
}

static void *kill_thread(void *arg)
{
    killer *k = arg;
    pthread_mutex_lock(&k->mu);
    while (k->acked < KILL_AFTER)
        pthread_cond_wait(&k->cv, &k->mu);
    pthread_mutex_unlock(&k->mu);
    /* while the saver goes on with its next save */
    int krc = kill(k->victim, SIGKILL) == 0 ? 0 : errno;
    pthread_mutex_lock(&k->mu);
    k->kill_rc = krc;
    k->killed = 1;
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
    int drc = mark_down(VICTIM);
    pthread_mutex_lock(&k->mu);
    k->down_rc = drc;
    pthread_mutex_unlock(&k->mu);
    return NULL;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static size_t obj_len(int i)
{
    return 1000 + (size_t)(i % 7) * 9001; /* 1000 .. 55006 bytes */
}

/* every acknowledged object and name from a fresh store on pool fbk3 */
static void verify_all(const char *ns, const char *mns, const fbk_key *keys, int nkeys, int names,
                       const char *when)
{
    char uri[1024];
    snprintf(uri, sizeof uri, "rados:%s?pool=" POOL3 "&conf=%s", tu_fresh_dir("rados-osd-check"),
             tu_rados_conf());
    fbk_store *s;
    fbk_pool *p;
    fbk_location *loc, *mloc;
    fbk_map *m;
    cr_assert_eq(fbk_store_open(&s, uri, NULL), 0, "%s: %s", when, fbk_errmsg());
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, ns, &loc), 0, "%s: %s", when, fbk_errmsg());
    cr_assert_geq(fbk_location_count(loc), (size_t)nkeys, "%s: %zu keys in the location, %d saved",
                 when, fbk_location_count(loc), nkeys);
    for (int i = 0; i < nkeys; i++) {
        fbk_handle *h;
        cr_assert_eq(fbk_register(p, loc, &keys[i], &h), 0, "%s: object %d of %d: %s", when, i,
                     nkeys, fbk_errmsg());
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s: object %d: %s", when, i, fbk_errmsg());
        cr_assert(tu_blob_check(obj, obj_len(i), 5000 + (uint64_t)i),
                  "%s: object %d came back with other bytes", when, i);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_location_open(s, mns, &mloc), 0, "%s: %s", when, fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, mloc, NULL, &m), 0, "%s: %s", when, fbk_errmsg());
    cr_assert_eq(fbk_map_count(m), (size_t)names, "%s: %zu names, %d bound", when,
                 fbk_map_count(m), names);
    for (int r = 0; r < names; r++) {
        char name[32];
        int n = snprintf(name, sizeof name, "save/%d", r);
        fbk_handle *h;
        cr_assert_eq(fbk_map_get(m, name, (size_t)n, &h), 0, "%s: %s: %s", when, name,
                     fbk_errmsg());
        fbk_key k;
        fbk_handle_key(h, &k);
        /* save r's name is bound to its first object */
        cr_assert(memcmp(&k, &keys[r * PER_ROUND], sizeof k) == 0, "%s: %s names another key",
                  when, name);
        const void *obj;
        cr_assert_eq(fbk_load(h, &obj), 0, "%s: %s: %s", when, name, fbk_errmsg());
        cr_assert(tu_blob_check(obj, obj_len(r * PER_ROUND), 5000 + (uint64_t)(r * PER_ROUND)),
                  "%s: %s came back with other bytes", when, name);
        fbk_unload(h);
        fbk_handle_release(h);
    }
    cr_assert_eq(fbk_map_close(m), 0, "%s: %s", when, fbk_errmsg());
    fbk_location_close(mloc);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

static int restart_osd(int n)
{
    const char *tools = getenv("FBK_CEPH_TOOLS");
    if (!tools)
        return -1;
    char d[1024], cmd[4096];
    cluster_dir(d, sizeof d);
    snprintf(cmd, sizeof cmd, "'%s/ceph-osd-restart.sh' '%s' %d", tools, d, n);
    return system(cmd);
}

/* whatever happened in the test: osd.VICTIM runs again for the suites after
 * this one (a no-op when it already does) */
static void restore_osd(void)
{
    if (tu_rados_conf() && getenv("FBK_CEPH_TOOLS") && osd_pid(VICTIM) > 0)
        restart_osd(VICTIM);
}

Test(rados_replicas, an_osd_killed_during_saves_loses_no_acknowledged_save, .timeout = 300,
     .fini = restore_osd)
{
    TU_NEED_RADOS();
    killer k = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    k.victim = osd_pid(VICTIM);
    if (k.victim <= 0 || !getenv("FBK_CEPH_TOOLS"))
        cr_skip_test("osd.%d's PID or tests/cluster unknown (not a ceph-up.sh DIR 3 cluster)",
                     VICTIM);
    char uri[1024];
    /* timeout=60: a save the death interrupts waits until the dead OSD's
     * read lease ran out (16 s), the default 30 s is close */
    snprintf(uri, sizeof uri, "rados:%s?pool=" POOL3 "&conf=%s&timeout=60",
             tu_fresh_dir("rados-osd-save"), tu_rados_conf());
    fbk_store *s;
    int rc = fbk_store_open(&s, uri, NULL);
    if (rc == FBK_EINVAL && strstr(fbk_errmsg(), POOL3))
        cr_skip_test("no pool " POOL3 " (a cluster of fewer than 3 OSDs)");
    cr_assert_eq(rc, 0, "%s: %s", uri, fbk_errmsg());
    char ns[128];
    ns_for(ns, sizeof ns, "osdkill");
    char mns[160];
    snprintf(mns, sizeof mns, "%s-map", ns);
    fbk_pool *p;
    fbk_location *loc, *mloc;
    fbk_map *m;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), 0);
    cr_assert_eq(fbk_location_open(s, ns, &loc), 0, "%s", fbk_errmsg());
    /* (a location with a map's names is not fbk_save's) */
    cr_assert_eq(fbk_location_open(s, mns, &mloc), 0, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, mloc, NULL, &m), 0, "%s", fbk_errmsg());

    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, kill_thread, &k), 0);
    double t0 = now(), slowest = 0;
    int slowest_r = -1;

    /* save r: the objects of saves 0..r into location ns (fbk_save keeps the
     * earlier ones, persists the new ones, syncs), then in the map of location
     * ns-map the name "save/r" bound to its first object, synced.
     * Acknowledged = both returned 0. */
    static fbk_handle *hs[MAXOBJ];
    static fbk_key keys[MAXOBJ];
    int nobj = 0, acked = 0, started_after_kill = 0, first_err = 0;
    char err[512] = "";
    for (int r = 0;; r++) {
        pthread_mutex_lock(&k.mu);
        /* the OSD dies while the saves go on; should the killer be slow,
         * the last AFTER_KILL saves wait for it */
        while (r >= ROUNDS - AFTER_KILL && !k.killed)
            pthread_cond_wait(&k.cv, &k.mu);
        int killed = k.killed;
        pthread_mutex_unlock(&k.mu);
        if (r >= ROUNDS && started_after_kill >= AFTER_KILL)
            break;
        if (killed)
            started_after_kill++;
        for (int j = 0; j < PER_ROUND; j++, nobj++) {
            cr_assert_eq(fbk_insert(p, tu_blob(obj_len(nobj), 5000 + (uint64_t)nobj), &hs[nobj]),
                         0);
            fbk_handle_key(hs[nobj], &keys[nobj]);
        }
        double ts = now();
        rc = fbk_save(loc, hs, (size_t)nobj, 0, NULL, NULL);
        char name[32];
        int n = snprintf(name, sizeof name, "save/%d", r);
        if (rc == 0)
            rc = fbk_map_put(m, name, (size_t)n, hs[r * PER_ROUND]);
        if (rc == 0)
            rc = fbk_map_sync(m);
        if (rc) {
            first_err = rc;
            snprintf(err, sizeof err, "save %d (started %s the kill): %s", r,
                     killed ? "after" : "before", fbk_errmsg());
            break;
        }
        if (now() - ts > slowest) {
            slowest = now() - ts;
            slowest_r = r;
        }
        pthread_mutex_lock(&k.mu);
        k.acked = ++acked;
        pthread_cond_broadcast(&k.cv);
        pthread_mutex_unlock(&k.mu);
    }
    if (acked < KILL_AFTER) { /* let the killer go (and kill) all the same */
        pthread_mutex_lock(&k.mu);
        k.acked = KILL_AFTER;
        pthread_cond_broadcast(&k.cv);
        pthread_mutex_unlock(&k.mu);
    }
    pthread_join(th, NULL);
    for (int i = 0; i < nobj; i++)
        fbk_handle_release(hs[i]);
    cr_assert_eq(fbk_map_close(m), 0, "%s", fbk_errmsg());
    fbk_location_close(mloc);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);

    double t1 = now();
    cr_log_info("%d saves acknowledged in %.2f s, %d of them started after osd.%d was killed; "
                "the slowest, save %d, took %.2f s",
                acked, t1 - t0, started_after_kill, VICTIM, slowest_r, slowest);
    /* with min_size 2, one OSD of three down still acknowledges writes */
    cr_expect_eq(first_err, 0, "%s", err);
    cr_expect_eq(k.kill_rc, 0, "kill osd.%d (PID %d): %s", VICTIM, (int)k.victim,
                 strerror(k.kill_rc));
    cr_expect_eq(k.down_rc, 0, "osd down %d: %d", VICTIM, k.down_rc);

    /* every acknowledged save, whole, from a fresh store: with the OSD down,
     * then after it restarted (its memstore empty) and rejoined */
    verify_all(ns, mns, keys, acked * PER_ROUND, acked, "osd down");
    double t2 = now();
    int restarted = restart_osd(VICTIM);
    cr_assert_eq(restarted, 0, "ceph-osd-restart.sh: %d", restarted);
    double t3 = now();
    verify_all(ns, mns, keys, acked * PER_ROUND, acked, "osd restarted");
    cr_log_info("checked with osd.%d down in %.2f s, restarted it in %.2f s, checked again in "
                "%.2f s",
                VICTIM, t2 - t1, t3 - t2, now() - t3);
    cr_assert_geq(started_after_kill, AFTER_KILL);
}
