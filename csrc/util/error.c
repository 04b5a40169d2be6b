/* Error reporting shared by every room of the C core. */
#include <stdarg.h>
#include <stdio.h>

#include "parrot.h"

int pr_set_error(pr_error *e, int code, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        e->code = code;
    }
    return code;
}
