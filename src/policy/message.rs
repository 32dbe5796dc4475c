//! Wording shared by the rules. A message is one line: `[rule-id]`, the
//! claim and its access mode, the pods in the way with their nodes, and
//! what to do.

use crate::cluster::Consumer;

/// The API server truncates each warning past 256 characters.
pub const MAX_WARNING_CHARS: usize = 255;

/// Pods named in one message before "and N more".
const MAX_LISTED: usize = 3;

/// `default/pod-a on node worker-1` or `default/pod-a (not scheduled yet)`.
pub fn pod_at(c: &Consumer<'_>) -> String {
    let mut out = String::new();
    push_pod_at(&mut out, c);
    out
}

fn push_pod_at(out: &mut String, c: &Consumer<'_>) {
    out.push_str(c.namespace);
    out.push('/');
    out.push_str(c.name);
    match c.node {
        Some(n) => {
            out.push_str(" on node ");
            out.push_str(n);
        }
        None => out.push_str(" (not scheduled yet)"),
    }
}

/// `pod default/a on node n1` / `pods default/a on node n1, default/b on node n2 and 3 more`.
/// Built in one string: a message per finding is on every warned review's path.
pub fn pods_at(cs: &[Consumer<'_>]) -> String {
    let mut out = String::with_capacity(96);
    out.push_str(if cs.len() == 1 { "pod " } else { "pods " });
    for (i, c) in cs.iter().take(MAX_LISTED).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_pod_at(&mut out, c);
    }
    let more = cs.len().saturating_sub(MAX_LISTED);
    if more > 0 {
        out.push_str(" and ");
        out.push_str(&more.to_string());
        out.push_str(" more");
    }
    out
}

/// Cut a warning to what the API server passes through, on a char boundary,
/// and flatten anything that is not a valid header character.
pub fn fit_warning(s: &str) -> String {
    fit_one_line(&one_line(s))
}

/// What stands for the part of a long warning that was left out.
const GAP: &str = " ... ";

/// [`fit_warning`] of a message already made one line: no second scan, and
/// only what the API server keeps is copied.
///
/// Every message ends with what to do, after its last `; `. A long one
/// (long node and pod names) loses its middle, not that: the head says
/// which rule and which claim, the tail what to do, and the whole message
/// is in the audit annotation and the Event.
pub fn fit_one_line(clean: &str) -> String {
    // Counted in bytes, which is stricter than characters for any text.
    if clean.len() <= MAX_WARNING_CHARS {
        return clean.to_owned();
    }
    let room = MAX_WARNING_CHARS - GAP.len();
    // Half for each end: the advice clause whole when it fits in half,
    // else its last words; the head keeps the rule, the claim and the
    // first pods in the way.
    let most = room / 2;
    let advice = advice_start(clean).filter(|&i| clean.len() - i <= most);
    let tail_from = advice.unwrap_or_else(|| word_start_after(clean, clean.len() - most));
    let head_to = word_end_before(clean, room - (clean.len() - tail_from));
    // What the head's last word left unused goes to the advice's cut.
    let tail_from =
        advice.unwrap_or_else(|| word_start_after(clean, clean.len() - (room - head_to)));
    let mut out = String::with_capacity(MAX_WARNING_CHARS);
    out.push_str(clean[..head_to].trim_end_matches([';', ',', ':']));
    out.push_str(GAP);
    out.push_str(&clean[tail_from..]);
    out
}

/// Where the clause after the last `; ` starts. `rfind("; ")` runs the
/// two-way substring search backwards, ~1,500 instructions on a 400-byte
/// warning; a backwards byte search for `;` is a few dozen.
fn advice_start(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    memchr::memrchr_iter(b';', b)
        .find(|&i| b.get(i + 1) == Some(&b' '))
        .map(|i| i + 2)
}

/// The start of the first word at or after byte `at` (on a char boundary);
/// `at` itself when that word is most of what is left (one long word).
fn word_start_after(s: &str, at: usize) -> usize {
    let mut at = at;
    while !s.is_char_boundary(at) {
        at += 1;
    }
    let left = s.len() - at;
    match s[at..].find(' ') {
        Some(space) if at > 0 && s.as_bytes()[at - 1] != b' ' && space < left / 2 => at + space + 1,
        _ => at,
    }
}

/// The end of the last word that ends by byte `at` (on a char boundary);
/// `at` itself when that would give up most of the room (one long word).
fn word_end_before(s: &str, at: usize) -> usize {
    let mut at = at;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    if s.as_bytes().get(at) == Some(&b' ') {
        return at;
    }
    match s[..at].rfind(' ') {
        Some(space) if space > at / 2 => space,
        _ => at,
    }
}

/// `[rule-id] text`, made one line, in one string: kept as built when there
/// is nothing to flatten (the usual case).
pub fn tagged(id: &str, text: &str) -> String {
    let mut out = String::with_capacity(id.len() + 3 + text.len());
    out.push('[');
    out.push_str(id);
    out.push_str("] ");
    out.push_str(text);
    if has_control_byte(out.as_bytes()) {
        return one_line(&out);
    }
    out
}

/// One line, whatever the input: denials go into a JSON string the API
/// server shows as is, and a newline there breaks `kubectl` output.
pub fn one_line(s: &str) -> String {
    // Every message is built per decision: copy it whole when, as almost
    // always, there is nothing to flatten (a char-by-char rebuild costs
    // ~10k instructions for a 400-byte message).
    // Control characters are C0 (< 0x20), DEL, and C1 (U+0080..U+009F,
    // encoded 0xC2 0x80..0x9F): a byte scan that sees none of them is exact.
    if !has_control_byte(s.as_bytes()) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether any byte is C0, DEL or the lead byte of a C1 character: sixteen
/// bytes at a time (a fold over the bytes did not vectorize, ~19
/// instructions a byte); a short tail is padded with `a` to a whole block.
pub fn has_control_byte(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(16);
    for block in &mut blocks {
        if control_bits(block.try_into().expect("16 bytes")) != 0 {
            return true;
        }
    }
    let rest = blocks.remainder();
    let mut tail = [b'a'; 16];
    tail[..rest.len()].copy_from_slice(rest);
    control_bits(&tail) != 0
}

/// One bit per byte of `block` that is C0 (< 0x20), DEL or 0xC2.
#[inline(always)]
fn control_bits(block: &[u8; 16]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: the load reads the 16 bytes of `block` (unaligned), and
        // SSE2 is always enabled on x86_64.
        unsafe {
            let x = _mm_loadu_si128(block.as_ptr().cast());
            // max(x, 0x1f) == 0x1f exactly for the bytes 0x00..=0x1f.
            let low = _mm_set1_epi8(0x1f);
            let c0 = _mm_cmpeq_epi8(_mm_max_epu8(x, low), low);
            let del = _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f));
            let c1 = _mm_cmpeq_epi8(x, _mm_set1_epi8(0xc2_u8 as i8));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(c0, del), c1)) as u32
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        block.iter().enumerate().fold(0, |bits, (k, &x)| {
            bits | (u32::from(x < 0x20 || x == 0x7f || x == 0xc2) << k)
        })
    }
}

/// Whether `hit` holds for any byte of `b`. Written without early exits
/// inside a 32-byte block so the compiler may vectorize it (`hit` should be
/// branch-free: `|` not `||`).
#[inline]
pub fn any_byte(b: &[u8], hit: impl Fn(u8) -> bool) -> bool {
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(false, |any, &x| any | hit(x)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&x| hit(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_control_byte_at_any_offset_and_length() {
        for len in 0..50 {
            assert!(!has_control_byte("a".repeat(len).as_bytes()), "{len}");
            for at in 0..len {
                for c in [0x00u8, 0x1b, 0x1f, 0x7f, 0xc2] {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    assert!(has_control_byte(&b), "{c:#x} at {at} of {len}");
                }
                let mut b = vec![b'a'; len];
                b[at] = b' ';
                assert!(!has_control_byte(&b), "space at {at} of {len}");
            }
        }
    }

    #[test]
    fn flattens_a_control_at_any_offset() {
        for at in 0..70 {
            for c in ['\n', '\u{7f}', '\u{85}'] {
                let mut s = "a".repeat(at);
                s.push(c);
                s.push_str("é-z");
                assert_eq!(one_line(&s), format!("{} é-z", "a".repeat(at)), "at {at}");
            }
        }
    }

    fn c<'a>(name: &'a str, node: Option<&'a str>) -> Consumer<'a> {
        Consumer {
            namespace: "default",
            name,
            uid: None,
            node,
            terminating: false,
            read_only: false,
        }
    }

    #[test]
    fn lists() {
        assert_eq!(pods_at(&[c("a", Some("n1"))]), "pod default/a on node n1");
        assert_eq!(
            pods_at(&[c("a", Some("n1")), c("b", None)]),
            "pods default/a on node n1, default/b (not scheduled yet)"
        );
        let many: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| c(n, None))
            .collect();
        assert_eq!(
            pods_at(&many),
            "pods default/a (not scheduled yet), default/b (not scheduled yet), default/c (not scheduled yet) and 2 more"
        );
        assert_eq!(pod_at(&c("a", Some("n1"))), "default/a on node n1");
    }

    #[test]
    fn fits() {
        let long = "x".repeat(400) + "\n";
        let f = fit_warning(&long);
        assert_eq!(f.len(), MAX_WARNING_CHARS);
        assert!(f.contains(" ... "), "{f}");
        assert!(!fit_warning("a\nb").contains('\n'));
        let multibyte = "é".repeat(300);
        let f = fit_warning(&multibyte);
        assert!(f.len() <= MAX_WARNING_CHARS && f.contains("é ... é"), "{f}");
        // A long message keeps its head and its advice, and loses its middle.
        let node = "ip-10-0-21-41.eu-west-1.compute.internal";
        let long = format!(
            "[rwo-shared-writer] PersistentVolumeClaim \"data\" is ReadWriteOnce and written by pods payments-prod/orders-api-7d9f8b6c4d-x2k9p on node {node}, payments-prod/orders-api-7d9f8b6c4d-q8z7w on node {node}; this pod must share {node} and write too: mount it readOnly or annotate {ALLOW}"
        , ALLOW = crate::policy::ALLOW_SHARED_WRITERS);
        let f = fit_one_line(&long);
        assert!(f.len() <= MAX_WARNING_CHARS, "{} {f}", f.len());
        assert!(f.starts_with("[rwo-shared-writer] PersistentVolumeClaim \"data\" is ReadWriteOnce and written by pods payments-prod/orders-api-7d9f8b6c4d-x2k9p "), "{f}");
        assert!(
            f.ends_with(
                " and write too: mount it readOnly or annotate claimguard.io/allow-shared-writers"
            ),
            "{f}"
        );
        assert_eq!(f.matches(" ... ").count(), 1, "{f}");
        // An advice too long to keep whole: its last words, from a word start.
        let long_advice = format!("[r] a{}; {}", " b".repeat(100), "word ".repeat(60) + "end");
        let f = fit_one_line(&long_advice);
        assert!(
            f.len() <= MAX_WARNING_CHARS && f.ends_with("word end") && f.contains(" ... word "),
            "{f}"
        );
        // One word too long for either end is still cut to size.
        let f = fit_one_line(&("[r] ".to_owned() + &"y".repeat(600)));
        assert!(f.len() <= MAX_WARNING_CHARS && f.starts_with("[r] "), "{f}");
        // C1 controls are flattened too, not only ASCII ones.
        assert_eq!(one_line("a\u{85}b\tc"), "a b c");
        assert_eq!(one_line("plain é"), "plain é");
        // A message made one line once, then fitted without a second pass.
        assert_eq!(tagged("rule", "a\nb\u{85}c"), "[rule] a b c");
        assert_eq!(tagged("rule", "plain"), "[rule] plain");
        let message = tagged("r", &("é".repeat(300) + "\n"));
        assert_eq!(
            fit_one_line(&message),
            fit_warning(&format!("[r] {}\n", "é".repeat(300)))
        );
        assert_eq!(fit_one_line("short"), "short");
    }

    #[test]
    fn advice_starts_after_the_last_semicolon_and_space() {
        for s in [
            "a; b; c",
            "a;; b",
            "a ;b",
            "a; ",
            ";",
            "; ",
            "",
            "x;y; z;",
            "é; ü;  v",
        ] {
            assert_eq!(advice_start(s), s.rfind("; ").map(|i| i + 2), "{s:?}");
        }
    }
}
