//! The library version, taken from `Cargo.toml` at build time.

/// `"MAJOR.MINOR.PATCH"`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The same string, NUL-terminated, for C callers.
pub const VERSION_CSTR: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
/// Major version.
pub const MAJOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MAJOR"));
/// Minor version.
pub const MINOR: u32 = parse_u32(env!("CARGO_PKG_VERSION_MINOR"));
/// Patch version.
pub const PATCH: u32 = parse_u32(env!("CARGO_PKG_VERSION_PATCH"));
/// `MAJOR * 1_000_000 + MINOR * 1_000 + PATCH`.
pub const NUMBER: u32 = MAJOR * 1_000_000 + MINOR * 1_000 + PATCH;

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut v = 0u32;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "version component is not a number");
        v = v * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_matches_string() {
        let parts: Vec<u32> = VERSION.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts, vec![MAJOR, MINOR, PATCH]);
        assert_eq!(NUMBER, parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]);
        assert!(VERSION_CSTR.ends_with('\0'));
    }
}
