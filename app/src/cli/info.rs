//! `logit-lens info`: the runtime library, its providers, and the model's shape, weights and
//! execution provider.

use anyhow::Result;
use lens_model::run::runtime::init_runtime;

use super::args::ModelArgs;
use super::open_engine_notes;

/// ` (block 32, zero points, MatMulNBits)` for a quantized bundle; empty for f32.
fn weights_detail(b: &lens_model::run::bundle::Bundle) -> String {
    match b.weights.spec() {
        None => " (exact)".into(),
        Some(_) => {
            let get = |k: &str| b.metadata.get(k).cloned().unwrap_or_else(|| "?".into());
            let zp = if get(lens_model::build::meta_keys::WEIGHTS_ZERO_POINTS) == "true" { "zero points" } else { "symmetric" };
            format!(
                " (block-wise MatMulNBits: block {}, {zp}, accuracy level {})",
                get(lens_model::build::meta_keys::WEIGHTS_BLOCK_SIZE),
                get(lens_model::build::meta_keys::WEIGHTS_ACCURACY_LEVEL)
            )
        }
    }
}

/// Runs `info`.
pub fn run(ort_lib: Option<&std::path::Path>, args: &ModelArgs) -> Result<()> {
    let rt = init_runtime(ort_lib)?;
    println!("ONNX Runtime {} at {}", rt.version, rt.library.display());
    println!("  found by: {}", rt.found_by);
    println!("  providers compiled in: {}", rt.compiled_providers.join(", "));
    let engine = open_engine_notes(ort_lib, args.model.as_deref(), args.device, false)?;
    let s = &engine.bundle.shape;
    println!("model {} ({})", engine.bundle.name, engine.bundle.dir.display());
    println!(
        "  n_layers {}, d_model {}, n_heads {}, d_mlp {}, d_vocab {}, n_ctx {}, eps {:e}",
        s.n_layers, s.d_model, s.n_heads, s.d_mlp, s.d_vocab, s.n_ctx, s.eps
    );
    println!("  family {}, {} residual, parameters {}", engine.bundle.family, engine.bundle.residual.name(), engine.bundle.n_params());
    println!("  weights {}{}", engine.bundle.weights.name(), weights_detail(&engine.bundle));
    if let Some(h) = &engine.bundle.weights_sha256 {
        println!("  weights sha256 {h}");
    }
    println!("execution provider: {}", engine.provider.active);
    println!("lens: {} (auto; --lens-path kernel|graph chooses)", engine.lens_path_label(lens_model::lens::graph::LensPath::Auto));
    for n in &engine.provider.notes {
        println!("  {n}");
    }
    Ok(())
}
