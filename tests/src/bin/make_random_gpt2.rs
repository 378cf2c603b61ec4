//! Writes a random GPT-2 checkpoint in Hugging Face layout: `make_random_gpt2 SHAPE OUT_DIR [SEED]`,
//! where SHAPE is tiny, distilgpt2, gpt2, gpt2-medium, gpt2-large or gpt2-xl. Used by benchmarks.
use lens_tests::fixture::{RandomGpt2, write_checkpoint};

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(shape), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: make_random_gpt2 SHAPE OUT_DIR [SEED]");
        return std::process::ExitCode::from(2);
    };
    let seed: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let spec = if shape == "tiny" { Some(RandomGpt2::tiny(seed)) } else { RandomGpt2::gpt2_shape(shape).map(|s| RandomGpt2 { seed, ..s }) };
    let Some(spec) = spec else {
        eprintln!("unknown shape {shape}");
        return std::process::ExitCode::from(2);
    };
    match write_checkpoint(std::path::Path::new(out), &spec) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
