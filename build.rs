//! Generates `agentos.h` into `OUT_DIR` with cbindgen and sets the shared library's SONAME.
//!
//! This script writes only into `OUT_DIR`. `scripts/gen-header.sh` copies the generated header
//! to the committed `include/agentos.h`, and the test suite fails when the two differ.

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let major: u32 = env::var("CARGO_PKG_VERSION_MAJOR")
        .unwrap()
        .parse()
        .unwrap();
    let minor: u32 = env::var("CARGO_PKG_VERSION_MINOR")
        .unwrap()
        .parse()
        .unwrap();
    let patch: u32 = env::var("CARGO_PKG_VERSION_PATCH")
        .unwrap()
        .parse()
        .unwrap();

    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=build.rs");

    let version_macros = format!(
        "\n/** Major version of the header; compare with agentos_version_number(). */\n\
         #define AGENTOS_VERSION_MAJOR {major}\n\
         /** Minor version of the header. */\n\
         #define AGENTOS_VERSION_MINOR {minor}\n\
         /** Patch version of the header. */\n\
         #define AGENTOS_VERSION_PATCH {patch}\n\
         /** MAJOR * 1000000 + MINOR * 1000 + PATCH, as returned by agentos_version_number(). */\n\
         #define AGENTOS_VERSION_NUMBER {number}\n\
         /** \"MAJOR.MINOR.PATCH\", as returned by agentos_version(). */\n\
         #define AGENTOS_VERSION_STRING \"{major}.{minor}.{patch}\"\n",
        number = major * 1_000_000 + minor * 1_000 + patch
    );

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml must parse");
    let header = out_dir.join("agentos.h");
    // Only the C surface is scanned (src/ffi/mod.rs and the modules it declares): the core
    // is not part of the ABI.
    let builder = cbindgen::Builder::new()
        .with_config(config)
        .with_after_include(version_macros);
    builder
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .generate()
        .expect("cbindgen failed to generate agentos.h")
        .write_to_file(&header);
    println!(
        "cargo:rustc-env=AGENTOS_GENERATED_HEADER={}",
        header.display()
    );

    // SONAME: breaking changes bump MAJOR, or MINOR while MAJOR is 0.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let soname = if major == 0 {
            format!("libagentos.so.0.{minor}")
        } else {
            format!("libagentos.so.{major}")
        };
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
}
