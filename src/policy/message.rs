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
    match c.node {
        Some(n) => format!("{}/{} on node {n}", c.namespace, c.name),
        None => format!("{}/{} (not scheduled yet)", c.namespace, c.name),
    }
}

/// `pod default/a on node n1` / `pods default/a on node n1, default/b on node n2 and 3 more`.
pub fn pods_at(cs: &[Consumer<'_>]) -> String {
    let listed: Vec<String> = cs.iter().take(MAX_LISTED).map(pod_at).collect();
    let more = cs.len().saturating_sub(MAX_LISTED);
    let noun = if cs.len() == 1 { "pod" } else { "pods" };
    if more > 0 {
        format!("{noun} {} and {more} more", listed.join(", "))
    } else {
        format!("{noun} {}", listed.join(", "))
    }
}

/// Cut a warning to what the API server passes through, on a char boundary,
/// and flatten anything that is not a valid header character.
pub fn fit_warning(s: &str) -> String {
    let mut clean = one_line(s);
    // Counted in bytes, which is stricter than characters for any text.
    if clean.len() <= MAX_WARNING_CHARS {
        return clean;
    }
    let mut cut = MAX_WARNING_CHARS - 3;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    clean.truncate(cut);
    clean.push_str("...");
    clean
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

/// Whether any byte is C0, DEL or the lead byte of a C1 character.
fn has_control_byte(b: &[u8]) -> bool {
    any_byte(b, |x| (x < 0x20) | (x == 0x7f) | (x == 0xc2))
}

/// Whether `hit` holds for any byte of `b`. Written without early exits
/// inside a 32-byte block so the compiler vectorizes it (`hit` should be
/// branch-free: `|` not `||`); a byte-at-a-time `any` was ~3 instructions a
/// byte, on every message and every logged value.
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
        assert!(pods_at(&many).ends_with("and 2 more"));
    }

    #[test]
    fn fits() {
        let long = "x".repeat(400) + "\n";
        let f = fit_warning(&long);
        assert_eq!(f.len(), MAX_WARNING_CHARS);
        assert!(f.ends_with("..."));
        assert!(!fit_warning("a\nb").contains('\n'));
        let multibyte = "é".repeat(300);
        assert!(fit_warning(&multibyte).len() <= MAX_WARNING_CHARS);
        assert!(fit_warning(&multibyte).ends_with("é..."));
        // C1 controls are flattened too, not only ASCII ones.
        assert_eq!(one_line("a\u{85}b\tc"), "a b c");
        assert_eq!(one_line("plain é"), "plain é");
    }
}
