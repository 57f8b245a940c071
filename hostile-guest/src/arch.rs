//! Image header, entry points, EL1 exception vectors, system registers, probes that may fault.
//!
//! Trap frame layout (bytes): x0-x30 at 0..248, ELR_EL1 at 248, SPSR_EL1 at 256, q0-q31 at
//! 272..784, FPSR/FPCR at 784/792; 800 in all. FP/SIMD registers are saved because Rust code in the
//! handlers may use them.

pub const MAX_CPUS: usize = 8;
pub const STACK_SIZE: usize = 0x4000;

#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    _pad: u64,
    _fp: [u128; 32],
    _fpsr: u64,
    _fpcr: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == 800);

#[repr(C, align(16))]
pub struct Stacks(pub [[u8; STACK_SIZE]; MAX_CPUS]);

/// Per-vCPU EL1 stacks, indexed by the vCPU's position in the device tree's `/cpus`.
#[no_mangle]
pub static mut GUEST_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

macro_rules! mrs {
    ($r:literal) => {{
        let v: u64;
        // SAFETY: reading a system register has no memory effects; the register exists at EL1.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }};
}

macro_rules! msr {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the callers write EL1/EL0 control registers with values documented at the call site.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
    }};
}

pub(crate) use {mrs, msr};

pub fn isb() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

pub fn dsb() {
    // SAFETY: a barrier.
    unsafe { core::arch::asm!("dsb sy", options(nostack, preserves_flags)) };
}

pub fn wfi() {
    // SAFETY: waits for an interrupt; no memory effects.
    unsafe { core::arch::asm!("wfi", options(nostack, preserves_flags)) };
}

/// Masks IRQs (PSTATE.I).
pub fn irq_off() {
    // SAFETY: changes only the interrupt mask.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack, preserves_flags)) };
}

/// Unmasks IRQs and SErrors (the hypervisor enters us with DAIF all masked).
pub fn irq_on() {
    // SAFETY: changes only the interrupt mask; the vectors are installed before this is called.
    unsafe { core::arch::asm!("msr daifclr, #6", "isb", options(nostack, preserves_flags)) };
}

pub fn now() -> u64 {
    isb();
    mrs!("cntvct_el0")
}

pub fn freq() -> u64 {
    mrs!("cntfrq_el0")
}

pub fn us_to_ticks(us: u64) -> u64 {
    freq() * us / 1_000_000
}

pub fn delay_us(us: u64) {
    let end = now() + us_to_ticks(us);
    while now() < end {}
}

extern "C" {
    pub fn guest_secondary_entry();
    static _start_image: u8;
    static _end: u8;
}

pub fn secondary_entry_pa() -> u64 {
    guest_secondary_entry as *const () as u64
}

/// This image in memory: from its header to the end of .bss.
pub fn image_range() -> (u64, u64) {
    (core::ptr::addr_of!(_start_image) as u64, core::ptr::addr_of!(_end) as u64)
}

/// An SMCCC call through `hvc #0` (x0..x3 in, x0 out).
pub fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> u64 {
    let mut x0 = u64::from(fid);
    // SAFETY: a call into the hypervisor; SMCCC 1.1 lets it clobber x0-x17, declared here.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") x0, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
            out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack));
    }
    x0
}

/// `hvc #imm` / `smc #imm` with a function ID, for the unknown-call cases.
macro_rules! call_insn {
    ($insn:literal, $fid:expr) => {{
        let mut x0: u64 = $fid;
        // SAFETY: a call into the hypervisor (or an undef, which the vectors skip); SMCCC 1.1 lets it
        // clobber x0-x17, declared here.
        unsafe {
            core::arch::asm!($insn, inout("x0") x0, inout("x1") 0u64 => _, inout("x2") 0u64 => _, inout("x3") 0u64 => _,
                out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _, out("x9") _, out("x10") _,
                out("x11") _, out("x12") _, out("x13") _, out("x14") _, out("x15") _, out("x16") _, out("x17") _,
                options(nostack));
        }
        x0
    }};
}
pub(crate) use call_insn;

core::arch::global_asm!(
    r#"
.equ STACK_SIZE, {stack}
.equ FRAME, 800

// x0 = vCPU index: vectors, FP/SIMD on, stack = top of slot x0.
.macro VECTORS_AND_STACK
    adrp    x1, guest_vectors
    add     x1, x1, :lo12:guest_vectors
    msr     vbar_el1, x1
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    isb
    adrp    x2, GUEST_STACKS
    add     x2, x2, :lo12:GUEST_STACKS
    add     x3, x0, #1
    mov     x4, #STACK_SIZE
    madd    x2, x3, x4, x2
    mov     sp, x2
.endm

.section .text.head, "ax"
.global _start
_start:
    b       1f
    .long   0
    .quad   0                   // text_offset
    .quad   _image_size         // image_size, including .bss
    .quad   0xa                 // flags: LE, 4K pages, placed anywhere
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARM\x64"
    .long   0
1:
    msr     daifset, #0xf
    mov     x19, x0             // DTB
    adr     x20, _start         // load address
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
3:  adrp    x1, __rela_start
    add     x1, x1, :lo12:__rela_start
    adrp    x2, __rela_end
    add     x2, x2, :lo12:__rela_end
4:  cmp     x1, x2
    b.hs    5f
    ldp     x3, x4, [x1], #16   // r_offset, r_info
    ldr     x5, [x1], #8        // r_addend
    cmp     x4, #1027           // R_AARCH64_RELATIVE
    b.ne    4b
    add     x5, x5, x20
    str     x5, [x20, x3]
    b       4b
    // Written with the MMU (and so the data cache) off: drop any stale cached copy of the image.
5:  adr     x1, _start
    adrp    x2, _end
    add     x2, x2, :lo12:_end
6:  dc      ivac, x1
    add     x1, x1, #64
    cmp     x1, x2
    b.lo    6b
    dsb     sy
    ic      iallu
    isb
    mov     x0, #0
    VECTORS_AND_STACK
    mov     x0, x19
    bl      guest_primary_main
7:  wfi
    b       7b

.text
// PSCI CPU_ON entry: x0 = context = vCPU index.
.global guest_secondary_entry
guest_secondary_entry:
    msr     daifset, #0xf
    mov     x19, x0
    VECTORS_AND_STACK
    mov     x0, x19
    bl      guest_secondary_main
8:  wfi
    b       8b

.macro VEC kind
    .balign 0x80
    sub     sp, sp, #FRAME
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       guest_trap_common
.endm

.balign 2048
.global guest_vectors
guest_vectors:
    VEC 0
    VEC 1
    VEC 2
    VEC 3
    VEC 4
    VEC 5
    VEC 6
    VEC 7
    VEC 8
    VEC 9
    VEC 10
    VEC 11
    VEC 12
    VEC 13
    VEC 14
    VEC 15

guest_trap_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x1, elr_el1
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el1
    str     x1, [sp, #256]
    add     x9, sp, #272
    stp     q0, q1, [x9, #0]
    stp     q2, q3, [x9, #32]
    stp     q4, q5, [x9, #64]
    stp     q6, q7, [x9, #96]
    stp     q8, q9, [x9, #128]
    stp     q10, q11, [x9, #160]
    stp     q12, q13, [x9, #192]
    stp     q14, q15, [x9, #224]
    stp     q16, q17, [x9, #256]
    stp     q18, q19, [x9, #288]
    stp     q20, q21, [x9, #320]
    stp     q22, q23, [x9, #352]
    stp     q24, q25, [x9, #384]
    stp     q26, q27, [x9, #416]
    stp     q28, q29, [x9, #448]
    stp     q30, q31, [x9, #480]
    mrs     x1, fpsr
    mrs     x2, fpcr
    add     x10, x9, #512
    stp     x1, x2, [x10]
    mov     x1, x0
    mov     x0, sp
    bl      guest_trap
    add     x9, sp, #272
    add     x10, x9, #512
    ldp     x1, x2, [x10]
    msr     fpsr, x1
    msr     fpcr, x2
    ldp     q0, q1, [x9, #0]
    ldp     q2, q3, [x9, #32]
    ldp     q4, q5, [x9, #64]
    ldp     q6, q7, [x9, #96]
    ldp     q8, q9, [x9, #128]
    ldp     q10, q11, [x9, #160]
    ldp     q12, q13, [x9, #192]
    ldp     q14, q15, [x9, #224]
    ldp     q16, q17, [x9, #256]
    ldp     q18, q19, [x9, #288]
    ldp     q20, q21, [x9, #320]
    ldp     q22, q23, [x9, #352]
    ldp     q24, q25, [x9, #384]
    ldp     q26, q27, [x9, #416]
    ldp     q28, q29, [x9, #448]
    ldp     q30, q31, [x9, #480]
    ldr     x1, [sp, #256]
    msr     spsr_el1, x1
    ldp     x30, x1, [sp, #240]
    msr     elr_el1, x1
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #FRAME
    eret
"#,
    stack = const STACK_SIZE,
);
