/* compact.c -- give free space back, with knowledge of the two on-disk
 * layouts (docs/lmdb-backend.md, docs/file-backend.md):
 *   lmdb: the durable environment DIR/durable is copied compacted
 *         (mdb_env_copy2 with MDB_CP_COMPACT) into DIR/durable.compact,
 *         synced, and swapped with DIR/durable in one renameat2
 *         (RENAME_EXCHANGE); the old one is then deleted.  A crash at any
 *         point leaves DIR/durable whole: the old environment or the new.
 *   file: leftover temporaries (.tmp-*), refs whose object is gone and empty
 *         shard directories of every
 *         location, and the spill areas of stores that died, are deleted.
 * Both run only while no program has the store open: DIR/LOCK is taken
 * exclusively (without waiting) for the whole run, so no store can open
 * meanwhile; a held lock is refused with a message. */
#include "fbk_tool.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bytes a directory tree takes on disk (allocated blocks). */
static uint64_t du(int dfd)
{
    int fd = dup(dfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        total += (uint64_t)st.st_blocks * 512;
        if (S_ISDIR(st.st_mode)) {
            int sfd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (sfd >= 0) {
                total += du(sfd);
                close(sfd);
            }
        }
    }
    closedir(d);
    return total;
}

static uint64_t du_path(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    uint64_t t = du(fd);
    close(fd);
    return t;
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Removes dir/name (a file or an empty-able directory of files). */
static void remove_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                unlinkat(dirfd(d), e->d_name, 0);
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* mdb_reader_list's callback: one line per reader slot in use ("pid thread
 * txnid"), after a header line; counts the slots of other processes. */
static int count_readers(const char *msg, void *ctx)
{
    long pid;
    if (sscanf(msg, " %ld", &pid) == 1 && pid != (long)getpid())
        ++*(int *)ctx;
    return 0;
}

static int lmdb_compact(const char *cmd, const tool_uri *u)
{
    char durable[4200], tmp[4200];
    snprintf(durable, sizeof durable, "%s/durable", u->dir);
    snprintf(tmp, sizeof tmp, "%s/durable.compact", u->dir);
    remove_tree(tmp); /* left by an interrupted run: never in use */
    char data[4300];
    snprintf(data, sizeof data, "%s/data.mdb", durable);
    if (access(data, F_OK) != 0)
        return 0; /* no durable environment yet: nothing to give back */
    MDB_env *env;
    int rc = mdb_env_create(&env);
    if (!rc) {
        mdb_env_set_maxdbs(env, 8192);
        rc = mdb_env_open(env, durable, MDB_RDONLY | MDB_NOTLS, 0644);
        if (rc)
            mdb_env_close(env);
    }
    if (rc)
        return tool_fail(cmd, FBK_TOOL_ERROR, "open %s: %s", durable, mdb_strerror(rc));
    /* No reader may be left: another process reading it (a read-only opener
     * that takes no DIR/LOCK) would keep the old file. */
    int dead = 0;
    mdb_reader_check(env, &dead);
    int readers = 0;
    mdb_reader_list(env, count_readers, &readers);
    if (readers) {
        mdb_env_close(env);
        return tool_fail(cmd, FBK_TOOL_ERROR,
                         "%s is open in %d other process%s (LMDB reader table of %s): close it, "
                         "then compact",
                         u->uri, readers, readers == 1 ? "" : "es", durable);
    }
    if (mkdir(tmp, 0755) != 0) {
        mdb_env_close(env);
        return tool_fail(cmd, FBK_TOOL_ERROR, "mkdir %s: %s", tmp, strerror(errno));
    }
    rc = mdb_env_copy2(env, tmp, MDB_CP_COMPACT);
    mdb_env_close(env);
    if (rc) {
        remove_tree(tmp);
        return tool_fail(cmd, FBK_TOOL_ERROR, "copy %s compacted: %s", durable, mdb_strerror(rc));
    }
    char tdata[4300];
    snprintf(tdata, sizeof tdata, "%s/data.mdb", tmp);
    if (fsync_path(tdata, 0) || fsync_path(tmp, 1)) {
        int e = errno;
        remove_tree(tmp);
        return tool_fail(cmd, FBK_TOOL_ERROR, "sync %s: %s", tdata, strerror(e));
    }
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, durable, RENAME_EXCHANGE) != 0) {
        int e = errno;
        remove_tree(tmp);
        return tool_fail(cmd, FBK_TOOL_ERROR, "swap %s and %s: %s", tmp, durable, strerror(e));
    }
    if (fsync_path(u->dir, 1) != 0)
        return tool_fail(cmd, FBK_TOOL_ERROR, "sync %s: %s", u->dir, strerror(errno));
    remove_tree(tmp); /* now the old environment */
    return 0;
}

/* A ref (backends/file/file_refs.c: "<32 hex key>.name-<32 hex>") whose
 * object is gone: it protects nothing (left by fbk_location_remove, or a
 * crash). */
static int dead_ref(int dfd, const char *n)
{
    if (strlen(n) != 32 + 6 + 32 || strncmp(n + 32, ".name-", 6) != 0)
        return 0;
    char obj[33];
    memcpy(obj, n, 32);
    obj[32] = '\0';
    struct stat st;
    return fstatat(dfd, obj, &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT;
}

/* Deletes .tmp-* entries and dead refs of a shard, and the shard when then
 * empty. */
static void file_clean_location(const char *root)
{
    int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rfd < 0)
        return;
    for (int s = 0; s < 256; s++) {
        char shard[3];
        snprintf(shard, sizeof shard, "%02x", s);
        int sfd = openat(rfd, shard, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = sfd >= 0 ? fdopendir(sfd) : NULL;
        if (!d) {
            if (sfd >= 0)
                close(sfd);
            continue;
        }
        int others = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if ((!strncmp(e->d_name, ".tmp-", 5) || dead_ref(dirfd(d), e->d_name)) &&
                unlinkat(dirfd(d), e->d_name, 0) == 0)
                continue;
            others++;
        }
        closedir(d);
        if (!others)
            unlinkat(rfd, shard, AT_REMOVEDIR);
    }
    fsync(rfd);
    close(rfd);
}

static int file_compact(const char *cmd, const tool_uri *u)
{
    char **names;
    size_t n;
    int rc = layout_locations(u, &names, &n);
    if (rc)
        return tool_fail(cmd, rc, "list the locations of %s", u->uri);
    for (size_t i = 0; i < n; i++) {
        char root[4200];
        snprintf(root, sizeof root, "%s/%s", u->dir, names[i]);
        file_clean_location(root);
    }
    layout_free_names(names, n);
    /* spill areas: with DIR/LOCK held exclusively no store is open, so every
     * DIR/spill-<id> (and its .lock) and the DIR/spill of earlier versions is
     * a dead store's (the next open would remove them too) */
    char spill[4400];
    DIR *top = opendir(u->dir);
    struct dirent *te;
    while (top && (te = readdir(top))) {
        const char *nm = te->d_name;
        size_t len = strlen(nm);
        int ours = !strcmp(nm, "spill") ||
                   (!strncmp(nm, "spill-", 6) && strspn(nm + 6, "0123456789abcdef") == 16 &&
                    (len == 22 || (len == 27 && !strcmp(nm + 22, ".lock"))));
        if (!ours)
            continue;
        snprintf(spill, sizeof spill, "%s/%s", u->dir, nm);
        for (int s = 0; s < 256; s++) {
            char shard[4500];
            snprintf(shard, sizeof shard, "%s/%02x", spill, s);
            DIR *d = opendir(shard);
            if (!d)
                continue;
            struct dirent *e;
            while ((e = readdir(d)))
                if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
                    unlinkat(dirfd(d), e->d_name, 0);
            closedir(d);
            rmdir(shard);
        }
        if (len == 27)
            unlink(spill); /* spill-<id>.lock */
        else
            rmdir(spill);
    }
    if (top)
        closedir(top);
    return 0;
}

int cmd_compact(const fbk_cli *c)
{
    tool_uri u;
    if (tool_uri_parse(c->pos[0], &u))
        return tool_usage(c->cmd, "URI too long");
    if (u.scheme == TOOL_OTHER)
        return tool_fail(c->cmd, FBK_TOOL_ERROR, "%s: compact knows lmdb: and file: stores",
                         u.uri);
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/LOCK", u.dir);
    int lfd = open(lock, O_RDWR | O_CLOEXEC);
    if (lfd < 0)
        return tool_fail(c->cmd, FBK_TOOL_ERROR, "no store at %s (%s: %s)", u.uri, lock,
                         strerror(errno));
    if (flock(lfd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(lfd);
        if (e == EWOULDBLOCK)
            return tool_fail(c->cmd, FBK_TOOL_ERROR,
                             "%s is open in a program (lock %s is held): close it, then compact",
                             u.uri, lock);
        return tool_fail(c->cmd, FBK_TOOL_ERROR, "lock %s: %s", lock, strerror(e));
    }
    uint64_t before = du_path(u.dir);
    int rc = u.scheme == TOOL_LMDB ? lmdb_compact(c->cmd, &u) : file_compact(c->cmd, &u);
    uint64_t after = du_path(u.dir);
    close(lfd);
    if (rc)
        return rc;
    if (c->json) {
        printf("{\"uri\": ");
        json_str(stdout, u.uri, strlen(u.uri));
        printf(", \"backend\": \"%s\", \"bytes_before\": %llu, \"bytes_after\": %llu}\n",
               u.scheme == TOOL_LMDB ? "lmdb" : "file", (unsigned long long)before,
               (unsigned long long)after);
    } else {
        printf("%s: %llu -> %llu bytes\n", u.uri, (unsigned long long)before,
               (unsigned long long)after);
    }
    return 0;
}
