/* fbk_tool.h -- the fbk command-line tool's shared declarations.
 *
 * The tool is built on the public API (fbk.h, fbk_backend.h).  Three things
 * have no API and are read from the on-disk layouts the backend docs fix
 * (layout.c): the list of locations of a store, the stored size of an object
 * without loading it, and compaction.
 *
 * Exit status (docs/fbk.1): 0 ok; 1 damage found or key/name not there;
 * 2 usage or run-time error, with a message on stderr.
 */
#ifndef FBK_TOOL_H
#define FBK_TOOL_H

#include <fbk.h>

#include <stdint.h>
#include <stdio.h>

#define FBK_TOOL_OK 0
#define FBK_TOOL_MISSING 1 /* damage found, or the key/name is not there */
#define FBK_TOOL_ERROR 2   /* usage or run-time error */

/* The framed header every stored value starts with (docs/formats.md). */
#define FBK_TOOL_FRAME_HDR 24

/* v1 features, picked up when the library's header has them. */
#ifdef FBK_STORE_READONLY
#define FBK_TOOL_HAVE_READONLY 1
#else
#define FBK_TOOL_HAVE_READONLY 0
#endif
#ifdef FBK_NAME_MAX
#define FBK_TOOL_HAVE_MAPS 1
#else
#define FBK_TOOL_HAVE_MAPS 0
#endif

/* The parsed command line. */
typedef struct fbk_cli {
    const char *cmd;
    const char *pos[8]; /* positional arguments after the subcommand */
    int npos;
    int json;
    const char *name; /* --name NAME, or NULL */
    size_t name_len;
    unsigned jobs; /* --jobs N (verify), 0 = default */
} fbk_cli;

/* What a URI says about where the store lives (for layout.c). */
typedef enum { TOOL_LMDB, TOOL_FILE, TOOL_OTHER } tool_scheme;
typedef struct tool_uri {
    const char *uri;
    tool_scheme scheme;
    char dir[4096]; /* the store directory (without URI parameters) */
} tool_uri;

/* ---- output (out.c) ---- */
int tool_fail(const char *cmd, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int tool_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void json_str(FILE *f, const void *s, size_t len);
void json_name(FILE *f, const void *name, size_t len); /* "name": ..., "name_hex": ... */
void text_name(FILE *f, const void *name, size_t len); /* printable, \xHH escapes */
int name_parse(const char *text, char **out, size_t *len); /* --name argument (\xHH) */

/* ---- stores (store.c) ---- */
int tool_uri_parse(const char *uri, tool_uri *out);
/* Opens the store: read-only for inspection when the library can. */
int tool_store_open(const char *cmd, const tool_uri *u, int readonly, fbk_store **out);
/* Refuses (exit 2) a location that does not exist, from the layout; call it
 * before the store is opened (layout.c). */
int tool_location_check(const char *cmd, const tool_uri *u, const char *loc);
/* fbk_location_open; FBK_ENOTFOUND (read-only store) is exit 2 too. */
int tool_location_open(const char *cmd, const tool_uri *u, fbk_store *s, const char *loc,
                       fbk_location **out);
/* URI [LOC] of stat and verify: c->pos[0] parsed into u, and LOC when given
 * (checked to exist; *n = 1, *names untouched), else every location of the
 * layout (*names, *n; layout_free_names).  0 or an exit status. */
int tool_targets(const fbk_cli *c, tool_uri *u, char ***names, size_t *n);
/* Drains (background spill removals only: nothing durable) and closes s;
 * NULL is a no-op. */
void tool_store_close(fbk_store *s);

/* ---- on-disk layouts (layout.c) ---- */
typedef struct tool_sizes {
    fbk_key *keys;    /* sorted */
    uint64_t *sizes;  /* framed (stored) size of keys[i] */
    size_t n;
} tool_sizes;
/* The locations of the store (sorted names); 0 or an FBK_E* code. */
int layout_locations(const tool_uri *u, char ***names, size_t *n);
void layout_free_names(char **names, size_t n);
/* 1 if the location exists, 0 if not, <0 on error. */
int layout_location_exists(const tool_uri *u, const char *loc);
/* Stored sizes of the objects of loc (empty for schemes without a layout). */
int layout_sizes(const tool_uri *u, const char *loc, tool_sizes *out);
/* Payload bytes of key, or -1 when unknown. */
int64_t layout_size_of(const tool_sizes *z, const fbk_key *key);
void layout_sizes_free(tool_sizes *z);

/* ---- subcommands ---- */
int cmd_stat(const fbk_cli *c);
int cmd_ls(const fbk_cli *c);
int cmd_get(const fbk_cli *c);
int cmd_put(const fbk_cli *c);
int cmd_rm(const fbk_cli *c);
int cmd_verify(const fbk_cli *c);
int cmd_copy(const fbk_cli *c);
int cmd_compact(const fbk_cli *c);

#endif
