/* main.c -- fbk: look into and maintain a libfbk store from the shell.
 * Parses the command line (options may stand anywhere after the
 * subcommand) and dispatches; docs/fbk.1 is the manual. */
#include "fbk_tool.h"

#include <stdlib.h>
#include <string.h>

typedef struct subcmd {
    const char *name;
    int (*run)(const fbk_cli *c);
    int min, max;  /* positional arguments */
    unsigned opts; /* OPT_*: what it takes beyond --json and --help */
    const char *usage;
    const char *help;
} subcmd;

#define OPT_NAME 1u /* --name NAME */
#define OPT_KEY 2u  /* KEY (the third argument), or --name NAME in its stead */
#define OPT_JOBS 4u /* --jobs N */

static const subcmd cmds[] = {
    {"stat", cmd_stat, 1, 2, 0, "fbk stat URI [LOC] [--json]",
     "What the store (every location in its directory) or one location holds:\n"
     "objects, bytes (payload), names, backend.  Opens the store read-only.\n"},
    {"ls", cmd_ls, 2, 2, 0, "fbk ls URI LOC [--json]",
     "The keys of LOC with their sizes in bytes; in a location that holds names,\n"
     "the names with their keys and sizes.  Opens the store read-only.\n"},
    {"get", cmd_get, 2, 3, OPT_NAME | OPT_KEY, "fbk get URI LOC KEY | --name NAME",
     "Writes the object's bytes to standard output.  Exit 1 if it is not there.\n"
     "Opens the store read-only.\n"},
    {"put", cmd_put, 2, 2, OPT_NAME, "fbk put URI LOC [--name NAME] [--json]",
     "Stores standard input as one object in LOC (created when missing), synced,\n"
     "and prints its key; with --name binds NAME to it (replacing an earlier\n"
     "binding).\n"},
    {"rm", cmd_rm, 2, 3, OPT_NAME | OPT_KEY, "fbk rm URI LOC KEY | --name NAME",
     "Removes the object KEY from LOC (or unbinds NAME), synced.  Exit 1 if it\n"
     "is not there.\n"},
    {"verify", cmd_verify, 1, 2, OPT_JOBS, "fbk verify URI [LOC] [--json] [--jobs N]",
     "Reads every object of LOC (or of every location) and checks its frame and\n"
     "checksum, and that every name resolves.  Prints each damaged key or name and\n"
     "a summary line; exit 1 if anything is damaged.  Progress (count, bytes, rate,\n"
     "ETA) goes to standard error when it is a terminal.  Opens the store read-only.\n"
     "--jobs N: objects read at once (default 4).\n"},
    {"copy", cmd_copy, 4, 4, 0, "fbk copy URI LOC URI2 LOC2 [--json]",
     "Copies every object (same keys, frames checked on the way) and every name of\n"
     "LOC into LOC2, synced.  Objects LOC2 already holds are skipped, so a rerun\n"
     "after an interruption resumes.  The source is opened read-only.\n"},
    {"compact", cmd_compact, 1, 1, 0, "fbk compact URI [--json]",
     "Gives free space back: lmdb: copies the durable environment compacted and\n"
     "swaps it in atomically (refused while a program has the store open); file:\n"
     "removes leftover temporaries and empty shard directories.  Prints the bytes\n"
     "before and after.\n"},
};
#define NCMDS (sizeof cmds / sizeof cmds[0])

static void general_help(FILE *f)
{
    fprintf(f, "usage: fbk COMMAND ARGS... [--json] [--help]\n\n"
               "URI is lmdb:DIR, file:DIR (a bare path means lmdb:PATH); LOC a location;\n"
               "KEY a 36- or 32-hex key.\n\ncommands:\n");
    for (size_t i = 0; i < NCMDS; i++)
        fprintf(f, "  %s\n", cmds[i].usage);
    fprintf(f, "\nexit status: 0 ok; 1 damage found or key/name not there; 2 usage or run-time "
               "error.\nSee fbk(1).\n");
}

/* 1 when argv[*i] is the option opt, as "opt VALUE" or "opt=VALUE"; *v is
 * then its value (VALUE takes the next argument), NULL when there is none. */
static int opt_value(const char *opt, int argc, char **argv, int *i, const char **v)
{
    const char *a = argv[*i];
    size_t n = strlen(opt);
    if (strncmp(a, opt, n) != 0 || (a[n] && a[n] != '='))
        return 0;
    *v = a[n] == '=' ? a + n + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
    return 1;
}

/* The arguments after the subcommand into c (options may stand anywhere;
 * "--" ends them): -1 to go on, else the exit status (--help, usage). */
static int parse_args(const subcmd *sc, int argc, char **argv, fbk_cli *c)
{
    int opts_done = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v;
        if (opts_done || a[0] != '-' || !a[1]) {
            if (c->npos == (int)(sizeof c->pos / sizeof c->pos[0]))
                return tool_usage(sc->name, "too many arguments");
            c->pos[c->npos++] = a;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: %s\n\n%s", sc->usage, sc->help);
            return FBK_TOOL_OK;
        } else if (!strcmp(a, "--json")) {
            c->json = 1;
        } else if (opt_value("--name", argc, argv, &i, &v)) {
            if (!v)
                return tool_usage(sc->name, "--name needs a value");
            char *n;
            if (name_parse(v, &n, &c->name_len))
                return tool_usage(sc->name, "--name: bad \\x escape in '%s'", v);
            c->name = n;
        } else if (opt_value("--jobs", argc, argv, &i, &v)) {
            char *end;
            long n = v ? strtol(v, &end, 10) : 0;
            if (!v || *end || n < 1 || n > 256)
                return tool_usage(sc->name, "--jobs needs a number from 1 to 256");
            c->jobs = (unsigned)n;
        } else {
            return tool_usage(sc->name, "unknown option '%s'", a);
        }
    }
    return -1;
}

/* The parsed arguments held against what sc takes: 0, or the exit status. */
static int check_args(const subcmd *sc, const fbk_cli *c)
{
    int by_key = (sc->opts & OPT_KEY) != 0;
    if (by_key && !c->name && c->npos == 2)
        return tool_usage(sc->name, "KEY or --name NAME is needed");
    int max = by_key && c->name ? 2 : sc->max; /* --name replaces KEY */
    if (c->npos < sc->min || c->npos > max)
        return tool_usage(sc->name, "%s arguments", c->npos < sc->min ? "missing" : "too many");
    fbk_key k;
    if (by_key && !c->name && fbk_key_parse(c->pos[2], &k))
        return tool_usage(sc->name, "'%s' is not a key (36- or 32-hex)", c->pos[2]);
    if (c->name && !(sc->opts & OPT_NAME))
        return tool_usage(sc->name, "--name is not an option of %s", sc->name);
    if (c->jobs && !(sc->opts & OPT_JOBS))
        return tool_usage(sc->name, "--jobs is not an option of %s", sc->name);
    if (c->name && !FBK_TOOL_HAVE_MAPS)
        return tool_fail(sc->name, FBK_TOOL_ERROR, "--name: this libfbk has no maps (names)");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        general_help(stderr);
        return FBK_TOOL_ERROR;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        general_help(stdout);
        return FBK_TOOL_OK;
    }
    if (!strcmp(name, "--version")) {
        printf("fbk %s\n", fbk_version());
        return FBK_TOOL_OK;
    }
    const subcmd *sc = NULL;
    for (size_t i = 0; i < NCMDS; i++)
        if (!strcmp(cmds[i].name, name))
            sc = &cmds[i];
    if (!sc) {
        fprintf(stderr, "fbk: unknown command '%s'\n", name);
        general_help(stderr);
        return FBK_TOOL_ERROR;
    }
    fbk_cli c = {.cmd = sc->name};
    int rc = parse_args(sc, argc, argv, &c);
    if (rc >= 0)
        return rc;
    if ((rc = check_args(sc, &c)) != 0)
        return rc;
    rc = sc->run(&c);
    free((char *)c.name);
    if (fflush(stdout) != 0 || ferror(stdout))
        return tool_fail(sc->name, FBK_TOOL_ERROR, "writing standard output failed");
    return rc;
}

/* Shared by the help texts and tool_usage (out.c). */
const char *tool_usage_of(const char *cmd);
const char *tool_usage_of(const char *cmd)
{
    for (size_t i = 0; i < NCMDS; i++)
        if (!strcmp(cmds[i].name, cmd))
            return cmds[i].usage;
    return "fbk COMMAND ...";
}
