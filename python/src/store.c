/* store.c -- fbk._fbk.Store: an open fbk_store (docs/python.md).  Closing it
 * closes the Maps opened on it first. */
#include "fbkpy.h"

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
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    if (e.rc) {
        fbkpy_raise_err(&e);
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
        return fbkpy_raise_code(FBK_ECLOSED, "fbk.Store: closed");
    err_t e = {0};
    fbk_store *s = self->s;
    Py_BEGIN_ALLOW_THREADS
    int rc = fbk_store_drain(s);
    if (rc)
        fbkpy_err_capture(&e, rc);
    Py_END_ALLOW_THREADS
    if (e.rc)
        return fbkpy_raise_err(&e);
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

PyTypeObject fbkpy_Store_Type = {
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
