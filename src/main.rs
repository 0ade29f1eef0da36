use clap::Parser;
use saepipe::cli::{Cli, Exit, exit, main as run};
use saepipe::engine::{cancel_requested, request_cancel};

fn main() {
    let cli = Cli::parse();
    // First Ctrl-C (or SIGTERM, as schedulers send before a kill): running stages
    // save their progress and stop, locks and temporaries are released, the run
    // record is written. A second one exits at once.
    let _ = ctrlc::set_handler(|| {
        if cancel_requested() {
            eprintln!("\nstopping now");
            std::process::exit(130);
        }
        request_cancel();
        eprintln!("\ninterrupted: running stages save their progress and stop (press Ctrl-C again to exit at once)");
    });
    let verbose = cli.verbose || std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
    // The stage kinds this binary ships; the engine knows them only through this registry.
    let ops = saepipe::ops::registry();
    let code = match run(cli, &ops) {
        Ok(code) => code,
        Err(e) => {
            match e.downcast_ref::<Exit>() {
                // Validation errors are already formatted, one `file:line:col: error:` per line.
                Some(Exit(code, msg)) if *code == exit::INVALID => {
                    eprintln!("{msg}");
                    *code
                }
                other => {
                    if verbose {
                        eprintln!("error: {e:?}")
                    } else {
                        eprintln!("error: {e:#}")
                    }
                    other.map(|x| x.0).unwrap_or(exit::STAGE_FAILED)
                }
            }
        }
    };
    std::process::exit(code);
}
