/* cmds.c -- stat, ls, get, put, rm. */
#include "fbk_tool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *backend_name(const tool_uri *u)
{
    return u->scheme == TOOL_LMDB ? "lmdb" : u->scheme == TOOL_FILE ? "file" : "other";
}

static int cmp_key(const void *a, const void *b)
{
    return memcmp(a, b, 16);
}

/* A store, one location of it, and a blob pool: what most commands need. */
typedef struct session {
    tool_uri u;
    fbk_store *s;
    fbk_location *loc;
    fbk_pool *p;
#if FBK_TOOL_HAVE_MAPS
    fbk_map *m;
#endif
} session;

static int session_open(const fbk_cli *c, session *ss, int readonly, int must_exist)
{
    memset(ss, 0, sizeof *ss);
    if (tool_uri_parse(c->pos[0], &ss->u))
        return tool_usage(c->cmd, "URI too long");
    int rc = must_exist ? tool_location_check(c->cmd, &ss->u, c->pos[1]) : 0;
    if (!rc)
        rc = tool_store_open(c->cmd, &ss->u, readonly, &ss->s);
    if (rc)
        return rc;
    rc = tool_location_open(c->cmd, &ss->u, ss->s, c->pos[1], &ss->loc);
    if (rc)
        return rc;
    rc = fbk_pool_create(&ss->p, ss->s, &fbk_blob_codec, 4);
    if (rc)
        return tool_fail(c->cmd, rc, "create pool");
    return 0;
}

/* The location's map, when the library has maps: 0, or an exit status. */
#if FBK_TOOL_HAVE_MAPS
static int session_map(const fbk_cli *c, session *ss)
{
    int rc = fbk_map_open(ss->p, ss->loc, NULL, &ss->m);
    if (rc == FBK_ENOTSUP)
        return c->name ? tool_fail(c->cmd, rc, "--name: %s has no names", ss->u.uri) : 0;
    if (rc)
        return tool_fail(c->cmd, rc, "open the names of '%s'", c->pos[1]);
    return 0;
}
#endif

static int session_close(session *ss, int rc)
{
#if FBK_TOOL_HAVE_MAPS
    if (ss->m) {
        int r = fbk_map_close(ss->m);
        if (r && !rc)
            rc = tool_fail("close", r, "names");
    }
#endif
    fbk_pool_release(ss->p);
    fbk_location_close(ss->loc);
    tool_store_close(ss->s);
    return rc;
}

/* ----------------------------------------------------------------- stat */

typedef struct loc_stat {
    const char *name;
    uint64_t objects, bytes;
    int64_t names; /* -1: no maps */
} loc_stat;

/* Payload bytes of each location, from the layout: before the store opens,
 * whose LMDB handle must be the only one (layout.c).  0 or an exit status. */
static int stat_bytes(const fbk_cli *c, const tool_uri *u, const char *const *locs, loc_stat *st,
                      size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tool_sizes z;
        st[i].name = locs[i];
        st[i].names = -1;
        int rc = layout_sizes(u, locs[i], &z);
        if (rc)
            return tool_fail(c->cmd, rc, "sizes of '%s'", locs[i]);
        for (size_t k = 0; k < z.n; k++)
            st[i].bytes += z.sizes[k] >= FBK_TOOL_FRAME_HDR ? z.sizes[k] - FBK_TOOL_FRAME_HDR : 0;
        layout_sizes_free(&z);
    }
    return 0;
}

/* Objects and names (when the library has maps) of one location. */
static int stat_location(const fbk_cli *c, const tool_uri *u, fbk_store *s, fbk_pool *p,
                         loc_stat *st)
{
    fbk_location *loc;
    int rc = tool_location_open(c->cmd, u, s, st->name, &loc);
    if (rc)
        return rc;
    st->objects = fbk_location_count(loc);
#if FBK_TOOL_HAVE_MAPS
    fbk_map *m;
    int r = fbk_map_open(p, loc, NULL, &m);
    if (r == 0) {
        st->names = (int64_t)fbk_map_count(m);
        fbk_map_close(m);
    } else if (r != FBK_ENOTSUP) {
        rc = tool_fail(c->cmd, r, "open the names of '%s'", st->name);
    }
#else
    (void)p;
#endif
    fbk_location_close(loc);
    return rc;
}

/* Opens the store read-only and counts what each location holds. */
static int stat_counts(const fbk_cli *c, const tool_uri *u, loc_stat *st, size_t n)
{
    fbk_store *s = NULL;
    fbk_pool *p = NULL;
    int rc = tool_store_open(c->cmd, u, 1, &s);
    if (!rc && (rc = fbk_pool_create(&p, s, &fbk_blob_codec, 4)) != 0)
        rc = tool_fail(c->cmd, rc, "create pool");
    for (size_t i = 0; i < n && !rc; i++)
        rc = stat_location(c, u, s, p, &st[i]);
    fbk_pool_release(p);
    tool_store_close(s);
    return rc;
}

static void stat_print_json(const tool_uri *u, const loc_stat *st, size_t n, uint64_t to,
                            uint64_t tb)
{
    printf("{\"uri\": ");
    json_str(stdout, u->uri, strlen(u->uri));
    printf(", \"backend\": \"%s\", \"objects\": %llu, \"bytes\": %llu, \"locations\": [",
           backend_name(u), (unsigned long long)to, (unsigned long long)tb);
    for (size_t i = 0; i < n; i++) {
        printf("%s{\"location\": ", i ? ", " : "");
        json_str(stdout, st[i].name, strlen(st[i].name));
        printf(", \"objects\": %llu, \"bytes\": %llu, \"names\": ",
               (unsigned long long)st[i].objects, (unsigned long long)st[i].bytes);
        if (st[i].names < 0)
            printf("null}");
        else
            printf("%lld}", (long long)st[i].names);
    }
    printf("]}\n");
}

static void stat_print_text(const tool_uri *u, const loc_stat *st, size_t n, uint64_t to,
                            uint64_t tb)
{
    printf("store: %s (backend %s)\n", u->uri, backend_name(u));
    printf("%-24s %12s %16s %10s\n", "LOCATION", "OBJECTS", "BYTES", "NAMES");
    for (size_t i = 0; i < n; i++) {
        char nm[32] = "-";
        if (st[i].names >= 0)
            snprintf(nm, sizeof nm, "%lld", (long long)st[i].names);
        printf("%-24s %12llu %16llu %10s\n", st[i].name, (unsigned long long)st[i].objects,
               (unsigned long long)st[i].bytes, nm);
    }
    printf("%-24s %12llu %16llu\n", "total", (unsigned long long)to, (unsigned long long)tb);
}

int cmd_stat(const fbk_cli *c)
{
    tool_uri u;
    char **names = NULL;
    size_t n = 0;
    int rc = tool_targets(c, &u, &names, &n);
    if (rc)
        return rc;
    const char *one[1] = {c->pos[1]};
    const char *const *locs = c->npos == 2 ? one : (const char *const *)names;
    loc_stat *st = calloc(n ? n : 1, sizeof *st);
    if (!st)
        return tool_fail(c->cmd, FBK_ENOMEM, "stat");
    rc = stat_bytes(c, &u, locs, st, n);
    if (!rc)
        rc = stat_counts(c, &u, st, n);
    if (!rc) {
        uint64_t to = 0, tb = 0;
        for (size_t i = 0; i < n; i++)
            to += st[i].objects, tb += st[i].bytes;
        if (c->json)
            stat_print_json(&u, st, n, to, tb);
        else
            stat_print_text(&u, st, n, to, tb);
    }
    free(st);
    layout_free_names(names, c->npos == 1 ? n : 0);
    return rc;
}

/* ------------------------------------------------------------------- ls */

#if FBK_TOOL_HAVE_MAPS
typedef struct ls_names {
    session *ss;
    const tool_sizes *z;
    const fbk_cli *c;
    size_t n;
    int rc;
} ls_names;

static int ls_name(const void *name, size_t len, void *arg)
{
    ls_names *a = arg;
    fbk_handle *h;
    int rc = fbk_map_get(a->ss->m, name, len, &h);
    char ks[FBK_KEY_STRLEN + 1] = "-";
    int64_t bytes = -1;
    if (rc == 0) {
        fbk_key k;
        fbk_handle_key(h, &k);
        fbk_key_format(&k, ks);
        bytes = layout_size_of(a->z, &k);
        fbk_handle_release(h);
    } else if (rc != FBK_ENOTFOUND) { /* unbound meanwhile: skipped */
        a->rc = tool_fail(a->c->cmd, rc, "look up a name");
        return 1;
    } else {
        return 0;
    }
    if (a->c->json) {
        printf("%s{", a->n++ ? ", " : "");
        json_name(stdout, name, len);
        printf(", \"key\": \"%s\", \"bytes\": ", ks);
        bytes < 0 ? printf("null}") : printf("%lld}", (long long)bytes);
    } else {
        text_name(stdout, name, len);
        printf("\t%s\t", ks);
        bytes < 0 ? printf("-\n") : printf("%lld\n", (long long)bytes);
    }
    return 0;
}
#endif

/* The keys with their sizes: one line each, or JSON array entries. */
static void ls_keys(const fbk_cli *c, const tool_sizes *z, const fbk_key *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ks[FBK_KEY_STRLEN + 1];
        fbk_key_format(&keys[i], ks);
        int64_t b = layout_size_of(z, &keys[i]);
        if (c->json) {
            printf("%s{\"key\": \"%s\", \"bytes\": ", i ? ", " : "", ks);
            b < 0 ? printf("null}") : printf("%lld}", (long long)b);
        } else {
            printf("%s\t", ks);
            b < 0 ? printf("-\n") : printf("%lld\n", (long long)b);
        }
    }
}

int cmd_ls(const fbk_cli *c)
{
    tool_uri u;
    if (tool_uri_parse(c->pos[0], &u))
        return tool_usage(c->cmd, "URI too long");
    int rc = tool_location_check(c->cmd, &u, c->pos[1]);
    if (rc)
        return rc;
    tool_sizes z;
    rc = layout_sizes(&u, c->pos[1], &z);
    if (rc)
        return tool_fail(c->cmd, rc, "sizes of '%s'", c->pos[1]);
    session ss;
    rc = session_open(c, &ss, 1, 0); /* checked above */
    size_t n = 0;
    fbk_key *keys = NULL;
    if (!rc) {
        n = fbk_location_count(ss.loc);
        keys = malloc((n ? n : 1) * sizeof *keys);
        if (!keys)
            rc = tool_fail(c->cmd, FBK_ENOMEM, "list keys");
        else {
            size_t total = fbk_location_keys(ss.loc, keys, n);
            n = total < n ? total : n;
        }
        if (keys)
            qsort(keys, n, sizeof *keys, cmp_key);
    }
    int has_names = 0;
#if FBK_TOOL_HAVE_MAPS
    if (!rc)
        rc = session_map(c, &ss);
    has_names = !rc && ss.m && fbk_map_count(ss.m) > 0;
#endif
    if (!rc) {
        if (c->json) {
            printf("{\"location\": ");
            json_str(stdout, c->pos[1], strlen(c->pos[1]));
            printf(", \"objects\": [");
        }
        if (c->json || !has_names)
            ls_keys(c, &z, keys, n);
        if (c->json)
            printf("], \"names\": [");
#if FBK_TOOL_HAVE_MAPS
        if (has_names) {
            ls_names a = {&ss, &z, c, 0, 0};
            int r = fbk_map_names(ss.m, ls_name, &a);
            rc = a.rc ? a.rc : r ? tool_fail(c->cmd, r, "list the names of '%s'", c->pos[1]) : 0;
        }
#endif
        if (c->json && !rc)
            printf("]}\n");
    }
    free(keys);
    layout_sizes_free(&z);
    return session_close(&ss, rc);
}

/* ------------------------------------------------------------------ get */

/* The handle of the object KEY or --name NAME names: 0 or an exit status. */
static int find_object(const fbk_cli *c, session *ss, fbk_handle **h)
{
#if FBK_TOOL_HAVE_MAPS
    if (c->name) {
        int rc = session_map(c, ss);
        if (rc)
            return rc;
        rc = fbk_map_get(ss->m, c->name, c->name_len, h);
        if (rc == FBK_ENOTFOUND) {
            fprintf(stderr, "fbk: %s: no name '", c->cmd);
            text_name(stderr, c->name, c->name_len);
            fprintf(stderr, "' in '%s'\n", c->pos[1]);
            return FBK_TOOL_MISSING;
        }
        return rc ? tool_fail(c->cmd, rc, "look up the name") : 0;
    }
#endif
    fbk_key k;
    if (fbk_key_parse(c->pos[2], &k))
        return tool_usage(c->cmd, "'%s' is not a key (36- or 32-hex)", c->pos[2]);
    if (!fbk_location_contains(ss->loc, &k))
        return tool_fail(c->cmd, FBK_TOOL_MISSING, "key %s is not in '%s'", c->pos[2], c->pos[1]);
    int rc = fbk_register(ss->p, ss->loc, &k, h);
    return rc ? tool_fail(c->cmd, rc, "register %s", c->pos[2]) : 0;
}

int cmd_get(const fbk_cli *c)
{
    session ss;
    fbk_handle *h = NULL;
    int rc = session_open(c, &ss, 1, 1);
    if (!rc)
        rc = find_object(c, &ss, &h);
    if (!rc) {
        const void *obj;
        int r = fbk_load(h, &obj);
        if (r) {
            char ks[FBK_KEY_STRLEN + 1];
            fbk_key k;
            fbk_handle_key(h, &k);
            fbk_key_format(&k, ks);
            rc = tool_fail(c->cmd, r == FBK_ENOTFOUND ? FBK_EIO : r, "read %s", ks);
        } else {
            const fbk_blob *b = obj;
            if (b->len && fwrite(b->data, 1, b->len, stdout) != b->len)
                rc = tool_fail(c->cmd, FBK_TOOL_ERROR, "write to standard output failed");
            fbk_unload(h);
        }
        fbk_handle_release(h);
    }
    return session_close(&ss, rc);
}

/* ------------------------------------------------------------------ put */

static fbk_blob *read_stdin(void)
{
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            return NULL;
        if (len == cap) {
            unsigned char *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
            continue;
        }
        ssize_t r = read(0, buf + len, cap - len);
        if (r == 0)
            break;
        if (r < 0) {
            free(buf);
            return NULL;
        }
        len += (size_t)r;
    }
    fbk_blob *b = fbk_blob_new(buf, len);
    free(buf);
    return b;
}

int cmd_put(const fbk_cli *c)
{
    fbk_blob *b = read_stdin();
    if (!b)
        return tool_fail(c->cmd, FBK_TOOL_ERROR, "read standard input failed");
    size_t len = b->len;
    session ss;
    fbk_handle *h = NULL;
    int rc = session_open(c, &ss, 0, 0);
    if (!rc) {
        int r = fbk_insert(ss.p, b, &h);
        if (r)
            rc = tool_fail(c->cmd, r, "insert");
        else
            b = NULL;
    }
#if FBK_TOOL_HAVE_MAPS
    if (!rc && c->name) {
        rc = session_map(c, &ss);
        int r = rc ? 0 : fbk_map_put(ss.m, c->name, c->name_len, h);
        if (r)
            rc = tool_fail(c->cmd, r, "put the name");
    } else
#endif
        if (!rc) {
        int r = fbk_persist(h, ss.loc);
        if (!r)
            r = fbk_location_sync(ss.loc);
        if (r)
            rc = tool_fail(c->cmd, r, "persist into '%s'", c->pos[1]);
    }
    if (!rc) {
        fbk_key k;
        char ks[FBK_KEY_STRLEN + 1];
        fbk_handle_key(h, &k);
        fbk_key_format(&k, ks);
        if (c->json) {
            printf("{\"location\": ");
            json_str(stdout, c->pos[1], strlen(c->pos[1]));
            printf(", \"key\": \"%s\", \"bytes\": %zu", ks, len);
            if (c->name) {
                printf(", ");
                json_name(stdout, c->name, c->name_len);
            }
            printf("}\n");
        } else {
            printf("%s\n", ks);
        }
    }
    fbk_handle_release(h);
    fbk_blob_free(b);
    return session_close(&ss, rc);
}

/* ------------------------------------------------------------------- rm */

int cmd_rm(const fbk_cli *c)
{
    session ss;
    int rc = session_open(c, &ss, 0, 1);
#if FBK_TOOL_HAVE_MAPS
    if (!rc)
        rc = session_map(c, &ss);
    if (!rc && c->name) {
        int r = fbk_map_remove(ss.m, c->name, c->name_len);
        if (r == FBK_ENOTFOUND) {
            fprintf(stderr, "fbk: rm: no name '");
            text_name(stderr, c->name, c->name_len);
            fprintf(stderr, "' in '%s'\n", c->pos[1]);
            rc = FBK_TOOL_MISSING;
        } else if (r) {
            rc = tool_fail(c->cmd, r, "remove the name");
        } else if ((r = fbk_map_sync(ss.m)) != 0) {
            rc = tool_fail(c->cmd, r, "sync the names of '%s'", c->pos[1]);
        }
        return session_close(&ss, rc);
    }
    if (!rc && ss.m && fbk_map_count(ss.m) > 0)
        rc = tool_fail(c->cmd, FBK_TOOL_ERROR,
                       "'%s' holds names: remove by --name NAME (an object a name refers to "
                       "goes with its last name)",
                       c->pos[1]);
#endif
    fbk_key k;
    if (!rc && fbk_key_parse(c->pos[2], &k))
        rc = tool_usage(c->cmd, "'%s' is not a key (36- or 32-hex)", c->pos[2]);
    if (!rc && !fbk_location_contains(ss.loc, &k))
        rc = tool_fail(c->cmd, FBK_TOOL_MISSING, "key %s is not in '%s'", c->pos[2], c->pos[1]);
    if (!rc) {
        int r = fbk_location_remove(ss.loc, &k);
        if (!r)
            r = fbk_location_sync(ss.loc);
        if (r)
            rc = tool_fail(c->cmd, r, "remove %s from '%s'", c->pos[2], c->pos[1]);
    }
    return session_close(&ss, rc);
}
