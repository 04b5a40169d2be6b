/* pr_model_load honours the abort flag while it copies q8_0/q4_0 tensors into its own memory: with the flag
 * raised, a quantised file fails with PR_ERR_INTERRUPTED and nothing leaks (run under ASan by the test's
 * sanitized run); once the caller clears the flag the same file loads. Usage: load_interrupt FILE.gguf
 * Exit status 0 = as described; the reason otherwise on stderr. Run by tests/test_c_example.py. */
#include <stdio.h>

#include "parrot.h"

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE.gguf\n", argv[0]);
        return 2;
    }
    pr_error err = {0};
    pr_model *m = NULL;
    pr_interrupt_request();
    int rc = pr_model_load(argv[1], 1, &m, &err);
    if (rc != PR_ERR_INTERRUPTED || m) {
        fprintf(stderr, "with the flag raised: rc %d (%s), model %p\n", rc, err.msg, (void *)m);
        return 1;
    }
    pr_interrupt_clear();
    rc = pr_model_load(argv[1], 1, &m, &err);
    if (rc || !m) {
        fprintf(stderr, "after clearing the flag: rc %d (%s)\n", rc, err.msg);
        return 1;
    }
    pr_model_free(m);
    return 0;
}
