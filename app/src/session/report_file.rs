//! Opening a result file without its model (`--open-report`, File → Open report…): a lens report
//! (`lens --json`, the app's JSON export), a comparison (`compare@1`) or a corpus report
//! (`corpus@1`), told apart by their `schema`. Checked as the model's readers check them (schema,
//! grid shapes); nothing is loaded or run.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lens_model::LensReport;
use lens_model::analyses::compare::{COMPARE_SCHEMA, CompareReport};
use lens_model::analyses::corpus::{CORPUS_SCHEMA, CorpusReport};

use crate::session::worker::{CorpusRun, RunResult};

/// Largest result file read (a 256-position, 33-site report with top-10 is ~10 MB).
pub const MAX_REPORT_BYTES: u64 = 512 * 1024 * 1024;

/// What a result file held.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    /// A lens report, or a comparison (its run A, with the comparison).
    Lens(Arc<RunResult>),
    /// A corpus report.
    Corpus(Arc<CorpusRun>),
}

/// The prompt text a report was computed for, from its tokens (special tokens left out).
pub fn prompt_of(report: &LensReport) -> String {
    report.tokens.iter().filter(|t| !t.special).map(|t| t.decoded.as_str()).collect()
}

/// The result shown for `report` (no comparison).
pub fn result_of(report: LensReport) -> Arc<RunResult> {
    lens_result(report, None)
}

fn lens_result(report: LensReport, compare: Option<Arc<CompareReport>>) -> Arc<RunResult> {
    Arc::new(RunResult { prompt: prompt_of(&report), total_positions: report.n_pos(), report, pinned_dla: None, compare })
}

/// Reads `path`: a lens report, a comparison or a corpus report.
pub fn read(path: &Path) -> Result<Opened> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > MAX_REPORT_BYTES {
        bail!("{} is {:.0} MB; a logit-lens report is far smaller", path.display(), size as f64 / 1e6);
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    #[derive(serde::Deserialize)]
    struct Head {
        schema: Option<String>,
    }
    let head: Head = serde_json::from_str(&text).with_context(|| format!("{} is not a JSON file", path.display()))?;
    match head.schema.as_deref() {
        Some(lens_model::output::report::SCHEMA) => Ok(Opened::Lens(lens_result(LensReport::from_json(&text, path)?, None))),
        Some(COMPARE_SCHEMA) => {
            let c: CompareReport = serde_json::from_str(&text).with_context(|| format!("{} is not a readable logit-lens comparison", path.display()))?;
            c.a.check_shapes().with_context(|| format!("{}: run A is not consistent", path.display()))?;
            c.b.check_shapes().with_context(|| format!("{}: run B is not consistent", path.display()))?;
            let a = c.a.clone();
            Ok(Opened::Lens(lens_result(a, Some(Arc::new(c)))))
        }
        Some(CORPUS_SCHEMA) => {
            let r: CorpusReport = serde_json::from_str(&text).with_context(|| format!("{} is not a readable logit-lens corpus report", path.display()))?;
            let name = path.file_stem().map_or_else(|| "corpus".to_string(), |s| s.to_string_lossy().into_owned());
            Ok(Opened::Corpus(Arc::new(CorpusRun { label: format!("{name} ({})", r.decoder), report: r })))
        }
        Some(other) => bail!(
            "{}: schema {other:?} is not one logit-lens writes ({}, {COMPARE_SCHEMA}, {CORPUS_SCHEMA})",
            path.display(),
            lens_model::output::report::SCHEMA
        ),
        None => bail!("{} has no \"schema\": not a logit-lens report", path.display()),
    }
}
