//! The `ductile` binary: parse the command line, run it, exit with its code.

fn main() {
    let code = ductile::cli::run(std::env::args_os().collect());
    std::process::exit(code);
}
