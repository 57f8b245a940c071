//! vCPU 0 runs the cases in order; the other vCPUs are workers that wait for a command (doorbell
//! SGI 15) and carry it out: send SGIs, spin through the hypervisor, run their timer, switch off.

// Without an allocator a case's verdict text is a fixed buffer on the stack, returned by value: a
// few hundred bytes per case, once.
#![allow(clippy::result_large_err)]

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hostile_guest::{
    is_not_supported, is_refused_entry, judge_gicd_read, Mode, Probe, EC_DABT_CUR, EC_UNKNOWN,
};

use crate::arch::{self, call_insn, MAX_CPUS};
use crate::console::{println, Line};
use crate::gic::{self, CASE_SGIS, DOORBELL_SGI};
use crate::platform::{self, cfg, ALIAS};

type Outcome = Result<Line, Line>;

macro_rules! line {
    ($($t:tt)*) => {{
        let mut l = Line::new();
        let _ = write!(l, $($t)*);
        l
    }};
}

macro_rules! ensure {
    ($cond:expr, $($t:tt)*) => {
        if !$cond {
            return Err(line!($($t)*));
        }
    };
}

// ---- workers ----

const CMD_PING: u32 = 1;
const CMD_SPIN: u32 = 2;
const CMD_SEND_SGIS: u32 = 3;
const CMD_TIMER_THEN_OFF: u32 = 4;
const CMD_COUNT_TICKS: u32 = 5;
const CMD_OFF: u32 = 6;
/// Timer interrupts CMD_COUNT_TICKS waits for.
const TICKS_WANTED: u32 = 5;

static CMD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static ARG: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static RESULT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ALIVE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static SPIN_COUNT: AtomicU64 = AtomicU64::new(0);
static SPIN_STOP: AtomicU32 = AtomicU32::new(0);

#[no_mangle]
extern "C" fn guest_secondary_main(me: u64) -> ! {
    let me = me as usize;
    platform::set_cpu_index(me);
    platform::mmu_on();
    gic::timer_stop();
    gic::cpu_init();
    ALIVE[me].fetch_add(1, Ordering::AcqRel);
    loop {
        arch::irq_off();
        let c = CMD[me].swap(0, Ordering::AcqRel);
        if c == 0 {
            arch::wfi();
            arch::irq_on();
            continue;
        }
        arch::irq_on();
        let r = run_command(me, c, ARG[me].load(Ordering::Acquire));
        RESULT[me].store(r, Ordering::Release);
        DONE[me].fetch_add(1, Ordering::AcqRel);
    }
}

fn run_command(me: usize, c: u32, arg: u64) -> u64 {
    match c {
        CMD_PING => 1,
        CMD_SPIN => {
            // Round trips through the hypervisor, counted: progress another vCPU can watch.
            while SPIN_STOP.load(Ordering::Acquire) == 0 {
                arch::hvc(platform::PSCI_VERSION, 0, 0, 0);
                SPIN_COUNT.fetch_add(1, Ordering::AcqRel);
            }
            SPIN_COUNT.load(Ordering::Acquire)
        }
        CMD_SEND_SGIS => {
            let (targets, reps) = (arg as u8, (arg >> 8) as u32);
            for _ in 0..reps {
                for sgi in 0..CASE_SGIS as u32 {
                    gic::send_sgi(0, targets, sgi);
                }
            }
            0
        }
        CMD_TIMER_THEN_OFF => {
            // The handler switches this vCPU off at the (arg >> 32)th tick; still here after a
            // second means it never got there.
            gic::TIMER_OFF_AT[me].store((arg >> 32) as u32, Ordering::Release);
            let (ticks, _) = run_timer(me, arg & 0xFFFF_FFFF, 1_000_000, u32::MAX);
            gic::TIMER_OFF_AT[me].store(0, Ordering::Release);
            u64::from(ticks) | (1 << 63)
        }
        CMD_COUNT_TICKS => {
            let (ticks, us) = run_timer(me, arg & 0xFFFF_FFFF, arg >> 32, TICKS_WANTED);
            if ticks < TICKS_WANTED {
                // What a lost timer interrupt leaves behind, for whoever debugs it.
                crate::console::println!(
                    "DIAG vCPU {} ticks {} CNTV_CTL {:#x} RPR {:#x} HPPIR {:#x} ISACTIVER0 {:#x} ISPENDR0 {:#x} ISENABLER0 {:#x} DAIF {:#x}",
                    me,
                    ticks,
                    arch::mrs!("cntv_ctl_el0"),
                    gic::read32(cfg().gicc + 0x14),
                    gic::read32(cfg().gicc + 0x18),
                    gic::read32(gic::gicd(gic::ISACTIVER)),
                    gic::read32(gic::gicd(gic::ISPENDR)),
                    gic::read32(gic::gicd(gic::ISENABLER)),
                    arch::mrs!("daif")
                );
            }
            // Ticks in the low half, microseconds taken in the high half.
            u64::from(ticks) | (us << 32)
        }
        CMD_OFF => platform::cpu_off(),
        _ => u64::MAX,
    }
}

/// Runs this vCPU's timer every `period_us` (re-armed here, after each interrupt's EOI: see
/// `gic::handle_irq`) until `wanted` interrupts or `limit_us`; returns the interrupts taken and the
/// microseconds it took.
fn run_timer(me: usize, period_us: u64, limit_us: u64, wanted: u32) -> (u32, u64) {
    gic::clear_counts(me);
    let vtimer = cfg().vtimer;
    let start = arch::now();
    let end = start + arch::us_to_ticks(limit_us);
    let mut armed_for = u32::MAX;
    loop {
        let n = gic::taken(me, vtimer);
        if n >= wanted || arch::now() >= end {
            break;
        }
        if n != armed_for {
            armed_for = n;
            gic::timer_in(period_us);
        }
    }
    gic::timer_stop();
    (gic::taken(me, vtimer), (arch::now() - start) * 1_000_000 / arch::freq())
}

/// Posts a command to worker `cpu` and rings its doorbell.
fn post(cpu: usize, cmd: u32, arg: u64) -> u32 {
    let done = DONE[cpu].load(Ordering::Acquire);
    ARG[cpu].store(arg, Ordering::Release);
    CMD[cpu].store(cmd, Ordering::Release);
    gic::send_sgi(0, 1 << cpu, DOORBELL_SGI);
    done
}

/// Waits until worker `cpu` finished the command posted when its DONE count was `done`.
fn wait_done(cpu: usize, done: u32, timeout_us: u64) -> Option<u64> {
    let end = arch::now() + arch::us_to_ticks(timeout_us);
    while arch::now() < end {
        if DONE[cpu].load(Ordering::Acquire) != done {
            return Some(RESULT[cpu].load(Ordering::Acquire));
        }
    }
    None
}

fn run_on(cpu: usize, cmd: u32, arg: u64, timeout_us: u64) -> Option<u64> {
    let d = post(cpu, cmd, arg);
    wait_done(cpu, d, timeout_us)
}

fn wait_alive(cpu: usize, before: u32, timeout_us: u64) -> bool {
    let end = arch::now() + arch::us_to_ticks(timeout_us);
    while arch::now() < end {
        if ALIVE[cpu].load(Ordering::Acquire) != before {
            return true;
        }
    }
    false
}

fn wait_off(cpu: usize, timeout_us: u64) -> bool {
    let end = arch::now() + arch::us_to_ticks(timeout_us);
    while arch::now() < end {
        if platform::affinity_info(cpu) == 1 {
            return true;
        }
        arch::delay_us(1000);
    }
    false
}

/// The workers that answered at boot (vCPU 1..).
fn workers() -> usize {
    (1..cfg().dt_cpus.min(MAX_CPUS)).take_while(|&c| ALIVE[c].load(Ordering::Acquire) > 0).count()
}

// ---- checks shared by the cases ----

/// Waits (up to `timeout_us`, generous: QEMU's vCPU threads share two host cores with everything
/// else) until `done` holds, then 10 ms more so that anything arriving twice shows.
fn settle(done: impl Fn() -> bool, timeout_us: u64) -> bool {
    let end = arch::now() + arch::us_to_ticks(timeout_us);
    while !done() && arch::now() < end {}
    arch::delay_us(10_000);
    done()
}

const SETTLE_US: u64 = 2_000_000;

/// The hypervisor still serves vCPU 0: its timer interrupt and an SGI to itself arrive.
fn health() -> Result<(), Line> {
    let c = cfg();
    let (t0, s0) = (gic::taken(0, c.vtimer), gic::taken(0, 7));
    gic::timer_in(1000);
    gic::send_sgi(2, 0, 7);
    settle(|| gic::taken(0, c.vtimer) > t0 && gic::taken(0, 7) > s0, SETTLE_US);
    let (t1, s1) = (gic::taken(0, c.vtimer), gic::taken(0, 7));
    ensure!(t1 > t0, "afterwards the timer interrupt no longer arrives");
    ensure!(s1 > s0, "afterwards an SGI to self no longer arrives");
    Ok(())
}

fn banked_enable() -> u32 {
    gic::read32(gic::gicd(gic::ISENABLER))
}

fn restore_banked() {
    let c = cfg();
    gic::write32(gic::gicd(gic::ISENABLER), 0xFFFF | (1 << c.vtimer));
    for i in (0..32).step_by(4) {
        gic::write32(gic::gicd(gic::IPRIORITYR + i), gic::DEFAULT_PRIORITY * 0x0101_0101);
    }
}

// ---- the cases ----

/// Distributor registers probed at every width and byte offset: (offset, name, harmless value to write).
const GICD_TABLE: &[(u64, &str, Option<u64>)] = &[
    (0x000, "CTLR", None),
    (0x004, "TYPER", Some(0)),
    (0x008, "IIDR", Some(0)),
    (0x080, "IGROUPR0", None),
    (0x100, "ISENABLER0", Some(0)),
    (0x104, "ISENABLER1", Some(0)),
    (0x180, "ICENABLER0", Some(0)),
    (0x184, "ICENABLER1", Some(0)),
    (0x200, "ISPENDR0", Some(0)),
    (0x204, "ISPENDR1", Some(0)),
    (0x280, "ICPENDR0", Some(0)),
    (0x284, "ICPENDR1", Some(0)),
    (0x300, "ISACTIVER0", Some(0)),
    (0x304, "ISACTIVER1", Some(0)),
    (0x380, "ICACTIVER0", Some(0)),
    (0x384, "ICACTIVER1", Some(0)),
    (0x400, "IPRIORITYR0", None),
    (0x41C, "IPRIORITYR7", None),
    (0x420, "IPRIORITYR8", None),
    (0x800, "ITARGETSR0", None),
    (0x820, "ITARGETSR8", None),
    (0xC00, "ICFGR0", None),
    (0xC04, "ICFGR1", None),
    (0xC08, "ICFGR2", None),
    (0xF00, "SGIR", Some(0)),
    (0xF10, "CPENDSGIR0", Some(0)),
    (0xF20, "SPENDSGIR0", Some(0)),
    (0xFE8, "ICPIDR2", Some(0)),
];

/// Defect 1: every width (8/16/32/64 bits) at every byte offset of each register, through the
/// Normal alias (so the access reaches the hypervisor as issued): reads must give the register's
/// bytes, zero or an abort; harmless writes (0 to set/clear registers, read-only registers) must
/// change nothing. Before the fix the first misaligned access killed the hypervisor.
fn gicd_widths() -> Outcome {
    let c = cfg();
    let before = banked_enable();
    let (mut reads, mut aborts, mut raz, mut bad) = (0, 0, 0, 0);
    let mut first = Line::new();
    for &(reg, name, harmless) in GICD_TABLE {
        let word = match platform::read(c.gicd + reg, 4) {
            Probe::Value(v) => Some(v as u32),
            Probe::Abort(_) => None,
        };
        for width in [1u8, 2, 4, 8] {
            for off in 0..4u32 {
                if width == 4 && off == 0 {
                    continue;
                }
                let addr = ALIAS + c.gicd + reg + u64::from(off);
                let got = platform::read(addr, width);
                reads += 1;
                match got {
                    Probe::Abort(_) => aborts += 1,
                    Probe::Value(0) => raz += 1,
                    _ => {}
                }
                if let Err(why) = judge_gicd_read(width, off, word, got) {
                    bad += 1;
                    if bad <= 3 {
                        let _ = write!(
                            first,
                            "; {}+{} {}-bit read gave {:x?} (word {:x?}): {}",
                            name,
                            off,
                            width * 8,
                            got,
                            word,
                            why
                        );
                    }
                }
                if let Some(v) = harmless {
                    if let Some(esr) = platform::write(addr, width, v) {
                        if esr >> 26 != EC_DABT_CUR {
                            bad += 1;
                            if bad <= 3 {
                                let _ = write!(
                                    first,
                                    "; {}+{} {}-bit write: ESR {:#x}, not a data abort",
                                    name,
                                    off,
                                    width * 8,
                                    esr
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let after = banked_enable();
    ensure!(
        bad == 0,
        "{} of {} odd-width/misaligned accesses answered wrongly{}",
        bad,
        reads,
        first.as_str()
    );
    ensure!(
        after == before,
        "harmless writes changed ISENABLER0 from {:#x} to {:#x}",
        before,
        after
    );
    health()?;
    Ok(line!(
        "{} odd reads: {} aborted, {} read as zero, rest matched the word; writes harmless",
        reads,
        aborts,
        raz
    ))
}

/// Defect 2: bytes 1-3 of the banked registers. Byte 3 of ICENABLER0 holds PPI 25 (the
/// hypervisor's maintenance interrupt) and PPI 27 (the virtual timer); ISACTIVER0 byte 3 would
/// leave the timer active. Afterwards the list-register refill (maintenance) and the timer must work.
fn banked_bytes() -> Outcome {
    let c = cfg();
    let mut refused = 0;
    for (reg, off, v) in [
        (gic::ICENABLER, 3u64, 0x02u64), // PPI 25: maintenance
        (gic::ICENABLER, 3, 0x08),       // PPI 27: virtual timer
        (gic::ICENABLER, 3, 0x04),       // PPI 26: hypervisor timer
        (gic::ICENABLER, 1, 0xFF),
        (gic::ICENABLER, 2, 0xFF),
        (gic::ISACTIVER, 3, 0x08),
        (gic::ICPENDR, 3, 0xFF),
        (gic::ISPENDR, 3, 0x02),
        (gic::ISENABLER, 2, 0x00),
    ] {
        if platform::write(gic::gicd(reg + off), 1, v).is_some() {
            refused += 1;
        }
        // The same through a halfword straddling bytes 2-3.
        if off == 3 && platform::write(ALIAS + gic::gicd(reg + 2), 2, v << 8).is_some() {
            refused += 1;
        }
    }
    // Whatever the bytes did to the virtual state, the guest's word writes put it back.
    restore_banked();
    ensure!(
        banked_enable() & (1 << c.vtimer) != 0,
        "ISENABLER0 does not show the timer enabled after re-enabling it"
    );
    lr_refill_check().map_err(|e| line!("after the byte writes: {}", e.as_str()))?;
    health()?;
    Ok(line!(
        "{} byte/halfword writes refused, the rest kept virtual; refill and timer still work",
        refused
    ))
}

/// Raises every case SGI on vCPU 0 with IRQs masked (more than there are list registers) and checks
/// each arrives exactly once after unmasking: the overflow must be refilled (maintenance interrupt).
fn lr_refill_check() -> Result<(), Line> {
    gic::clear_counts(0);
    arch::irq_off();
    for sgi in 0..CASE_SGIS as u32 {
        gic::send_sgi(2, 0, sgi);
    }
    arch::irq_on();
    settle(|| (0..CASE_SGIS as u32).all(|s| gic::taken(0, s) > 0), SETTLE_US);
    for sgi in 0..CASE_SGIS {
        let n = gic::SGI_FROM[0][sgi][0].load(Ordering::Acquire);
        ensure!(n == 1, "SGI {} raised once while masked arrived {} times", sgi, n);
    }
    Ok(())
}

/// Defect 2: a byte or halfword store to SGIR must not use the register's other bytes.
fn sgir_narrow() -> Outcome {
    gic::clear_counts(0);
    let sgir = gic::gicd(gic::SGIR);
    // Full-register values that would send SGI 3/4 to vCPU 0 (target list bit 0), stored narrowly.
    let r1 = platform::write(sgir, 1, 0x0001_0003);
    let r2 = platform::write(ALIAS + sgir, 2, 0x0001_0004);
    let r8 = platform::write(ALIAS + sgir, 8, 0x0001_0005);
    arch::delay_us(10_000);
    for (sgi, how) in [(3, "strb"), (4, "strh"), (5, "64-bit str")] {
        let n = gic::taken(0, sgi);
        ensure!(
            n == 0,
            "{} to SGIR sent SGI {} ({} times): the hypervisor used bytes the guest did not store",
            how,
            sgi,
            n
        );
    }
    health()?;
    Ok(line!("no SGI sent (strb {}, strh {}, 64-bit {})", verdict(r1), verdict(r2), verdict(r8)))
}

fn verdict(r: Option<u64>) -> &'static str {
    match r {
        Some(_) => "aborted",
        None => "ignored",
    }
}

/// Defect 5 (survival part): 20,000 SGIR writes to self and to every other vCPU, IRQs on.
fn sgir_storm() -> Outcome {
    let n = workers();
    for cpu in 0..=n {
        gic::clear_counts(cpu);
    }
    const ROUNDS: u32 = 2000;
    let t = arch::now();
    for i in 0..ROUNDS {
        for sgi in 0..5 {
            gic::send_sgi(if sgi % 2 == 0 { 2 } else { 1 }, 0, (i + sgi) % CASE_SGIS as u32);
        }
        for sgi in 0..5 {
            gic::send_sgi(0, 0xFF, sgi);
        }
    }
    let us = (arch::now() - t) * 1_000_000 / arch::freq();
    let sum = |cpu: usize| (0..CASE_SGIS as u32).map(|s| gic::taken(cpu, s)).sum::<u32>();
    settle(|| (0..=n).all(|cpu| sum(cpu) > 0), SETTLE_US);
    let mine: u32 = (0..CASE_SGIS as u32).map(|s| gic::taken(0, s)).sum();
    ensure!(mine > 0, "vCPU 0 took none of its own SGIs");
    for cpu in 1..=n {
        let got: u32 = (0..CASE_SGIS as u32).map(|s| gic::taken(cpu, s)).sum();
        ensure!(got > 0, "vCPU {} took no SGI of the storm", cpu);
        ensure!(
            run_on(cpu, CMD_PING, 0, 500_000) == Some(1),
            "vCPU {} no longer answers after the storm",
            cpu
        );
    }
    health()?;
    Ok(line!(
        "{} SGIR writes in {} us; vCPU 0 took {} (coalesced); workers answer",
        ROUNDS * 10,
        us,
        mine
    ))
}

/// Defect 3: with IRQs masked on vCPU 0, vCPU 0 raises SGIs 0-14 and then 100 more raises of SGIs
/// 4-14, every other vCPU raises SGIs 0-14 three times, and then the timer fires: more pending
/// interrupts than list registers, and more raises than the old 64-entry overflow queue held (it
/// dropped the timer's HW-bit entry, leaving the physical timer PPI active for good). After
/// unmasking, each (SGI, source) must arrive exactly once, as on a GIC (an SGI pending from a source
/// is not raised again), and the timer once; and the timer must keep working.
fn lr_overflow() -> Outcome {
    let c = cfg();
    let n = workers();
    ensure!(n >= 1, "needs at least one worker vCPU");
    gic::clear_counts(0);
    arch::irq_off();
    for sgi in 0..CASE_SGIS as u32 {
        gic::send_sgi(2, 0, sgi);
    }
    for i in 0..100 {
        gic::send_sgi(2, 0, 4 + i % (CASE_SGIS as u32 - 4));
    }
    for cpu in 1..=n {
        ensure!(
            run_on(cpu, CMD_SEND_SGIS, 1 | (3 << 8), 1_000_000).is_some(),
            "vCPU {} did not send its SGIs",
            cpu
        );
    }
    gic::timer_in(100);
    arch::delay_us(5000);
    arch::irq_on();
    let all_in = || {
        gic::taken(0, c.vtimer) >= 1
            && (0..CASE_SGIS)
                .all(|s| (0..=n).all(|src| gic::SGI_FROM[0][s][src].load(Ordering::Acquire) >= 1))
    };
    settle(all_in, SETTLE_US);
    let mut wrong = Line::new();
    let mut total = 0;
    for sgi in 0..CASE_SGIS {
        for src in 0..=n {
            let k = gic::SGI_FROM[0][sgi][src].load(Ordering::Acquire);
            total += k;
            if k != 1 {
                let _ = write!(wrong, " sgi{}/src{}={}", sgi, src, k);
            }
        }
    }
    let timer = gic::taken(0, c.vtimer);
    ensure!(
        wrong.as_str().is_empty() && timer == 1,
        "expected each of {} (SGI, source) once and the timer once; got {} SGIs, timer {}, wrong:{}",
        CASE_SGIS * (n + 1),
        total,
        timer,
        wrong.as_str()
    );
    health()?;
    Ok(line!("{} distinct SGIs from {} sources (raised up to 10x each) and the timer arrived exactly once", CASE_SGIS * (n + 1), n + 1))
}

/// Defect 3: priority order survives the overflow. Low-priority SGIs (0xC0) are raised first and
/// fill the list registers, high-priority ones (0x40) after; all masked. On unmasking every
/// high-priority SGI must be taken before any low-priority one.
fn lr_priority() -> Outcome {
    gic::clear_counts(0);
    for i in 0..4u64 {
        gic::write32(gic::gicd(gic::IPRIORITYR + 4 * i), 0xC0C0_C0C0);
    }
    for i in 2..4u64 {
        gic::write32(gic::gicd(gic::IPRIORITYR + 4 * i), 0x4040_4040);
    }
    arch::irq_off();
    for sgi in 0..CASE_SGIS as u32 {
        gic::send_sgi(2, 0, sgi);
    }
    arch::irq_on();
    settle(|| gic::ORDER_LEN.load(Ordering::Acquire) >= CASE_SGIS, SETTLE_US);
    restore_banked();
    let len = gic::ORDER_LEN.load(Ordering::Acquire).min(gic::ORDER.len());
    let mut order = Line::new();
    let mut seen_low = false;
    let mut bad = false;
    for i in 0..len {
        let id = gic::ORDER[i].load(Ordering::Acquire);
        let _ = write!(order, "{},", id);
        let high = (8..CASE_SGIS as u32).contains(&id);
        if high && seen_low {
            bad = true;
        }
        seen_low |= id < 8;
    }
    ensure!(
        len == CASE_SGIS,
        "{} SGIs arrived, expected {} (order {})",
        len,
        CASE_SGIS,
        order.as_str()
    );
    ensure!(
        !bad,
        "a priority-0x40 SGI arrived after a priority-0xC0 one: order {}",
        order.as_str()
    );
    Ok(line!("order {}", order.as_str()))
}

/// Defect 7: the enable bits of SGIs and PPIs are honoured. The timer PPI disabled must not be
/// taken; enabled again, its pending interrupt arrives. SGI 5 disabled must not arrive unless the
/// register reports SGI enables as fixed (implementation defined on GICv2).
fn ppi_sgi_enable() -> Outcome {
    let c = cfg();
    gic::clear_counts(0);
    gic::write32(gic::gicd(gic::ICENABLER), 1 << c.vtimer);
    gic::timer_in(500);
    arch::delay_us(10_000);
    let while_disabled = gic::taken(0, c.vtimer);
    gic::write32(gic::gicd(gic::ISENABLER), 1 << c.vtimer);
    settle(|| gic::taken(0, c.vtimer) > while_disabled, SETTLE_US);
    let after_enable = gic::taken(0, c.vtimer);
    gic::timer_stop();

    gic::write32(gic::gicd(gic::ICENABLER), 1 << 5);
    let sgi_fixed = banked_enable() & (1 << 5) != 0;
    gic::send_sgi(2, 0, 5);
    arch::delay_us(10_000);
    let sgi_disabled = gic::taken(0, 5);
    gic::write32(gic::gicd(gic::ISENABLER), 1 << 5);
    settle(|| gic::taken(0, 5) > 0, SETTLE_US);
    let sgi_enabled = gic::taken(0, 5);
    restore_banked();
    ensure!(
        while_disabled == 0,
        "the timer PPI was taken {} times while disabled in ICENABLER0",
        while_disabled
    );
    ensure!(
        after_enable == 1,
        "the pending timer PPI arrived {} times after enabling (expected 1)",
        after_enable
    );
    if sgi_fixed {
        ensure!(
            sgi_disabled == 1,
            "SGI enables read as fixed but SGI 5 arrived {} times",
            sgi_disabled
        );
    } else {
        ensure!(sgi_disabled == 0, "SGI 5 arrived {} times while disabled", sgi_disabled);
        ensure!(
            sgi_enabled == 1,
            "SGI 5 arrived {} times after enabling (expected 1)",
            sgi_enabled
        );
    }
    Ok(line!(
        "timer held while disabled, delivered once when enabled; SGI enables {}",
        if sgi_fixed { "fixed" } else { "honoured" }
    ))
}

/// Defect 4: the last worker switches itself off from inside its timer interrupt handler (the timer
/// PPI active, its priority active), vCPU 0 switches it on again: its timer and SGIs must work.
fn cpu_off_active_timer() -> Outcome {
    let cpu = workers();
    ensure!(cpu >= 1, "needs a worker vCPU");
    let alive = ALIVE[cpu].load(Ordering::Acquire);
    // The same count before the attack, as the control.
    let before = run_on(cpu, CMD_COUNT_TICKS, 2000 | (1_000_000 << 32), 3_000_000).unwrap_or(0);
    ensure!(
        before & 0xFFFF_FFFF >= u64::from(TICKS_WANTED),
        "before the attack vCPU {} took {} timer interrupts in {} us at a 2 ms period",
        cpu,
        before & 0xFFFF_FFFF,
        before >> 32
    );
    let d = post(cpu, CMD_TIMER_THEN_OFF, 2000 | (5 << 32));
    ensure!(
        wait_off(cpu, 2_000_000),
        "vCPU {} did not reach OFF (result {:?})",
        cpu,
        wait_done(cpu, d, 0)
    );
    let r = platform::cpu_on(cpu, arch::secondary_entry_pa());
    ensure!(r == 0, "CPU_ON after CPU_OFF returned {}", r);
    ensure!(wait_alive(cpu, alive, 1_000_000), "vCPU {} did not come back after CPU_ON", cpu);
    let after = run_on(cpu, CMD_COUNT_TICKS, 2000 | (1_000_000 << 32), 3_000_000).unwrap_or(0);
    let (ticks, us) = (after & 0xFFFF_FFFF, after >> 32);
    ensure!(
        ticks >= u64::from(TICKS_WANTED),
        "after CPU_OFF (timer active) and CPU_ON, vCPU {} took {} timer interrupts in {} us at a 2 ms \
         period (before: {} in {} us)",
        cpu,
        ticks,
        us,
        before & 0xFFFF_FFFF,
        before >> 32
    );
    ensure!(
        run_on(cpu, CMD_PING, 0, 500_000) == Some(1),
        "vCPU {} no longer takes its doorbell SGI",
        cpu
    );
    Ok(line!(
        "vCPU {} took {} timer interrupts (2 ms period) in {} us after coming back ({} in {} us before)",
        cpu,
        ticks,
        us,
        before & 0xFFFF_FFFF,
        before >> 32
    ))
}

/// Defect 6: CPU_ON with an entry point in the hypervisor's memory is refused, and the vCPU stays off.
fn cpu_on_hv_memory() -> Outcome {
    let Some(hv) = cfg().args.hv else { return Err(line!("no hostile.hv= on the command line")) };
    let cpu = workers();
    ensure!(cpu >= 1, "needs a worker vCPU");
    let alive = ALIVE[cpu].load(Ordering::Acquire);
    post(cpu, CMD_OFF, 0);
    ensure!(wait_off(cpu, 1_000_000), "vCPU {} did not switch off", cpu);
    for entry in [hv, hv + 0x10_0000] {
        let r = platform::cpu_on(cpu, entry);
        if !is_refused_entry(r) {
            arch::delay_us(50_000);
            return Err(line!(
                "CPU_ON at {:#x} (hypervisor memory) returned {}, AFFINITY_INFO now {}",
                entry,
                r,
                platform::affinity_info(cpu)
            ));
        }
        ensure!(
            platform::affinity_info(cpu) == 1,
            "vCPU {} is not OFF after the refused CPU_ON",
            cpu
        );
    }
    let r = platform::cpu_on(cpu, arch::secondary_entry_pa());
    ensure!(
        r == 0 && wait_alive(cpu, alive, 1_000_000),
        "a valid CPU_ON afterwards returned {} / vCPU did not come back",
        r
    );
    Ok(line!("refused, vCPU stayed off, a valid CPU_ON works afterwards"))
}

/// Reads and writes of the hypervisor's image and .bss, and of the physical GICH and GICV frames,
/// are refused with a data abort; the hypervisor keeps running.
fn hv_memory() -> Outcome {
    let a = cfg().args;
    let mut targets: [(u64, &str); 5] = [(0, ""); 5];
    let mut n = 0;
    for (addr, name) in [
        (a.hv, "hypervisor image"),
        (a.hv.map(|h| h + 0x10_0000), "hypervisor .bss"),
        (a.gich, "GICH"),
        (a.gich.map(|g| g + 0x100), "GICH_LR0"),
        (a.gicv, "GICV"),
    ] {
        if let Some(addr) = addr {
            targets[n] = (addr, name);
            n += 1;
        }
    }
    ensure!(n == 5, "needs hostile.hv=, hostile.gich= and hostile.gicv= on the command line");
    for &(addr, name) in &targets[..n] {
        match platform::read(addr, 4) {
            Probe::Abort(esr) => ensure!(
                esr >> 26 == EC_DABT_CUR,
                "read of {} {:#x}: ESR {:#x} is not a data abort",
                name,
                addr,
                esr
            ),
            Probe::Value(v) => return Err(line!("read of {} at {:#x} gave {:#x}", name, addr, v)),
        }
        let w = platform::write(addr, 4, 0);
        ensure!(
            w.is_some_and(|esr| esr >> 26 == EC_DABT_CUR),
            "write of {} at {:#x} was not refused with a data abort ({:x?})",
            name,
            addr,
            w
        );
    }
    health()?;
    Ok(line!("{} regions: reads and writes aborted", n))
}

/// Unknown SMCCC function IDs through HVC: NOT_SUPPORTED (-1), the guest continues. A non-zero HVC
/// immediate (Xen's hypercall is HVC #0xEA1) gets -1 or an undefined-instruction exception.
fn unknown_hvc() -> Outcome {
    for fid in [
        0x8400_00FFu32,
        0xC400_00FF,
        0x8600_0000,
        0xC600_1234,
        0x8200_0001,
        0xBF00_FF00,
        0x0000_0001,
    ] {
        let (x0, fault) = platform::probe(|| call_insn!("hvc #0", u64::from(fid)));
        ensure!(fault.is_none(), "HVC #0 fid {:#x} raised ESR {:?}", fid, fault);
        ensure!(
            is_not_supported(fid, x0),
            "HVC #0 fid {:#x} returned {:#x}, not NOT_SUPPORTED",
            fid,
            x0
        );
    }
    let f = arch::hvc(platform::PSCI_FEATURES, 0x8400_00FF, 0, 0);
    ensure!(f as u32 == u32::MAX, "PSCI_FEATURES of an unknown function returned {:#x}", f);
    let (x0, fault) = platform::probe(|| call_insn!("hvc #0xea1", 0));
    let ok = match fault {
        Some(esr) => esr >> 26 == EC_UNKNOWN,
        None => x0 == u64::MAX,
    };
    ensure!(ok, "HVC #0xEA1 gave x0={:#x} fault={:x?}", x0, fault);
    Ok(line!(
        "NOT_SUPPORTED for 7 unknown IDs; HVC #0xEA1 {}",
        if fault.is_some() { "undefined" } else { "NOT_SUPPORTED" }
    ))
}

/// SMC with an unknown function ID. Decision: the hypervisor traps SMC (HCR_EL2.TSC) and stands in
/// for the firmware, and SMCCC says firmware answers an unknown ID with NOT_SUPPORTED in x0; so -1,
/// execution continuing after the SMC (not re-executing it). An undefined-instruction exception is
/// accepted only for a non-zero immediate, which SMCCC reserves.
fn unknown_smc() -> Outcome {
    for fid in [0x8400_00FFu32, 0xC300_0001, 0x8200_0001] {
        let (x0, fault) = platform::probe(|| call_insn!("smc #0", u64::from(fid)));
        ensure!(fault.is_none(), "SMC #0 fid {:#x} raised ESR {:?}", fid, fault);
        ensure!(
            is_not_supported(fid, x0),
            "SMC #0 fid {:#x} returned {:#x}, not NOT_SUPPORTED",
            fid,
            x0
        );
    }
    let (x0, fault) = platform::probe(|| call_insn!("smc #1", 0x8400_00FF));
    let ok = match fault {
        Some(esr) => esr >> 26 == EC_UNKNOWN,
        None => x0 as u32 == u32::MAX,
    };
    ensure!(ok, "SMC #1 gave x0={:#x} fault={:x?}", x0, fault);
    health()?;
    Ok(line!(
        "NOT_SUPPORTED, execution continues; SMC #1 {}",
        if fault.is_some() { "undefined" } else { "NOT_SUPPORTED" }
    ))
}

/// Defect 6: thousands of reads of a forbidden address on vCPU 0 while vCPU 1 keeps making round
/// trips through the hypervisor. Every read is refused; vCPU 1 progresses throughout. (The host
/// checks the hypervisor's refusal messages were rate-limited.)
fn forbidden_loop() -> Outcome {
    let Some(hv) = cfg().args.hv else { return Err(line!("no hostile.hv= on the command line")) };
    ensure!(workers() >= 1, "needs a worker vCPU");
    let at_least = cfg().args.loop_iterations.unwrap_or(5000);
    let addr = hv + 0x3000;
    SPIN_STOP.store(0, Ordering::Release);
    SPIN_COUNT.store(0, Ordering::Release);
    let d = post(1, CMD_SPIN, 0);
    arch::delay_us(5_000);
    // vCPU 1's rate of hypervisor round trips before the loop, to compare with the rate during it.
    let (b0, tb) = (SPIN_COUNT.load(Ordering::Acquire), arch::now());
    arch::delay_us(20_000);
    let c0 = SPIN_COUNT.load(Ordering::Acquire);
    let before_per_ms = (c0 - b0) * arch::freq() / 1000 / (arch::now() - tb).max(1);
    // At least `at_least` reads and at least LOOP_MS of time: a fixed count alone takes ~10 ms once
    // refusals are cheap, shorter than a host may leave vCPU 1's thread unscheduled.
    const LOOP_MS: u64 = 300;
    let t0 = arch::now();
    let end = t0 + arch::us_to_ticks(LOOP_MS * 1000);
    let (mut iterations, mut refused) = (0u32, 0u32);
    while iterations < at_least || arch::now() < end {
        if let Probe::Abort(_) = platform::read(addr, 8) {
            refused += 1;
        }
        iterations += 1;
    }
    let us = (arch::now() - t0) * 1_000_000 / arch::freq();
    let c1 = SPIN_COUNT.load(Ordering::Acquire);
    SPIN_STOP.store(1, Ordering::Release);
    ensure!(wait_done(1, d, 1_000_000).is_some(), "vCPU 1 did not stop spinning");
    println!("FORBIDDEN-LOOP addr={:#x} iterations={}", addr, iterations);
    ensure!(
        refused == iterations,
        "{} of {} reads of {:#x} were refused",
        refused,
        iterations,
        addr
    );
    ensure!(c1 > c0, "vCPU 1 made no progress while vCPU 0 looped on refused reads for {} us", us);
    health()?;
    Ok(line!(
        "{} reads refused in {} us ({} ns each); vCPU 1 made {} hypervisor round trips meanwhile \
         ({} per ms; {} per ms before the loop)",
        iterations,
        us,
        us * 1000 / u64::from(iterations.max(1)),
        c1 - c0,
        (c1 - c0) * 1000 / us.max(1),
        before_per_ms
    ))
}

/// Defect 9: emulated loads honour ESR.SSE (sign extension) and ESR.SF (32-bit destination).
fn mmio_sign_extend() -> Outcome {
    // Priority of SGI 3 = 0xA8 (byte 3 of IPRIORITYR0).
    let p0 = gic::gicd(gic::IPRIORITYR);
    gic::write32(p0, (gic::read32(p0) & 0x00FF_FFFF) | 0xA800_0000);
    let icfgr0 = gic::read32(gic::gicd(0xC00));
    let ((x, w, sw, z), fault) = platform::probe(|| {
        // SAFETY: loads from the trapped distributor page; destinations preloaded with all-ones so
        // a missing zero- or sign-extension shows.
        unsafe {
            let mut a = u64::MAX;
            core::arch::asm!("ldrsb {v}, [{a}]", a = in(reg) p0 + 3, v = inout(reg) a, options(nostack));
            let mut b = u64::MAX;
            core::arch::asm!("ldrsb {v:w}, [{a}]", a = in(reg) p0 + 3, v = inout(reg) b, options(nostack));
            let mut c = u64::MAX;
            core::arch::asm!("ldrsw {v}, [{a}]", a = in(reg) gic::gicd(0xC00), v = inout(reg) c, options(nostack));
            let mut d = u64::MAX;
            core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) gic::gicd(0xC00), v = inout(reg) d, options(nostack));
            (a, b, c, d)
        }
    });
    ensure!(fault.is_none(), "a load from IPRIORITYR0/ICFGR0 raised ESR {:x?}", fault);
    restore_banked();
    ensure!(x == 0xFFFF_FFFF_FFFF_FFA8, "ldrsb x of priority 0xA8 gave {:#x}", x);
    ensure!(w == 0xFFFF_FFA8, "ldrsb w of priority 0xA8 gave {:#x} (upper half must be 0)", w);
    ensure!(sw == icfgr0 as i32 as i64 as u64, "ldrsw of ICFGR0 {:#x} gave {:#x}", icfgr0, sw);
    ensure!(z == u64::from(icfgr0), "ldr w of ICFGR0 gave {:#x} (upper half must be 0)", z);
    Ok(line!("ldrsb x {:#x}, ldrsb w {:#x}, ldrsw {:#x}", x, w, sw))
}

/// Defect 8: `dom0_max_vcpus` trims the guest's `/cpus`, and every vCPU listed there starts.
fn cpus_match() -> Outcome {
    let c = cfg();
    let want = c.args.vcpus.ok_or_else(|| line!("no hostile.vcpus= on the command line"))?;
    let started = 1 + workers();
    ensure!(
        c.dt_cpus == want,
        "/cpus lists {} CPUs, dom0_max_vcpus gives {} (workers started: {})",
        c.dt_cpus,
        want,
        started - 1
    );
    ensure!(started == want, "only {} of the {} vCPUs in /cpus started", started, want);
    Ok(line!("{} vCPUs listed, all started", want))
}

// ---- as a DomU ----

/// Pause between two targets: the hypervisor's refusal messages go through a token bucket (a burst
/// of 5, then one a second), and each target's first refusal should have a token to be reported.
const TARGET_PAUSE_US: u64 = 1_200_000;

/// Every address of every `hostile.targets=` range (Dom0's RAM, the other DomU's RAM, the
/// hypervisor's memory, the physical GIC, devices not assigned to this domain) is refused: each
/// read and each write takes a data abort, and the hypervisor serves this vCPU afterwards.
fn isolation() -> Outcome {
    let Some(list) = cfg().args.targets else {
        return Err(line!("no hostile.targets= on the command line"));
    };
    let (mut ranges, mut accesses) = (0, 0u32);
    for t in hostile_guest::targets(list) {
        let t = t.map_err(|e| line!("malformed target {:?} in hostile.targets=", e))?;
        arch::delay_us(TARGET_PAUSE_US);
        let mut n = 0u32;
        for addr in t.addresses() {
            match platform::read(addr, 8) {
                Probe::Abort(esr) if esr >> 26 == EC_DABT_CUR => {}
                Probe::Abort(esr) => {
                    return Err(line!(
                        "{}: read at {:#x} gave ESR {:#x}, not a data abort",
                        t.name,
                        addr,
                        esr
                    ))
                }
                Probe::Value(v) => {
                    return Err(line!("{}: read at {:#x} gave {:#x}", t.name, addr, v))
                }
            }
            // A value no bystander's pattern holds.
            let w = platform::write(addr, 8, 0xBAD0_BAD0_BAD0_BAD0);
            ensure!(
                w.is_some_and(|esr| esr >> 26 == EC_DABT_CUR),
                "{}: write at {:#x} was not refused with a data abort ({:x?})",
                t.name,
                addr,
                w
            );
            n += 1;
        }
        println!(
            "TARGET {} {:#x}+{:#x}: {} reads and {} writes refused",
            t.name, t.addr, t.size, n, n
        );
        ranges += 1;
        accesses += 2 * n;
    }
    ensure!(ranges > 0, "hostile.targets= names no target");
    health()?;
    Ok(line!("{} targets, {} accesses, every one aborted", ranges, accesses))
}

/// The victim's memory: filled with a pattern that only this domain writes, checked on every heartbeat.
#[repr(C, align(4096))]
struct Pattern([u64; BYSTANDER_WORDS]);
const BYSTANDER_WORDS: usize = 0x2_0000 / 8;
static mut PATTERN: Pattern = Pattern([0; BYSTANDER_WORDS]);
const HEARTBEAT_US: u64 = 500_000;

fn pattern_word(i: usize) -> u64 {
    0x5EED_0000_0000_0000 | (i as u64).wrapping_mul(0x9E37_79B9)
}

/// Stands by for the attacker: `BYSTANDER ...` once (where its pattern lies), then `HEARTBEAT <n>
/// pattern intact|BROKEN ...` every 500 ms, sleeping on its timer in between; never returns.
fn bystander() -> ! {
    // SAFETY: only vCPU 0 of this domain runs, and only this function touches PATTERN.
    let p = unsafe { &mut (*core::ptr::addr_of_mut!(PATTERN)).0 };
    for (i, w) in p.iter_mut().enumerate() {
        *w = pattern_word(i);
    }
    let c = cfg();
    println!(
        "BYSTANDER pattern at {:#x}+{:#x} ram {:#x}+{:#x}",
        p.as_ptr() as u64,
        core::mem::size_of_val(p),
        c.ram[0].0,
        c.ram[0].1
    );
    let mut broken = None;
    for beat in 1u64.. {
        let n = gic::taken(0, c.vtimer);
        gic::timer_in(HEARTBEAT_US);
        while gic::taken(0, c.vtimer) == n {
            arch::wfi();
        }
        if broken.is_none() {
            // SAFETY: as above; volatile, so a write from outside this domain is seen.
            broken = (0..p.len())
                .find(|&i| unsafe { core::ptr::read_volatile(&p[i]) } != pattern_word(i));
        }
        match broken {
            None => println!("HEARTBEAT {} pattern intact", beat),
            Some(i) => println!(
                "HEARTBEAT {} pattern BROKEN at {:#x}: {:#x}",
                beat, &p[i] as *const u64 as u64, p[i]
            ),
        }
    }
    platform::system_off()
}

// ---- the run ----

type Case = (&'static str, fn() -> Outcome);

/// In order: mostly harmless to the hypervisor first, then the attacks that broke it before the fixes.
const CASES: &[Case] = &[
    ("cpus_match_dom0_max_vcpus", cpus_match),
    // First of the refusals, so that a rate limiter's burst still has room to report it.
    ("forbidden_loop", forbidden_loop),
    ("unknown_hvc", unknown_hvc),
    ("unknown_smc", unknown_smc),
    ("hv_memory_and_gich_gicv", hv_memory),
    ("mmio_sign_extend", mmio_sign_extend),
    ("ppi_sgi_enable", ppi_sgi_enable),
    ("sgir_narrow", sgir_narrow),
    ("lr_overflow", lr_overflow),
    ("lr_priority", lr_priority),
    ("sgir_storm", sgir_storm),
    ("cpu_off_active_timer", cpu_off_active_timer),
    ("banked_bytes", banked_bytes),
    ("gicd_widths", gicd_widths),
    ("cpu_on_hv_memory", cpu_on_hv_memory),
];

/// As a DomU: the isolation attacks first (their refusals are the ones the host counts), then the
/// cases that need neither a second vCPU nor the host's addresses.
const DOMU_CASES: &[Case] = &[
    ("isolation", isolation),
    ("unknown_hvc", unknown_hvc),
    ("unknown_smc", unknown_smc),
    ("mmio_sign_extend", mmio_sign_extend),
    ("gicd_widths", gicd_widths),
];

#[no_mangle]
extern "C" fn guest_primary_main(dtb: u64) -> ! {
    platform::set_cpu_index(0);
    let Some(config) = platform::parse_dt(dtb) else { platform::system_off() };
    platform::set_config(config);
    platform::build_map();
    platform::mmu_on();
    crate::console::set_uart(cfg().uart);
    let c = cfg();
    let (img, end) = arch::image_range();
    println!(
        "HOSTILE guest at {:#x}-{:#x}: GICD {:#x} GICC {:#x} UART {:#x} vtimer {} cpus {} args {:?}",
        img, end, c.gicd, c.gicc, c.uart, c.vtimer, c.dt_cpus, c.args
    );
    gic::timer_stop();
    gic::cpu_init();
    arch::irq_on();
    let cases = match c.args.mode {
        Mode::Bystander => bystander(),
        Mode::Domu => DOMU_CASES,
        Mode::Dom0 => CASES,
    };
    for cpu in 1..c.dt_cpus.min(MAX_CPUS) {
        let r = platform::cpu_on(cpu, arch::secondary_entry_pa());
        if r != 0 || !wait_alive(cpu, 0, 1_000_000) {
            println!("HOSTILE vCPU {} did not start (CPU_ON {})", cpu, r);
            break;
        }
    }
    println!("HOSTILE {} worker vCPUs up", workers());
    let (mut pass, mut fail) = (0, 0);
    for &(name, case) in cases {
        if !c.args.selects(name) {
            continue;
        }
        let before = platform::UNEXPECTED.load(Ordering::Acquire);
        let mut r = case();
        let unexpected = platform::UNEXPECTED.load(Ordering::Acquire) - before;
        if unexpected != 0 && r.is_ok() {
            r = Err(line!("{} unexpected exceptions", unexpected));
        }
        match r {
            Ok(detail) => {
                pass += 1;
                println!("CASE {} PASS {}", name, detail.as_str());
            }
            Err(detail) => {
                fail += 1;
                println!("CASE {} FAIL {}", name, detail.as_str());
            }
        }
    }
    println!("HOSTILE-DONE pass={} fail={}", pass, fail);
    platform::system_off()
}
