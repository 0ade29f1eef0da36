use clap::Parser;
use saepipe::cli::{Cli, Exit, exit, main as run};

fn main() {
    let cli = Cli::parse();
    let verbose = cli.verbose || std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<Exit>().map(|x| x.0).unwrap_or(exit::STAGE_FAILED);
            if verbose { eprintln!("error: {e:?}") } else { eprintln!("error: {e:#}") }
            code
        }
    };
    std::process::exit(code);
}
