use std::env;
use std::fs;
use std::path::*;
use std::process::Command;

use cc::Build;

fn main() {
    let project = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .canonicalize()
        .unwrap();
    let liburing = project.join("liburing");

    // Run the configure script in OUT_DIR to get `compat.h`
    let configured_include = configure(&liburing);

    let src = liburing.join("src");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap())
        .canonicalize()
        .unwrap();

    // liburing
    Build::new()
        .file(src.join("setup.c"))
        .file(src.join("queue.c"))
        .file(src.join("syscall.c"))
        .file(src.join("register.c"))
        .file(src.join("version.c"))
        .define("_DEFAULT_SOURCE", "")
        .include(&configured_include)
        .extra_warnings(false)
        .compile("uring");

    let bindings = bindgen::Builder::default()
        .header(configured_include.join("liburing.h").to_str().unwrap())
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_file("^(.*liburing.h)$")
        .allowlist_file("^(.*io_uring.h)$")
        .wrap_static_fns(true)
        .wrap_static_fns_path(out_dir.join("rusturing.c"))
        .prepend_enum_name(false)
        .generate()
        .unwrap();

    // (our additional, linkable C bindings)
    Build::new()
        .file(out_dir.join("rusturing.c"))
        .include(&configured_include)
        .compile("rusturing");

    let out_path = out_dir.join("bindings.rs");
    bindings.write_to_file(out_path).unwrap();

    println!("cargo:include={}", configured_include.display());
}

// copyd patch: the original configure() copied liburing's headers into
// OUT_DIR and ran ./configure there (which rewrites compat.h and
// io_uring_version.h) on every run. bindgen's CargoCallbacks then emits
// rerun-if-changed for those copies, which are always newer than the last
// run, so the build script, the crate and everything above it (copyd's
// engine, daemon, copyctl) were rebuilt by every `cargo build` and `cargo
// test` with no change at all. Now configure runs in a scratch directory,
// and a header in OUT_DIR is written only when its content differs, with
// the mtime of what it came from: an unchanged header is never touched.
// The vendored sources themselves are watched instead (rerun-if-changed).
fn configure(liburing: &Path) -> PathBuf {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=liburing");
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap())
        .canonicalize()
        .unwrap();
    let run_dir = out_dir.join("configure-run");
    fs::create_dir_all(run_dir.join("src/include/liburing/io_uring")).unwrap();
    for f in ["configure", "Makefile.common", "liburing.spec"] {
        fs::copy(liburing.join(f), run_dir.join(f)).unwrap();
    }
    let ret = Command::new("./configure")
        .current_dir(&run_dir)
        .output()
        .unwrap();
    if !ret.status.success() {
        panic!(
            "configure failed: {}",
            String::from_utf8(ret.stderr).unwrap_or_default()
        );
    }
    let include = out_dir.join("src/include");
    for h in [
        "liburing.h",
        "liburing/barrier.h",
        "liburing/io_uring.h",
        "liburing/sanitize.h",
        "liburing/io_uring/query.h",
        "liburing/io_uring/bpf_filter.h",
    ] {
        let from = liburing.join("src/include").join(h);
        install_if_changed(&fs::read(&from).unwrap(), &from, &include.join(h));
    }
    // What configure made, dated as the configure script.
    let configure_script = liburing.join("configure");
    for h in ["liburing/compat.h", "liburing/io_uring_version.h"] {
        let made = run_dir.join("src/include").join(h);
        if made.exists() {
            install_if_changed(&fs::read(&made).unwrap(), &configure_script, &include.join(h));
        }
    }
    include
}

/// Writes `contents` to `to` unless it already holds exactly that, giving
/// it the modification time of `dated_as`.
fn install_if_changed(contents: &[u8], dated_as: &Path, to: &Path) {
    if fs::read(to).ok().as_deref() == Some(contents) {
        return;
    }
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::write(to, contents).unwrap();
    let mtime = fs::metadata(dated_as).unwrap().modified().unwrap();
    fs::File::options()
        .write(true)
        .open(to)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}
