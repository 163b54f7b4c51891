/* plio.c -- the power-loss model behind tests/test_powerloss*.c; see plio.h. */
#include "plio.h"

#include "../../backends/file/file_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct pl_ent {
    char *name;
    int node;
} pl_ent;

typedef struct pl_node {
    ino_t ino;
    int live; /* the inode number currently maps to this node */
    int is_dir;
    /* files */
    unsigned char *cur;
    size_t cur_len, cur_cap;
    unsigned char *syn;
    size_t syn_len;
    int dirty;         /* changed since the last capture */
    size_t dirty_from; /* lowest offset changed since then */
    int poisoned;      /* a failed fsync lost the dirty pages for good: */
    size_t pois_from, pois_to; /* those bytes never reach the disk (until rewritten) */
    /* directories */
    pl_ent *ents; /* the synced entries */
    size_t nents;
    char *path; /* real path */
} pl_node;

typedef struct pl_item {
    char *rel;
    int is_dir;
    int node;
    unsigned char *data;
    size_t len;
    long link_to;
} pl_item;

typedef struct pl_plan {
    pl_item *items;
    size_t n, cap;
} pl_plan;

static pthread_mutex_t plio_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    int active;
    char root[PATH_MAX];
    pl_node *nodes;
    size_t nnodes, cap;
    int root_node;
    long calls;
    /* faults */
    long armed_calls;
    long fault_at;
    int fault_err, fault_sticky, fault_poison;
    long faults;
    int first_kind;
    unsigned kinds;
    int phase;
    unsigned phases;
    unsigned kinds_phase[8];
    /* cuts */
    int cuts_on;
    char cut_dir[PATH_MAX];
    unsigned variants;
    char skip[PATH_MAX];
    unsigned long version, cut_version;
    uint64_t *seen;
    size_t nseen, seen_cap;
    plio_cut *cuts;
    size_t ncuts, cuts_cap;
    long points, trees, dups;
    int user_lo, user_hi;
    /* writeback errors, as the kernel's errseq: each failed sync (in poison
     * mode) bumps wb_errs; a syncfs through a descriptor opened before an
     * error it has not reported yet fails once more with EIO */
    long wb_errs;
    long fd_sample[4096];
} P;

static const char *const kind_names[PLIO_KINDS] = {
    "openat", "close", "read", "pread", "write", "pwrite", "fsync", "fdatasync",
    "syncfs", "linkat", "renameat", "unlinkat", "mkdirat", "fstat", "fstatat", "ftruncate",
    "mmap", "munmap", "flock", "fdopendir", "readdir", "closedir", "copy_file_range"};

const char *plio_kind_name(int kind)
{
    return kind >= 0 && kind < PLIO_KINDS ? kind_names[kind] : "?";
}

static void die(const char *what)
{
    fprintf(stderr, "plio: %s: %s\n", what, strerror(errno));
    abort();
}

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        die("out of memory");
    return q;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = xrealloc(NULL, n);
    memcpy(d, s, n);
    return d;
}

/* ------------------------------------------------------------ the model */

static int node_by_ino(ino_t ino)
{
    for (size_t i = 0; i < P.nnodes; i++)
        if (P.nodes[i].live && P.nodes[i].ino == ino)
            return (int)i;
    return -1;
}

static int node_new(ino_t ino, int is_dir)
{
    int old = node_by_ino(ino);
    if (old >= 0)
        P.nodes[old].live = 0; /* the number was reused: the old inode is gone */
    if (P.nnodes == P.cap) {
        P.cap = P.cap ? P.cap * 2 : 64;
        P.nodes = xrealloc(P.nodes, P.cap * sizeof *P.nodes);
    }
    pl_node *n = &P.nodes[P.nnodes];
    memset(n, 0, sizeof *n);
    n->ino = ino;
    n->live = 1;
    n->is_dir = is_dir;
    n->dirty_from = SIZE_MAX;
    return (int)P.nnodes++;
}

static void node_write(pl_node *n, size_t off, const void *buf, size_t len)
{
    size_t end = off + len;
    if (end > n->cur_cap) {
        n->cur_cap = end > 2 * n->cur_cap ? end : 2 * n->cur_cap;
        n->cur = xrealloc(n->cur, n->cur_cap);
    }
    if (off > n->cur_len)
        memset(n->cur + n->cur_len, 0, off - n->cur_len);
    if (len)
        memcpy(n->cur + off, buf, len);
    if (end > n->cur_len)
        n->cur_len = end;
    if (n->poisoned && off <= n->pois_from && end >= n->pois_to)
        n->poisoned = 0; /* rewritten: new dirty pages, written at the next sync */
    n->dirty = 1;
    if (off < n->dirty_from)
        n->dirty_from = off;
}

static void node_truncate(pl_node *n, size_t len)
{
    if (len > n->cur_len) {
        size_t old = n->cur_len;
        unsigned char *z = calloc(1, len - old);
        if (!z)
            die("out of memory");
        node_write(n, old, z, len - old);
        free(z);
        return;
    }
    n->cur_len = len;
    n->dirty = 1;
    if (len < n->dirty_from)
        n->dirty_from = len;
    if (n->poisoned && len <= n->pois_from)
        n->poisoned = 0;
    else if (n->poisoned && len < n->pois_to)
        n->pois_to = len;
}

/* A failed sync: the dirty bytes are lost (Linux marks the pages clean). */
static void node_poison(pl_node *n)
{
    if (n->is_dir || !n->dirty)
        return;
    size_t from = n->dirty_from < n->cur_len ? n->dirty_from : n->cur_len;
    if (n->poisoned) {
        if (from < n->pois_from)
            n->pois_from = from;
        if (n->cur_len > n->pois_to)
            n->pois_to = n->cur_len;
    } else {
        n->poisoned = 1;
        n->pois_from = from;
        n->pois_to = n->cur_len;
    }
}

/* The current bytes become the durable ones (a successful fsync), except
 * poisoned ones: the disk keeps what it had there (or zeros). */
static void node_capture(pl_node *n)
{
    if (n->is_dir)
        return;
    unsigned char *syn = xrealloc(NULL, n->cur_len);
    if (n->cur_len)
        memcpy(syn, n->cur, n->cur_len);
    for (size_t i = n->pois_from; n->poisoned && i < n->pois_to && i < n->cur_len; i++)
        syn[i] = i < n->syn_len ? n->syn[i] : 0;
    free(n->syn);
    n->syn = syn;
    n->syn_len = n->cur_len;
    n->dirty = 0;
    n->dirty_from = SIZE_MAX;
}

static void ents_free(pl_ent *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(e[i].name);
    free(e);
}

static int adopt(int at, const char *name, const char *path, int synced);

/* The entries of the directory open at dfd (dfd stays open), each mapped to
 * its node; unknown entries are adopted (as synced when `synced`). */
static int read_entries_fd(int dfd, const char *path, int synced, pl_ent **out, size_t *nout)
{
    int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    pl_ent *e = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
            continue;
        int node = node_by_ino(st.st_ino);
        if (node < 0) {
            char child[PATH_MAX];
            snprintf(child, sizeof child, "%s/%s", path ? path : "?", de->d_name);
            node = adopt(dirfd(d), de->d_name, child, synced);
            if (node < 0)
                continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            e = xrealloc(e, cap * sizeof *e);
        }
        e[n].name = xstrdup(de->d_name);
        e[n].node = node;
        n++;
    }
    closedir(d);
    *out = e;
    *nout = n;
    return 0;
}

/* The entries of node's directory as they are now; -1 if it is gone. */
static int read_entries_now(pl_node *dn, pl_ent **out, size_t *nout)
{
    if (!dn->path)
        return -1;
    int fd = open(dn->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) == 0 && st.st_ino == dn->ino)
        rc = read_entries_fd(fd, dn->path, 0, out, nout);
    close(fd);
    return rc;
}

static void dir_capture_fd(int node, int dfd)
{
    pl_ent *e;
    size_t n;
    if (read_entries_fd(dfd, P.nodes[node].path, 0, &e, &n) != 0)
        return;
    pl_node *dn = &P.nodes[node]; /* adopt may have moved the array */
    ents_free(dn->ents, dn->nents);
    dn->ents = e;
    dn->nents = n;
}

/* Makes a node for at/name (path: its real path).  synced: its content as
 * it is now counts as durable (the state at plio_start). */
static int adopt(int at, const char *name, const char *path, int synced)
{
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return -1;
    int existing = node_by_ino(st.st_ino);
    if (existing >= 0)
        return existing;
    if (S_ISDIR(st.st_mode)) {
        int node = node_new(st.st_ino, 1);
        P.nodes[node].path = xstrdup(path);
        if (synced) {
            int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd >= 0) {
                dir_capture_fd(node, fd);
                close(fd);
            }
        }
        return node;
    }
    int node = node_new(st.st_ino, 0);
    if (S_ISREG(st.st_mode)) {
        int fd = openat(at, name, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            unsigned char buf[65536];
            ssize_t r;
            size_t off = 0;
            while ((r = read(fd, buf, sizeof buf)) > 0) {
                node_write(&P.nodes[node], off, buf, (size_t)r);
                off += (size_t)r;
            }
            close(fd);
        }
    }
    P.nodes[node].dirty = 1;
    P.nodes[node].dirty_from = 0;
    if (synced)
        node_capture(&P.nodes[node]);
    return node;
}

static int node_of_fd(int fd)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return -1;
    int node = node_by_ino(st.st_ino);
    if (node >= 0)
        return node;
    char proc[64], path[PATH_MAX];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, path, sizeof path - 1);
    if (n < 0)
        return -1;
    path[n] = '\0';
    return adopt(AT_FDCWD, path, path, 0);
}

/* The real path of dirfd/path. */
static void at_path(int dirfd, const char *path, char out[PATH_MAX])
{
    if (path[0] == '/') {
        snprintf(out, PATH_MAX, "%s", path);
        return;
    }
    char base[PATH_MAX];
    if (dirfd == AT_FDCWD) {
        if (!getcwd(base, sizeof base))
            base[0] = '\0';
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", dirfd);
        ssize_t n = readlink(proc, base, sizeof base - 1);
        base[n < 0 ? 0 : n] = '\0';
    }
    if (snprintf(out, PATH_MAX, "%s/%s", base, path) >= PATH_MAX)
        out[0] = '\0'; /* too long to model: no path, so no match */
}

/* ----------------------------------------------------------------- cuts */

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static void plan_add(pl_plan *p, const char *rel, int is_dir, int node, unsigned char *data,
                     size_t len, long link_to)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? p->cap * 2 : 64;
        p->items = xrealloc(p->items, p->cap * sizeof *p->items);
    }
    p->items[p->n++] = (pl_item){xstrdup(rel), is_dir, node, data, len, link_to};
}

static void plan_free(pl_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->items[i].rel);
        free(p->items[i].data);
    }
    free(p->items);
}

/* The bytes node n would hold after a cut, under data mode `data`. */
static unsigned char *cut_bytes(const pl_node *n, int data, size_t *len)
{
    if (!n->dirty || data == PLIO_DATA_OLD) {
        const unsigned char *src = n->syn;
        size_t l = n->syn_len;
        unsigned char *b = xrealloc(NULL, l);
        if (l)
            memcpy(b, src, l);
        *len = l;
        return b;
    }
    size_t l = n->cur_len;
    unsigned char *b = xrealloc(NULL, l);
    if (l)
        memcpy(b, n->cur, l);
    size_t from = n->dirty_from < l ? n->dirty_from : l;
    if (data == PLIO_DATA_ZERO) {
        memset(b + from, 0, l - from);
    } else {
        size_t half = from + (l - from) / 2;
        for (size_t i = half; i < l; i++)
            b[i] = (unsigned char)(0xA5 ^ (i * 131));
    }
    *len = l;
    return b;
}

static void plan_dir(pl_plan *p, int node, const char *rel, int variant, long call,
                     unsigned char *visited, size_t nvisited, int depth)
{
    int dir_mode = variant / PLIO_DATA_MODES, data = variant % PLIO_DATA_MODES;
    if (depth > 32 || ((size_t)node < nvisited && visited[node]))
        return;
    if ((size_t)node < nvisited)
        visited[node] = 1;
    plan_add(p, rel, 1, node, NULL, 0, -1);
    if (P.skip[0] && strcmp(rel, P.skip) == 0)
        return;
    int current = dir_mode == PLIO_DIR_CURRENT ||
                  (dir_mode == PLIO_DIR_MIXED && (mix((uint64_t)call * 7919 + (uint64_t)node) & 1));
    pl_ent *e = P.nodes[node].ents;
    size_t ne = P.nodes[node].nents;
    pl_ent *now = NULL;
    size_t nnow = 0;
    if (current && read_entries_now(&P.nodes[node], &now, &nnow) == 0) {
        e = now;
        ne = nnow;
    }
    for (size_t i = 0; i < ne; i++) {
        char child[PATH_MAX];
        if ((size_t)snprintf(child, sizeof child, "%s%s%s", rel, rel[0] ? "/" : "", e[i].name) >=
            sizeof child)
            continue; /* cannot be part of a store tree (paths are short) */
        int c = e[i].node;
        if (P.nodes[c].is_dir) {
            plan_dir(p, c, child, variant, call, visited, nvisited, depth + 1);
            continue;
        }
        long link_to = -1;
        for (size_t j = 0; j < p->n && link_to < 0; j++)
            if (!p->items[j].is_dir && p->items[j].node == c)
                link_to = (long)j;
        if (link_to >= 0) {
            plan_add(p, child, 0, c, NULL, 0, link_to);
        } else {
            size_t len;
            unsigned char *b = cut_bytes(&P.nodes[c], data, &len);
            plan_add(p, child, 0, c, b, len, -1);
        }
    }
    ents_free(now, nnow);
}

static void plan_build(pl_plan *p, int variant, long call)
{
    memset(p, 0, sizeof *p);
    size_t nvisited = P.nnodes;
    unsigned char *visited = calloc(nvisited ? nvisited : 1, 1);
    if (!visited)
        die("out of memory");
    plan_dir(p, P.root_node, "", variant, call, visited, nvisited, 0);
    free(visited);
}

static uint64_t plan_hash(const pl_plan *p)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < p->n; i++) {
        const pl_item *it = &p->items[i];
        h = fnv(h, it->rel, strlen(it->rel) + 1);
        h = fnv(h, &it->is_dir, sizeof it->is_dir);
        h = fnv(h, &it->link_to, sizeof it->link_to);
        h = fnv(h, &it->len, sizeof it->len);
        if (it->len)
            h = fnv(h, it->data, it->len);
    }
    return h;
}

static int plan_write(const pl_plan *p, const char *dst)
{
    for (size_t i = 0; i < p->n; i++) {
        const pl_item *it = &p->items[i];
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s%s%s", dst, it->rel[0] ? "/" : "", it->rel);
        if (it->is_dir) {
            if (mkdir(path, 0755) != 0)
                return -1;
        } else if (it->link_to >= 0) {
            char target[PATH_MAX];
            snprintf(target, sizeof target, "%s/%s", dst, p->items[it->link_to].rel);
            if (link(target, path) != 0)
                return -1;
        } else {
            int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0)
                return -1;
            size_t off = 0;
            while (off < it->len) {
                ssize_t w = write(fd, it->data + off, it->len - off);
                if (w <= 0) {
                    close(fd);
                    return -1;
                }
                off += (size_t)w;
            }
            close(fd);
        }
    }
    return 0;
}

static void cut_locked(long call)
{
    P.points++;
    for (int v = 0; v < PLIO_VARIANTS; v++) {
        if (!(P.variants >> v & 1))
            continue;
        pl_plan plan;
        plan_build(&plan, v, call);
        uint64_t h = plan_hash(&plan);
        int dup = 0;
        for (size_t i = 0; i < P.nseen && !dup; i++)
            dup = P.seen[i] == h;
        if (dup) {
            P.dups++;
            plan_free(&plan);
            continue;
        }
        if (P.nseen == P.seen_cap) {
            P.seen_cap = P.seen_cap ? 2 * P.seen_cap : 64;
            P.seen = xrealloc(P.seen, P.seen_cap * sizeof *P.seen);
        }
        P.seen[P.nseen++] = h;
        if (P.ncuts == P.cuts_cap) {
            P.cuts_cap = P.cuts_cap ? 2 * P.cuts_cap : 64;
            P.cuts = xrealloc(P.cuts, P.cuts_cap * sizeof *P.cuts);
        }
        plio_cut *c = &P.cuts[P.ncuts];
        if (snprintf(c->path, sizeof c->path, "%s/%ld", P.cut_dir, P.trees) >= (int)sizeof c->path)
            die("cut directory path too long");
        c->call = call;
        c->variant = v;
        c->user_lo = P.user_lo;
        c->user_hi = P.user_hi;
        if (plan_write(&plan, c->path) != 0)
            die("writing a cut tree");
        P.ncuts++;
        P.trees++;
        plan_free(&plan);
    }
}

/* Before a call that may change the file system. */
static void maybe_cut(void)
{
    if (P.cuts_on && P.version != P.cut_version) {
        cut_locked(P.calls);
        P.cut_version = P.version;
    }
}

/* ------------------------------------------------------------ the table */

/* Counts the call; 1 if it must fail (errno set). */
static int fault_hit(int kind)
{
    long n = ++P.armed_calls;
    if (P.fault_at <= 0 || n < P.fault_at || (n > P.fault_at && !P.fault_sticky))
        return 0;
    if (P.faults++ == 0)
        P.first_kind = kind;
    P.kinds |= 1u << kind;
    P.phases |= 1u << P.phase;
    P.kinds_phase[P.phase & 7] |= 1u << kind;
    errno = P.fault_err;
    return 1;
}

/* Every entry: lock, count, cut before a changing call, maybe fail. */
#define ENTER(kind, changing)                                                                      \
    pthread_mutex_lock(&plio_mu);                                                                     \
    P.calls++;                                                                                     \
    if (changing)                                                                                  \
        maybe_cut();                                                                               \
    int fail_ = fault_hit(kind)
#define LEAVE(ret)                                                                                 \
    do {                                                                                           \
        int e_ = errno;                                                                            \
        pthread_mutex_unlock(&plio_mu);                                                               \
        errno = e_;                                                                                \
        return ret;                                                                                \
    } while (0)

static int w_openat(int dirfd, const char *path, int flags, mode_t mode)
{
    int creat = (flags & O_CREAT) != 0, tmpfile = (flags & O_TMPFILE) == O_TMPFILE;
    ENTER(PLIO_OPENAT, creat || tmpfile || (flags & O_TRUNC));
    if (fail_)
        LEAVE(-1);
    struct stat st;
    int existed = !tmpfile && (!creat || fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0);
    int fd = openat(dirfd, path, flags, mode);
    if (fd >= 0 && fd < 4096)
        P.fd_sample[fd] = P.wb_errs;
    if (fd >= 0) {
        if (!existed && fstat(fd, &st) == 0) {
            int node = node_new(st.st_ino, 0);
            P.nodes[node].dirty = 1;
            P.nodes[node].dirty_from = 0;
            P.version++;
        } else if (flags & O_TRUNC) {
            int node = node_of_fd(fd);
            if (node >= 0 && !P.nodes[node].is_dir) {
                node_truncate(&P.nodes[node], 0);
                P.version++;
            }
        }
    }
    LEAVE(fd);
}

static int w_close(int fd)
{
    ENTER(PLIO_CLOSE, 0);
    int r = close(fd); /* the descriptor is gone even when close reports an error */
    if (fail_) {
        errno = P.fault_err;
        r = -1;
    }
    LEAVE(r);
}

static ssize_t w_read(int fd, void *buf, size_t len)
{
    ENTER(PLIO_READ, 0);
    ssize_t r = fail_ ? -1 : read(fd, buf, len);
    LEAVE(r);
}

static ssize_t w_pread(int fd, void *buf, size_t len, off_t off)
{
    ENTER(PLIO_PREAD, 0);
    ssize_t r = fail_ ? -1 : pread(fd, buf, len, off);
    LEAVE(r);
}

static ssize_t w_write(int fd, const void *buf, size_t len)
{
    ENTER(PLIO_WRITE, 1);
    if (fail_)
        LEAVE(-1);
    off_t off = lseek(fd, 0, SEEK_CUR);
    ssize_t r = write(fd, buf, len);
    if (r > 0) {
        int node = node_of_fd(fd);
        if (node >= 0 && off >= 0)
            node_write(&P.nodes[node], (size_t)off, buf, (size_t)r);
        P.version++;
    }
    LEAVE(r);
}

static ssize_t w_pwrite(int fd, const void *buf, size_t len, off_t off)
{
    ENTER(PLIO_PWRITE, 1);
    if (fail_)
        LEAVE(-1);
    ssize_t r = pwrite(fd, buf, len, off);
    if (r > 0) {
        int node = node_of_fd(fd);
        if (node >= 0)
            node_write(&P.nodes[node], (size_t)off, buf, (size_t)r);
        P.version++;
    }
    LEAVE(r);
}

static int sync_fd(int kind, int fd)
{
    ENTER(kind, 1);
    int node = node_of_fd(fd);
    if (fail_) {
        if (P.fault_poison && node >= 0)
            node_poison(&P.nodes[node]);
        if (P.fault_poison)
            P.wb_errs++;
        LEAVE(-1);
    }
    if (node >= 0) {
        if (P.nodes[node].is_dir)
            dir_capture_fd(node, fd);
        else
            node_capture(&P.nodes[node]);
        P.version++;
    }
    LEAVE(0);
}

static int w_fsync(int fd) { return sync_fd(PLIO_FSYNC, fd); }
static int w_fdatasync(int fd) { return sync_fd(PLIO_FDATASYNC, fd); }

static int w_syncfs(int fd)
{
    ENTER(PLIO_SYNCFS, 1);
    if (fail_) {
        for (size_t i = 0; P.fault_poison && i < P.nnodes; i++)
            node_poison(&P.nodes[i]);
        if (P.fault_poison)
            P.wb_errs++;
        LEAVE(-1);
    }
    if (fd >= 0 && fd < 4096 && P.fd_sample[fd] < P.wb_errs) {
        /* an earlier writeback error this descriptor has not reported */
        P.fd_sample[fd] = P.wb_errs;
        errno = EIO;
        LEAVE(-1);
    }
    size_t n = P.nnodes; /* capturing may adopt nodes; they are new anyway */
    char skip[2 * PATH_MAX + 8];
    size_t skiplen = 0;
    if (P.skip[0] && snprintf(skip, sizeof skip, "%s/%s/", P.root, P.skip) < (int)sizeof skip)
        skiplen = strlen(skip);
    for (size_t i = 0; i < n; i++) {
        pl_node *nd = &P.nodes[i];
        if (!nd->is_dir) {
            node_capture(nd);
            continue;
        }
        if (skiplen && nd->path && strncmp(nd->path, skip, skiplen) == 0)
            continue; /* never part of a cut */
        pl_ent *e;
        size_t ne;
        if (read_entries_now(nd, &e, &ne) == 0) {
            nd = &P.nodes[i];
            ents_free(nd->ents, nd->nents);
            nd->ents = e;
            nd->nents = ne;
        }
    }
    P.version++;
    LEAVE(0);
}

static int w_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    ENTER(PLIO_LINKAT, 1);
    int r = fail_ ? -1 : linkat(olddirfd, oldpath, newdirfd, newpath, flags);
    if (r == 0)
        P.version++;
    LEAVE(r);
}

static int w_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    ENTER(PLIO_RENAMEAT, 1);
    int r = fail_ ? -1 : renameat(olddirfd, oldpath, newdirfd, newpath);
    if (r == 0)
        P.version++;
    LEAVE(r);
}

static int w_unlinkat(int dirfd, const char *path, int flags)
{
    ENTER(PLIO_UNLINKAT, 1);
    int r = fail_ ? -1 : unlinkat(dirfd, path, flags);
    if (r == 0)
        P.version++;
    LEAVE(r);
}

static int w_mkdirat(int dirfd, const char *path, mode_t mode)
{
    ENTER(PLIO_MKDIRAT, 1);
    int r = fail_ ? -1 : mkdirat(dirfd, path, mode);
    if (r == 0) {
        struct stat st;
        if (fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0) {
            int node = node_new(st.st_ino, 1);
            char real[PATH_MAX];
            at_path(dirfd, path, real);
            P.nodes[node].path = xstrdup(real);
        }
        P.version++;
    }
    LEAVE(r);
}

static int w_fstat(int fd, struct stat *st)
{
    ENTER(PLIO_FSTAT, 0);
    int r = fail_ ? -1 : fstat(fd, st);
    LEAVE(r);
}

static int w_fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    ENTER(PLIO_FSTATAT, 0);
    int r = fail_ ? -1 : fstatat(dirfd, path, st, flags);
    LEAVE(r);
}

static int w_ftruncate(int fd, off_t len)
{
    ENTER(PLIO_FTRUNCATE, 1);
    int r = fail_ ? -1 : ftruncate(fd, len);
    if (r == 0) {
        int node = node_of_fd(fd);
        if (node >= 0)
            node_truncate(&P.nodes[node], (size_t)len);
        P.version++;
    }
    LEAVE(r);
}

static void *w_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    /* a shared writable mapping would bypass the model: refuse it */
    ENTER(PLIO_MMAP, 0);
    void *r = MAP_FAILED;
    if (fail_)
        LEAVE(r);
    if ((prot & PROT_WRITE) && (flags & MAP_SHARED)) {
        errno = ENODEV;
        LEAVE(r);
    }
    r = mmap(addr, len, prot, flags, fd, off);
    LEAVE(r);
}

static int w_munmap(void *addr, size_t len)
{
    ENTER(PLIO_MUNMAP, 0);
    int r = munmap(addr, len);
    if (fail_) {
        errno = P.fault_err;
        r = -1;
    }
    LEAVE(r);
}

static int w_flock(int fd, int op)
{
    ENTER(PLIO_FLOCK, 0);
    int r = fail_ ? -1 : flock(fd, op);
    LEAVE(r);
}

static DIR *w_fdopendir(int fd)
{
    ENTER(PLIO_FDOPENDIR, 0);
    DIR *r = fail_ ? NULL : fdopendir(fd);
    LEAVE(r);
}

static struct dirent *w_readdir(DIR *dir)
{
    ENTER(PLIO_READDIR, 0);
    struct dirent *r = fail_ ? NULL : readdir(dir);
    LEAVE(r);
}

static int w_closedir(DIR *dir)
{
    ENTER(PLIO_CLOSEDIR, 0);
    int r = closedir(dir);
    if (fail_) {
        errno = P.fault_err;
        r = -1;
    }
    LEAVE(r);
}

static ssize_t w_copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len,
                                 unsigned flags)
{
    ENTER(PLIO_COPY_FILE_RANGE, 1);
    if (fail_)
        LEAVE(-1);
    off_t ioff = off_in ? *off_in : lseek(fd_in, 0, SEEK_CUR);
    off_t ooff = off_out ? *off_out : lseek(fd_out, 0, SEEK_CUR);
    ssize_t r = copy_file_range(fd_in, off_in, fd_out, off_out, len, flags);
    if (r > 0) {
        unsigned char *buf = xrealloc(NULL, (size_t)r);
        ssize_t got = pread(fd_in, buf, (size_t)r, ioff);
        int node = node_of_fd(fd_out);
        if (got == r && node >= 0)
            node_write(&P.nodes[node], (size_t)ooff, buf, (size_t)r);
        free(buf);
        P.version++;
    }
    LEAVE(r);
}

static const fbk__file_io plio_table = {
    .openat = w_openat,
    .close = w_close,
    .read = w_read,
    .pread = w_pread,
    .write = w_write,
    .pwrite = w_pwrite,
    .fsync = w_fsync,
    .fdatasync = w_fdatasync,
    .syncfs = w_syncfs,
    .linkat = w_linkat,
    .renameat = w_renameat,
    .unlinkat = w_unlinkat,
    .mkdirat = w_mkdirat,
    .fstat = w_fstat,
    .fstatat = w_fstatat,
    .ftruncate = w_ftruncate,
    .mmap = w_mmap,
    .munmap = w_munmap,
    .flock = w_flock,
    .fdopendir = w_fdopendir,
    .readdir = w_readdir,
    .closedir = w_closedir,
    .copy_file_range = w_copy_file_range,
};

static int fast_sync(int fd)
{
    (void)fd;
    return 0;
}

static fbk__file_io fast_table;

void plio_install_fast(int on)
{
    if (!on) {
        fbk__file_io_set(NULL);
        return;
    }
    fast_table = fbk__file_io_posix;
    fast_table.fsync = fast_sync;
    fast_table.fdatasync = fast_sync;
    fast_table.syncfs = fast_sync;
    fbk__file_io_set(&fast_table);
}

void plio_pause(int paused)
{
    if (paused)
        plio_install_fast(1);
    else
        fbk__file_io_set(&plio_table);
}

/* ---------------------------------------------------------------- public */

static void model_free(void)
{
    for (size_t i = 0; i < P.nnodes; i++) {
        free(P.nodes[i].cur);
        free(P.nodes[i].syn);
        ents_free(P.nodes[i].ents, P.nodes[i].nents);
        free(P.nodes[i].path);
    }
    free(P.nodes);
    P.nodes = NULL;
    P.nnodes = P.cap = 0;
}

int plio_start(const char *root)
{
    pthread_mutex_lock(&plio_mu);
    model_free();
    free(P.seen);
    free(P.cuts);
    memset(&P, 0, sizeof P);
    snprintf(P.root, sizeof P.root, "%s", root);
    P.root_node = adopt(AT_FDCWD, root, root, 1);
    if (P.root_node < 0 || !P.nodes[P.root_node].is_dir) {
        pthread_mutex_unlock(&plio_mu);
        errno = ENOTDIR;
        return -1;
    }
    P.active = 1;
    pthread_mutex_unlock(&plio_mu);
    fbk__file_io_set(&plio_table);
    return 0;
}

void plio_stop(void)
{
    fbk__file_io_set(NULL);
    pthread_mutex_lock(&plio_mu);
    P.active = 0;
    P.cuts_on = 0;
    model_free();
    pthread_mutex_unlock(&plio_mu);
}

void plio_set_user(int lo, int hi)
{
    pthread_mutex_lock(&plio_mu);
    P.user_lo = lo;
    P.user_hi = hi;
    pthread_mutex_unlock(&plio_mu);
}

void plio_skip(const char *skip)
{
    pthread_mutex_lock(&plio_mu);
    snprintf(P.skip, sizeof P.skip, "%s", skip ? skip : "");
    pthread_mutex_unlock(&plio_mu);
}

void plio_cuts_enable(const char *dir, unsigned variants, const char *skip)
{
    plio_skip(skip);
    pthread_mutex_lock(&plio_mu);
    P.cuts_on = 1;
    snprintf(P.cut_dir, sizeof P.cut_dir, "%s", dir);
    P.variants = variants;
    P.cut_version = P.version + 1; /* cut at the first changing call */
    pthread_mutex_unlock(&plio_mu);
}

void plio_cut_now(void)
{
    pthread_mutex_lock(&plio_mu);
    if (P.cuts_on) {
        cut_locked(P.calls + 1);
        P.cut_version = P.version;
    }
    pthread_mutex_unlock(&plio_mu);
}

size_t plio_cut_count(void)
{
    pthread_mutex_lock(&plio_mu);
    size_t n = P.ncuts;
    pthread_mutex_unlock(&plio_mu);
    return n;
}

const plio_cut *plio_cut_get(size_t i)
{
    pthread_mutex_lock(&plio_mu);
    const plio_cut *c = i < P.ncuts ? &P.cuts[i] : NULL;
    pthread_mutex_unlock(&plio_mu);
    return c;
}

void plio_cut_stats(long *points, long *trees, long *dups)
{
    pthread_mutex_lock(&plio_mu);
    *points = P.points;
    *trees = P.trees;
    *dups = P.dups;
    pthread_mutex_unlock(&plio_mu);
}

int plio_snapshot(const char *dst, int variant)
{
    pthread_mutex_lock(&plio_mu);
    pl_plan plan;
    plan_build(&plan, variant, P.calls);
    int rc = plan_write(&plan, dst);
    plan_free(&plan);
    pthread_mutex_unlock(&plio_mu);
    return rc;
}

void plio_fault_arm(long at, int err, int sticky, int poison)
{
    pthread_mutex_lock(&plio_mu);
    P.armed_calls = 0;
    P.fault_at = at;
    P.fault_err = err;
    P.fault_sticky = sticky;
    P.fault_poison = poison;
    P.faults = 0;
    P.first_kind = -1;
    P.kinds = 0;
    P.phases = 0;
    memset(P.kinds_phase, 0, sizeof P.kinds_phase);
    pthread_mutex_unlock(&plio_mu);
}

void plio_fault_disarm(void)
{
    pthread_mutex_lock(&plio_mu);
    P.fault_at = 0;
    pthread_mutex_unlock(&plio_mu);
}

long plio_calls(void)
{
    pthread_mutex_lock(&plio_mu);
    long n = P.armed_calls;
    pthread_mutex_unlock(&plio_mu);
    return n;
}

long plio_faults(int *first_kind, unsigned *kinds)
{
    pthread_mutex_lock(&plio_mu);
    long n = P.faults;
    if (first_kind)
        *first_kind = P.first_kind;
    if (kinds)
        *kinds = P.kinds;
    pthread_mutex_unlock(&plio_mu);
    return n;
}

void plio_set_phase(int phase)
{
    pthread_mutex_lock(&plio_mu);
    P.phase = phase & 7;
    pthread_mutex_unlock(&plio_mu);
}

unsigned plio_fault_phases(void)
{
    pthread_mutex_lock(&plio_mu);
    unsigned p = P.phases;
    pthread_mutex_unlock(&plio_mu);
    return p;
}

unsigned plio_fault_kinds_in(int phase)
{
    pthread_mutex_lock(&plio_mu);
    unsigned k = P.kinds_phase[phase & 7];
    pthread_mutex_unlock(&plio_mu);
    return k;
}
