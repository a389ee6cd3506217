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
    let date =
        b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit);
    let time = (5..=15).contains(&b.len())
        && b[2] == b':'
        && b[..2].iter().all(u8::is_ascii_digit)
        && b.iter()
            .all(|c| c.is_ascii_digit() || *c == b':' || *c == b'.');
    (date && (b.len() == 10 || b[10] == b'T' || b[10] == b' ')) || time
}

/// Measurements such as `143ms`, `12s`, `87%`, `2.5GB`: frequent in logs, rarely needed later.
fn is_measurement(t: &str) -> bool {
    let digits_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    if digits_end == 0 || digits_end == t.len() {
        return false;
    }
    matches!(
        &t[digits_end..],
        "ms" | "s"
            | "us"
            | "µs"
            | "ns"
            | "m"
            | "h"
            | "%"
            | "x"
            | "KB"
            | "MB"
            | "GB"
            | "kb"
            | "mb"
            | "gb"
            | "B"
            | "KiB"
            | "MiB"
            | "GiB"
            | "rps"
            | "qps"
    )
}

/// Code identifiers such as `_coerce_decimal_legacy` or `load_rates_from_cache` (two
/// underscores at least, or a leading one: plain `created_at`-style field names are noise).
fn is_snake_identifier(t: &str) -> bool {
    t.len() >= 8
        && (t.starts_with('_') || t.matches('_').count() >= 2)
        && t.chars().any(|c| c.is_ascii_alphabetic())
        && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Percentages with decimals (`37.4%`): results worth keeping, unlike round log figures.
fn is_percentage(t: &str) -> bool {
    t.ends_with('%')
        && t.contains('.')
        && t.len() >= 4
        && t[..t.len() - 1]
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.')
}

/// Resource names such as `acme-prod-backups-legacy`, and user names such as `k.brandstetter`.
fn is_name_token(t: &str) -> bool {
    let lower = t
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let kebab = t.len() >= 10
        && t.matches('-').count() >= 2
        && !t.starts_with('-')
        && t.chars().any(|c| c.is_ascii_lowercase())
        && !looks_like_timestamp(t);
    let dotted = t.len() >= 6
        && t.matches('.').count() == 1
        && t.split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && t.split('.').next().is_some_and(|p| p.len() <= 2);
    lower && (kebab || dotted)
}

/// Qualified code paths: `integration::agents::ten_thousand`, `std::vector`.
fn is_code_path(t: &str) -> bool {
    t.len() >= 8
        && t.contains("::")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '.')
}

fn is_long_number(t: &str) -> bool {
    t.len() >= 6 && t.chars().all(|c| c.is_ascii_digit())
}

fn is_identifier(t: &str) -> bool {
    let has_digit = t.chars().any(|c| c.is_ascii_digit());
    let has_alpha = t.chars().any(|c| c.is_ascii_alphabetic());
    let has_joiner = t.contains(['-', '_', '.', '#', ':']);
    t.len() >= 4
        && !looks_like_timestamp(t)
        && !is_measurement(t)
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
        || t.contains("://")
        || (t.contains('@') && t.contains('.') && !t.starts_with('@'))
        || (t.contains('/')
            && t.rsplit('/')
                .next()
                .is_some_and(|f| f.contains('.') && f.len() > 2)
            && !t.contains("//"))
}

fn is_capitalized(w: &str) -> bool {
    if let Some((a, b)) = w.split_once('-') {
        // Double-barrelled names: "Valbuena-Ortiz".
        return is_capitalized(a) && is_capitalized(b);
    }
    let mut cs = w.chars();
    cs.next().is_some_and(|c| c.is_uppercase())
        && cs.clone().count() >= 1
        && cs.all(|c| c.is_lowercase() || c == '-' || c == '\'')
}

const TITLES: &[&str] = &["Dr.", "Mr.", "Ms.", "Mrs.", "Prof."];
const COMPANY: &[&str] = &[
    "GmbH", "AG", "Inc", "LLC", "Ltd", "SA", "BV", "AB", "Oy", "SE", "PLC", "KG",
];

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
            // Joined names: "Halvorsen & Brandt GmbH".
            while j - start >= 1
                && j + 1 < words.len()
                && (words[j] == "&" || words[j] == "and")
                && is_capitalized(trim_token(words[j + 1]))
            {
                j += 2;
                while j < words.len() && is_capitalized(trim_token(words[j]))
                    || j < words.len() && COMPANY.contains(&trim_token(words[j]))
                {
                    j += 1;
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
            // Phone numbers: "+351 22 208 4417".
            if w.starts_with('+') && w.len() >= 3 && w[1..].chars().all(|c| c.is_ascii_digit()) {
                let mut j = i + 1;
                while j < words.len()
                    && j - i < 5
                    && trim_token(words[j]).chars().all(|c| c.is_ascii_digit())
                    && !trim_token(words[j]).is_empty()
                {
                    j += 1;
                }
                let phone = words[i..j]
                    .iter()
                    .map(|s| trim_token(s))
                    .collect::<Vec<_>>()
                    .join(" ");
                push(phone, &mut out);
                i = j;
                continue;
            }
            // Account numbers in groups: IBANs ("DE89 3704 0044 0532 0130 00").
            let wb = w.as_bytes();
            if wb.len() == 4
                && wb[..2].iter().all(u8::is_ascii_uppercase)
                && wb[2..].iter().all(u8::is_ascii_digit)
            {
                let mut j = i + 1;
                while j < words.len() && j - i < 8 {
                    let g = trim_token(words[j]);
                    if (1..=4).contains(&g.len())
                        && g.chars().all(|c| c.is_ascii_alphanumeric())
                        && g.chars().any(|c| c.is_ascii_digit())
                    {
                        j += 1;
                    } else {
                        break;
                    }
                }
                if j - i >= 3 {
                    let acct = words[i..j]
                        .iter()
                        .map(|s| trim_token(s))
                        .collect::<Vec<_>>()
                        .join(" ");
                    push(acct, &mut out);
                    i = j;
                    continue;
                }
            }
            // Codes followed by a number: flights ("TP 537"), rooms, gates.
            if (2..=3).contains(&w.len())
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && w.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            {
                if let Some(n) = words.get(i + 1).map(|n| trim_token(n)) {
                    if (1..=5).contains(&n.len()) && n.chars().all(|c| c.is_ascii_digit()) {
                        push(format!("{w} {n}"), &mut out);
                        i += 2;
                        continue;
                    }
                }
            }
            let numeric_like = is_amount(w)
                || (is_identifier(w) && w.starts_with(|c: char| c.is_ascii_digit() || c == '-'));
            if numeric_like {
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
            } else if is_path_or_address(w)
                || is_identifier(w)
                || is_snake_identifier(w)
                || is_long_number(w)
                || is_name_token(w)
                || is_code_path(w)
                || is_percentage(w)
            {
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
see https://status.example.com/incidents/42 and src/billing/invoice.rs, the the the
test integration::agents::ten_thousand_agents failed; user k.brandstetter paid to DE89 3704 0044 0532 0130 00 from acme-prod-backups-legacy; Ines Valbuena-Ortiz found 37.4% (87% round); flight TP 537 at gate B 12, call +351 22 208 4417; revenue 12.9M EUR from Halvorsen & Brandt GmbH via s3://bucket/x/part-0007.csv; call _coerce_decimal_legacy; ticket 1482977 took 143ms"#;
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
            "12.9M EUR",
            "Halvorsen & Brandt GmbH",
            "s3://bucket/x/part-0007.csv",
            "_coerce_decimal_legacy",
            "1482977",
            "TP 537",
            "+351 22 208 4417",
            "k.brandstetter",
            "DE89 3704 0044 0532 0130 00",
            "acme-prod-backups-legacy",
            "Ines Valbuena-Ortiz",
            "37.4%",
            "integration::agents::ten_thousand_agents",
        ] {
            assert!(d.iter().any(|x| x == want), "{want} missing from {d:?}");
        }
        assert!(
            !d.iter().any(|x| x.starts_with("2026-11-25")),
            "timestamps are noise: {d:?}"
        );
        let noise = extract("\"created_at\": \"2024-10-02\", \"t\": \"04:22:55\"", 10);
        assert!(noise.is_empty(), "{noise:?}");
        assert!(!d.iter().any(|x| x == "the"));
        assert!(
            !d.iter().any(|x| x == "143ms"),
            "measurements are noise: {d:?}"
        );
        assert_eq!(extract(text, 2).len(), 2);
    }
}
