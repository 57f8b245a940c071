//! The Image header, the entry points, the exception vectors and the guest entry.
//!
//! Trap frame layout (bytes): x0-x30 at 0..248, ELR_EL2 at 248, SPSR_EL2 at 256, q0-q31 at 272..784,
//! FPSR/FPCR at 784/792; 800 in all. The FP/SIMD registers are saved because the compiler may use them
//! in hypervisor code and Dom0's must survive every trap.

use rpixen_hv_core::cpus::MAX_CPUS;

/// Each CPU's EL2 stack.
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

/// Per-CPU EL2 stacks, indexed by CPU index (position in the DT's CPU list).
#[no_mangle]
pub static mut HV_STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// The boot CPU's stack until it enters Dom0 (the DT is parsed and every domain built on it):
/// twice a CPU's, as building the domains takes frames of several KiB (`hv_primary_main` alone
/// ~12 KiB). .bss, so it costs the file nothing.
#[no_mangle]
pub static mut HV_BOOT_STACK: Stacks1 = Stacks1([0; BOOT_STACK_SIZE]);
pub const BOOT_STACK_SIZE: usize = 2 * STACK_SIZE;

#[repr(C, align(16))]
pub struct Stacks1(pub [u8; BOOT_STACK_SIZE]);

/// MPIDR affinity of each CPU index, for secondaries to find their index before any Rust runs.
/// u64::MAX marks an unused slot. Written by the boot CPU, cleaned to PoC before secondaries start.
#[no_mangle]
pub static HV_CPU_MPIDR: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(u64::MAX) }; MAX_CPUS];

pub fn stack_top(cpu: usize) -> u64 {
    let base = core::ptr::addr_of!(HV_STACKS) as u64;
    base + ((cpu + 1) * STACK_SIZE) as u64
}

extern "C" {
    fn hv_enter_guest(entry: u64, x0: u64, stack_top: u64) -> !;
    pub fn hv_secondary_entry();
    static _start_image: u8;
    static _text_end: u8;
    static _ro_end: u8;
    static _end: u8;
}

/// Leaves the hypervisor for Dom0 at EL1h with all of DAIF masked, MMU off (booting.rst), on a fresh stack.
pub fn enter_guest(entry: u64, x0: u64, cpu: usize) -> ! {
    // SAFETY: the EL2 state for the guest has been set up on this CPU (crate::cpu_setup_guest_regs).
    unsafe { hv_enter_guest(entry, x0, stack_top(cpu)) }
}

pub fn secondary_entry_pa() -> u64 {
    hv_secondary_entry as *const () as u64
}

/// The image's code, constants and data boundaries (link.ld), for the W^X EL2 map.
pub fn image_sections() -> rpixen_hv_core::pagetable::ImageSections {
    rpixen_hv_core::pagetable::ImageSections {
        start: core::ptr::addr_of!(_start_image) as u64,
        text_end: core::ptr::addr_of!(_text_end) as u64,
        ro_end: core::ptr::addr_of!(_ro_end) as u64,
        end: core::ptr::addr_of!(_end) as u64,
    }
}

/// The hypervisor's own memory: from the image start to the end of .bss.
pub fn image_range() -> (u64, u64) {
    (core::ptr::addr_of!(_start_image) as u64, core::ptr::addr_of!(_end) as u64)
}

core::arch::global_asm!(
    r#"
.equ STACK_SIZE, {stack}
.equ BOOT_STACK_SIZE, {boot_stack}
.equ MAX_CPUS, {max_cpus}
.equ FRAME, 800

.macro VECTORS
    adrp    x1, hv_vectors
    add     x1, x1, :lo12:hv_vectors
    msr     vbar_el2, x1
    isb
.endm

.section .text.head, "ax"
.global _start
_start:
    b       1f
    .long   0
    .quad   0                   // text_offset
    .quad   _image_size         // image_size, including .bss
    .quad   0xa                 // flags: LE, 4K pages, bit3 = placed anywhere
    .quad   0
    .quad   0
    .quad   0
    .ascii  "ARM\x64"
    .long   0
1:
    msr     daifset, #0xf       // U-Boot leaves SError unmasked
    mov     x19, x0             // DTB
    adr     x20, _start         // load address
    adrp    x1, __data_init        // .data from its initial bytes (see link.ld), before relocating
    add     x1, x1, :lo12:__data_init
    adrp    x2, __data_start
    add     x2, x2, :lo12:__data_start
    adrp    x3, __data_end
    add     x3, x3, :lo12:__data_end
21: cmp     x2, x3
    b.hs    22f
    ldp     x4, x5, [x1], #16
    stp     x4, x5, [x2], #16
    b       21b
22: adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
2:  cmp     x1, x2
    b.hs    3f
    stp     xzr, xzr, [x1], #16
    b       2b
    // Relocate: the image is linked at 0 with packed relative relocations (RELR, `-z
    // pack-relative-relocs`: ~0.1 KiB where RELA took ~3 KiB). Each word is an address to relocate
    // (even) or a bitmap (odd) of the 63 words after the last one relocated.
3:  adrp    x1, __relr_start
    add     x1, x1, :lo12:__relr_start
    adrp    x2, __relr_end
    add     x2, x2, :lo12:__relr_end
    mov     x6, x20             // where the next bitmap starts
4:  cmp     x1, x2
    b.hs    5f
    ldr     x3, [x1], #8
    tbnz    x3, #0, 41f
    add     x4, x20, x3         // an address: relocate the word there
    ldr     x5, [x4]
    add     x5, x5, x20
    str     x5, [x4]
    add     x6, x4, #8
    b       4b
41: mov     x4, x6              // a bitmap: bit n (n >= 1) relocates where + (n - 1) * 8
    lsr     x3, x3, #1
42: cbz     x3, 44f
    tbz     x3, #0, 43f
    ldr     x5, [x4]
    add     x5, x5, x20
    str     x5, [x4]
43: add     x4, x4, #8
    lsr     x3, x3, #1
    b       42b
44: add     x6, x6, #504        // 63 words
    b       4b
5:  VECTORS
    msr     tpidr_el2, xzr
    adrp    x2, HV_BOOT_STACK
    add     x2, x2, :lo12:HV_BOOT_STACK
    mov     x4, #BOOT_STACK_SIZE
    add     sp, x2, x4
    mov     x0, x19
    mov     x1, x20
    bl      hv_primary_main
6:  wfe
    b       6b

.text
.global hv_secondary_entry
hv_secondary_entry:
    msr     daifset, #0xf
    VECTORS
    // Find this CPU's index: its MPIDR affinity (Aff3, Aff2-Aff0) in HV_CPU_MPIDR.
    mrs     x1, mpidr_el1
    mov     x3, #0xffffff
    movk    x3, #0xff, lsl #32
    and     x1, x1, x3
    adrp    x2, HV_CPU_MPIDR
    add     x2, x2, :lo12:HV_CPU_MPIDR
    mov     x0, #0
8:  cmp     x0, #MAX_CPUS
    b.hs    7f                  // not a CPU the hypervisor runs: stay here
    ldr     x4, [x2, x0, lsl #3]
    cmp     x4, x1
    b.eq    9f
    add     x0, x0, #1
    b       8b
9:  msr     tpidr_el2, x0
    adrp    x2, HV_STACKS
    add     x2, x2, :lo12:HV_STACKS
    add     x3, x0, #1
    mov     x4, #STACK_SIZE
    madd    x2, x3, x4, x2
    mov     sp, x2
    bl      hv_secondary_main
7:  wfe
    b       7b

.global hv_enter_guest
hv_enter_guest:
    mov     sp, x2
    msr     elr_el2, x0
    mov     x3, #0x3c5          // EL1h, DAIF masked
    msr     spsr_el2, x3
    mov     x0, x1
    mov     x1, xzr
    mov     x2, xzr
    mov     x3, xzr
    mov     x4, xzr
    mov     x5, xzr
    mov     x6, xzr
    mov     x7, xzr
    mov     x8, xzr
    mov     x9, xzr
    mov     x10, xzr
    mov     x11, xzr
    mov     x12, xzr
    mov     x13, xzr
    mov     x14, xzr
    mov     x15, xzr
    mov     x16, xzr
    mov     x17, xzr
    mov     x18, xzr
    mov     x19, xzr
    mov     x20, xzr
    mov     x21, xzr
    mov     x22, xzr
    mov     x23, xzr
    mov     x24, xzr
    mov     x25, xzr
    mov     x26, xzr
    mov     x27, xzr
    mov     x28, xzr
    mov     x29, xzr
    mov     x30, xzr
    eret

.macro VEC kind
    .balign 0x80
    sub     sp, sp, #FRAME
    stp     x0, x1, [sp, #0]
    mov     x0, #\kind
    b       hv_trap_common
.endm

.balign 2048
.global hv_vectors
hv_vectors:
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

hv_trap_common:
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
    mrs     x1, elr_el2
    stp     x30, x1, [sp, #240]
    mrs     x1, spsr_el2
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
    bl      hv_trap
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
    msr     spsr_el2, x1
    ldp     x30, x1, [sp, #240]
    msr     elr_el2, x1
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
    boot_stack = const BOOT_STACK_SIZE,
    max_cpus = const MAX_CPUS,
);
