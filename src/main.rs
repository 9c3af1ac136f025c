//! The `unitlet` binary: all behaviour lives in the library.

fn main() {
    std::process::exit(unitlet::cli::main());
}
