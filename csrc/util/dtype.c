/* Tensor element types: names and block geometry (ggml's layouts). */
#include "parrot.h"

const char *pr_dtype_name(int type) {
    switch (type) {
    case PR_F32: return "f32";
    case PR_F16: return "f16";
    case PR_BF16: return "bf16";
    case PR_Q8_0: return "q8_0";
    case PR_Q4_0: return "q4_0";
    default: return NULL;
    }
}

size_t pr_dtype_block_size(int type) {
    switch (type) {
    case PR_F32: case PR_F16: case PR_BF16: return 1;
    case PR_Q8_0: case PR_Q4_0: return 32;
    default: return 0;
    }
}

size_t pr_dtype_block_bytes(int type) {
    switch (type) {
    case PR_F32: return 4;
    case PR_F16: case PR_BF16: return 2;
    case PR_Q8_0: return 2 + 32;      /* f16 scale + 32 int8 */
    case PR_Q4_0: return 2 + 16;      /* f16 scale + 32 nibbles */
    default: return 0;
    }
}
