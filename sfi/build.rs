//! Builds the tiny C helper that owns the `sigsetjmp` frame used by the
//! trap guard (see `src/setjmp.c` and `src/traps.rs`).

fn main() {
    println!("cargo:rerun-if-changed=src/setjmp.c");
    cc::Build::new()
        .file("src/setjmp.c")
        .warnings(true)
        .compile("faaslet_sfi_setjmp");
}
