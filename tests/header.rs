//! The committed header must match what the build script generates from `src/ffi/`, and its
//! version macros must match the crate version.

const COMMITTED: &str = include_str!("../include/agentos.h");
const GENERATED: &str = include_str!(env!("AGENTOS_GENERATED_HEADER"));

#[test]
fn committed_header_is_fresh() {
    assert!(
        COMMITTED == GENERATED,
        "include/agentos.h is stale: run scripts/gen-header.sh and commit the result"
    );
}

#[test]
fn version_macros_match_the_crate() {
    let find = |name: &str| -> String {
        let prefix = format!("#define {name} ");
        COMMITTED
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing from the header"))
            .trim()
            .to_string()
    };
    assert_eq!(
        find("AGENTOS_VERSION_MAJOR"),
        agentos::version::MAJOR.to_string()
    );
    assert_eq!(
        find("AGENTOS_VERSION_MINOR"),
        agentos::version::MINOR.to_string()
    );
    assert_eq!(
        find("AGENTOS_VERSION_PATCH"),
        agentos::version::PATCH.to_string()
    );
    assert_eq!(
        find("AGENTOS_VERSION_NUMBER"),
        agentos::version::NUMBER.to_string()
    );
    assert_eq!(
        find("AGENTOS_VERSION_STRING"),
        format!("\"{}\"", agentos::version::VERSION)
    );
}

#[test]
fn every_exported_function_is_documented_in_the_header() {
    let lines: Vec<&str> = COMMITTED.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let is_decl = line.contains(" agentos_")
            && line.contains('(')
            && !line.starts_with([' ', '#', '/', '*']);
        if is_decl {
            assert!(
                i > 0 && lines[i - 1].trim() == "*/",
                "no doc comment before: {line}"
            );
        }
    }
}
