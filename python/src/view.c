/* view.c -- fbk._fbk.View: one value pinned in memory and exported
 * read-only through the buffer protocol, and Map.view() that makes one. */
#include "fbkpy.h"

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
            fbkpy_err_capture(e, rc);
            fbk_handle_release(hh);
            return rc;
        }
        *h = hh;
        *b = obj;
        return 0;
    }
    if (rc != FBK_ENOTFOUND)
        fbkpy_err_capture(e, rc);
    return rc;
}

PyObject *fbkpy_Map_view(MapObject *self, PyObject *key)
{
    name_t nm;
    if (fbkpy_name_get(key, &nm) < 0)
        return NULL;
    if (!fbkpy_name_valid(&nm)) {
        Py_XDECREF(nm.hold);
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    ViewObject *v = PyObject_GC_New(ViewObject, &fbkpy_View_Type);
    if (!v) {
        Py_XDECREF(nm.hold);
        return NULL;
    }
    v->h = NULL;
    v->b = NULL;
    v->exports = 0;
    v->closed = 0;
    v->mv = NULL;
    if (fbkpy_map_enter(self) < 0) {
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
    fbkpy_map_leave(self);
    Py_XDECREF(nm.hold);
    if (rc) {
        Py_DECREF(v);
        if (rc == FBK_ENOTFOUND) {
            PyErr_SetObject(PyExc_KeyError, key);
            return NULL;
        }
        return fbkpy_raise_err(&e);
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

PyTypeObject fbkpy_View_Type = {
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
