//! One serial line shared by every domain, as Xen shares it:
//! - output: a DomU's vPL011 bytes become whole lines prefixed with its domain ID (`(d1) `), so
//!   lines of different domains never interleave mid-line (Dom0's lines stay unprefixed);
//! - input: goes to one domain at a time; CTRL-a typed three times in a row moves it to the next
//!   domain (Dom0 → DomU 1 → … → Dom0), as Xen's `serial_rx`/`console_switch_input` do. Fewer than
//!   three CTRL-a followed by another key are delivered as typed. Xen's rotation also stops at Xen
//!   itself (its debug keys); this hypervisor has no console commands, so it skips that stop.
//!
//! Domain IDs are Xen's: Dom0 is 0, the DomUs 1, 2, … in `/chosen` order.

/// CTRL-a, Xen's default `conswitch`.
pub const SWITCH_CHAR: u8 = 0x01;

/// What one received byte does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Give `byte` to domain `domid`.
    Deliver { domid: u32, byte: u8 },
    /// Input now goes to `domid` (say so on the console).
    Switched { domid: u32 },
}

/// Which domain receives console input.
#[derive(Debug, Clone, Copy)]
pub struct InputFocus {
    /// Domains on the line, Dom0 included.
    domains: u32,
    focus: u32,
    pending_switch: u8,
}

impl InputFocus {
    /// Input starts with Dom0.
    pub const fn new(domains: u32) -> Self {
        InputFocus { domains, focus: 0, pending_switch: 0 }
    }

    pub fn focus(&self) -> u32 {
        self.focus
    }

    /// Feeds one received byte; `out` is called with each resulting event, in order.
    pub fn feed(&mut self, b: u8, mut out: impl FnMut(Event)) {
        if b == SWITCH_CHAR {
            self.pending_switch += 1;
            if self.pending_switch == 3 {
                self.pending_switch = 0;
                self.focus = (self.focus + 1) % self.domains.max(1);
                out(Event::Switched { domid: self.focus });
            }
            return;
        }
        for _ in 0..self.pending_switch {
            out(Event::Deliver { domid: self.focus, byte: SWITCH_CHAR });
        }
        self.pending_switch = 0;
        out(Event::Deliver { domid: self.focus, byte: b });
    }
}

/// A DomU's output assembled into prefixed lines of at most `N` bytes (prefix and `\n` included).
pub struct PrefixedLines<const N: usize> {
    buf: [u8; N],
    prefix_len: usize,
    len: usize,
}

impl<const N: usize> PrefixedLines<N> {
    /// Lines of domain `domid`: `(d<domid>) ...`.
    pub fn new(domid: u32) -> Self {
        let mut buf = [0u8; N];
        let mut digits = [0u8; 10];
        let mut n = 0;
        let mut v = domid;
        loop {
            digits[n] = b'0' + (v % 10) as u8;
            n += 1;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        let mut p = 0;
        for &b in b"(d".iter().chain(digits[..n].iter().rev()).chain(b") ".iter()) {
            buf[p] = b;
            p += 1;
        }
        PrefixedLines { buf, prefix_len: p, len: p }
    }

    fn take(&mut self) -> &[u8] {
        let n = self.len;
        self.len = self.prefix_len;
        &self.buf[..n]
    }

    /// Adds a byte; returns a whole line (prefix, text, `\n`) when the guest ended one or the line
    /// is full (then it is cut, with a `\n` added, as Xen's vpl011 does). `\r` is dropped: the
    /// console writes `\r\n` itself.
    pub fn push(&mut self, b: u8) -> Option<&[u8]> {
        if b == b'\r' {
            return None;
        }
        self.buf[self.len] = b;
        self.len += 1;
        if b == b'\n' {
            return Some(self.take());
        }
        if self.len == N - 1 {
            self.buf[self.len] = b'\n';
            self.len += 1;
            return Some(self.take());
        }
        None
    }

    /// A partial line (a shell prompt) as a whole prefixed line, when the guest has been quiet.
    pub fn flush_partial(&mut self) -> Option<&[u8]> {
        if self.len == self.prefix_len {
            return None;
        }
        self.buf[self.len] = b'\n';
        self.len += 1;
        Some(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn feed_all(f: &mut InputFocus, bytes: &[u8]) -> Vec<Event> {
        let mut ev = Vec::new();
        for &b in bytes {
            f.feed(b, |e| ev.push(e));
        }
        ev
    }

    #[test]
    fn three_ctrl_a_rotate_input_through_every_domain() {
        let mut f = InputFocus::new(3);
        assert_eq!(feed_all(&mut f, b"l"), [Event::Deliver { domid: 0, byte: b'l' }]);
        assert_eq!(feed_all(&mut f, &[1, 1, 1]), [Event::Switched { domid: 1 }]);
        assert_eq!(feed_all(&mut f, b"x"), [Event::Deliver { domid: 1, byte: b'x' }]);
        assert_eq!(feed_all(&mut f, &[1, 1, 1]), [Event::Switched { domid: 2 }]);
        assert_eq!(feed_all(&mut f, &[1, 1, 1]), [Event::Switched { domid: 0 }]);
        assert_eq!(f.focus(), 0);
    }

    #[test]
    fn fewer_than_three_ctrl_a_are_delivered_as_typed() {
        let mut f = InputFocus::new(2);
        assert_eq!(
            feed_all(&mut f, &[1, 1, b'q']),
            [
                Event::Deliver { domid: 0, byte: 1 },
                Event::Deliver { domid: 0, byte: 1 },
                Event::Deliver { domid: 0, byte: b'q' },
            ]
        );
        // Six in a row switch twice.
        let ev = feed_all(&mut f, &[1; 6]);
        assert_eq!(ev, [Event::Switched { domid: 1 }, Event::Switched { domid: 0 }]);
    }

    #[test]
    fn a_lone_dom0_keeps_input() {
        let mut f = InputFocus::new(1);
        assert_eq!(feed_all(&mut f, &[1, 1, 1]), [Event::Switched { domid: 0 }]);
    }

    #[test]
    fn lines_are_whole_and_prefixed() {
        let mut l = PrefixedLines::<32>::new(1);
        let mut got = Vec::new();
        for &b in b"hello\r\nworld" {
            if let Some(line) = l.push(b) {
                got.push(line.to_vec());
            }
        }
        assert_eq!(got, [b"(d1) hello\n".to_vec()]);
        assert_eq!(l.flush_partial().unwrap(), b"(d1) world\n");
        assert_eq!(l.flush_partial(), None);
        let mut l = PrefixedLines::<16>::new(12);
        let mut got = Vec::new();
        for &b in b"0123456789abcdef" {
            if let Some(line) = l.push(b) {
                got.push(line.to_vec());
            }
        }
        assert_eq!(got, [b"(d12) 012345678\n".to_vec()], "cut at the buffer size, ended with \\n");
    }
}
