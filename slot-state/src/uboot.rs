//! The boot-script text that chooses a slot: [`crate::machine::boot_choice`] in U-Boot's hush, with
//! only the commands Debian's `u-boot-rpi` and `u-boot-qemu` builds have (`part`, `<devtype> read`
//! and `write`, `crc32`, `cmp`, `env import -t`/`env export -t`, `setexpr`, `itest`). No `bootcount`,
//! no saved U-Boot environment: all state is the STATE partition's two sectors.

use crate::record::{Slot, SlotState, BODY_LEN, RECORD_LEN, SEQ_KEY};
use crate::{COPY_STRIDE_BLOCKS, PARTITION_NAME};

/// Bytes of scratch memory the script uses at its `scratch` address.
pub const SCRATCH_LEN: u64 = 0x1000;

/// The variable the caller's `rpixen_boot_slot` reads: `a` or `b`.
pub const SLOT_VAR: &str = "rpixen_slot";

/// The script. Before it runs, `devtype`/`devnum` name the boot disk (U-Boot's script boot method
/// sets them) and `rpixen_boot_slot` holds commands that load and boot slot `${rpixen_slot}`,
/// returning only when that slot cannot boot. `scratch` is [`SCRATCH_LEN`] bytes of free RAM.
///
/// Blocks are taken to be 512 bytes (SD, eMMC, USB storage, virtio).
pub fn choose_slot(scratch: u64) -> String {
    let copy = [scratch, scratch + 0x200];
    let write_buf = scratch + 0x400;
    let readback = scratch + 0x600;
    let crc = [scratch + 0x800, scratch + 0x804];
    let body = BODY_LEN;
    let keys = format!("{} {} {SEQ_KEY}", Slot::A.key(), Slot::B.key());
    let (ka, kb) = (Slot::A.key(), Slot::B.key());
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("# rpixen slot choice (rpixen-slot-state): two checksummed copies of the state on the");
    line(&format!("# {PARTITION_NAME} partition; the newest valid copy decides; a due trial is recorded as spent"));
    line("# (written and read back) before its slot boots.");
    line(&format!("setenv {SLOT_VAR} a"));
    line("setenv rpixen_slot_then b");
    line("setenv rpixen_use none");
    line("setenv rpixen_trial");
    line("setenv rpixen_lba0");
    line(&format!(
        "if part number ${{devtype}} ${{devnum}} {PARTITION_NAME} rpixen_state_part; then \
         part start ${{devtype}} ${{devnum}} ${{rpixen_state_part}} rpixen_lba0; fi"
    ));
    line(&format!(
        "if test -n \"${{rpixen_lba0}}\"; then setexpr rpixen_lba1 ${{rpixen_lba0}} + {COPY_STRIDE_BLOCKS:#x}; \
         ${{devtype}} dev ${{devnum}}; fi"
    ));
    let known = |key: &str| {
        SlotState::ALL
            .iter()
            .map(|st| format!("test \"${{{key}}}\" = {st}"))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    for i in 0..2 {
        line(&format!("setenv rpixen_valid{i} 0"));
        line(&format!("setenv {ka}; setenv {kb}; setenv {SEQ_KEY}"));
        line(&format!(
            "if test -n \"${{rpixen_lba0}}\" && ${{devtype}} read {:#x} ${{rpixen_lba{i}}} 1 && \
             crc32 {:#x} {body:#x} {:#x} && cmp.l {:#x} {:#x} 1; then \
             env import -t {:#x} {body:#x} {keys}; fi",
            copy[i],
            copy[i],
            crc[i],
            crc[i],
            copy[i] + body as u64,
            copy[i]
        ));
        line(&format!(
            "if test -n \"${{{SEQ_KEY}}}\"; then if {}; then if {}; then setenv rpixen_valid{i} 1; \
             setenv rpixen_seq{i} ${{{SEQ_KEY}}}; setenv rpixen_a{i} ${{{ka}}}; setenv rpixen_b{i} ${{{kb}}}; \
             fi; fi; fi",
            known(ka),
            known(kb)
        ));
    }
    line("if test ${rpixen_valid0} = 1; then setenv rpixen_use 0; fi");
    line(
        "if test ${rpixen_valid1} = 1; then if test ${rpixen_use} = none; then setenv rpixen_use 1; \
         elif itest 0x${rpixen_seq1} > 0x${rpixen_seq0}; then setenv rpixen_use 1; fi; fi",
    );
    for (i, other) in [(0, 1), (1, 0)] {
        line(&format!(
            "if test ${{rpixen_use}} = {i}; then setenv {ka} ${{rpixen_a{i}}}; setenv {kb} ${{rpixen_b{i}}}; \
             setenv {SEQ_KEY} ${{rpixen_seq{i}}}; setenv rpixen_write_lba ${{rpixen_lba{other}}}; fi"
        ));
    }
    line("if test ${rpixen_use} = none; then echo \"rpixen: slot state unreadable: trying slot a, then b\"; fi");
    line(&format!(
        "if test ${{rpixen_use}} != none && test \"${{{kb}}}\" = active && test \"${{{ka}}}\" != active; then \
         setenv {SLOT_VAR} b; setenv rpixen_slot_then a; fi"
    ));
    for slot in Slot::ALL {
        line(&format!(
            "if test ${{rpixen_use}} != none && test \"${{{}}}\" = updating && test \"${{{}}}\" = active; then \
             setenv rpixen_trial {slot}; fi",
            slot.key(),
            slot.other().key()
        ));
    }
    // The trial's one shot: the record with the slot `inprogress` goes over the older copy and is
    // read back before the slot boots, so any reset from here on boots the committed slot.
    line(&format!(
        "if test -n \"${{rpixen_trial}}\"; then setenv rpixen_${{rpixen_trial}} inprogress; \
         setexpr {SEQ_KEY} ${{{SEQ_KEY}}} + 1; mw.b {write_buf:#x} 0x0a {body:#x}; \
         env export -t {write_buf:#x} {keys}; \
         setexpr rpixen_nul {write_buf:#x} + ${{filesize}}; setexpr rpixen_nul ${{rpixen_nul}} - 1; \
         mw.b ${{rpixen_nul}} 0x0a 1; crc32 {write_buf:#x} {body:#x} {:#x}; fi",
        write_buf + body as u64
    ));
    line(&format!(
        "if test -n \"${{rpixen_trial}}\"; then if ${{devtype}} write {write_buf:#x} ${{rpixen_write_lba}} 1 && \
         ${{devtype}} read {readback:#x} ${{rpixen_write_lba}} 1 && cmp.b {write_buf:#x} {readback:#x} {RECORD_LEN:#x}; then \
         echo \"rpixen: trial of slot ${{rpixen_trial}} recorded (seq ${{{SEQ_KEY}}})\"; \
         setenv rpixen_slot_then ${{{SLOT_VAR}}}; setenv {SLOT_VAR} ${{rpixen_trial}}; \
         else echo \"rpixen: cannot record the trial of slot ${{rpixen_trial}}: booting slot ${{{SLOT_VAR}}}\"; fi; fi"
    ));
    line(&format!(
        "echo \"rpixen: booting slot ${{{SLOT_VAR}}} (state a=${{{ka}}} b=${{{kb}}} seq=${{{SEQ_KEY}}})\""
    ));
    line("run rpixen_boot_slot");
    line(&format!(
        "echo \"rpixen: slot ${{{SLOT_VAR}}} did not boot: trying slot ${{rpixen_slot_then}}\""
    ));
    line(&format!("setenv {SLOT_VAR} ${{rpixen_slot_then}}"));
    line("run rpixen_boot_slot");
    line("echo \"rpixen: no slot could boot\"");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_only_commands_debians_uboot_has() {
        let script = choose_slot(0x4010_0000);
        let allowed = ["#", "setenv", "if", "echo", "run", "elif", "fi", "then", "else"];
        for l in script.lines() {
            let first = l.split_whitespace().next().unwrap();
            assert!(allowed.contains(&first), "{l}");
        }
        for needed in
            ["part number", "crc32", "cmp.l", "env import -t", "env export -t", "itest", "cmp.b"]
        {
            assert!(script.contains(needed), "{needed}");
        }
        assert!(!script.contains("bootcount") && !script.contains("saveenv"));
    }

    #[test]
    fn scratch_addresses_stay_inside_the_scratch_area() {
        let script = choose_slot(0x4010_0000);
        for word in script.split(|c: char| c.is_whitespace() || c == ';') {
            if let Some(hex) = word.strip_prefix("0x40") {
                let addr = u64::from_str_radix(&format!("40{hex}"), 16).unwrap();
                assert!((0x4010_0000..0x4010_0000 + SCRATCH_LEN).contains(&addr), "{word}");
            }
        }
    }
}
