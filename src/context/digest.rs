//! Extractive digests: the identifiers, numbers, amounts, paths, addresses and names of a text,
//! verbatim. Masked observations and summaries carry a digest, so what an agent is most likely to
//! need again survives compaction word for word.

use std::collections::HashSet;

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\''
                | '{'
                | '}'
                | '['
                | ']'
                | '('
                | ')'
                | '<'
                | '>'
                | '|'
                | ';'
                | '='
                | '`'
                | '*'
        )
}

fn trim_token(t: &str) -> &str {
    t.trim_matches(|c: char| matches!(c, ',' | '.' | ':' | ';' | '!' | '?'))
}

fn looks_like_timestamp(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 16
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[..4].iter().all(u8::is_ascii_digit)
}

fn is_identifier(t: &str) -> bool {
    let has_digit = t.chars().any(|c| c.is_ascii_digit());
    let has_alpha = t.chars().any(|c| c.is_ascii_alphabetic());
    let has_joiner = t.contains(['-', '_', '.', '#', ':']);
    t.len() >= 4
        && !looks_like_timestamp(t)
        && ((has_digit && has_alpha) || (has_digit && has_joiner && t.len() >= 6))
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.#:@/+%,".contains(c))
}

fn is_amount(t: &str) -> bool {
    let digits = t.chars().filter(char::is_ascii_digit).count();
    digits >= 3
        && t.contains([',', '.'])
        && t.chars().all(|c| {
            c.is_ascii_digit()
                || c == ','
                || c == '.'
                || c == '-'
                || c == '$'
                || c == '€'
                || c == '£'
        })
}

fn is_unit(t: &str) -> bool {
    (2..=4).contains(&t.len()) && t.chars().all(|c| c.is_ascii_uppercase())
}

fn is_path_or_address(t: &str) -> bool {
    (t.starts_with('/') && t.len() > 2 && t[1..].contains(['/', '.']))
        || t.starts_with("~/")
        || t.starts_with("http://")
        || t.starts_with("https://")
        || (t.contains('@') && t.contains('.') && !t.starts_with('@'))
        || (t.contains('/')
            && t.rsplit('/')
                .next()
                .is_some_and(|f| f.contains('.') && f.len() > 2)
            && !t.contains("//"))
}

fn is_capitalized(w: &str) -> bool {
    let mut cs = w.chars();
    cs.next().is_some_and(|c| c.is_uppercase())
        && cs.clone().count() >= 1
        && cs.all(|c| c.is_lowercase() || c == '-' || c == '\'')
}

const TITLES: &[&str] = &["Dr.", "Mr.", "Ms.", "Mrs.", "Prof."];

/// The notable items of `text`, verbatim, de-duplicated, in order of first appearance, at most
/// `limit` of them.
pub fn extract(text: &str, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |s: String, out: &mut Vec<String>| {
        if out.len() < limit && seen.insert(s.clone()) {
            out.push(s);
        }
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split(is_separator).filter(|w| !w.is_empty()).collect();
        let mut i = 0;
        while i < words.len() {
            let raw = words[i];
            let w = trim_token(raw);
            // Names: an optional title and two to four capitalized words.
            let titled = TITLES.contains(&raw) || TITLES.contains(&w);
            let start = if titled { i + 1 } else { i };
            let mut j = start;
            while j < words.len() && j - start < 4 && is_capitalized(trim_token(words[j])) {
                j += 1;
                if words[j - 1].ends_with([',', '.', ':']) && !TITLES.contains(&words[j - 1]) {
                    break;
                }
            }
            if j - start >= 2 {
                let name = words[i..j]
                    .iter()
                    .map(|s| trim_token(s))
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = if titled {
                    name.replacen(trim_token(raw), raw.trim_end_matches(','), 1)
                } else {
                    name
                };
                push(name, &mut out);
                i = j;
                continue;
            }
            if is_amount(w) {
                let unit = words
                    .get(i + 1)
                    .map(|u| trim_token(u))
                    .filter(|u| is_unit(u));
                match unit {
                    Some(u) => {
                        push(format!("{w} {u}"), &mut out);
                        i += 2;
                        continue;
                    }
                    None => push(w.to_string(), &mut out),
                }
            } else if is_path_or_address(w) || is_identifier(w) {
                push(w.to_string(), &mut out);
            }
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_identifiers_amounts_paths_names_verbatim() {
        let text = r#"{"order": "ORD-48213-X", "total": "4,812.37 EUR", "path": "/srv/app/config/billing.yaml"}
2026-11-25T14:05:00Z ERROR req-9f3a2c71 failed in v2.14.3 for Dr. Amelia Okafor (amelia@example.org)
see https://status.example.com/incidents/42 and src/billing/invoice.rs, the the the"#;
        let d = extract(text, 100);
        for want in [
            "ORD-48213-X",
            "4,812.37 EUR",
            "/srv/app/config/billing.yaml",
            "req-9f3a2c71",
            "v2.14.3",
            "Dr. Amelia Okafor",
            "amelia@example.org",
            "https://status.example.com/incidents/42",
            "src/billing/invoice.rs",
        ] {
            assert!(d.iter().any(|x| x == want), "{want} missing from {d:?}");
        }
        assert!(
            !d.iter().any(|x| x.starts_with("2026-11-25T")),
            "timestamps are noise: {d:?}"
        );
        assert!(!d.iter().any(|x| x == "the"));
        assert_eq!(extract(text, 2).len(), 2);
    }
}
