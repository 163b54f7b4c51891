/* store.c -- opening stores and locations for the subcommands. */
#include "fbk_tool.h"

#include <string.h>
#include <sys/stat.h>

int tool_uri_parse(const char *uri, tool_uri *out)
{
    memset(out, 0, sizeof *out);
    out->uri = uri;
    const char *rest = uri;
    if (!strncmp(uri, "lmdb:", 5))
        out->scheme = TOOL_LMDB, rest = uri + 5;
    else if (!strncmp(uri, "file:", 5))
        out->scheme = TOOL_FILE, rest = uri + 5;
    else {
        const char *colon = strchr(uri, ':'), *slash = strchr(uri, '/');
        if (colon && (!slash || colon < slash))
            out->scheme = TOOL_OTHER, rest = colon + 1; /* mem:, rados:, ... */
        else
            out->scheme = TOOL_LMDB; /* a bare path means lmdb:PATH */
    }
    size_t n = strcspn(rest, "?");
    if (n >= sizeof out->dir)
        return FBK_EINVAL;
    memcpy(out->dir, rest, n);
    out->dir[n] = 0;
    return 0;
}

/* lmdb:/file: stores are directories: "no store at" (exit 2) if there is
 * none, before anything looks inside. */
static int store_exists(const char *cmd, const tool_uri *u)
{
    struct stat st;
    if (u->scheme != TOOL_OTHER && (stat(u->dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return tool_fail(cmd, FBK_TOOL_ERROR, "no store at %s (%s is not a directory)", u->uri,
                         u->dir);
    return 0;
}

int tool_store_open(const char *cmd, const tool_uri *u, int readonly, fbk_store **out)
{
    fbk_store_options o = {0};
    if (readonly) { /* inspection never makes a store where there was none */
        int e = store_exists(cmd, u);
        if (e)
            return e;
    }
#if FBK_TOOL_HAVE_READONLY
    if (readonly)
        o.flags |= FBK_STORE_READONLY;
#else
    (void)readonly; /* v0 library: inspection opens the store read-write */
#endif
    int rc = fbk_store_open(out, u->uri, &o);
    if (rc)
        return tool_fail(cmd, rc, "open %s", u->uri);
    return 0;
}

/* Before the store opens: layout.c's LMDB handle must be closed by then. */
int tool_location_check(const char *cmd, const tool_uri *u, const char *loc)
{
    if (u->scheme == TOOL_OTHER)
        return 0;
    int e = layout_location_exists(u, loc);
    if (e < 0)
        return tool_fail(cmd, e, "look for location '%s' in %s", loc, u->uri);
    if (e == 0)
        return tool_fail(cmd, FBK_TOOL_ERROR, "no location '%s' in %s", loc, u->uri);
    return 0;
}

int tool_targets(const fbk_cli *c, tool_uri *u, char ***names, size_t *n)
{
    if (tool_uri_parse(c->pos[0], u))
        return tool_usage(c->cmd, "URI too long");
    int e = store_exists(c->cmd, u);
    if (e)
        return e;
    if (c->npos == 2) {
        *n = 1;
        return tool_location_check(c->cmd, u, c->pos[1]);
    }
    int rc = layout_locations(u, names, n);
    return rc ? tool_fail(c->cmd, rc, "list the locations of %s", u->uri) : 0;
}

void tool_store_close(fbk_store *s)
{
    if (s) {
        int r = fbk_store_drain(s);
        (void)r;
        fbk_store_close(s);
    }
}

int tool_location_open(const char *cmd, const tool_uri *u, fbk_store *s, const char *loc,
                       fbk_location **out)
{
    int rc = fbk_location_open(s, loc, out);
    if (rc == FBK_ENOTFOUND)
        return tool_fail(cmd, FBK_TOOL_ERROR, "no location '%s' in %s", loc, u->uri);
    if (rc)
        return tool_fail(cmd, rc, "open location '%s' of %s", loc, u->uri);
    return 0;
}
