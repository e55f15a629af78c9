//! Release builds for x86_64 Linux hand link/hot-symbols.txt to the linker, so the code an idle
//! agent runs sits together and the kernel maps ~3 MiB of code instead of ~5.9 (idle resident
//! size; bench/hot_symbols.py explains and regenerates the file). Everything else is untouched.

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "link/hot-symbols.txt";

fn main() {
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=AGENT_LINK_ORDER");
    let rustc = rustc_version().unwrap_or_default();
    if !order_applies(&rustc) {
        return;
    }
    let root = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).to_path_buf();
    let file = root.join(ORDER_FILE);
    let Ok(order) = std::fs::read_to_string(&file) else {
        return;
    };
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        file.display()
    );
    // Names from another toolchain or lockfile are expected, and harmless.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    if let Some(stale) = staleness(&order, &root, &rustc) {
        println!(
            "cargo:warning={ORDER_FILE} was made for {stale}: the release binary idles ~3 MiB \
             larger until you run bench/hot-symbols.sh and commit the result"
        );
    }
}

/// What changed since the file was generated (its header names the rustc and Cargo.lock).
fn staleness(order: &str, root: &Path, rustc: &str) -> Option<String> {
    let field = |name: &str| {
        order
            .lines()
            .take_while(|l| l.starts_with('#'))
            .find_map(|l| l.strip_prefix(name).map(str::trim))
            .unwrap_or("")
    };
    if field("# rustc:") != rustc {
        return Some(format!("another compiler ({})", field("# rustc:")));
    }
    let lock = std::fs::read(root.join("Cargo.lock")).unwrap_or_default();
    if field("# Cargo.lock fnv1a64:") != format!("{:016x}", fnv1a64(&lock)) {
        return Some("another Cargo.lock".into());
    }
    None
}

/// 64-bit FNV-1a, as bench/hot_symbols.py computes it (no hashing crate for one checksum).
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Only where the linker is known to be lld: rustc >= 1.90 links x86_64-unknown-linux-gnu with
/// its bundled lld unless told otherwise (a GNU ld would reject the option). Release only.
/// `AGENT_LINK_ORDER=off` turns it off for any other setup.
fn order_applies(rustc: &str) -> bool {
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
    rustc_minor(rustc).is_some_and(|minor| minor >= 90)
}

/// `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Option<String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}

/// The `90` of `rustc 1.90.0 (...)`.
fn rustc_minor(rustc: &str) -> Option<u32> {
    let version = rustc.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}
