/* fbkpy.h -- what the files of fbk._fbk share (docs/python.md): the object
 * structs, the type objects, the error and name helpers.  Private to
 * python/src; every fbkpy_ symbol has hidden visibility in the module.
 *
 *   fbkmodule.c  the module: PyInit__fbk, the exception classes, errors, names
 *   store.c      Store
 *   map.c        Map (its view() in view.c, its _memo() in memoize.c)
 *   view.c       View, Map.view()
 *   memoize.c    Map._memo()
 */
#ifndef FBKPY_H
#define FBKPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fbk.h>

/* PyErr_GetRaisedException / PyErr_SetRaisedException before 3.12 */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *PyErr_GetRaisedException(void)
{
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (!t)
        return NULL;
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb && v)
        PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    return v;
}

static inline void PyErr_SetRaisedException(PyObject *v)
{
    if (!v)
        return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, PyException_GetTraceback(v));
}
#endif

/* ---------------------------------------------------------------- errors */

/* A failure seen without the GIL: its code and message, copied at once. */
typedef struct {
    int rc;
    char msg[512];
} err_t;

/* Records rc and the calling thread's fbk_errmsg() (else fbk_strerror(rc)). */
void fbkpy_err_capture(err_t *e, int rc);
/* Raises the fbk.Error subclass of e->rc, with .code and .name set; NULL. */
PyObject *fbkpy_raise_err(const err_t *e);
/* The same for a code and a message of the binding's own; NULL. */
PyObject *fbkpy_raise_code(int rc, const char *msg);

/* ----------------------------------------------------------------- names */

/* A name argument: bytes (used in place), str (its UTF-8, in place) or any
 * other bytes-like object (copied into `hold`, so it cannot change while the
 * GIL is released). */
typedef struct {
    const char *p;
    Py_ssize_t n;
    PyObject *hold;
} name_t;

/* 0 with *nm set (release nm->hold after), or -1 with TypeError set. */
int fbkpy_name_get(PyObject *o, name_t *nm);

static inline int fbkpy_name_valid(const name_t *nm)
{
    return nm->n >= 1 && nm->n <= FBK_NAME_MAX;
}

/* ----------------------------------------------------------------- Store */

typedef struct {
    PyObject_HEAD
    fbk_store *s;
    PyObject *uri;
    int readonly;
    PyObject *maps; /* list of weak references to the Maps opened on it */
    PyObject *weakreflist;
} StoreObject;

extern PyTypeObject fbkpy_Store_Type;

/* ------------------------------------------------------------------- Map */

typedef struct {
    PyObject_HEAD
    StoreObject *store;
    PyObject *name;
    fbk_pool *pool;
    fbk_location *loc;
    fbk_map *m;
    int busy; /* calls running on m without the GIL */
    int sync;
    unsigned long long size_limit;
    PyObject *weakreflist;
} MapObject;

extern PyTypeObject fbkpy_Map_Type;

/* Starts a call that will release the GIL; -1 (ClosedError set) if closed. */
int fbkpy_map_enter(MapObject *self);
void fbkpy_map_leave(MapObject *self);

/* Map methods defined next to what they make (view.c, memoize.c). */
PyObject *fbkpy_Map_view(MapObject *self, PyObject *key);
PyObject *fbkpy_Map_memo(MapObject *self, PyObject *const *argv, Py_ssize_t nargs);

/* ------------------------------------------------------------------ View */

typedef struct {
    PyObject_HEAD
    fbk_handle *h; /* NULL once unpinned */
    const fbk_blob *b;
    Py_ssize_t exports;
    int closed;
    PyObject *mv; /* the memoryview __enter__ gave out */
} ViewObject;

extern PyTypeObject fbkpy_View_Type;

#endif
