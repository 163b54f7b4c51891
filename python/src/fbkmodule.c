/* fbkmodule.c -- fbk._fbk, the CPython extension over libfbk (docs/python.md).
 *
 * Types: Store (fbk_store), Map (fbk_map + its pool and location; the Python
 * package makes it a collections.abc.MutableMapping), View (one pinned value
 * exported through the buffer protocol).  Every call that may block -- I/O,
 * a sync, waiting for another thread's computation -- runs with the GIL
 * released; libfbk never calls back into Python except for the memoized
 * function, which runs on the caller's own thread and takes the GIL back
 * for the call (memo_compute).
 *
 * A Map counts the calls running on it without the GIL (busy): close()
 * refuses (BusyError) while another thread is inside one, so no fbk_map is
 * freed under a running call.  The error message of a failure is copied on
 * the failing thread before anything else can overwrite it (err_capture).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fbk.h>
#include <xxhash.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PyErr_GetRaisedException / PyErr_SetRaisedException before 3.12 */
#if PY_VERSION_HEX < 0x030C0000
static PyObject *PyErr_GetRaisedException(void)
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

static void PyErr_SetRaisedException(PyObject *v)
{
    if (!v)
        return;
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(v)), v, PyException_GetTraceback(v));
}
#endif

/* ---------------------------------------------------------------- errors */

#define N_CODES 14 /* -FBK_ETIMEDOUT + 1 */

static PyObject *Error;               /* fbk.Error */
static PyObject *code_errors[N_CODES]; /* indexed by -code */

static const struct {
    int code;
    const char *name; /* the class's name in the module */
    PyObject **builtin; /* a second base, or NULL */
} error_table[] = {
    {FBK_EINVAL, "InvalidArgumentError", &PyExc_ValueError},
    {FBK_ENOMEM, "OutOfMemoryError", &PyExc_MemoryError},
    {FBK_EIO, "BackendIOError", &PyExc_OSError},
    {FBK_ENOSPC, "NoSpaceError", &PyExc_OSError},
    {FBK_ENOTFOUND, "NotFoundError", &PyExc_KeyError},
    {FBK_ECORRUPT, "CorruptError", NULL},
    {FBK_EAGAIN, "WouldBlockError", &PyExc_BlockingIOError},
    {FBK_EBUSY, "BusyError", NULL},
    {FBK_ECODEC, "CodecError", NULL},
    {FBK_ECLOSED, "ClosedError", &PyExc_ValueError},
    {FBK_EREADONLY, "ReadOnlyError", NULL},
    {FBK_ENOTSUP, "NotSupportedError", NULL},
    {FBK_ETIMEDOUT, "TimedOutError", &PyExc_TimeoutError},
};

/* A failure seen without the GIL: its code and message, copied at once. */
typedef struct {
    int rc;
    char msg[512];
} err_t;

static void err_capture(err_t *e, int rc)
{
    e->rc = rc;
    const char *m = fbk_errmsg();
    snprintf(e->msg, sizeof e->msg, "%s", (m && *m) ? m : fbk_strerror(rc));
}

static PyObject *error_class(int rc)
{
    if (rc < 0 && -rc < N_CODES && code_errors[-rc])
        return code_errors[-rc];
    return Error;
}

/* Raises the fbk.Error subclass of e->rc, with .code and .name set. */
static PyObject *raise_err(const err_t *e)
{
    PyObject *cls = error_class(e->rc);
    PyObject *exc = PyObject_CallFunction(cls, "s", e->msg);
    if (!exc)
        return NULL;
    PyObject *code = PyLong_FromLong(e->rc);
    PyObject *name = PyUnicode_FromString(fbk_err_name(e->rc));
    if (!code || !name || PyObject_SetAttrString(exc, "code", code) < 0 ||
        PyObject_SetAttrString(exc, "name", name) < 0) {
        Py_XDECREF(code);
        Py_XDECREF(name);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    Py_DECREF(name);
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *raise_code(int rc, const char *msg)
{
    err_t e;
    e.rc = rc;
    snprintf(e.msg, sizeof e.msg, "%s", msg);
    return raise_err(&e);
}

static int make_errors(PyObject *module)
{
    PyObject *dict = Py_BuildValue("{s:O,s:O}", "code", Py_None, "name", Py_None);
    if (!dict)
        return -1;
    Error = PyErr_NewExceptionWithDoc("fbk.Error",
                                      "A libfbk failure: .code is the negative FBK_E* value, "
                                      ".name its name (\"FBK_ECORRUPT\").",
                                      NULL, dict);
    Py_DECREF(dict);
    if (!Error || PyModule_AddObjectRef(module, "Error", Error) < 0)
        return -1;
    for (size_t i = 0; i < sizeof error_table / sizeof error_table[0]; i++) {
        int code = error_table[i].code;
        char qual[64];
        snprintf(qual, sizeof qual, "fbk.%s", error_table[i].name);
        PyObject *bases = error_table[i].builtin
                              ? PyTuple_Pack(2, Error, *error_table[i].builtin)
                              : PyTuple_Pack(1, Error);
        PyObject *attrs =
            Py_BuildValue("{s:i,s:s}", "code", code, "name", fbk_err_name(code));
        PyObject *cls = NULL;
        if (bases && attrs)
            cls = PyErr_NewExceptionWithDoc(qual, fbk_strerror(code), bases, attrs);
        Py_XDECREF(bases);
        Py_XDECREF(attrs);
        if (!cls)
            return -1;
        code_errors[-code] = cls;
        if (PyModule_AddObjectRef(module, error_table[i].name, cls) < 0)
            return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------- names */

/* A name argument: bytes (used in place), str (its UTF-8, in place) or any
 * other bytes-like object (copied into `hold`, so it cannot change while the
 * GIL is released). */
typedef struct {
    const char *p;
    Py_ssize_t n;
    PyObject *hold;
} name_t;

static int name_get(PyObject *o, name_t *nm)
{
    nm->hold = NULL;
    if (PyBytes_Check(o)) {
        nm->p = PyBytes_AS_STRING(o);
        nm->n = PyBytes_GET_SIZE(o);
        return 0;
    }
    if (PyUnicode_Check(o)) {
        nm->p = PyUnicode_AsUTF8AndSize(o, &nm->n);
        return nm->p ? 0 : -1;
    }
    if (PyObject_CheckBuffer(o)) {
        nm->hold = PyBytes_FromObject(o);
        if (!nm->hold)
            return -1;
        nm->p = PyBytes_AS_STRING(nm->hold);
        nm->n = PyBytes_GET_SIZE(nm->hold);
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "fbk: a name is bytes or str, not %.100s",
                 Py_TYPE(o)->tp_name);
    return -1;
}

static int name_valid(const name_t *nm)
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

static PyTypeObject Store_Type;

static int Store_init(StoreObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"uri", "readonly", "threads", NULL};
    PyObject *uri;
    int readonly = 0;
    unsigned threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|$pI:Store", kwlist, &uri, &readonly, &threads))
        return -1;
    if (self->s) {
        PyErr_SetString(PyExc_RuntimeError, "fbk.Store: already open");
        return -1;
    }
    const char *u = PyUnicode_AsUTF8(uri);
    if (!u)
        return -1;
    fbk_store_options o = {0};
    o.threads = threads;
    o.flags = readonly ? FBK_STORE_READONLY : 0;
    fbk_store *s = NULL;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_store_open(&s, u, &o);
    if (rc)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    if (e.rc) {
        raise_err(&e);
        return -1;
    }
    self->s = s;
    self->readonly = readonly;
    Py_INCREF(uri);
    Py_XSETREF(self->uri, uri);
    if (!self->maps && !(self->maps = PyList_New(0)))
        return -1;
    return 0;
}

static PyObject *Store_close(StoreObject *self, PyObject *unused);

static void Store_dealloc(StoreObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->s) {
        fbk_store *s = self->s;
        self->s = NULL;
        Py_BEGIN_ALLOW_THREADS
        fbk_store_close(s);
        Py_END_ALLOW_THREADS
    }
    Py_CLEAR(self->uri);
    Py_CLEAR(self->maps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Store_traverse(StoreObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->maps);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Store_clear(StoreObject *self)
{
    Py_CLEAR(self->maps);
    return 0;
}

static PyObject *Store_close(StoreObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->s)
        Py_RETURN_NONE;
    /* close the maps opened on it first (their pending changes are synced) */
    if (self->maps) {
        PyObject *maps = self->maps;
        self->maps = PyList_New(0);
        if (!self->maps) {
            self->maps = maps;
            return NULL;
        }
        Py_ssize_t n = PyList_GET_SIZE(maps);
        PyObject *first_error = NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *m = PyWeakref_GetObject(PyList_GET_ITEM(maps, i));
            if (m == Py_None)
                continue;
            Py_INCREF(m);
            PyObject *r = PyObject_CallMethod(m, "close", NULL);
            Py_DECREF(m);
            if (r)
                Py_DECREF(r);
            else if (!first_error)
                first_error = PyErr_GetRaisedException();
            else
                PyErr_Clear();
        }
        Py_DECREF(maps);
        if (first_error) {
            PyErr_SetRaisedException(first_error);
            return NULL;
        }
    }
    fbk_store *s = self->s;
    self->s = NULL;
    Py_BEGIN_ALLOW_THREADS
    fbk_store_close(s);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *Store_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *Store_exit(StoreObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = Store_close(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *Store_get_closed(StoreObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->s == NULL);
}

static PyObject *Store_get_readonly(StoreObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->readonly);
}

static PyObject *Store_get_uri(StoreObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->uri ? self->uri : Py_None);
}

static PyObject *Store_drain(StoreObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->s)
        return raise_code(FBK_ECLOSED, "fbk.Store: closed");
    err_t e = {0};
    fbk_store *s = self->s;
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_store_drain(s);
    if (rc)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    if (e.rc)
        return raise_err(&e);
    Py_RETURN_NONE;
}

static PyMethodDef Store_methods[] = {
    {"close", (PyCFunction)Store_close, METH_NOARGS,
     "Closes the maps opened on the store (syncing them), then the store."},
    {"drain", (PyCFunction)Store_drain, METH_NOARGS,
     "Waits until the store's background work is done."},
    {"__enter__", Store_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Store_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Store_getset[] = {
    {"closed", (getter)Store_get_closed, NULL, "True after close()", NULL},
    {"readonly", (getter)Store_get_readonly, NULL, "opened read-only", NULL},
    {"uri", (getter)Store_get_uri, NULL, "the URI it was opened with", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Store_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fbk._fbk.Store",
    .tp_basicsize = sizeof(StoreObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Store(uri, *, readonly=False, threads=0): an open libfbk store.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Store_init,
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_traverse = (traverseproc)Store_traverse,
    .tp_clear = (inquiry)Store_clear,
    .tp_methods = Store_methods,
    .tp_getset = Store_getset,
    .tp_weaklistoffset = offsetof(StoreObject, weakreflist),
};

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

static PyTypeObject Map_Type;

/* Releases what a Map holds, with the GIL released.  Returns fbk_map_close's
 * result (its message in *e). */
static int map_free(fbk_map *m, fbk_location *loc, fbk_pool *pool, err_t *e)
{
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_close(m);
    if (rc)
        err_capture(e, rc);
    fbk_location_close(loc);
    fbk_pool_release(pool);
    Py_END_ALLOW_THREADS
    return rc;
}

static int Map_init(MapObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"store", "name", "size_limit", "sync", NULL};
    StoreObject *store;
    PyObject *name;
    unsigned long long size_limit = 0;
    int sync = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!U|K$p:Map", kwlist, &Store_Type, &store, &name,
                                     &size_limit, &sync))
        return -1;
    if (self->m) {
        PyErr_SetString(PyExc_RuntimeError, "fbk.Map: already open");
        return -1;
    }
    if (!store->s) {
        raise_code(FBK_ECLOSED, "fbk.Map: the store is closed");
        return -1;
    }
    const char *locname = PyUnicode_AsUTF8(name);
    if (!locname)
        return -1;
    fbk_store *s = store->s;
    fbk_map_options o = {.size_limit = size_limit, .flags = sync ? 0 : FBK_MAP_NOSYNC};
    fbk_pool *pool = NULL;
    fbk_location *loc = NULL;
    fbk_map *m = NULL;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_pool_create(&pool, s, &fbk_blob_codec, 64);
    if (rc == 0)
        rc = fbk_location_open(s, locname, &loc);
    if (rc == 0)
        rc = fbk_map_open(pool, loc, &o, &m);
    if (rc) {
        err_capture(&e, rc);
        fbk_location_close(loc);
        fbk_pool_release(pool);
    }
    Py_END_ALLOW_THREADS
    if (e.rc) {
        raise_err(&e);
        return -1;
    }
    PyObject *ref = PyWeakref_NewRef((PyObject *)self, NULL);
    if (!ref || PyList_Append(store->maps, ref) < 0) {
        Py_XDECREF(ref);
        map_free(m, loc, pool, &e);
        return -1;
    }
    Py_DECREF(ref);
    self->m = m;
    self->loc = loc;
    self->pool = pool;
    self->sync = sync;
    self->size_limit = size_limit;
    Py_INCREF(store);
    Py_XSETREF(self->store, store);
    Py_INCREF(name);
    Py_XSETREF(self->name, name);
    return 0;
}

static void Map_dealloc(MapObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist)
        PyObject_ClearWeakRefs((PyObject *)self);
    if (self->m) {
        err_t e = {0};
        if (map_free(self->m, self->loc, self->pool, &e)) {
            PyObject *exc = PyErr_GetRaisedException();
            PyErr_WarnFormat(PyExc_RuntimeWarning, 1, "fbk.Map: closing at collection: %s",
                             e.msg);
            PyErr_SetRaisedException(exc);
        }
        self->m = NULL;
    }
    Py_CLEAR(self->store);
    Py_CLEAR(self->name);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Map_traverse(MapObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->store);
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static int Map_clear(MapObject *self)
{
    Py_CLEAR(self->store);
    return 0;
}

/* Starts a call that will release the GIL; -1 (ClosedError set) if closed. */
static int map_enter(MapObject *self)
{
    if (!self->m) {
        raise_code(FBK_ECLOSED, "fbk.Map: closed");
        return -1;
    }
    self->busy++;
    return 0;
}

static void map_leave(MapObject *self)
{
    self->busy--;
}

static PyObject *Map_close(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (!self->m)
        Py_RETURN_NONE;
    if (self->busy)
        return raise_code(FBK_EBUSY, "fbk.Map.close: another thread is using the map");
    fbk_map *m = self->m;
    self->m = NULL;
    err_t e = {0};
    if (map_free(m, self->loc, self->pool, &e))
        return raise_err(&e);
    Py_RETURN_NONE;
}

static PyObject *Map_sync(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (map_enter(self) < 0)
        return NULL;
    fbk_map *m = self->m;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_map_sync(m);
    if (rc)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    map_leave(self);
    if (e.rc)
        return raise_err(&e);
    Py_RETURN_NONE;
}

/* Looks name up and pins its value: 0 with *h and *b, FBK_ENOTFOUND, or
 * another code (in *e).  Runs without the GIL. */
static int lookup_pinned(fbk_map *m, const name_t *nm, fbk_handle **h, const fbk_blob **b,
                         err_t *e)
{
    fbk_handle *hh = NULL;
    const void *obj = NULL;
    int rc = fbk_map_get(m, nm->p, (size_t)nm->n, &hh);
    if (rc == 0) {
        rc = fbk_load(hh, &obj);
        if (rc) {
            err_capture(e, rc);
            fbk_handle_release(hh);
            return rc;
        }
        *h = hh;
        *b = obj;
        return 0;
    }
    if (rc != FBK_ENOTFOUND)
        err_capture(e, rc);
    return rc;
}

/* A copy of the pinned value as bytes; unpins and releases h. */
static PyObject *copy_out(fbk_handle *h, const fbk_blob *b)
{
    PyObject *r = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)b->len);
    char *dst = r ? PyBytes_AS_STRING(r) : NULL;
    Py_BEGIN_ALLOW_THREADS
    if (dst)
        memcpy(dst, b->data, b->len);
    fbk_unload(h);
    fbk_handle_release(h);
    Py_END_ALLOW_THREADS
    return r;
}

/* fbk_map_get_bytes's buffer: a new bytes object of the value's size,
 * allocated with the GIL taken back for the moment. */
typedef struct {
    PyThreadState *ts; /* saved while the GIL is released */
    PyObject *obj;
} bytes_ctx;

static void *new_bytes(size_t size, void *arg)
{
    bytes_ctx *c = arg;
    if (size > PY_SSIZE_T_MAX)
        return NULL;
    PyEval_RestoreThread(c->ts);
    Py_XDECREF(c->obj);
    c->obj = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    char *p = c->obj ? PyBytes_AS_STRING(c->obj) : NULL;
    c->ts = PyEval_SaveThread();
    return p;
}

/* self[name] (missing: KeyError), or self.get(name, dflt) (dflt != NULL). */
static PyObject *map_lookup(MapObject *self, PyObject *key, PyObject *dflt)
{
    name_t nm;
    if (name_get(key, &nm) < 0)
        return NULL;
    if (!name_valid(&nm)) { /* no such name can be bound */
        Py_XDECREF(nm.hold);
        if (dflt)
            return Py_NewRef(dflt);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    if (map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return NULL;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    /* one copy, straight into the new bytes object (fbk_map_get_bytes calls
     * new_bytes, which takes the GIL back for the allocation) */
    bytes_ctx bc = {NULL, NULL};
    bc.ts = PyEval_SaveThread();
    int rc = fbk_map_get_bytes(m, nm.p, (size_t)nm.n, new_bytes, &bc);
    if (rc && rc != FBK_ENOTFOUND)
        err_capture(&e, rc);
    PyEval_RestoreThread(bc.ts);
    map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc == 0)
        return bc.obj;
    Py_CLEAR(bc.obj);
    if (PyErr_Occurred()) /* the allocation failed */
        return NULL;
    if (rc == FBK_ENOTFOUND) {
        if (dflt)
            return Py_NewRef(dflt);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    return raise_err(&e);
}

static PyObject *Map_subscript(MapObject *self, PyObject *key)
{
    return map_lookup(self, key, NULL);
}

static PyObject *Map_get(MapObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(name, default=None)");
        return NULL;
    }
    return map_lookup(self, args[0], nargs == 2 ? args[1] : Py_None);
}

static int map_store(MapObject *self, PyObject *key, PyObject *value)
{
    name_t nm;
    if (name_get(key, &nm) < 0)
        return -1;
    if (!name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        raise_code(FBK_EINVAL, "fbk.Map: a name is 1 to 4096 bytes");
        return -1;
    }
    Py_buffer val;
    if (PyObject_GetBuffer(value, &val, PyBUF_SIMPLE) < 0) {
        Py_XDECREF(nm.hold);
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "fbk.Map: a value is bytes-like, not %.100s",
                         Py_TYPE(value)->tp_name);
        }
        return -1;
    }
    if (map_enter(self) < 0) {
        PyBuffer_Release(&val);
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    /* one copy (checksummed in the same pass) into the map, which writes it
     * into the location with its binding (fbk_map_put_bytes) */
    int rc = fbk_map_put_bytes(m, nm.p, (size_t)nm.n, val.buf, (size_t)val.len);
    if (rc)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    map_leave(self);
    PyBuffer_Release(&val);
    Py_XDECREF(nm.hold);
    if (e.rc) {
        raise_err(&e);
        return -1;
    }
    return 0;
}

static int map_delete(MapObject *self, PyObject *key)
{
    name_t nm;
    if (name_get(key, &nm) < 0)
        return -1;
    if (!name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    if (map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_remove(m, nm.p, (size_t)nm.n);
    if (rc && rc != FBK_ENOTFOUND)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc == FBK_ENOTFOUND) {
        PyErr_SetObject(PyExc_KeyError, key);
        return -1;
    }
    if (rc) {
        raise_err(&e);
        return -1;
    }
    return 0;
}

static int Map_ass_subscript(MapObject *self, PyObject *key, PyObject *value)
{
    return value ? map_store(self, key, value) : map_delete(self, key);
}

static int Map_contains(MapObject *self, PyObject *key)
{
    name_t nm;
    if (name_get(key, &nm) < 0)
        return -1;
    if (!name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        return 0;
    }
    if (map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        return -1;
    }
    fbk_map *m = self->m;
    err_t e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = fbk_map_contains(m, nm.p, (size_t)nm.n);
    if (rc < 0)
        err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc < 0) {
        raise_err(&e);
        return -1;
    }
    return rc;
}

static Py_ssize_t Map_length(MapObject *self)
{
    if (map_enter(self) < 0)
        return -1;
    fbk_map *m = self->m;
    uint64_t n;
    Py_BEGIN_ALLOW_THREADS
    n = fbk_map_count(m);
    Py_END_ALLOW_THREADS
    map_leave(self);
    return (Py_ssize_t)n;
}

/* fbk_map_names into one growing buffer of (size_t length, bytes) records,
 * without the GIL; the list is built afterwards. */
typedef struct {
    char *buf;
    size_t len, cap, count;
} names_acc;

static int names_each(const void *name, size_t len, void *arg)
{
    names_acc *a = arg;
    size_t need = a->len + sizeof(size_t) + len;
    if (need > a->cap) {
        size_t cap = a->cap ? a->cap : 4096;
        while (cap < need)
            cap *= 2;
        char *nb = realloc(a->buf, cap);
        if (!nb)
            return FBK_ENOMEM;
        a->buf = nb;
        a->cap = cap;
    }
    memcpy(a->buf + a->len, &len, sizeof len);
    memcpy(a->buf + a->len + sizeof len, name, len);
    a->len = need;
    a->count++;
    return 0;
}

/* A list of every name, as bytes. */
static PyObject *Map_names(MapObject *self, PyObject *unused)
{
    (void)unused;
    if (map_enter(self) < 0)
        return NULL;
    fbk_map *m = self->m;
    names_acc a = {0};
    err_t e = {0};
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_map_names(m, names_each, &a);
    if (rc == FBK_ENOMEM && !e.rc) {
        e.rc = rc;
        snprintf(e.msg, sizeof e.msg, "fbk.Map: no memory for the list of names");
    } else if (rc) {
        err_capture(&e, rc);
    }
    Py_END_ALLOW_THREADS
    map_leave(self);
    if (e.rc) {
        free(a.buf);
        return raise_err(&e);
    }
    PyObject *list = PyList_New((Py_ssize_t)a.count);
    size_t off = 0;
    for (size_t i = 0; list && i < a.count; i++) {
        size_t len;
        memcpy(&len, a.buf + off, sizeof len);
        PyObject *b = PyBytes_FromStringAndSize(a.buf + off + sizeof len, (Py_ssize_t)len);
        if (!b) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, b);
        off += sizeof len + len;
    }
    free(a.buf);
    return list;
}

static PyObject *Map_iter(MapObject *self)
{
    PyObject *list = Map_names(self, NULL);
    if (!list)
        return NULL;
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static PyObject *Map_get_bytes(MapObject *self, void *c)
{
    (void)c;
    if (!self->m)
        return raise_code(FBK_ECLOSED, "fbk.Map: closed");
    return PyLong_FromUnsignedLongLong(fbk_map_bytes(self->m));
}

static PyObject *Map_get_closed(MapObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->m == NULL);
}

static PyObject *Map_get_name(MapObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->name ? self->name : Py_None);
}

static PyObject *Map_get_size_limit(MapObject *self, void *c)
{
    (void)c;
    return PyLong_FromUnsignedLongLong(self->size_limit);
}

static PyObject *Map_get_store(MapObject *self, void *c)
{
    (void)c;
    return Py_NewRef(self->store ? (PyObject *)self->store : Py_None);
}

static PyObject *Map_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *Map_exit(MapObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = Map_close(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

/* ------------------------------------------------------------------ View */

typedef struct {
    PyObject_HEAD
    fbk_handle *h; /* NULL once unpinned */
    const fbk_blob *b;
    Py_ssize_t exports;
    int closed;
    PyObject *mv; /* the memoryview __enter__ gave out */
} ViewObject;

static PyTypeObject View_Type;

static void view_unpin(ViewObject *self)
{
    fbk_handle *h = self->h;
    if (!h)
        return;
    self->h = NULL;
    self->b = NULL;
    Py_BEGIN_ALLOW_THREADS
    fbk_unload(h);
    fbk_handle_release(h);
    Py_END_ALLOW_THREADS
}

static PyObject *Map_view(MapObject *self, PyObject *key)
{
    name_t nm;
    if (name_get(key, &nm) < 0)
        return NULL;
    if (!name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    ViewObject *v = PyObject_GC_New(ViewObject, &View_Type);
    if (!v) {
        Py_XDECREF(nm.hold);
        return NULL;
    }
    v->h = NULL;
    v->b = NULL;
    v->exports = 0;
    v->closed = 0;
    v->mv = NULL;
    if (map_enter(self) < 0) {
        Py_XDECREF(nm.hold);
        Py_DECREF(v);
        return NULL;
    }
    fbk_map *m = self->m;
    fbk_handle *h = NULL;
    const fbk_blob *b = NULL;
    err_t e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = lookup_pinned(m, &nm, &h, &b, &e);
    Py_END_ALLOW_THREADS
    map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc) {
        Py_DECREF(v);
        if (rc == FBK_ENOTFOUND) {
            PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        return raise_err(&e);
    }
    v->h = h;
    v->b = b;
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

static int View_getbuffer(ViewObject *self, Py_buffer *view, int flags)
{
    if (self->closed || !self->h) {
        PyErr_SetString(PyExc_BufferError, "fbk.View: released");
        view->obj = NULL;
        return -1;
    }
    if (PyBuffer_FillInfo(view, (PyObject *)self, (void *)self->b->data,
                          (Py_ssize_t)self->b->len, 1, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void View_releasebuffer(ViewObject *self, Py_buffer *view)
{
    (void)view;
    if (--self->exports == 0 && self->closed)
        view_unpin(self);
}

static PyBufferProcs View_as_buffer = {
    .bf_getbuffer = (getbufferproc)View_getbuffer,
    .bf_releasebuffer = (releasebufferproc)View_releasebuffer,
};

/* Unpins now, or when the last exported buffer is released. */
static PyObject *View_release(ViewObject *self, PyObject *unused)
{
    (void)unused;
    if (self->mv) {
        PyObject *mv = self->mv;
        self->mv = NULL;
        PyObject *r = PyObject_CallMethod(mv, "release", NULL);
        if (r)
            Py_DECREF(r);
        else
            PyErr_Clear(); /* a slice of it still exported: unpinned when that goes */
        Py_DECREF(mv);
    }
    self->closed = 1;
    if (self->exports == 0)
        view_unpin(self);
    Py_RETURN_NONE;
}

static PyObject *View_enter(ViewObject *self, PyObject *unused)
{
    (void)unused;
    if (self->mv)
        return Py_NewRef(self->mv);
    PyObject *mv = PyMemoryView_FromObject((PyObject *)self);
    if (!mv)
        return NULL;
    self->mv = Py_NewRef(mv);
    return mv;
}

static PyObject *View_exit(ViewObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = View_release(self, NULL);
    if (!r)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static Py_ssize_t View_length(ViewObject *self)
{
    return self->b ? (Py_ssize_t)self->b->len : 0;
}

static void View_dealloc(ViewObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(self->mv);
    view_unpin(self);
    PyObject_GC_Del(self);
}

/* self->mv refers back to self (a memoryview holds its exporter) */
static int View_traverse(ViewObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->mv);
    return 0;
}

static int View_clear(ViewObject *self)
{
    Py_CLEAR(self->mv);
    return 0;
}

static PyObject *View_get_pinned(ViewObject *self, void *c)
{
    (void)c;
    return PyBool_FromLong(self->h != NULL);
}

static PyMethodDef View_methods[] = {
    {"release", (PyCFunction)View_release, METH_NOARGS,
     "Unpins the value (once no buffer taken from the view is alive)."},
    {"__enter__", (PyCFunction)View_enter, METH_NOARGS, "A read-only memoryview of the value."},
    {"__exit__", (PyCFunction)View_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef View_getset[] = {
    {"pinned", (getter)View_get_pinned, NULL, "True while the value is pinned", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods View_as_sequence = {
    .sq_length = (lenfunc)View_length,
};

static PyTypeObject View_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fbk._fbk.View",
    .tp_basicsize = sizeof(ViewObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_doc = "A value pinned in memory, exported read-only through the buffer protocol.",
    .tp_dealloc = (destructor)View_dealloc,
    .tp_as_buffer = &View_as_buffer,
    .tp_as_sequence = &View_as_sequence,
    .tp_methods = View_methods,
    .tp_getset = View_getset,
};

/* --------------------------------------------------------------- memoize */

#define MEMO_RAISED 1 /* compute's result when the function raised */

typedef struct {
    PyThreadState *ts;
    PyObject *func, *args, *kwargs, *dumps;
    PyObject *result; /* the function's result, when this thread computed it */
    PyObject *exc;    /* what the function (or pickling) raised */
    int computed;
} memo_ctx;

/* Runs on the caller's thread inside fbk_map_get_or_compute (no GIL held):
 * takes the GIL back, calls the function and pickles its result. */
static int memo_compute(const void *name, size_t len, void **obj, void *arg)
{
    (void)name;
    (void)len;
    memo_ctx *c = arg;
    PyEval_RestoreThread(c->ts);
    int rc = 0;
    c->computed = 1;
    PyObject *res = PyObject_Call(c->func, c->args, c->kwargs);
    PyObject *data = res ? PyObject_CallOneArg(c->dumps, res) : NULL;
    if (data && !PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "fbk.memoize: the pickler did not return bytes");
        Py_CLEAR(data);
    }
    if (data) {
        fbk_blob *b = fbk_blob_new(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
        if (b) {
            *obj = b;
            c->result = Py_NewRef(res);
        } else {
            PyErr_NoMemory();
        }
    }
    if (PyErr_Occurred()) {
        c->exc = PyErr_GetRaisedException();
        rc = MEMO_RAISED;
    }
    Py_XDECREF(res);
    Py_XDECREF(data);
    c->ts = PyEval_SaveThread();
    return rc;
}

/* _memo(name, func, args, kwargs, dumps) -> (computed, value): calls
 * func(*args, **kwargs) once among concurrent callers of this name unless it
 * is bound already.  computed True: value is the function's result; False:
 * value is the stored pickle (bytes). */
static PyObject *Map_memo(MapObject *self, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyTuple_Check(argv[2]) || (argv[3] != Py_None && !PyDict_Check(argv[3]))) {
        PyErr_SetString(PyExc_TypeError, "_memo(name, func, args: tuple, kwargs: dict, dumps)");
        return NULL;
    }
    name_t nm;
    if (name_get(argv[0], &nm) < 0)
        return NULL;
    if (!name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        return raise_code(FBK_EINVAL, "fbk.memoize: a name is 1 to 4096 bytes");
    }
    memo_ctx c = {.func = argv[1], .args = argv[2], .kwargs = argv[3] == Py_None ? NULL : argv[3],
                  .dumps = argv[4]};
    PyObject *out = NULL;
    for (;;) {
        if (map_enter(self) < 0)
            break;
        fbk_map *m = self->m;
        fbk_handle *h = NULL;
        const void *obj = NULL;
        err_t e = {0};
        c.computed = 0;
        c.ts = PyEval_SaveThread();
        int rc = fbk_map_get_or_compute(m, nm.p, (size_t)nm.n, memo_compute, &c, &h);
        if (rc == 0 && !c.computed) {
            rc = fbk_load(h, &obj);
            if (rc) {
                err_capture(&e, rc);
                fbk_handle_release(h);
            }
        } else if (rc == 0) {
            fbk_handle_release(h);
        } else if (rc != MEMO_RAISED) {
            err_capture(&e, rc);
        }
        PyEval_RestoreThread(c.ts);
        map_leave(self);
        if (rc == MEMO_RAISED && c.exc) { /* the function raised here */
            PyErr_SetRaisedException(c.exc);
            c.exc = NULL;
            break;
        }
        if (rc == MEMO_RAISED)
            continue; /* it raised in another thread: nothing bound, call it here */
        if (rc) {
            Py_CLEAR(c.result);
            raise_err(&e);
            break;
        }
        if (c.computed) {
            out = Py_BuildValue("(ON)", Py_True, c.result);
            c.result = NULL;
        } else {
            PyObject *v = copy_out(h, obj);
            out = v ? Py_BuildValue("(ON)", Py_False, v) : NULL;
        }
        break;
    }
    Py_XDECREF(c.result);
    Py_XDECREF(c.exc);
    Py_XDECREF(nm.hold);
    return out;
}

static PyMethodDef Map_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Map_get, METH_FASTCALL,
     "get(name, default=None): the value, or default if unbound."},
    {"view", (PyCFunction)Map_view, METH_O,
     "view(name): the value pinned in memory; `with m.view(n) as mv` gives a read-only "
     "memoryview without copying."},
    {"names", (PyCFunction)Map_names, METH_NOARGS, "A list of every name (bytes)."},
    {"sync", (PyCFunction)Map_sync, METH_NOARGS, "Makes every put/remove so far durable."},
    {"close", (PyCFunction)Map_close, METH_NOARGS, "Syncs what is pending and closes the map."},
    {"_memo", (PyCFunction)(void (*)(void))Map_memo, METH_FASTCALL, NULL},
    {"__enter__", Map_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)Map_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Map_getset[] = {
    {"bytes_used", (getter)Map_get_bytes, NULL, "bytes of the distinct values named", NULL},
    {"closed", (getter)Map_get_closed, NULL, "True after close()", NULL},
    {"name", (getter)Map_get_name, NULL, "the map's location name", NULL},
    {"store", (getter)Map_get_store, NULL, "the Store it was opened on", NULL},
    {"size_limit", (getter)Map_get_size_limit, NULL, "bytes kept at most; 0 = no limit", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods Map_as_mapping = {
    .mp_length = (lenfunc)Map_length,
    .mp_subscript = (binaryfunc)Map_subscript,
    .mp_ass_subscript = (objobjargproc)Map_ass_subscript,
};

static PySequenceMethods Map_as_sequence = {
    .sq_contains = (objobjproc)Map_contains,
};

static PyTypeObject Map_Type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fbk._fbk.Map",
    .tp_basicsize = sizeof(MapObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Map(store, name, size_limit=0, *, sync=True): names (bytes) bound to values "
              "(bytes) in one location of the store.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Map_init,
    .tp_dealloc = (destructor)Map_dealloc,
    .tp_traverse = (traverseproc)Map_traverse,
    .tp_clear = (inquiry)Map_clear,
    .tp_iter = (getiterfunc)Map_iter,
    .tp_as_mapping = &Map_as_mapping,
    .tp_as_sequence = &Map_as_sequence,
    .tp_methods = Map_methods,
    .tp_getset = Map_getset,
    .tp_weaklistoffset = offsetof(MapObject, weakreflist),
};

/* ---------------------------------------------------------------- module */

static PyObject *mod_xxh128(PyObject *mod, PyObject *arg)
{
    (void)mod;
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0)
        return NULL;
    XXH128_hash_t hv;
    if (b.len > 65536) {
        Py_BEGIN_ALLOW_THREADS
        hv = XXH3_128bits(b.buf, (size_t)b.len);
        Py_END_ALLOW_THREADS
    } else {
        hv = XXH3_128bits(b.buf, (size_t)b.len);
    }
    PyBuffer_Release(&b);
    XXH128_canonical_t canon;
    XXH128_canonicalFromHash(&canon, hv);
    return PyBytes_FromStringAndSize((const char *)canon.digest, sizeof canon.digest);
}

static PyObject *mod_version(PyObject *mod, PyObject *unused)
{
    (void)mod;
    (void)unused;
    return PyUnicode_FromString(fbk_version());
}

static PyMethodDef module_methods[] = {
    {"xxh128", mod_xxh128, METH_O, "xxh128(data) -> 16 bytes: XXH3-128 (canonical, big-endian)."},
    {"version", mod_version, METH_NOARGS, "libfbk's version string."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fbk_module = {
    PyModuleDef_HEAD_INIT, "fbk._fbk", "CPython binding of libfbk (see the fbk package).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fbk(void)
{
    PyObject *m = PyModule_Create(&fbk_module);
    if (!m)
        return NULL;
    if (PyType_Ready(&Store_Type) < 0 || PyType_Ready(&Map_Type) < 0 ||
        PyType_Ready(&View_Type) < 0 || make_errors(m) < 0 ||
        PyModule_AddObjectRef(m, "Store", (PyObject *)&Store_Type) < 0 ||
        PyModule_AddObjectRef(m, "Map", (PyObject *)&Map_Type) < 0 ||
        PyModule_AddObjectRef(m, "View", (PyObject *)&View_Type) < 0 ||
        PyModule_AddIntConstant(m, "NAME_MAX", FBK_NAME_MAX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
