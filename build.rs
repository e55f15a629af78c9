//! Release builds for x86_64 Linux hand link/hot-symbols.txt to the linker, so the code an idle
//! agent runs sits together and the kernel maps ~2 MiB of code instead of ~5.7 (idle resident
//! size; bench/hot_symbols.py explains and regenerates the file). Everything else is untouched.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "link/hot-symbols.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=AGENT_LINK_ORDER");
    if order_applies() {
        let file = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join(ORDER_FILE);
        if file.is_file() {
            println!(
                "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
                file.display()
            );
            // Names from another toolchain or lockfile are expected, and harmless.
            println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
        }
    }
}

/// Only where the linker is known to be lld: rustc >= 1.90 links x86_64-unknown-linux-gnu with
/// its bundled lld unless told otherwise (a GNU ld would reject the option). Release only.
/// `AGENT_LINK_ORDER=off` turns it off for any other setup.
fn order_applies() -> bool {
    let var = |k: &str| env::var(k).unwrap_or_default();
    if var("AGENT_LINK_ORDER") == "off"
        || var("TARGET") != "x86_64-unknown-linux-gnu"
        || var("PROFILE") != "release"
    {
        return false;
    }
    // A chosen linker (or linker flavour) may not be lld.
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    if rustflags.contains("linker") || rustflags.contains("link-self-contained") {
        return false;
    }
    if env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER")) {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The `90` of `rustc 1.90.0 (...)`.
fn rustc_minor() -> Option<u32> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
