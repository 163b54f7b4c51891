/* plscen.c -- the power-loss tests' save cycle and checker; see plscen.h. */
#include "plscen.h"

#include "../../backends/file/file_io.h"
#include "plio.h"
#include "testutil.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int pl_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__)
    return 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
    return 1;
#else
    return 0;
#endif
#else
    return 0;
#endif
}

static void join(char *dst, size_t cap, const char *a, const char *b)
{
    int n = snprintf(dst, cap, "%s%s", a, b);
    cr_assert(n >= 0 && (size_t)n < cap, "path too long: %s%s", a, b);
}

void pl_world_init(pl_world *w, const char *name, size_t mem_items)
{
    memset(w, 0, sizeof *w);
    /* Durability is the model's business, so the tree may live on tmpfs:
     * /dev/shm when writable (mkdir on the CI disk costs ~200 us, and every
     * checked state opens a store, which makes 256 spill shards). */
    const char *base = getenv("FBK_POWERLOSS_DIR");
    if (!base && access("/dev/shm", W_OK) == 0)
        base = "/dev/shm";
    if (base && *base) {
        char top[PATH_MAX];
        snprintf(top, sizeof top, "%s/fbk-powerloss-%ld", base, (long)getpid());
        mkdir(top, 0755);
        char sub[PATH_MAX];
        snprintf(sub, sizeof sub, "/%s", name);
        join(w->root, sizeof w->root, top, sub);
        cr_assert_eq(tu_rmtree(w->root), 0, "cannot clear %s", w->root);
        cr_assert_eq(mkdir(w->root, 0755), 0, "mkdir %s: %s", w->root, strerror(errno));
        w->temp_top = 1;
    } else {
        join(w->root, sizeof w->root, tu_fresh_dir(name), "");
    }
    join(w->live, sizeof w->live, w->root, "/live");
    join(w->cuts, sizeof w->cuts, w->root, "/cuts");
    join(w->store_dir, sizeof w->store_dir, w->live, "/store");
    join(w->loc_dir, sizeof w->loc_dir, w->store_dir, "/loc");
    cr_assert_eq(mkdir(w->live, 0755), 0, "mkdir %s: %s", w->live, strerror(errno));
    cr_assert_eq(mkdir(w->cuts, 0755), 0, "mkdir %s: %s", w->cuts, strerror(errno));
    w->mem_items = mem_items;
}

int pl_world_open(pl_world *w)
{
    char uri[PATH_MAX + 8];
    snprintf(uri, sizeof uri, "file:%s", w->store_dir);
    fbk_store_options o = {0};
    o.threads = 2;
    int rc = fbk_store_open(&w->s, uri, &o);
    if (rc)
        return rc;
    rc = fbk_pool_create(&w->p, w->s, &fbk_blob_codec, w->mem_items);
    if (rc == FBK_OK)
        rc = fbk_location_open(w->s, "loc", &w->loc);
    if (rc) {
        fbk_pool_release(w->p);
        fbk_store_close(w->s);
        w->p = NULL;
        w->s = NULL;
    }
    return rc;
}

void pl_world_remove(pl_world *w)
{
    tu_rmtree(w->root);
    if (w->temp_top) {
        char *slash = strrchr(w->root, '/');
        if (slash) {
            *slash = '\0';
            rmdir(w->root); /* the per-process directory, once empty */
            *slash = '/';
        }
    }
    for (int g = 0; g < PL_MAX_GENS; g++) {
        free(w->gen_text[g]);
        w->gen_text[g] = NULL;
    }
}

void pl_world_close(pl_world *w)
{
    fbk_location_close(w->loc);
    fbk_pool_release(w->p);
    fbk_store_close(w->s);
    w->loc = NULL;
    w->p = NULL;
    w->s = NULL;
}

void pl_release_all(fbk_handle **h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fbk_handle_release(h[i]);
        h[i] = NULL;
    }
}

static void remember(pl_world *w, fbk_handle *h, size_t len, uint64_t seed)
{
    cr_assert_lt(w->nobjs, PL_MAX_OBJS, "too many objects");
    pl_obj *o = &w->objs[w->nobjs++];
    fbk_handle_key(h, &o->key);
    o->len = len;
    o->seed = seed;
}

static const pl_obj *find_obj(const pl_world *w, const fbk_key *k)
{
    for (size_t i = 0; i < w->nobjs; i++)
        if (fbk_key_equal(&w->objs[i].key, k))
            return &w->objs[i];
    return NULL;
}

void pl_new(pl_world *w, size_t len, uint64_t seed, fbk_handle **out)
{
    fbk_blob *b = tu_blob(len, seed);
    int rc = fbk_insert(w->p, b, out);
    cr_assert_eq(rc, FBK_OK, "insert: %s", fbk_errmsg());
    remember(w, *out, len, seed);
}

void pl_mutate(pl_world *w, fbk_handle *h, uint64_t seed)
{
    void *obj;
    int rc = fbk_load_mut(h, &obj);
    cr_assert_eq(rc, FBK_OK, "load_mut: %s", fbk_errmsg());
    fbk_blob *b = obj;
    tu_fill(b->data, b->len, seed);
    size_t len = b->len;
    fbk_unload_mut(h);
    remember(w, h, len, seed);
}

int pl_handle_ok(pl_world *w, fbk_handle *h)
{
    fbk_key k;
    fbk_handle_key(h, &k);
    const pl_obj *o = find_obj(w, &k);
    const void *obj;
    if (!o || fbk_load(h, &obj) != FBK_OK)
        return 0;
    int ok = tu_blob_check(obj, o->len, o->seed);
    fbk_unload(h);
    return ok;
}

/* ------------------------------------------------------------ manifests */

static uint64_t text_sum(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void make_text(pl_world *w, int gen, fbk_handle *const *h, size_t n)
{
    size_t cap = 128 + n * 80, len = 0;
    char *t = malloc(cap);
    cr_assert_not_null(t);
    len += (size_t)snprintf(t + len, cap - len, "fbk-powerloss-manifest 1\ngen %d\n", gen);
    for (size_t i = 0; i < n; i++) {
        fbk_key k;
        fbk_handle_key(h[i], &k);
        const pl_obj *o = find_obj(w, &k);
        cr_assert_not_null(o);
        char hex[33];
        fbk_key_format_hex(&k, hex);
        len += (size_t)snprintf(t + len, cap - len, "%s %zu %llu\n", hex, o->len,
                                (unsigned long long)o->seed);
    }
    uint64_t sum = text_sum(t, len);
    len += (size_t)snprintf(t + len, cap - len, "end %016llx\n", (unsigned long long)sum);
    w->gen_text[gen] = t;
    w->gen_len[gen] = len;
}

typedef struct commit_arg {
    pl_world *w;
    int gen;
} commit_arg;

static int io_err(int e)
{
    return e == ENOSPC ? FBK_ENOSPC : FBK_EIO;
}

/* The user's commit: MANIFEST.tmp, fsync, rename over MANIFEST, fsync of
 * the location directory -- all through the backend's I/O table. */
static int commit_manifest(void *varg)
{
    commit_arg *a = varg;
    pl_world *w = a->w;
    const fbk__file_io *io = fbk__file_io_get();
    w->commit_calls++;
    plio_set_phase(PL_PHASE_COMMIT);
    plio_set_user(w->committed, a->gen);
    char tmp[PATH_MAX + 16], fin[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s/MANIFEST.tmp", w->loc_dir);
    snprintf(fin, sizeof fin, "%s/MANIFEST", w->loc_dir);
    int rc = 0;
    int fd = io->openat(AT_FDCWD, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        rc = io_err(errno);
    const char *p = w->gen_text[a->gen];
    size_t left = w->gen_len[a->gen];
    while (rc == 0 && left > 0) {
        ssize_t n = io->write(fd, p, left);
        if (n <= 0) {
            rc = io_err(n < 0 ? errno : EIO);
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    if (rc == 0 && io->fsync(fd) != 0)
        rc = io_err(errno);
    if (fd >= 0 && io->close(fd) != 0 && rc == 0)
        rc = io_err(errno);
    if (rc == 0 && io->renameat(AT_FDCWD, tmp, AT_FDCWD, fin) != 0)
        rc = io_err(errno);
    if (rc == 0) {
        int dfd = io->openat(AT_FDCWD, w->loc_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
        if (dfd < 0)
            rc = io_err(errno);
        else {
            if (io->fsync(dfd) != 0)
                rc = io_err(errno);
            io->close(dfd);
        }
    }
    if (rc != 0) {
        io->unlinkat(AT_FDCWD, tmp, 0); /* best effort */
        fbk_error_set(rc, 0, "commit: manifest generation %d not written", a->gen);
    } else {
        w->committed = a->gen;
        plio_set_user(a->gen, a->gen);
    }
    w->commit_rc = rc;
    plio_set_phase(PL_PHASE_AFTER);
    return rc;
}

int pl_save(pl_world *w, fbk_handle *const *h, size_t n, unsigned width)
{
    cr_assert_lt(w->ngen + 1, PL_MAX_GENS, "too many generations");
    int gen = ++w->ngen;
    make_text(w, gen, h, n);
    commit_arg a = {w, gen};
    w->commit_calls = 0;
    w->commit_rc = 0;
    plio_set_phase(PL_PHASE_SAVE);
    int rc = fbk_save(w->loc, h, n, width, commit_manifest, &a);
    plio_set_phase(PL_PHASE_OTHER);
    if (w->commit_calls == 0 || w->commit_rc != 0)
        plio_set_user(w->committed, gen); /* a failed commit may still have renamed */
    return rc;
}

/* -------------------------------------------------------------- checker */

static void note(pl_stats *st, int *bad, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void note(pl_stats *st, int *bad, const char *fmt, ...)
{
    *bad = 1;
    size_t used = strlen(st->first);
    if (used + 2 >= sizeof st->first)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->first + used, sizeof st->first - used, fmt, ap);
    va_end(ap);
    used = strlen(st->first);
    if (used + 1 < sizeof st->first) {
        st->first[used] = '\n';
        st->first[used + 1] = '\0';
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    *len = n;
    return b;
}

/* Loads key from loc into pool: 0 intact, 1 refused as corrupt, 2 absent,
 * -1 wrong bytes or another failure (message in why). */
static int load_key(pl_world *w, fbk_pool *p, fbk_location *loc, const fbk_key *key,
                    char *why, size_t cap)
{
    fbk_handle *h;
    int rc = fbk_register(p, loc, key, &h);
    if (rc == FBK_ENOTFOUND)
        return 2;
    if (rc) {
        snprintf(why, cap, "register: %s (%s)", fbk_err_name(rc), fbk_errmsg());
        return -1;
    }
    const void *obj;
    rc = fbk_load(h, &obj);
    int res;
    if (rc == FBK_ECORRUPT) {
        res = 1;
    } else if (rc) {
        snprintf(why, cap, "load: %s (%s)", fbk_err_name(rc), fbk_errmsg());
        res = -1;
    } else {
        const pl_obj *o = find_obj(w, key);
        if (!o) {
            snprintf(why, cap, "a key the test never made");
            res = -1;
        } else if (!tu_blob_check(obj, o->len, o->seed)) {
            snprintf(why, cap, "WRONG BYTES accepted (len %zu, expected %zu)",
                     ((const fbk_blob *)obj)->len, o->len);
            res = -1;
        } else {
            res = 0;
        }
        fbk_unload(h);
    }
    fbk_handle_release(h);
    return res;
}

int pl_check_tree(pl_world *w, const char *store_dir, int lo, int hi, const char *label,
                  pl_stats *st)
{
    int bad = 0;
    st->trees++;
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/loc/MANIFEST", store_dir);
    size_t mlen = 0;
    char *m = slurp(path, &mlen);
    int gen = -1;
    if (!m) {
        if (lo == 0)
            gen = 0;
        else
            note(st, &bad, "%s: manifest missing (generation %d..%d expected)", label, lo, hi);
    } else {
        for (int g = lo > 0 ? lo : 1; g <= hi && gen < 0; g++)
            if (w->gen_text[g] && w->gen_len[g] == mlen && memcmp(w->gen_text[g], m, mlen) == 0)
                gen = g;
        if (gen < 0) {
            int said = -1;
            sscanf(m, "fbk-powerloss-manifest 1\ngen %d", &said);
            note(st, &bad, "%s: manifest is not generation %d..%d (%zu bytes, says gen %d%s)",
                 label, lo, hi, mlen, said, mlen == 0 ? ", empty" : "");
        }
    }
    if (gen < 0) {
        st->bad_manifest++;
        free(m);
        st->failures++;
        return -1;
    }

    /* the keys the manifest names */
    fbk_key named[PL_MAX_OBJS];
    size_t nnamed = 0;
    if (m) {
        const char *line = strchr(m, '\n');
        line = line ? strchr(line + 1, '\n') : NULL;
        while (line && line[1] && strncmp(line + 1, "end ", 4) != 0 && nnamed < PL_MAX_OBJS) {
            char hex[33] = {0};
            memcpy(hex, line + 1, 32);
            cr_assert_eq(fbk_key_parse(hex, &named[nnamed]), FBK_OK, "manifest line");
            nnamed++;
            line = strchr(line + 1, '\n');
        }
    }
    free(m);

    char uri[PATH_MAX + 8];
    snprintf(uri, sizeof uri, "file:%s", store_dir);
    fbk_store *s = NULL;
    fbk_pool *p = NULL;
    fbk_location *loc = NULL;
    fbk_store_options o = {0};
    o.threads = 1;
    int rc = fbk_store_open(&s, uri, &o);
    if (rc == FBK_OK)
        rc = fbk_pool_create(&p, s, &fbk_blob_codec, 1024);
    if (rc == FBK_OK)
        rc = fbk_location_open(s, "loc", &loc);
    if (rc) {
        note(st, &bad, "%s: cannot open the store or location: %s", label, fbk_errmsg());
    } else {
        char why[512];
        for (size_t i = 0; i < nnamed; i++) {
            char hex[33];
            fbk_key_format_hex(&named[i], hex);
            st->objects++;
            int r = load_key(w, p, loc, &named[i], why, sizeof why);
            if (r == 2) {
                st->lost++;
                note(st, &bad, "%s: gen %d: object %s LOST", label, gen, hex);
            } else if (r == 1) {
                st->corrupt++;
                note(st, &bad, "%s: gen %d: object %s CORRUPT (%s)", label, gen, hex,
                     fbk_errmsg());
            } else if (r < 0) {
                if (strstr(why, "WRONG"))
                    st->wrong++;
                else
                    st->corrupt++;
                note(st, &bad, "%s: gen %d: object %s: %s", label, gen, hex, why);
            }
        }
        size_t nkeys = fbk_location_keys(loc, NULL, 0);
        fbk_key *keys = malloc((nkeys ? nkeys : 1) * sizeof *keys);
        cr_assert_not_null(keys);
        nkeys = fbk_location_keys(loc, keys, nkeys);
        for (size_t i = 0; i < nkeys; i++) {
            int in = 0;
            for (size_t j = 0; j < nnamed && !in; j++)
                in = fbk_key_equal(&keys[i], &named[j]);
            if (in)
                continue;
            char hex[33];
            fbk_key_format_hex(&keys[i], hex);
            int r = load_key(w, p, loc, &keys[i], why, sizeof why);
            if (r == 0)
                st->extra_ok++;
            else if (r == 1)
                st->extra_detected++;
            else {
                if (strstr(why, "WRONG"))
                    st->wrong++;
                note(st, &bad, "%s: unlisted object %s: %s", label, hex,
                     r == 2 ? "listed but absent" : why);
            }
        }
        free(keys);
    }
    fbk_location_close(loc);
    fbk_pool_release(p);
    fbk_store_close(s);
    if (bad)
        st->failures++;
    return bad ? -1 : 0;
}
