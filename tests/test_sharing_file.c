/* test_sharing_file.c -- several processes on one file: store directory
 * (contract v1, "Sharing"), and read-only opening ("Store: read-only
 * opening"): each store has a spill area of its own, DIR/spill-<id>, owned
 * through the flocked DIR/spill-<id>.lock; locations and map names are
 * shared; a killed process blocks nobody and its spill area goes at the next
 * open; a scan never deletes a live store's temporaries; a read-only store
 * writes nothing in the directory.
 *
 * Processes are fork()ed before anything is opened and sequenced through
 * pipes: no sleeps.  A child reports a failed check on stderr and exits
 * non-zero (the parent asserts its exit status). */
#include "file_spill.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define PATHF(buf, ...) cr_assert_lt((size_t)snprintf(buf, sizeof buf, __VA_ARGS__), sizeof buf)

/* a failed check in a child */
#define CHK(cond)                                                                                  \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "child %d: %s:%d: %s (last error: %s)\n", (int)getpid(), __FILE__,     \
                    __LINE__, #cond, fbk_errmsg());                                                \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------- pipes */

typedef struct {
    int to_child[2], to_parent[2];
    pid_t pid;
} peer;

/* Forks; returns 1 in the child, 0 in the parent. */
static int peer_fork(peer *p)
{
    cr_assert_eq(pipe(p->to_child), 0);
    cr_assert_eq(pipe(p->to_parent), 0);
    fflush(NULL);
    p->pid = fork();
    cr_assert_neq(p->pid, -1);
    if (p->pid == 0) {
        /* a child never outlives a failed test (it may be waiting) */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() == 1)
            _exit(1);
        close(p->to_child[1]);
        close(p->to_parent[0]);
        return 1;
    }
    close(p->to_child[0]);
    close(p->to_parent[1]);
    return 0;
}

/* One message (up to 255 bytes, a length byte first). */
static int msg_send(int fd, const char *text)
{
    unsigned char n = (unsigned char)strlen(text);
    return write(fd, &n, 1) == 1 && write(fd, text, n) == (ssize_t)n ? 0 : -1;
}

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static int msg_recv(int fd, char out[256])
{
    unsigned char n;
    if (read_full(fd, &n, 1) != 0 || read_full(fd, out, n) != 0)
        return -1;
    out[n] = '\0';
    return 0;
}

/* parent side */
static void to_child(peer *p, const char *text) { cr_assert_eq(msg_send(p->to_child[1], text), 0); }

static void from_child(peer *p, char out[256])
{
    cr_assert_eq(msg_recv(p->to_parent[0], out), 0,
                 "the child said nothing (it failed: see stderr)");
}

static void child_done(peer *p)
{
    int status;
    cr_assert_eq(waitpid(p->pid, &status, 0), p->pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child failed (status %d): see stderr", status);
    close(p->to_child[1]);
    close(p->to_parent[0]);
}

/* child side */
static void c_send(peer *p, const char *text) { CHK(msg_send(p->to_parent[1], text) == 0); }

static void c_recv(peer *p, char out[256]) { CHK(msg_recv(p->to_child[0], out) == 0); }

/* ----------------------------------------------------------- helpers */

static int open_uri(fbk_store **s, const char *dir, int readonly)
{
    char uri[4400];
    snprintf(uri, sizeof uri, "file:%s%s", dir, readonly ? "?readonly=1" : "");
    return fbk_store_open(s, uri, NULL);
}

static fbk_store *open_store(const char *dir)
{
    fbk_store *s = NULL;
    int rc = open_uri(&s, dir, 0);
    cr_assert_eq(rc, FBK_OK, "open %s: %s (%s)", dir, fbk_err_name(rc), fbk_errmsg());
    return s;
}

/* Inserts blob (len, seed) into p, persists it into loc and syncs. */
static int persist_blob(fbk_pool *p, fbk_location *loc, size_t len, uint64_t seed, fbk_key *k)
{
    fbk_handle *h = NULL;
    int rc = fbk_insert(p, tu_blob(len, seed), &h);
    if (rc == FBK_OK)
        rc = fbk_persist(h, loc);
    if (rc == FBK_OK)
        rc = fbk_location_sync(loc);
    if (h) {
        fbk_handle_key(h, k);
        fbk_handle_release(h);
    }
    return rc;
}

/* 1 if h loads as blob (len, seed) */
static int loads_as(fbk_handle *h, size_t len, uint64_t seed)
{
    const void *obj;
    if (fbk_load(h, &obj) != FBK_OK)
        return 0;
    int ok = tu_blob_check(obj, len, seed);
    fbk_unload(h);
    return ok;
}

/* 1 if key k registers from loc and loads as blob (len, seed) */
static int registers_as(fbk_pool *p, fbk_location *loc, const fbk_key *k, size_t len, uint64_t seed)
{
    fbk_handle *h = NULL;
    if (fbk_register(p, loc, k, &h) != FBK_OK)
        return 0;
    int ok = loads_as(h, len, seed);
    fbk_handle_release(h);
    return ok;
}

/* 1 if name is bound in m to a blob (len, seed) */
static int map_has(fbk_map *m, const char *name, size_t len, uint64_t seed)
{
    fbk_handle *h = NULL;
    if (fbk_map_get(m, name, strlen(name), &h) != FBK_OK)
        return 0;
    int ok = loads_as(h, len, seed);
    fbk_handle_release(h);
    return ok;
}

static int exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Appends "relative-path type size inode\n" for every entry under dir
 * (recursively, sorted by readdir order of a sorted scandir) to out. */
static void listing(const char *dir, const char *rel, char **out, size_t *len)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "scandir %s: %s", dir, strerror(errno));
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0) {
            char path[4300], r[4300], line[4600];
            PATHF(path, "%s/%s", dir, nm);
            PATHF(r, "%s%s%s", rel, *rel ? "/" : "", nm);
            struct stat st;
            cr_assert_eq(lstat(path, &st), 0);
            int l = snprintf(line, sizeof line, "%s %o %lld %llu\n", r, (unsigned)st.st_mode,
                             S_ISDIR(st.st_mode) ? 0LL : (long long)st.st_size,
                             (unsigned long long)st.st_ino);
            *out = realloc(*out, *len + (size_t)l + 1);
            cr_assert_not_null(*out);
            memcpy(*out + *len, line, (size_t)l + 1);
            *len += (size_t)l;
            if (S_ISDIR(st.st_mode))
                listing(path, r, out, len);
        }
        free(names[i]);
    }
    free(names);
}

static char *snapshot(const char *dir)
{
    char *out = NULL;
    size_t len = 0;
    listing(dir, "", &out, &len);
    return out ? out : strdup("");
}

/* The shard path of key k in the location directory locdir. */
static void tmp_path(char *out, size_t cap, const char *locdir, const fbk_key *k, const char *owner)
{
    char hex[33];
    fbk_key_format_hex(k, hex);
    snprintf(out, cap, "%s/%.2s/.tmp-%s-%s%s0000000000000001", locdir, hex, hex, owner,
             *owner ? "-" : "");
}

/* ------------------------------------------------------------- tests */

/* Two processes open the same directory at once and both work; what one
 * syncs (a persisted key, a map name) the other sees: the key after
 * fbk_location_refresh, the name at once. */
Test(sharing_file, two_processes_share_a_store_and_see_what_the_other_synced)
{
    char dir[4096];
    PATHF(dir, "%s", tu_fresh_dir("share2"));
    peer pr;
    char m[256];
    if (peer_fork(&pr)) {
        c_recv(&pr, m); /* the parent has the store open */
        fbk_store *s = NULL;
        CHK(open_uri(&s, dir, 0) == FBK_OK);
        fbk_pool *p;
        fbk_location *loc;
        fbk_map *map;
        CHK(fbk_pool_create(&p, s, &fbk_blob_codec, 4) == FBK_OK);
        CHK(fbk_location_open(s, "L", &loc) == FBK_OK);
        CHK(fbk_map_open(p, loc, NULL, &map) == FBK_OK);
        c_send(&pr, "open");
        c_recv(&pr, m); /* the parent's key, synced */
        fbk_key k;
        CHK(fbk_key_parse(m, &k) == FBK_OK);
        CHK(fbk_location_refresh(loc) == FBK_OK);
        CHK(fbk_location_contains(loc, &k) == 1);
        CHK(registers_as(p, loc, &k, 70000, 11));
        CHK(map_has(map, "alpha", 3000, 12));
        /* and the other way */
        fbk_key mine;
        CHK(persist_blob(p, loc, 5000, 21, &mine) == FBK_OK);
        fbk_handle *h = NULL;
        CHK(fbk_insert(p, tu_blob(4000, 22), &h) == FBK_OK);
        CHK(fbk_map_put(map, "beta", 4, h) == FBK_OK);
        fbk_handle_release(h);
        char hex[FBK_KEY_STRLEN + 1];
        fbk_key_format(&mine, hex);
        c_send(&pr, hex);
        c_recv(&pr, m); /* the parent checked */
        CHK(fbk_map_close(map) == FBK_OK);
        fbk_location_close(loc);
        fbk_pool_release(p);
        fbk_store_close(s);
        _exit(0);
    }
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *map;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "L", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, loc, NULL, &map), FBK_OK, "%s", fbk_errmsg());
    to_child(&pr, "go");
    from_child(&pr, m);
    cr_assert_eq(fs_spill_count(dir, NULL), 2, "each store has a spill area of its own");
    fbk_key k;
    cr_assert_eq(persist_blob(p, loc, 70000, 11, &k), FBK_OK, "%s", fbk_errmsg());
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_insert(p, tu_blob(3000, 12), &h), FBK_OK);
    cr_assert_eq(fbk_map_put(map, "alpha", 5, h), FBK_OK, "%s", fbk_errmsg());
    fbk_handle_release(h);
    char hex[FBK_KEY_STRLEN + 1];
    fbk_key_format(&k, hex);
    to_child(&pr, hex);
    from_child(&pr, m);
    fbk_key theirs;
    cr_assert_eq(fbk_key_parse(m, &theirs), FBK_OK);
    cr_assert(map_has(map, "beta", 4000, 22), "the child's name is not seen: %s", fbk_errmsg());
    cr_assert_eq(fbk_location_refresh(loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_location_contains(loc, &theirs), 1);
    cr_assert(registers_as(p, loc, &theirs, 5000, 21));
    to_child(&pr, "bye");
    child_done(&pr);
    cr_assert_eq(fbk_map_close(map), FBK_OK);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    cr_assert_eq(fs_spill_count(dir, NULL), 0, "spill areas left after both closed");
}

/* A process killed (SIGKILL) with the store open blocks nobody; the next
 * open removes its spill area.  While it lived, another store's scans left
 * its temporaries alone (in a shard and in the name index); once it is
 * dead, a writer's scan removes them. */
Test(sharing_file, a_killed_process_blocks_nobody_and_its_spill_area_and_temporaries_go)
{
    char dir[4096], locdir[4200], area[64], lockf[4300], spill[4300];
    PATHF(dir, "%s", tu_fresh_dir("share_kill"));
    PATHF(locdir, "%s/L", dir);
    peer pr;
    char m[256];
    if (peer_fork(&pr)) {
        fbk_store *s = NULL;
        CHK(open_uri(&s, dir, 0) == FBK_OK);
        fbk_pool *p;
        fbk_location *loc;
        CHK(fbk_pool_create(&p, s, &fbk_blob_codec, 4) == FBK_OK);
        CHK(fbk_location_open(s, "L", &loc) == FBK_OK);
        fbk_handle *h = NULL;
        CHK(fbk_insert(p, tu_blob(9000, 31), &h) == FBK_OK);
        CHK(fbk_write_now(h) == FBK_OK); /* a file in its spill area */
        c_send(&pr, "ready");
        for (;;)
            pause(); /* until killed */
    }
    from_child(&pr, m);
    PATHF(area, "%s", fs_spill_name(dir));
    const char *id = area + 6;
    PATHF(spill, "%s/%s", dir, area);
    PATHF(lockf, "%s/%s.lock", dir, area);
    cr_assert(exists(spill) && exists(lockf));
    /* temporaries of the live child (in flight, as far as anyone can
     * tell), and of a dead store and of an earlier version */
    fbk_key k1, k2;
    fbk_key_generate(&k1);
    fbk_key_generate(&k2);
    char live_tmp[4400], old_tmp[4400], names[4300], live_name[4400], old_name[4400],
        dead_name[4400];
    tmp_path(live_tmp, sizeof live_tmp, locdir, &k1, id);
    tmp_path(old_tmp, sizeof old_tmp, locdir, &k2, "");
    write_file(live_tmp, "partial");
    write_file(old_tmp, "partial");
    PATHF(names, "%s/.fbk-names", locdir);
    cr_assert_eq(mkdir(names, 0755), 0);
    PATHF(live_name, "%s/.tmp-0123456789abcdef0123456789abcdef-%s-7", names, id);
    PATHF(dead_name, "%s/.tmp-0123456789abcdef0123456789abcdef-00000000deadbeef-7", names);
    PATHF(old_name, "%s/.tmp-0123456789abcdef0123456789abcdef-4242-7", names);
    write_file(live_name, "partial");
    write_file(dead_name, "partial");
    write_file(old_name, "partial");

    fbk_store *s = open_store(dir);
    cr_assert(exists(spill), "a live store's spill area was removed");
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *map;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "L", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert(exists(live_tmp), "a live store's temporary was deleted by another's scan");
    cr_assert(!exists(old_tmp), "a dead temporary was kept");
    cr_assert_eq(fbk_location_junk_removed(loc), 1);
    cr_assert_eq(fbk_location_foreign_entries(loc), 0, "a live temporary counted as foreign");
    cr_assert_eq(fbk_map_open(p, loc, NULL, &map), FBK_OK, "%s", fbk_errmsg());
    cr_assert(exists(live_name), "a live store's name temporary was deleted");
    cr_assert(!exists(dead_name) && !exists(old_name), "dead name temporaries were kept");

    cr_assert_eq(kill(pr.pid, SIGKILL), 0);
    int status;
    cr_assert_eq(waitpid(pr.pid, &status, 0), pr.pid);
    close(pr.to_child[1]);
    close(pr.to_parent[0]);
    /* this store goes on; its scans now remove the dead child's temporaries */
    cr_assert_eq(fbk_location_refresh(loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert(!exists(live_tmp), "a dead store's temporary was kept");
    /* the next open (while this one is still open) removes its spill area */
    fbk_store *s2 = open_store(dir);
    cr_assert(!exists(spill), "the killed process's spill area is still there");
    cr_assert(!exists(lockf), "the killed process's lock file is still there");
    cr_assert_eq(fs_spill_count(dir, NULL), 2);
    fbk_store_close(s2);
    cr_assert_eq(fbk_map_close(map), FBK_OK);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

static int count_name(const void *name, size_t len, void *arg)
{
    (void)name;
    (void)len;
    (*(int *)arg)++;
    return 0;
}

/* A read-only store opens beside a writer (another process), registers and
 * loads what the writer synced, gets a map name, gets FBK_ENOTFOUND for a
 * missing location and FBK_EREADONLY for a change, and creates, changes
 * or deletes nothing in the directory (not even a dead temporary); its
 * private spill area goes at close. */
Test(sharing_file, a_read_only_store_beside_a_writer_changes_nothing_in_the_directory)
{
    char dir[4096], locdir[4200], tmpdir[4096], dead_tmp[4400];
    PATHF(dir, "%s", tu_fresh_dir("share_ro"));
    PATHF(tmpdir, "%s", tu_fresh_dir("share_ro_tmp"));
    PATHF(locdir, "%s/L", dir);
    peer pr;
    char m[256];
    if (peer_fork(&pr)) {
        c_recv(&pr, m); /* the writer's key */
        fbk_key k;
        CHK(fbk_key_parse(m, &k) == FBK_OK);
        CHK(setenv("TMPDIR", tmpdir, 1) == 0);
        fbk_store *s = NULL;
        CHK(open_uri(&s, dir, 1) == FBK_OK);
        fbk_pool *p;
        fbk_location *loc, *none = NULL;
        fbk_map *map;
        CHK(fbk_pool_create(&p, s, &fbk_blob_codec, 4) == FBK_OK);
        CHK(fbk_location_open(s, "nope", &none) == FBK_ENOTFOUND && none == NULL);
        CHK(fbk_location_open(s, "L", &loc) == FBK_OK);
        CHK(fbk_location_count(loc) == 2 && fbk_location_contains(loc, &k) == 1);
        CHK(fbk_location_junk_removed(loc) == 0);
        CHK(registers_as(p, loc, &k, 200000, 41));
        CHK(fbk_map_open(p, loc, NULL, &map) == FBK_OK);
        CHK(map_has(map, "alpha", 1000, 42));
        int names = 0;
        CHK(fbk_map_names(map, count_name, &names) == FBK_OK && names == 1);
        fbk_handle *h = NULL;
        CHK(fbk_insert(p, tu_blob(100, 43), &h) == FBK_OK);
        CHK(fbk_persist(h, loc) == FBK_EREADONLY);
        CHK(fbk_map_put(map, "beta", 4, h) == FBK_EREADONLY);
        fbk_handle_release(h);
        /* the private spill area is under $TMPDIR */
        CHK(fs_spill_count(dir, NULL) == 1);
        DIR *d = opendir(tmpdir);
        int entries = 0;
        struct dirent *e;
        while (d && (e = readdir(d)) != NULL)
            entries += strncmp(e->d_name, "fbk-ro-", 7) == 0;
        if (d)
            closedir(d);
        CHK(entries == 1);
        fbk_map_close(map);
        fbk_location_close(loc);
        fbk_pool_release(p);
        fbk_store_close(s);
        _exit(0);
    }
    fbk_store *s = open_store(dir);
    fbk_pool *p;
    fbk_location *loc;
    fbk_map *map;
    cr_assert_eq(fbk_pool_create(&p, s, &fbk_blob_codec, 4), FBK_OK);
    cr_assert_eq(fbk_location_open(s, "L", &loc), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(fbk_map_open(p, loc, NULL, &map), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    cr_assert_eq(persist_blob(p, loc, 200000, 41, &k), FBK_OK, "%s", fbk_errmsg());
    fbk_handle *h = NULL;
    cr_assert_eq(fbk_insert(p, tu_blob(1000, 42), &h), FBK_OK);
    cr_assert_eq(fbk_map_put(map, "alpha", 5, h), FBK_OK, "%s", fbk_errmsg());
    fbk_key mk;
    fbk_handle_key(h, &mk);
    fbk_handle_release(h);
    /* a dead store's temporary: a writer's scan would delete it */
    fbk_key tk;
    fbk_key_generate(&tk);
    tmp_path(dead_tmp, sizeof dead_tmp, locdir, &tk, "00000000deadbeef");
    write_file(dead_tmp, "partial");
    cr_assert_eq(fbk_store_drain(s), FBK_OK);
    char *before = snapshot(dir);
    char hex[FBK_KEY_STRLEN + 1];
    fbk_key_format(&k, hex);
    to_child(&pr, hex);
    child_done(&pr);
    char *after = snapshot(dir);
    cr_assert_str_eq(after, before, "the read-only store changed the directory");
    free(before);
    free(after);
    cr_assert(exists(dead_tmp));
    DIR *d = opendir(tmpdir);
    cr_assert_not_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        cr_assert(e->d_name[0] == '.', "left in $TMPDIR: %s", e->d_name);
    closedir(d);
    (void)mk;
    cr_assert_eq(fbk_map_close(map), FBK_OK);
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
}

/* A read-only open of a directory that does not exist fails cleanly
 * (FBK_ENOTFOUND, nothing made); of an existing directory that no writer
 * ever opened (no LOCK), it works and makes nothing. */
Test(sharing_file, a_read_only_open_of_a_missing_directory_fails_cleanly)
{
    char base[4096], dir[4200];
    PATHF(base, "%s", tu_fresh_dir("share_ro_missing"));
    PATHF(dir, "%s/not/there", base);
    fbk_store *s = NULL;
    int rc = open_uri(&s, dir, 1);
    cr_assert_eq(rc, FBK_ENOTFOUND, "%s (%s)", fbk_err_name(rc), fbk_errmsg());
    cr_assert_null(s);
    cr_assert(strstr(fbk_errmsg(), "not/there") != NULL, "message: %s", fbk_errmsg());
    PATHF(dir, "%s/not", base);
    cr_assert(!exists(dir), "a read-only open made the directory");
    cr_assert_eq(mkdir(dir, 0755), 0);
    rc = open_uri(&s, dir, 1);
    cr_assert_eq(rc, FBK_OK, "%s (%s)", fbk_err_name(rc), fbk_errmsg());
    fbk_location *loc = NULL;
    cr_assert_eq(fbk_location_open(s, "L", &loc), FBK_ENOTFOUND);
    fbk_store_close(s);
    char *after = snapshot(dir);
    cr_assert_str_eq(after, "", "the read-only store made: %s", after);
    free(after);
}

static int fill_zero(void *dst, size_t len, void *arg)
{
    (void)arg;
    memset(dst, 0, len);
    return 0;
}

/* The backend table itself, opened read-only: a change is FBK_EREADONLY
 * even for a caller that bypasses the core; stores go to the private spill
 * area; DIR is left as it was. */
Test(sharing_file, the_read_only_table_refuses_changes_and_writes_nothing_in_the_directory)
{
    char dir[4096];
    PATHF(dir, "%s", tu_fresh_dir("share_ro_table"));
    tu_be w = tu_file_open(dir);
    void *wl;
    cr_assert_eq(w.ops->open_location(w.self, "L", &wl), FBK_OK, "%s", fbk_errmsg());
    fbk_key k;
    fbk_key_generate(&k);
    cr_assert_eq(w.ops->store(w.self, &k, 100, fill_zero, NULL), FBK_OK);
    cr_assert_eq(w.ops->persist(w.self, wl, &k), FBK_OK);
    cr_assert_eq(w.ops->sync(w.self, wl), FBK_OK);
    char *before = snapshot(dir);
    fbk_store_options o = {.flags = FBK_STORE_READONLY};
    const fbk_backend_ops *ops;
    void *self = NULL;
    cr_assert_eq(fbk_backend_file_create(dir, &o, &ops, &self), FBK_OK, "%s", fbk_errmsg());
    void *l;
    cr_assert_eq(ops->open_location(self, "L", &l), FBK_OK, "%s", fbk_errmsg());
    size_t n = 0;
    cr_assert_eq(ops->scan(self, l, tu_count_key, &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(ops->register_key(self, l, &k), FBK_OK, "%s", fbk_errmsg());
    fbk_key k2;
    fbk_key_generate(&k2);
    cr_assert_eq(ops->store(self, &k2, 100, fill_zero, NULL), FBK_OK, "%s", fbk_errmsg());
    cr_assert_eq(ops->persist(self, l, &k2), FBK_EREADONLY);
    cr_assert_eq(ops->remove_persisted(self, l, &k), FBK_EREADONLY);
    fbk_name_op op = {.name = "x", .len = 1, .key = &k, .size = 1};
    cr_assert_eq(ops->name_apply(self, l, &op, 1), FBK_EREADONLY);
    cr_assert_eq(ops->sync(self, l), FBK_OK);
    ops->close_location(self, l);
    ops->close(self);
    char *after = snapshot(dir);
    cr_assert_str_eq(after, before, "the read-only table changed the directory");
    free(before);
    free(after);
    w.ops->close_location(w.self, wl);
    tu_be_close(&w);
}
