//! The decision log line of `serve`, formatted without tracing-subscriber's
//! general formatter.
//!
//! Every warned or denied review logs a line (target [`DECISION_TARGET`]).
//! Through `tracing_subscriber::fmt` that line cost ~8 % of a request's CPU
//! (docs/performance.md): the timestamp formatted digit by digit, and every
//! value sanitized against terminal injection one character at a time. This
//! layer writes the same bytes the text formatter writes — a test holds the
//! two equal — except that it sanitizes every value where the formatter
//! sanitizes only the message (a `%name` field carrying ESC reached the
//! terminal raw), with the date part of the timestamp
//! cached per second and a vectorizable check that lets a clean value (the
//! usual case) be copied whole.
//!
//! Used for the text log of `serve` when stderr is not a terminal (no
//! colours); the fmt layer beside it takes every other event. JSON logs keep
//! tracing-subscriber's JSON formatter for everything.

use crate::log_batch::BatchWriter;
use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The target of the decision events `serve` logs.
pub const DECISION_TARGET: &str = "claimguard::decision";

/// Writes the events of [`DECISION_TARGET`], and ignores the rest.
pub struct DecisionLines {
    out: BatchWriter,
}

impl DecisionLines {
    pub fn new(out: BatchWriter) -> Self {
        Self { out }
    }
}

impl<S: Subscriber> Layer<S> for DecisionLines {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != DECISION_TARGET {
            return;
        }
        let mut line = String::with_capacity(320);
        stamp(SystemTime::now(), &mut line);
        line.push(' ');
        line.push_str(level(meta.level()));
        line.push(' ');
        line.push_str(meta.target());
        line.push_str(": ");
        // Values are written as they are, then the whole line is checked
        // once: a clean line (the usual case) is then clean in every value.
        // Only otherwise is it written again, each value sanitized.
        let values = line.len();
        event.record(&mut Fields {
            line: &mut line,
            first: true,
            sanitize: false,
        });
        if crate::policy::message::has_control_byte(&line.as_bytes()[values..]) {
            // A superset of what sanitizing rewrites (any C0 byte, DEL, a C1
            // lead byte): the second pass decides value by value.
            line.truncate(values);
            event.record(&mut Fields {
                line: &mut line,
                first: true,
                sanitize: true,
            });
        }
        line.push('\n');
        self.out.append(line.as_bytes());
    }
}

/// As the text formatter writes a level, right-aligned in five.
fn level(l: &Level) -> &'static str {
    match *l {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        _ => "ERROR",
    }
}

/// The message, then ` name=value` per field, each value sanitized.
struct Fields<'a> {
    line: &'a mut String,
    first: bool,
    /// Rewrite what the sanitizing rewrites in each value.
    sanitize: bool,
}

impl Fields<'_> {
    /// The separator and `name=` before a value (none for the message).
    fn name(&mut self, field: &Field) {
        if !self.first {
            self.line.push(' ');
        }
        self.first = false;
        if field.name() != "message" {
            self.line.push_str(field.name());
            self.line.push('=');
        }
    }
}

impl Visit for Fields<'_> {
    // Numbers and booleans as the text formatter writes them (their `Debug`),
    // without a trip through the formatting machinery.
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.line.push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        self.line.push_str(itoa::Buffer::new().format(value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.name(field);
        let from = self.line.len();
        // Writing to a String cannot fail.
        let _ = write!(self.line, "{value:?}");
        if self.sanitize && needs_escaping(&self.line.as_bytes()[from..]) {
            let raw = self.line.split_off(from);
            escape_into(&raw, self.line);
        }
    }
}

/// Whether `b` holds a byte the sanitizing rewrites: ESC, BEL, BS, FF, DEL,
/// or the lead byte of a C1 control (0xC2 0x80..=0x9F).
fn needs_escaping(b: &[u8]) -> bool {
    crate::policy::message::any_byte(b, |x| {
        (x == 0x1b) | (x == 0x07) | (x == 0x08) | (x == 0x0c) | (x == 0x7f) | (x == 0xc2)
    })
}

/// tracing-subscriber's `EscapingWriter`, character for character.
fn escape_into(s: &str, out: &mut String) {
    for ch in s.chars() {
        match ch {
            '\x1b' => out.push_str("\\x1b"),
            '\x07' => out.push_str("\\x07"),
            '\x08' => out.push_str("\\x08"),
            '\x0c' => out.push_str("\\x0c"),
            '\x7f' => out.push_str("\\x7f"),
            c if ('\u{80}'..='\u{9f}').contains(&c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// `2026-12-02T07:03:15.875433Z`, as tracing-subscriber's `SystemTime` timer
/// writes it; the part up to the seconds is formatted once per second per
/// thread.
fn stamp(now: SystemTime, out: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let (y, m, d) = civil_from_days((secs / 86_400) as i64);
            let s = secs % 86_400;
            cached.1.clear();
            let _ = write!(
                cached.1,
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    // `.{:06}Z` by hand: the formatting machinery cost more than the rest.
    let mut frac = *b".000000Z";
    let mut micros = since.subsec_micros();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.push_str(std::str::from_utf8(&frac).unwrap_or(".000000Z"));
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_batch::tests::Sink as Buf;
    use std::time::Duration;
    use tracing_subscriber::prelude::*;

    #[test]
    fn stamps_as_the_text_formatter_does() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            stamp(
                UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros),
                &mut s,
            );
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_796_195_595, 875_433), "2026-12-02T07:13:15.875433Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        // The cached second is per value, not per call.
        assert_eq!(at(0, 1), "1970-01-01T00:00:00.000001Z");
    }

    /// The same events through tracing-subscriber's text formatter and
    /// through this layer: the same lines, but for the timestamp's value.
    #[test]
    fn writes_what_the_text_formatter_writes() {
        let theirs = Buf::default();
        let sink = Buf::default();
        let (ours, guard) = crate::log_batch::batched(sink.clone(), "test-log").unwrap();
        let out = theirs.clone();
        let subscriber = tracing_subscriber::registry()
            .with(DecisionLines::new(ours))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || out.clone()),
            );
        let names = [
            "web-0",
            "",
            "evil\x1b[31m\x07\x08\x0c\x7f\u{85}\u{9b}é\n\tx",
        ];
        tracing::subscriber::with_default(subscriber, || {
            for (i, name) in names.iter().enumerate() {
                let findings = if i == 2 {
                    "rwop-exclusive:deny,rwo-readonly-placement:warn"
                } else {
                    ""
                };
                tracing::info!(
                    target: DECISION_TARGET,
                    uid = %"6f1c1a52",
                    namespace = %"payments-prod",
                    name = %name,
                    allowed = i != 2,
                    findings = %findings,
                    duration_us = 145u64,
                    "admission decision"
                );
                tracing::debug!(target: DECISION_TARGET, name = %name, n = -3i64, big = u64::MAX, small = i64::MIN, zero = 0u64, no = false, "a {} message", "formatted");
                tracing::warn!(target: DECISION_TARGET, "{name}");
            }
        });
        drop(guard);
        let theirs = String::from_utf8(theirs.0.lock().unwrap().clone()).unwrap();
        let ours = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(ours.matches('\n').count(), theirs.matches('\n').count());
        assert!(
            ours.contains("\\x1b[31m\\x07\\x08\\x0c\\x7f\\u{85}\\u{9b}é"),
            "{ours}"
        );
        // Both stamp each line `YYYY-MM-DDTHH:MM:SS.uuuuuuZ `: compare the rest.
        let rest = |s: &str| -> Vec<String> {
            s.split_inclusive('\n')
                .filter(|l| l.len() > 28 && l.as_bytes()[26] == b'Z')
                .map(|l| l[27..].to_string())
                .collect()
        };
        let clean = |s: &str| -> Vec<String> {
            rest(s)
                .into_iter()
                .filter(|l| !l.contains("evil"))
                .collect()
        };
        assert_eq!(clean(&ours), clean(&theirs), "\n{ours}\n{theirs}");
        assert_eq!(clean(&ours).len(), 6);
        // The text formatter sanitizes only the message; a `%` field reaches
        // the terminal raw. This layer sanitizes every value.
        let evil: Vec<String> = rest(&ours)
            .into_iter()
            .filter(|l| l.contains("evil"))
            .collect();
        assert_eq!(evil.len(), 3);
        for l in evil {
            assert!(
                l.contains("evil\\x1b[31m\\x07\\x08\\x0c\\x7f\\u{85}\\u{9b}é"),
                "{l}"
            );
            assert!(!l.bytes().any(|b| b == 0x1b || b == 0x07), "{l}");
        }
    }
}
