/* fbk_export.h -- which symbols libfbk.so exports (not installed).
 *
 * Every file of the library is compiled with -fvisibility=hidden and with
 * this header included first (-include, see CMakeLists.txt), so the public
 * headers' declarations are seen first, here, with default visibility: the
 * functions and data they declare are exported and everything else (the
 * internal fbk__ functions, each backend's own) stays inside the library.
 * Backends that include only fbk_backend.h are covered as well.
 */
#ifndef FBK_EXPORT_H
#define FBK_EXPORT_H

#pragma GCC visibility push(default)
#include "fbk.h"
#pragma GCC visibility pop

#endif
