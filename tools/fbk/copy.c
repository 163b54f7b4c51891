/* copy.c -- every object (under the same key) and every name of LOC into
 * LOC2, synced; resumable.
 *
 * There is no public call that inserts an object under a given key (fbk_insert
 * makes a new one), and a copy must keep keys: programs keep them in
 * manifests, and a rerun must see what is already there.  So objects move
 * through the backend tables of fbk_backend.h (fbk_backend_*_create), framed
 * bytes as they are stored: register_key + load from the source, store +
 * persist into the destination.  The frame of every value is checked on the
 * way (docs/formats.md), so damage is reported, never copied.  Names go
 * through the map API on stores opened over the same tables. */
#include "fbk_tool.h"

#include <fbk_backend.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define SYNC_EVERY_OBJECTS 1024
#define SYNC_EVERY_BYTES (256ull << 20)

typedef struct side {
    tool_uri u;
    const fbk_backend_ops *ops;
    void *self;
    fbk_store *s; /* owns self */
    void *rloc;   /* the backend's handle of the location */
} side;

static int side_open(const char *cmd, side *sd, int readonly)
{
    fbk_store_options o = {0};
#if FBK_TOOL_HAVE_READONLY
    if (readonly)
        o.flags |= FBK_STORE_READONLY;
#else
    (void)readonly;
#endif
    int rc;
    if (sd->u.scheme == TOOL_LMDB)
        rc = fbk_backend_lmdb_create(sd->u.dir, &o, &sd->ops, &sd->self);
    else if (sd->u.scheme == TOOL_FILE)
        rc = fbk_backend_file_create(sd->u.dir, &o, &sd->ops, &sd->self);
    else
        return tool_fail(cmd, FBK_TOOL_ERROR, "%s: copy works between lmdb: and file: stores",
                         sd->u.uri);
    if (rc)
        return tool_fail(cmd, rc, "open %s", sd->u.uri);
    rc = fbk_store_open_backend(&sd->s, sd->ops, sd->self, &o);
    if (rc)
        return tool_fail(cmd, rc, "open %s", sd->u.uri);
    return 0;
}

static uint64_t get_le64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The frame of docs/formats.md: "" when intact, else what is wrong. */
static const char *frame_check(const unsigned char *p, size_t len)
{
    if (len < FBK_TOOL_FRAME_HDR)
        return "shorter than the frame header";
    if (memcmp(p, "FBKB", 4) != 0)
        return "bad magic";
    if (p[4] != 1)
        return "unknown format version";
    if (p[5] | p[6] | p[7])
        return "reserved header bytes are not zero";
    if (get_le64(p + 8) != (uint64_t)(len - FBK_TOOL_FRAME_HDR))
        return "length does not match the stored size";
    if (get_le64(p + 16) != XXH3_64bits(p + FBK_TOOL_FRAME_HDR, len - FBK_TOOL_FRAME_HDR))
        return "checksum mismatch";
    return "";
}

typedef struct buf {
    unsigned char *p;
    size_t len, cap;
} buf;

static int read_into(const void *src, size_t len, void *arg)
{
    buf *b = arg;
    if (len > b->cap) {
        unsigned char *np = realloc(b->p, len);
        if (!np)
            return fbk_error_set(FBK_ENOMEM, 0, "copy: %zu bytes", len);
        b->p = np, b->cap = len;
    }
    memcpy(b->p, src, len);
    b->len = len;
    return 0;
}

static int fill_from(void *dst, size_t len, void *arg)
{
    buf *b = arg;
    if (len != b->len)
        return FBK_EINVAL;
    memcpy(dst, b->p, len);
    return 0;
}

typedef struct keyset {
    fbk_key *k;
    size_t n, cap;
} keyset;

static int collect(const fbk_key *key, void *arg)
{
    keyset *ks = arg;
    if (ks->n == ks->cap) {
        size_t c = ks->cap ? ks->cap * 2 : 1024;
        fbk_key *p = realloc(ks->k, c * sizeof *p);
        if (!p)
            return fbk_error_set(FBK_ENOMEM, 0, "out of memory");
        ks->k = p, ks->cap = c;
    }
    ks->k[ks->n++] = *key;
    return 0;
}

static int cmp_key(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

typedef struct copier {
    const fbk_cli *c;
    side *src, *dst;
    int same; /* one store: the spill copy registered from LOC is persisted as is */
    uint64_t copied, skipped, bytes, damaged, names, names_skipped;
} copier;

/* One object; 0, 1 when the source is damaged (reported), or an exit status. */
static int copy_one(copier *cp, const fbk_key *k, buf *b, uint64_t *unsynced)
{
    side *s = cp->src, *d = cp->dst;
    char ks[FBK_KEY_STRLEN + 1];
    fbk_key_format(k, ks);
    int rc = s->ops->register_key(s->self, s->rloc, k);
    if (rc)
        return tool_fail(cp->c->cmd, rc, "read %s from '%s'", ks, cp->c->pos[1]);
    rc = s->ops->load(s->self, k, read_into, b);
    const char *bad = rc ? "" : frame_check(b->p, b->len);
    if (!rc && *bad) {
        fprintf(stderr, "fbk: copy: %s in '%s' is damaged (%s): not copied\n", ks,
                cp->c->pos[1], bad);
        cp->damaged++;
    } else if (!rc && cp->same) {
        rc = d->ops->persist(d->self, d->rloc, k);
    } else if (!rc) {
        rc = d->ops->store(d->self, k, b->len, fill_from, b);
        if (!rc) {
            rc = d->ops->persist(d->self, d->rloc, k);
            int r = d->ops->remove(d->self, k);
            if (!rc)
                rc = r;
        }
    }
    int r = s->ops->remove(s->self, k);
    if (rc)
        return tool_fail(cp->c->cmd, rc, "copy %s", ks);
    if (r)
        return tool_fail(cp->c->cmd, r, "drop the spill copy of %s", ks);
    if (*bad)
        return 1;
    cp->copied++;
    cp->bytes += b->len - FBK_TOOL_FRAME_HDR;
    *unsynced += b->len;
    return 0;
}

static int copy_objects(copier *cp)
{
    side *s = cp->src, *d = cp->dst;
    const char *cmd = cp->c->cmd;
    keyset sk = {0}, dk = {0};
    int rc = s->ops->open_location(s->self, cp->c->pos[1], &s->rloc);
    if (rc)
        return tool_fail(cmd, rc, "open location '%s'", cp->c->pos[1]);
    rc = d->ops->open_location(d->self, cp->c->pos[3], &d->rloc);
    if (rc)
        return tool_fail(cmd, rc, "open location '%s'", cp->c->pos[3]);
    int r = s->ops->scan(s->self, s->rloc, collect, &sk);
    if (r < 0)
        return tool_fail(cmd, r, "list '%s'", cp->c->pos[1]);
    r = d->ops->scan(d->self, d->rloc, collect, &dk);
    if (r < 0)
        return tool_fail(cmd, r, "list '%s'", cp->c->pos[3]);
    if (dk.n)
        qsort(dk.k, dk.n, sizeof *dk.k, cmp_key);
    if (sk.n)
        qsort(sk.k, sk.n, sizeof *sk.k, cmp_key);
    buf b = {0};
    uint64_t unsynced = 0, pending = 0;
    for (size_t i = 0; i < sk.n && !rc; i++) {
        if (dk.n && bsearch(&sk.k[i], dk.k, dk.n, sizeof *dk.k, cmp_key)) {
            cp->skipped++; /* copied by an earlier run */
            continue;
        }
        r = copy_one(cp, &sk.k[i], &b, &unsynced);
        if (r > 1) {
            rc = r;
            break;
        }
        pending += r == 0;
        /* sync now and then, so an interrupted copy keeps most of its work */
        if (pending >= SYNC_EVERY_OBJECTS || unsynced >= SYNC_EVERY_BYTES) {
            r = d->ops->sync(d->self, d->rloc);
            if (r)
                rc = tool_fail(cmd, r, "sync '%s'", cp->c->pos[3]);
            pending = unsynced = 0;
        }
    }
    /* also after a rerun that copied nothing: what an interrupted run left
     * unsynced is made durable */
    if (!rc && (r = d->ops->sync(d->self, d->rloc)) != 0)
        rc = tool_fail(cmd, r, "sync '%s'", cp->c->pos[3]);
    free(b.p);
    free(sk.k);
    free(dk.k);
    s->ops->close_location(s->self, s->rloc);
    d->ops->close_location(d->self, d->rloc);
    s->rloc = d->rloc = NULL;
    return rc;
}

#if FBK_TOOL_HAVE_MAPS
typedef struct ncopy {
    copier *cp;
    fbk_map *sm, *dm;
    fbk_pool *dp;
    fbk_location *dl;
    int rc;
} ncopy;

static int copy_name(const void *name, size_t len, void *arg)
{
    ncopy *a = arg;
    fbk_handle *h, *dh = NULL;
    int rc = fbk_map_get(a->sm, name, len, &h);
    if (rc == FBK_ENOTFOUND)
        return 0; /* unbound meanwhile */
    if (rc) {
        a->rc = tool_fail(a->cp->c->cmd, rc, "look up a name");
        return 1;
    }
    fbk_key k;
    fbk_handle_key(h, &k);
    fbk_handle_release(h);
    if (fbk_map_get(a->dm, name, len, &dh) == 0) {
        fbk_key dk;
        fbk_handle_key(dh, &dk);
        fbk_handle_release(dh);
        if (fbk_key_equal(&k, &dk)) {
            a->cp->names_skipped++;
            return 0;
        }
    }
    rc = fbk_register(a->dp, a->dl, &k, &dh);
    if (!rc) {
        rc = fbk_map_put(a->dm, name, len, dh);
        fbk_handle_release(dh);
    }
    if (rc == FBK_ENOTFOUND)
        return 0; /* its object was damaged, not copied (reported) */
    if (rc) {
        a->rc = tool_fail(a->cp->c->cmd, rc, "copy a name");
        return 1;
    }
    a->cp->names++;
    return 0;
}

static int copy_names(copier *cp)
{
    const char *cmd = cp->c->cmd;
    fbk_location *sl = NULL, *dl = NULL;
    fbk_pool *sp = NULL, *dp = NULL;
    fbk_map *sm = NULL, *dm = NULL;
    int rc = fbk_location_open(cp->src->s, cp->c->pos[1], &sl);
    if (!rc)
        rc = fbk_location_open(cp->dst->s, cp->c->pos[3], &dl);
    if (!rc)
        rc = fbk_pool_create(&sp, cp->src->s, &fbk_blob_codec, 4);
    if (!rc)
        rc = fbk_pool_create(&dp, cp->dst->s, &fbk_blob_codec, 4);
    if (rc) {
        rc = tool_fail(cmd, rc, "open the locations for their names");
    } else {
        rc = fbk_map_open(sp, sl, NULL, &sm);
        if (rc == FBK_ENOTSUP) {
            rc = 0; /* a table without names */
        } else if (rc) {
            rc = tool_fail(cmd, rc, "open the names of '%s'", cp->c->pos[1]);
        } else if (fbk_map_count(sm) > 0) {
            fbk_map_options mo = {.flags = FBK_MAP_NOSYNC};
            rc = fbk_map_open(dp, dl, &mo, &dm);
            if (rc) {
                rc = tool_fail(cmd, rc, "open the names of '%s'", cp->c->pos[3]);
            } else {
                ncopy a = {cp, sm, dm, dp, dl, 0};
                int r = fbk_map_names(sm, copy_name, &a);
                rc = a.rc ? a.rc : r ? tool_fail(cmd, r, "list the names") : 0;
                r = fbk_map_close(dm); /* syncs */
                if (r && !rc)
                    rc = tool_fail(cmd, r, "sync the names of '%s'", cp->c->pos[3]);
            }
        }
    }
    if (sm)
        fbk_map_close(sm);
    fbk_pool_release(sp);
    fbk_pool_release(dp);
    fbk_location_close(sl);
    fbk_location_close(dl);
    return rc;
}
#endif

int cmd_copy(const fbk_cli *c)
{
    side src = {0}, dst = {0};
    if (tool_uri_parse(c->pos[0], &src.u) || tool_uri_parse(c->pos[2], &dst.u))
        return tool_usage(c->cmd, "URI too long");
    copier cp = {.c = c, .src = &src, .dst = &dst};
    cp.same = src.u.scheme == dst.u.scheme && !strcmp(src.u.dir, dst.u.dir);
    if (cp.same && !strcmp(c->pos[1], c->pos[3]))
        return tool_usage(c->cmd, "LOC and LOC2 are the same location");
    int rc = 0;
    if ((rc = tool_location_check(c->cmd, &src.u, c->pos[1])) != 0)
        return rc;
    rc = side_open(c->cmd, &src, !cp.same);
    if (!rc && cp.same)
        dst = src;
    else if (!rc)
        rc = side_open(c->cmd, &dst, 0);
    if (!rc)
        rc = copy_objects(&cp);
#if FBK_TOOL_HAVE_MAPS
    if (!rc)
        rc = copy_names(&cp);
#endif
    if (!rc) {
        if (c->json) {
            printf("{\"copied\": %llu, \"skipped\": %llu, \"bytes\": %llu, \"damaged\": %llu, "
                   "\"names\": %llu, \"names_skipped\": %llu}\n",
                   (unsigned long long)cp.copied, (unsigned long long)cp.skipped,
                   (unsigned long long)cp.bytes, (unsigned long long)cp.damaged,
                   (unsigned long long)cp.names, (unsigned long long)cp.names_skipped);
        } else {
            printf("copied %llu objects (%llu bytes) and %llu names; %llu objects and %llu names "
                   "were there already",
                   (unsigned long long)cp.copied, (unsigned long long)cp.bytes,
                   (unsigned long long)cp.names, (unsigned long long)cp.skipped,
                   (unsigned long long)cp.names_skipped);
            if (cp.damaged)
                printf("; %llu damaged objects not copied", (unsigned long long)cp.damaged);
            printf("\n");
        }
        if (cp.damaged)
            rc = FBK_TOOL_MISSING;
    }
    tool_store_close(src.s);
    if (!cp.same)
        tool_store_close(dst.s);
    return rc;
}
