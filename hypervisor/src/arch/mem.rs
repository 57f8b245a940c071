//! `memcpy` and `memset` for the compiler's struct moves, zeroing and `copy_nonoverlapping`.
//!
//! Ours instead of `compiler_builtins`' (whose symbols are weak, so these win at link time): its
//! generic versions take 860 bytes, these ~130, and the Image must stay under Bao's 90,112 bytes
//! (issue 11). The big copies (kernels, initrds: page-aligned) take the 16-byte path. Unaligned
//! accesses go byte by byte, because before the MMU is on every data access is Device memory, where
//! an unaligned access faults.

core::arch::global_asm!(
    ".section .text.memcpy, \"ax\"",
    ".global memcpy",
    ".type memcpy, %function",
    // x0 dst, x1 src, x2 len; returns dst.
    "memcpy:",
    "    mov x3, x0",
    "    orr x4, x0, x1",
    "    tst x4, #7",
    "    b.ne 2f",
    "1:  cmp x2, #16",
    "    b.lo 2f",
    "    ldp x4, x5, [x1], #16",
    "    stp x4, x5, [x3], #16",
    "    sub x2, x2, #16",
    "    b 1b",
    "2:  cbz x2, 3f",
    "    ldrb w4, [x1], #1",
    "    strb w4, [x3], #1",
    "    sub x2, x2, #1",
    "    b 2b",
    "3:  ret",
    ".size memcpy, . - memcpy",
    ".section .text.memset, \"ax\"",
    ".global memset",
    ".type memset, %function",
    // x0 dst, w1 byte, x2 len; returns dst.
    "memset:",
    "    mov x3, x0",
    "    and x1, x1, #0xff",
    "    orr x1, x1, x1, lsl #8",
    "    orr x1, x1, x1, lsl #16",
    "    orr x1, x1, x1, lsl #32",
    "    tst x0, #7",
    "    b.ne 2f",
    "1:  cmp x2, #16",
    "    b.lo 2f",
    "    stp x1, x1, [x3], #16",
    "    sub x2, x2, #16",
    "    b 1b",
    "2:  cbz x2, 3f",
    "    strb w1, [x3], #1",
    "    sub x2, x2, #1",
    "    b 2b",
    "3:  ret",
    ".size memset, . - memset",
);
